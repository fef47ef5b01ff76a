"""The filters of the classical recipe, lifted onto dask movies with the halo their reach needs.

Gaussian and repeated-box blurs (and their reach in pixels), the normalised convolution that
keeps black borders out of local means, the opening, and the two ways a per-frame step is
mapped over a dask movie: with a halo (``_map_frames``) or on whole frames (``_whole_frames``).
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

_TRUNCATE = 4.0  # Gaussian kernels are cut at 4 sigma, as scipy.ndimage does by default


def _gaussian_radius(sigma_px: float, truncate: float = _TRUNCATE) -> int:
    """Reach of scipy's truncated Gaussian kernel, pixels (dask-image's rule)."""
    return int(truncate * float(sigma_px) + 0.5) if sigma_px > 0 else 0


_BOXES = 3  # three box passes approximate a Gaussian to a few per cent (Wells 1986)


def _box_width(sigma_px: float) -> int:
    """Odd width of the box whose ``_BOXES``-fold repetition has standard deviation ``sigma_px``."""
    width = int(round(math.sqrt(12.0 * sigma_px**2 / _BOXES + 1.0)))
    return width if width % 2 else width + 1


def _box_radius(sigma_px: float) -> int:
    """Reach of the repeated box filter, pixels."""
    return _BOXES * (_box_width(sigma_px) // 2) if sigma_px > 0 else 0


def _blur(values: np.ndarray, sigma_px: float, box: bool) -> np.ndarray:
    """Per-frame Gaussian blur; ``box`` repeats a running-mean box instead (cost independent of sigma).

    Separable: ``y`` first, then ``x``, each along contiguous rows. A filter along ``y``
    of a C-ordered frame walks memory with a stride of a whole row, two to three times
    slower than along ``x``; the frames are transposed for it instead (a copy is cheaper
    than the strided passes), and every line gets the same arithmetic either way, so
    the pixels are the same as :func:`scipy.ndimage.gaussian_filter`'s.
    """
    if sigma_px <= 0:
        return values
    width = _box_width(sigma_px) if box else 0

    def along_x(frames: np.ndarray) -> np.ndarray:
        if not box:
            return ndi.gaussian_filter1d(frames, sigma_px, axis=2, mode="nearest", truncate=_TRUNCATE)
        for _ in range(_BOXES):
            frames = ndi.uniform_filter1d(frames, width, axis=2, mode="nearest")
        return frames

    transposed = np.ascontiguousarray(np.asarray(values).transpose(0, 2, 1))
    return along_x(np.ascontiguousarray(along_x(transposed).transpose(0, 2, 1)))


def _normalised_gaussian(values: np.ndarray, weight: np.ndarray, sigma_px: float, *, box: bool = False) -> np.ndarray:
    """Gaussian mean of ``values`` over the pixels where ``weight`` is 1.

    Normalised convolution: black borders do not drag the local mean down, so
    the background next to a border is the support's, not a dark ramp that
    Otsu would call a particle. The wide background blur uses repeated boxes
    (``box=True``) in float64, so that the running sums give the same pixels
    whatever the chunk origin.
    """
    if sigma_px <= 0:
        return values
    dtype = np.float64 if box else np.float32
    num = _blur((values * weight).astype(dtype), sigma_px, box)
    if np.all(weight == 1):
        # no pixel left out: the weights' blur is the same constant everywhere (whatever the
        # frame's size, chunk or origin), so one pixel of it is enough; it halves the work of
        # frames without borders or regions, and gives the same pixels
        den = _blur(np.ones((1, 1, 1), dtype=dtype), sigma_px, box)
    else:
        den = _blur(weight.astype(dtype), sigma_px, box)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


def _map_frames(func, arrays: list[da.Array], reach_px: int, dtype: type, **kwargs) -> da.Array:
    """Apply a per-frame filter to dask movies with a halo of ``reach_px`` pixels.

    A spatial axis whose chunks are narrower than the halo is rechunked to
    whole frames first (explicitly, rather than dask's silent rechunk), and an
    axis in one chunk needs no halo. ``boundary="none"`` leaves the true frame
    edges to the filter itself, so every chunking gives the same pixels as a
    whole frame.
    """
    data = arrays[0]
    depth = {0: 0}
    for axis in (1, 2):
        if len(data.chunks[axis]) == 1 or min(data.chunks[axis]) <= reach_px:
            data = data.rechunk({axis: -1})
            depth[axis] = 0
        else:
            depth[axis] = reach_px
    arrays = [data] + [a.rechunk(data.chunks) for a in arrays[1:]]
    return da.map_overlap(func, *arrays, depth=depth, boundary="none", dtype=dtype, meta=np.array((), dtype), **kwargs)


def _disk(radius_px: int) -> np.ndarray:
    r = int(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= r * r + 0.5  # noqa: PLR2004 (half a pixel: a round digital disk)


def _open(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary opening per frame with a disk; removes specks smaller than the disk."""
    if radius_px <= 0:
        return mask
    footprint = _disk(radius_px)[None]
    # border_value=1 in the erosion: particles cut by the frame edge keep their edge
    eroded = ndi.binary_erosion(mask, structure=footprint, border_value=1)
    return ndi.binary_dilation(eroded, structure=footprint) & mask


def _whole_frames(func, mask: Any, *others: Any, **kwargs) -> Any:
    """Apply a per-frame labelling step on whole frames (a component can span chunks), keep the chunks."""
    if not isinstance(mask, da.Array):
        return func(np.asarray(mask), *others, **kwargs)
    whole = [a.rechunk({1: -1, 2: -1}) for a in (mask, *others)]
    return da.map_blocks(func, *whole, dtype=bool, meta=np.array((), bool), **kwargs).rechunk(mask.chunks)
