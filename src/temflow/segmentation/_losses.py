"""Losses and the validation IoU of :func:`temflow.segmentation.training.train`.

Per-sample losses (BCE + Dice against the masks for a UNet, mean squared error
against the frame without the added noise for an Autoencoder), and the Otsu
threshold and IoU of a reconstruction from histograms that add up across ranks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_HISTOGRAM_RANGE = (-0.5, 1.5)
_HISTOGRAM_BINS = 512


def dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of each sample, ``1 - (2 |P M| + 1) / (|P| + |M| + 1)``, shape ``(N,)``.

    Examples
    --------
    >>> import torch
    >>> masks = torch.zeros(1, 1, 4, 4); masks[..., :2, :] = 1
    >>> float(dice_loss(torch.where(masks > 0, 20.0, -20.0), masks)) < 1e-6
    True
    """
    p = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    overlap = (p * masks).sum(dims)
    return 1.0 - (2.0 * overlap + 1.0) / (p.sum(dims) + masks.sum(dims) + 1.0)


def _sample_losses(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses ``(N,)`` and the model output."""
    output = model(batch["image"])
    if model.output_kind == "reconstruction":
        return ((output - batch["clean"]) ** 2).mean(dim=(1, 2, 3)), output
    masks = batch["mask"]
    bce = F.binary_cross_entropy_with_logits(output, masks, reduction="none").mean(dim=(1, 2, 3))
    return bce + dice_loss(output, masks), output


def iou_from_histograms(particle: np.ndarray, background: np.ndarray) -> tuple[float, float]:
    """Otsu threshold of a dark-particle image and the IoU it gives, from histograms.

    ``particle`` and ``background`` count the output values of mask and
    non-mask pixels in the bins of ``_HISTOGRAM_RANGE``; pixels below the
    threshold are called particles. Histograms add up across ranks, so this
    is exact in data-parallel validation.

    Returns
    -------
    (float, float)
        Threshold (output units) and IoU.
    """
    total = particle + background
    edges = np.linspace(*_HISTOGRAM_RANGE, _HISTOGRAM_BINS + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight_low = np.cumsum(total)[:-1]
    weight_high = total.sum() - weight_low
    mean_low = np.cumsum(total * centres)[:-1] / np.maximum(weight_low, 1)
    mean_high = (np.sum(total * centres) - np.cumsum(total * centres)[:-1]) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    cut = int(np.argmax(between))  # particles: bins 0..cut
    inter = float(particle[: cut + 1].sum())
    union = float(particle.sum() + total[: cut + 1].sum() - inter)
    return float(edges[cut + 1]), inter / union if union else 1.0
