"""Where the camera recorded: black drift borders (zeros plus read noise, or NaN) are never particles.

The border level is a twentieth of the frames' typical intensity, taken from sampled frames so
that blank frames do not lower it; a pixel is recorded when its 3 x 3 median is above it.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from temflow.analysis._filters import _grown_by_one

_BORDER_FRACTION = 0.05  # black borders read below a twentieth of the support's typical intensity


def _median3(block: np.ndarray) -> np.ndarray:
    """3 x 3 median per frame: read noise and hot pixels do not decide what is recorded."""
    return ndi.median_filter(np.asarray(block, dtype=np.float32), size=(1, 3, 3), mode="nearest")


def _median3_near(frame: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """One frame's 3 x 3 median within a pixel of a ``dark`` pixel; +inf elsewhere.

    Away from dark pixels all nine values are above the border level, and so is
    their median: only the pixels next to one need it. There it is the fifth of
    the nine values (edges repeated, as ``mode="nearest"``), the same number as
    :func:`_median3` gives for finite values; a frame holding NaN (which the
    filter's own selection orders its own way) takes the filter itself.
    """
    frame = np.asarray(frame, dtype=np.float32)
    if not np.isfinite(frame).all():
        return _median3(frame[None])[0]
    near = _grown_by_one(dark)
    out = np.full(frame.shape, np.inf, dtype=np.float32)
    ys, xs = np.nonzero(near)
    if len(ys) == 0:
        return out
    ny, nx = frame.shape
    nine = np.empty((len(ys), 9), dtype=np.float32)
    for i, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        nine[:, i] = frame[np.clip(ys + dy, 0, ny - 1), np.clip(xs + dx, 0, nx - 1)]
    out[ys, xs] = np.partition(nine, 4, axis=1)[:, 4]
    return out


def _median_where_dark(block: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """3 x 3 median next to the dark pixels (:func:`_median3_near`); +inf (recorded) elsewhere."""
    out = np.full(block.shape, np.inf, dtype=np.float32)
    dark = np.asarray(dark, dtype=bool)
    for k in np.flatnonzero(dark.reshape(len(block), -1).any(axis=1)):
        out[k] = _median3_near(block[k], dark[k])
    return out


def _integer_median(frame: np.ndarray) -> np.float32:
    """Median of a frame of 8- or 16-bit unsigned counts, from their histogram.

    The same number as :func:`numpy.median` of the frame as float32 (the middle
    count, or the float32 mean of the two middle ones, exact below 2^23), without
    partitioning a copy of the frame: a 1024^2 frame's median in a few ms instead of ~20.
    """
    cumulative = np.cumsum(np.bincount(frame.ravel()))
    n = int(cumulative[-1])
    # the k-th smallest value (from 0) is the first whose cumulative count exceeds k
    low, high = np.searchsorted(cumulative, [(n - 1) // 2, n // 2], side="right")
    return np.float32((np.float32(low) + np.float32(high)) / np.float32(2.0))


def _frame_medians(block: np.ndarray) -> np.ndarray:
    """Median intensity of each frame (NaN ignored), float32."""
    block = np.asarray(block)
    if block.dtype.kind == "u" and block.dtype.itemsize <= 2 and block[0].size:  # noqa: PLR2004 (16-bit counts)
        return np.array([_integer_median(frame) for frame in block], dtype=np.float32)
    return np.nanmedian(block.reshape(len(block), -1).astype(np.float32), axis=1)


def _fraction_of_median(medians: np.ndarray) -> np.float32:
    return np.float32(_BORDER_FRACTION * np.nanmedian(medians)) if len(medians) else np.float32(0.0)


def _border_level_of(frames: np.ndarray) -> np.float32:
    """A twentieth of the median of the frames' per-frame medians (robust to blank frames)."""
    return _fraction_of_median(_frame_medians(frames))


def border_level(data: Any, sample: np.ndarray) -> Any:
    """Intensity at or below which a pixel's 3 x 3 median is outside the recorded area.

    A twentieth of the typical intensity of the frames at indices ``sample``
    (the median of their medians, so blank frames do not lower it). A dask
    scalar for a dask movie (nothing computed), a numpy scalar otherwise.
    """
    if not isinstance(data, da.Array):
        return _border_level_of(np.asarray(data)[sample])
    medians = data[sample].rechunk({1: -1, 2: -1}).map_blocks(_frame_medians, drop_axis=[1, 2], dtype=np.float32)
    return medians.rechunk(-1).map_blocks(_fraction_of_median, drop_axis=0, dtype=np.float32)


def _recorded(block: np.ndarray, level: Any) -> np.ndarray:
    """Pixels inside the recorded area: the 3 x 3 median is above ``level`` (NaN is outside).

    Bright-field particles absorb well under 95 % of the beam, so a twentieth of
    the support's intensity separates black borders (zeros plus read noise)
    from anything recorded, particles included.
    """
    block = np.asarray(block, dtype=np.float32)
    # the median filter is the costly part: only frames with dark pixels need it
    dark = ~(block > level)
    recorded = np.ones(block.shape, dtype=bool)
    for k in np.flatnonzero(dark.reshape(len(block), -1).any(axis=1)):
        recorded[k] = _median3_near(block[k], dark[k]) > (level[k] if np.ndim(level) == 3 else level)
    # a NaN pixel is never recorded, whatever the median of its neighbourhood says: one
    # let into the filters below would spread NaN over the whole background window
    return recorded & np.isfinite(block)
