"""The classical recipe's lengths taken from the sample: the typical particle radius, in pixels."""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from temflow.analysis._recorded_area import _border_level_of, _recorded
from temflow.movie import TIME

_PX_DECIMALS = 6  # lengths in px are rounded to a micro-pixel: 0.27 nm / 0.18 nm is 1.5 px, not 1.5000000000000002


def _to_px(value_nm: float, pixel_nm: float) -> float:
    return round(value_nm / pixel_nm, _PX_DECIMALS)


# settings derived from the typical particle radius r (px) when not given; chosen on the real
# bright-field and HAADF images of benchmarks/bench_real_segmentation.py (docs/benchmarks.md)
_FROM_RADIUS = {"sigma": 0.125, "background": 4.0, "opening": 0.125, "min_radius": 0.3, "max_radius": 6.0}
# bright (HAADF) particles are smoothed twice as much: scanned images carry pixel noise and
# JPEG-like grain that r/8 leaves as specks the size of small particles (PtC3: F1 0.36 at r/8,
# 0.76 at r/4); bright-field masks, scored on their outline, keep r/8
_SIGMA_BRIGHT = 0.25
# the fixed defaults when the sample shows no blob to take a scale from
_FALLBACK_PX = {"sigma": 1.5, "background": 32.0, "opening": 2.0}
_ESTIMATE_FRAMES = 3
_PROFILE_BRIGHT = 2.0


def _sample_settings(radius_px: float | None, bright: bool = False) -> dict[str, float]:
    """Smoothing, background, opening (px) and area bounds (px^2) from the typical radius."""
    if radius_px is None:
        return {**_FALLBACK_PX, "min_area": 0.0, "max_radius": math.inf}
    r = float(radius_px)
    return {
        "sigma": round(max(1.0, (_SIGMA_BRIGHT if bright else _FROM_RADIUS["sigma"]) * r), 3),
        "background": round(max(16.0, _FROM_RADIUS["background"] * r), 3),
        "opening": round(_FROM_RADIUS["opening"] * r, 3),
        "min_area": round(math.pi * (_FROM_RADIUS["min_radius"] * r) ** 2, 3),
        "max_radius": round(_FROM_RADIUS["max_radius"] * r, 3),
    }


def _estimate_from_movie(movie: xr.DataArray, sample: np.ndarray, border_value: float | None) -> dict[str, Any]:
    """Computes a few sampled frames and estimates the particles' polarity and radius from them."""
    from temflow.analysis._scale import estimate_particles

    picked = sample[np.unique(np.linspace(0, len(sample) - 1, min(_ESTIMATE_FRAMES, len(sample))).round().astype(int))]
    frames = movie.isel({TIME: picked}).data
    frames = np.asarray(frames.compute() if isinstance(frames, da.Array) else frames, dtype=np.float32)
    border = _border_level_of(frames) if border_value is None else np.float32(border_value)
    found = estimate_particles(frames, recorded=_recorded(frames, border))
    found["frames"] = [int(f) for f in picked]
    return found
