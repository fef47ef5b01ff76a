"""Tiled prediction without seams: tile origins, blend weights, the batched forward pass.

Tiles start at multiples of the network's ``size_multiple`` on the canvas (the
frame padded as a whole-frame prediction pads it); each tile's output is
weighted by a separable profile that is zero within the halo of every inner
tile side and rises with a raised-cosine taper, so that the blend equals the
whole-frame prediction (see the notes of :mod:`temflow.segmentation.inference`). Torch is
imported only when frames are predicted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from temflow.segmentation._plan import _Plan


def _taper_px(halo: int, size_multiple: int) -> int:
    return max(size_multiple, halo // 2)


def _tile_origins(canvas: int, tile: int, halo: int, taper: int, size_multiple: int) -> list[int]:
    """Tile starts along one axis: multiples of ``size_multiple``, the last flush with the canvas."""
    if tile >= canvas:
        return [0]
    stride = (tile - 2 * halo - taper) // size_multiple * size_multiple
    origins = list(range(0, canvas - tile, stride))
    origins.append(canvas - tile)
    return origins


def _axis_weight(origin: int, tile: int, canvas: int, halo: int, taper: int) -> np.ndarray:
    """Blend weight along one axis of one tile: 0 in the halo of inner sides, raised-cosine taper, then 1."""
    weight = np.ones(tile, dtype=np.float32)
    ramp = np.sin(0.5 * np.pi * (np.arange(taper, dtype=np.float64) + 0.5) / taper) ** 2 if taper else np.ones(0)
    # only sides inside the canvas see cut-off input; a side on the canvas edge sees what a whole frame sees
    if origin > 0:
        weight[:halo] = 0
        weight[halo : halo + taper] = ramp
    if origin + tile < canvas:
        weight[tile - halo :] = 0
        weight[tile - halo - taper : tile - halo] = np.minimum(weight[tile - halo - taper : tile - halo], ramp[::-1])
    return weight


def _axis_sum(weights: dict[int, np.ndarray], tile: int, canvas: int) -> np.ndarray:
    total = np.zeros(canvas, dtype=np.float32)
    for origin, weight in weights.items():
        total[origin : origin + tile] += weight
    return total


def _autocast_dtype(precision: str, device: str) -> Any:
    import torch

    if precision == "auto":
        if not device.startswith("cuda"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def _predict_frames(frames: np.ndarray, model: nn.Module, plan: _Plan, device: str) -> np.ndarray:
    """Predict normalised ``(n, H, W)`` float32 frames tile by tile; returns ``(n, H, W)`` float32."""
    import torch

    n, height, width = frames.shape
    m = plan.size_multiple
    canvas_h, canvas_w = -(-height // m) * m, -(-width // m) * m
    if (canvas_h, canvas_w) != (height, width):
        # the same padding a whole-frame prediction gets, so that tiles see the same canvas
        frames = np.pad(frames, ((0, 0), (0, canvas_h - height), (0, canvas_w - width)), mode="symmetric")
    tile_h = canvas_h if plan.tile is None else min(plan.tile, canvas_h)
    tile_w = canvas_w if plan.tile is None else min(plan.tile, canvas_w)
    rows = _tile_origins(canvas_h, tile_h, plan.halo, plan.taper, m)
    cols = _tile_origins(canvas_w, tile_w, plan.halo, plan.taper, m)
    single = len(rows) == 1 and len(cols) == 1
    out = np.zeros((n, canvas_h, canvas_w), dtype=np.float32)
    # separable weights: one vector per tile row and column, outer products made when used
    row_weights = {oy: _axis_weight(oy, tile_h, canvas_h, plan.halo, plan.taper) for oy in rows}
    col_weights = {ox: _axis_weight(ox, tile_w, canvas_w, plan.halo, plan.taper) for ox in cols}
    weight_sum = np.outer(
        _axis_sum(row_weights, tile_h, canvas_h),
        _axis_sum(col_weights, tile_w, canvas_w),
    )
    jobs = [(f, oy, ox) for f in range(n) for oy in rows for ox in cols]
    autocast = _autocast_dtype(plan.precision, device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    batch = torch.empty((min(plan.batch_size, len(jobs)), 1, tile_h, tile_w), dtype=torch.float32)
    if device_type == "cuda":
        batch = batch.pin_memory()
    with torch.inference_mode():
        for start in range(0, len(jobs), plan.batch_size):
            chunk = jobs[start : start + plan.batch_size]
            for i, (f, oy, ox) in enumerate(chunk):
                batch[i, 0] = torch.from_numpy(frames[f, oy : oy + tile_h, ox : ox + tile_w])
            inputs = batch[: len(chunk)].to(device, non_blocking=True)
            with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                result = model(inputs)
            result = result.float()
            if plan.output_kind == "probability_logits":
                result = torch.sigmoid(result)
            result = result[:, 0].cpu().numpy()
            for i, (f, oy, ox) in enumerate(chunk):
                if single:
                    out[f] = result[i]
                else:
                    out[f, oy : oy + tile_h, ox : ox + tile_w] += result[i] * np.outer(row_weights[oy], col_weights[ox])
    if not single:
        out /= weight_sum
    return out[:, :height, :width]


def _n_tiles(frame: tuple[int, int], tile: int | None, halo: int, size_multiple: int) -> int:
    """Tiles per frame (for benchmarks and docs)."""
    taper = _taper_px(halo, size_multiple)
    counts = []
    for side in frame:
        canvas = math.ceil(side / size_multiple) * size_multiple
        size = canvas if tile is None else min(tile, canvas)
        counts.append(len(_tile_origins(canvas, size, halo, taper, size_multiple)))
    return counts[0] * counts[1]
