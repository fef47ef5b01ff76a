"""Segmentation networks and their safe, self-describing files.

Two ``torch.nn.Module`` architectures, both taking ``(N, 1, H, W)`` float32
normalised frames (see :func:`temflow.tiles.normalise`) and returning
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

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from temflow.tiles import _parse_normalisation

__all__ = ["UNet", "Autoencoder", "save_model", "load_model", "OutputKind"]

OutputKind = Literal["probability_logits", "reconstruction"]
_CARD_KEY = "temflow_card"
_CARD_VERSION = 1
_FORMAT = "temflow-model"


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
    bottleneck. Train it as a denoiser (a :class:`~temflow.tiles.TileDataset`
    with ``noise_jitter=temflow.tiles.DENOISING_NOISE``: noise added to the
    input, not to the target) and segment its reconstruction with
    :func:`temflow.infer.segment`. The defaults (one down-sampling, width 32,
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


def _weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_normalisation(normalisation: Any) -> dict[str, Any]:
    low, high = _parse_normalisation(normalisation)
    out = dict(normalisation)
    out.update(low=low, high=high)
    return out


def _temflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("temflow")
    except PackageNotFoundError:
        return "unknown"


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    normalisation: Mapping[str, Any],
    tile_size: int,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model's weights and its model card to one ``.safetensors`` file.

    Parameters
    ----------
    model : UNet or Autoencoder
        The trained network.
    path : str or path
        File to write (conventionally ending in ``.safetensors``); replaced if it exists.
    normalisation : mapping
        ``{"method": "percentile", "low": float, "high": float}``, raw intensity
        units: how frames were scaled for training (:func:`temflow.tiles.normalise`).
    tile_size : int
        Tile side (px) the model was trained on.
    training : mapping, optional
        Provenance (data, epochs, seed, history summary...); must be JSON-serialisable.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``model`` is not a temflow architecture or ``training`` is not JSON.
    ValueError
        If ``normalisation`` or ``tile_size`` are invalid.

    Examples
    --------
    >>> import tempfile
    >>> net = UNet(depth=1, width=2)
    >>> path = save_model(net, tempfile.mkdtemp() + "/net.safetensors",
    ...                   normalisation={"method": "percentile", "low": 10.0, "high": 90.0}, tile_size=32)
    >>> again = load_model(path)
    >>> type(again).__name__, again.card["tile_size"], again.card["normalisation"]["high"]
    ('UNet', 32, 90.0)
    """
    from safetensors.torch import save_file

    name = type(model).__name__
    net: Any = model  # UNet or Autoencoder: their attributes are plain ints and dicts
    if _ARCHITECTURES.get(name) is not type(model):
        raise TypeError(f"model must be one of {sorted(_ARCHITECTURES)} from temflow.models; got {type(model).__name__}")
    norm = _check_normalisation(normalisation)
    tile_size = _check_int("tile_size", tile_size, 1)
    if tile_size % net.size_multiple:
        raise ValueError(f"tile_size must be a multiple of the model's size_multiple {net.size_multiple}; got {tile_size}")
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    card = {
        "format": _FORMAT,
        "card_version": _CARD_VERSION,
        "architecture": name,
        "arguments": dict(net.arguments),
        "output_kind": net.output_kind,
        "normalisation": norm,
        "tile_size": tile_size,
        "receptive_field_px": int(net.receptive_field_px),
        "size_multiple": int(net.size_multiple),
        "training": dict(training) if training is not None else None,
        "temflow_version": _temflow_version(),
        "weights_sha256": _weights_sha256(tensors),
    }
    try:
        text = json.dumps(card, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"training provenance must be JSON-serialisable ({exc})") from None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={_CARD_KEY: text})
    return target


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the model card of a saved model without loading its weights.

    Raises
    ------
    ValueError
        If the file does not exist or is not a temflow model file.
    """
    from safetensors import safe_open

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"cannot load model {str(source)!r}: no such file; save one with temflow.models.save_model")
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"cannot load model {str(source)!r}: not a readable safetensors file ({exc})") from None
    if _CARD_KEY not in metadata:
        raise ValueError(
            f"cannot load model {str(source)!r}: it has no temflow model card; it was not written by temflow.models.save_model"
        )
    try:
        card = json.loads(metadata[_CARD_KEY])
    except ValueError as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its model card is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != _FORMAT:
        raise ValueError(f"cannot load model {str(source)!r}: its model card is not a temflow model card")
    return card


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a saved model from its file, without naming its class.

    The architecture and its arguments come from the model card; the weights
    are read with safetensors (no unpickling) and checked against the card's
    SHA-256 before they are loaded. The model is returned in eval mode with
    the card attached as ``model.card`` (a dict).

    Parameters
    ----------
    path : str or path
        A file written by :func:`save_model`.

    Returns
    -------
    UNet or Autoencoder
        On the CPU, in eval mode, with ``card``.

    Raises
    ------
    ValueError
        Naming the file, if it is missing or damaged, was not written by
        temflow, names an unknown architecture, its weights do not match the
        card's hash (tampered) or do not fit the architecture (mismatched).
    """
    from safetensors.torch import load_file

    source = Path(path)
    card = read_card(source)
    name = card.get("architecture")
    if name not in _ARCHITECTURES:
        raise ValueError(f"cannot load model {str(source)!r}: unknown architecture {name!r}; expected one of {sorted(_ARCHITECTURES)}")
    try:
        tensors = load_file(str(source))
    except Exception as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its tensors cannot be read ({exc})") from None
    if _weights_sha256(tensors) != card.get("weights_sha256"):
        raise ValueError(
            f"cannot load model {str(source)!r}: its weights do not match the SHA-256 in its model card; "
            "the file was modified or damaged after saving; use the original file"
        )
    try:
        model = _ARCHITECTURES[name](**card.get("arguments", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its card's arguments do not build a {name} ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"cannot load model {str(source)!r}: its weights do not fit a {name}({card.get('arguments')}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    model.load_state_dict(tensors)
    model.eval()
    model.card = card  # type: ignore[assignment]
    return model
