"""Segmentation networks and their safe, self-describing files.

Two ``torch.nn.Module`` architectures, both taking ``(N, 1, H, W)`` float32
normalised frames (see :func:`temflow.segmentation.tiles.normalise`) and returning
``(N, 1, H, W)``:

* :class:`UNet` (supervised route, Horwath et al. 2020): encoder-decoder with
  skip connections and batch norm; the output is one channel of particle
  *logits* (apply a sigmoid for probabilities).
* :class:`Autoencoder` (unsupervised route): encoder-decoder with a narrow
  bottleneck and no skips, trained to reproduce the frame; it cannot
  reproduce the shot noise, so its output is a simplified frame that a global
  (Otsu) threshold separates into particles and support.

Every instance tells inference what it needs to tile a movie:
``receptive_field_px`` (how many pixels away an input pixel can still change an
output pixel: the halo), ``size_multiple`` (tile sides must be multiples of it)
and ``output_kind``.

File layout
-----------
A model is one ``.safetensors`` file. The tensors are the module's
``state_dict`` (weights and batch-norm statistics); the file's string metadata
holds one entry, ``"temflow_card"``, the model card as JSON::

    {"format": "temflow-model", "card_version": 1,
     "architecture": "UNet", "arguments": {"depth": 3, "width": 16, ...},
     "output_kind": "probability_logits",
     "normalisation": {"method": "percentile", "low": 812.0, "high": 1630.0},
     "tile_size": 128, "receptive_field_px": 51, "size_multiple": 8,
     "training": {...}, "temflow_version": "0.1.0",
     "weights_sha256": "..."}

``weights_sha256`` is the SHA-256 of the tensors in a canonical order (name,
dtype, shape and raw bytes of each tensor, sorted by name), so changing any
weight is detected. safetensors stores raw tensors only: loading a file never
unpickles anything, so an untrusted file cannot run code.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn


__all__ = ["UNet", "Autoencoder", "OutputKind"]

OutputKind = Literal["probability_logits", "reconstruction"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
    return int(value)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum across ranks: the gradient of a sum shared by all ranks is itself summed."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out)
        return out


class _BatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics span every rank of a torch.distributed job.

    Without a process group (or with one rank) it is ``nn.BatchNorm2d``. With
    several ranks, the per-channel sums, sums of squares and counts are
    all-reduced (in float64, one collective per layer), so data-parallel training normalises with
    the statistics of the *global* batch, exactly as single-process training
    does. Unlike ``nn.SyncBatchNorm`` this also works on the CPU (gloo). The
    all-reduce is differentiable (``_AllReduceSum``), so gradients
    flow through the global statistics. Set ``synchronise = False`` for
    per-rank statistics (no collective; faster, but no longer the same as one process).
    """

    synchronise: bool = True

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (
            self.synchronise and self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(input)
        all_reduce = _AllReduceSum.apply
        channels = input.shape[1]
        dims = (0, 2, 3)
        # one all-reduce of (sum, sum of squares, count) per layer: every collective is a
        # point where all ranks wait for the slowest; float64 keeps E[x^2] - E[x]^2 exact enough
        wide = input.double()
        local_count = torch.full((1,), input.numel() // max(channels, 1), dtype=torch.float64, device=input.device)
        sums = all_reduce(torch.cat([wide.sum(dims), (wide * wide).sum(dims), local_count]))
        count = sums[2 * channels]
        mean64 = sums[:channels] / count
        var = (sums[channels : 2 * channels] / count - mean64 * mean64).clamp_min(0).to(input.dtype)
        mean = mean64.to(input.dtype)
        centred = input - mean[None, :, None, None]
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None and tracked is not None:
            with torch.no_grad():
                tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                unbiased = var * (count / torch.clamp(count - 1, min=1)).to(var.dtype)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def _conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """``convs`` times (3x3 conv, batch norm, ReLU); padding keeps the size."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            # no bias: batch norm's shift replaces it
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            _BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _encoder_decoder_radius(depth: int, encoder_convs: int, decoder_convs: int, bottleneck_convs: int) -> int:
    """Receptive-field radius (px) of an encoder-decoder of 3x3 convs, 2x2 pools and 2x2 up-convs.

    At level ``l`` (pixels ``2**l`` input pixels wide) a fine pixel ``i`` is
    made from coarse pixel ``i // 2`` by the 2x2 stride-2 transposed conv, and
    coarse pixel ``c`` pools fine pixels ``2c, 2c + 1``. If the coarse
    sub-network reaches ``R`` coarse pixels, the pool-subnet-upsample path
    reaches ``2 R + 1`` fine pixels on the worse side. Each 3x3 conv adds one.
    """
    radius = bottleneck_convs
    for _ in range(depth):
        radius = encoder_convs + decoder_convs + 2 * radius + 1
    return radius


class UNet(nn.Module):
    """U-Net for particle segmentation: one channel of particle logits.

    Parameters
    ----------
    depth : int
        Number of 2x down-samplings (levels below full resolution).
    width : int
        Channels at full resolution; doubled at every level down.
    convs_per_block : int
        3x3 conv + batch norm + ReLU layers per block.

    Attributes
    ----------
    receptive_field_px : int
        How many pixels away an input pixel can still change an output pixel.
    size_multiple : int
        Input height and width must be multiples of this (``2**depth``).
    output_kind : str
        ``"probability_logits"``.

    Examples
    --------
    >>> import torch
    >>> net = UNet(depth=2, width=4).eval()
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    >>> net.receptive_field_px, net.size_multiple
    (23, 4)
    """

    output_kind: OutputKind = "probability_logits"

    def __init__(self, *, depth: int = 3, width: int = 16, convs_per_block: int = 2) -> None:
        super().__init__()
        depth = _check_int("depth", depth, 1)
        width = _check_int("width", width, 1)
        convs_per_block = _check_int("convs_per_block", convs_per_block, 1)
        self.arguments = {"depth": depth, "width": width, "convs_per_block": convs_per_block}
        channels = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        previous = 1
        for level in range(depth):
            self.down.append(_conv_block(previous, channels[level], convs_per_block))
            previous = channels[level]
        self.pool = nn.MaxPool2d(2)
        self.bottom = _conv_block(channels[depth - 1], channels[depth], convs_per_block)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2, bias=False))
            self.merge.append(_conv_block(2 * channels[level], channels[level], convs_per_block))
        self.head = nn.Conv2d(channels[0], 1, 1)
        self.receptive_field_px = _encoder_decoder_radius(depth, convs_per_block, convs_per_block, convs_per_block)
        self.size_multiple = 2**depth

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        skips = []
        x = frames
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


class Autoencoder(nn.Module):
    """Convolutional autoencoder: reproduces the normalised frame through a bottleneck.

    No skip connections, so the fine-grained shot noise cannot bypass the
    bottleneck. Train it as a denoiser (a :class:`~temflow.segmentation.tiles.TileDataset`
    with ``noise_jitter=temflow.segmentation.tiles.DENOISING_NOISE``: noise added to the
    input, not to the target) and segment its reconstruction with
    :func:`temflow.segmentation.inference.segment`. The defaults (one down-sampling, width 32,
    a code of 8 channels at half resolution) are the best measured in
    ``benchmarks/bench_train.py``: IoU 0.911-0.917 over three training seeds,
    where depth 2 (width 32, 16 channels) gave 0.87-0.90 after the same 340
    optimiser steps (0.90-0.91 after 680) and depth 3 (8 channels) 0.79. A
    shallow code keeps the particles' edges; the denoising objective, not
    the size of the code, keeps the noise out (a code of 2 channels, half as
    many numbers as pixels, varied from 0.84 to 0.91 with the seed).

    Parameters
    ----------
    depth : int
        Number of 2x down-samplings.
    width : int
        Channels at full resolution; doubled at every level down.
    bottleneck_channels : int
        Channels at the bottleneck (the code), at ``1 / 2**depth`` resolution.
    convs_per_block : int
        3x3 conv + batch norm + ReLU layers per block.

    Attributes
    ----------
    receptive_field_px : int
        How many pixels away an input pixel can still change an output pixel.
    size_multiple : int
        Input height and width must be multiples of this (``2**depth``).
    output_kind : str
        ``"reconstruction"``.

    Examples
    --------
    >>> import torch
    >>> net = Autoencoder(depth=2, width=4, bottleneck_channels=2).eval()
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    """

    output_kind: OutputKind = "reconstruction"

    def __init__(
        self, *, depth: int = 1, width: int = 32, bottleneck_channels: int = 8, convs_per_block: int = 1
    ) -> None:
        super().__init__()
        depth = _check_int("depth", depth, 1)
        width = _check_int("width", width, 1)
        bottleneck_channels = _check_int("bottleneck_channels", bottleneck_channels, 1)
        convs_per_block = _check_int("convs_per_block", convs_per_block, 1)
        self.arguments = {
            "depth": depth,
            "width": width,
            "bottleneck_channels": bottleneck_channels,
            "convs_per_block": convs_per_block,
        }
        channels = [width * 2**level for level in range(depth)]
        encoder: list[nn.Module] = []
        previous = 1
        for level in range(depth):
            encoder += [_conv_block(previous, channels[level], convs_per_block), nn.MaxPool2d(2)]
            previous = channels[level]
        encoder.append(_conv_block(previous, bottleneck_channels, convs_per_block))
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = []
        previous = bottleneck_channels
        for level in reversed(range(depth)):
            decoder += [
                nn.ConvTranspose2d(previous, channels[level], 2, stride=2, bias=False),
                _conv_block(channels[level], channels[level], convs_per_block),
            ]
            previous = channels[level]
        output = nn.Conv2d(previous, 1, 1)
        # start from a flat mid-grey frame (normalised units): with the default initialisation
        # the first output is off by about one full intensity range, and an optimiser that moves
        # each weight by about the learning rate per step spends hundreds of steps undoing that
        with torch.no_grad():
            output.weight.mul_(0.1)
            nn.init.constant_(cast(torch.Tensor, output.bias), 0.5)  # Conv2d has a bias by default
        decoder.append(output)
        self.decoder = nn.Sequential(*decoder)
        self.receptive_field_px = _encoder_decoder_radius(depth, convs_per_block, convs_per_block, convs_per_block)
        self.size_multiple = 2**depth

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(frames))


_ARCHITECTURES: dict[str, type[nn.Module]] = {"UNet": UNet, "Autoencoder": Autoencoder}
