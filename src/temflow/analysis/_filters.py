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
    (``box=True``). Both blurs are stored in float32: scipy keeps every line's
    running sum in double precision and rounds only the stored pass, so float64
    storage (twice the memory traffic, 2-3 times the time) changed no mask
    pixel on any of the synthetic movies compared (bright field and HAADF, with
    regions and drift borders, 0.25-1 nm/px, chunked or not).
    """
    if sigma_px <= 0:
        return values
    dtype = np.float32
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


# Pixels per task. The recipe's temporaries (box sums, two float32 darkness passes,
# masks, the halo copies) came to ~56 bytes per pixel with float64 box sums (an upper
# bound now that they are float32), 28 times the uint16 input: a task of the readers'
# default chunk (32-64 MiB of frames, up to 2048 frames of 128^2) needed 1.8 GB, and
# the chunk grows with the movie up to that size. Tasks of 2^21 pixels (128 frames of
# 128^2, 2 of 1024^2) need ~120 MB, whatever the length.
_TASK_PIXELS = 2**21


def _bounded_time_chunks(data: da.Array) -> da.Array:
    """``data`` rechunked along time so that no task holds more than ``_TASK_PIXELS`` pixels.

    Whole frames count (``_map_frames`` may merge the spatial chunks); a frame
    larger than the budget is one frame per task.
    """
    per = max(1, _TASK_PIXELS // max(int(data.shape[1]) * int(data.shape[2]), 1))
    return data if max(data.chunks[0], default=0) <= per else data.rechunk({0: per})


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


def _grown_by_one(mask: np.ndarray) -> np.ndarray:
    """One frame's ``mask`` dilated by the 3 x 3 square (its 8-neighbours), by shifted ORs.

    The same pixels as :func:`scipy.ndimage.binary_dilation` with a 3 x 3 structure.
    """
    grown = np.array(mask, dtype=bool)
    grown[1:] |= grown[:-1].copy()
    grown[:-1] |= grown[1:].copy()
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def _disk_rectangles(radius_px: int) -> list[tuple[int, int]]:
    """Half-height and half-width of the fewest centred rectangles whose union is ``_disk(radius_px)``.

    The disk's half-width shrinks row by row away from its centre, so it is the
    union of one rectangle per distinct half-width: as tall as the rows that
    reach that wide.
    """
    disk = _disk(radius_px)
    r = int(radius_px)
    half_widths = [int(np.count_nonzero(disk[r + dy])) // 2 for dy in range(r + 1)]
    return [(dy, w) for dy, w in enumerate(half_widths) if dy == r or half_widths[dy + 1] < w]


def _window(values: np.ndarray, half: int, axis: int, *, erode: bool, border_value: bool) -> np.ndarray:
    """Running OR (``erode``: AND) of boolean ``values`` over ``2 half + 1`` pixels along ``axis``.

    By doubling: the window of ``2 w`` pixels is that of ``w`` pixels OR-ed with
    itself ``w`` pixels on, so a window of ``L`` pixels takes ``log2(L)`` whole-array
    operations; pixels outside the frame count as ``border_value``.
    """
    if half <= 0:
        return values
    combine = np.logical_and if erode else np.logical_or
    pad = [(0, 0)] * values.ndim
    pad[axis] = (half, half)
    acc = np.pad(values, pad, constant_values=border_value)
    length, width = 2 * half + 1, 1

    def cut(start: int, stop: int | None) -> tuple[slice, ...]:
        index = [slice(None)] * values.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    while 2 * width <= length:
        acc = combine(acc[cut(0, -width)], acc[cut(width, None)])
        width *= 2
    n = values.shape[axis]
    # the window [j, j + length - 1] is the union of [j, j + width - 1] and its last width pixels
    return combine(acc[cut(0, n)], acc[cut(length - width, length - width + n)])


def _morph_disk(mask: np.ndarray, radius_px: int, *, erode: bool, border_value: bool = False) -> np.ndarray:
    """Binary dilation (or erosion) of every frame by ``_disk(radius_px)``; ``border_value`` outside.

    The same pixels as :func:`scipy.ndimage.binary_dilation` (``binary_erosion``)
    with the disk as structure, at a fraction of the cost: the disk is a union of
    rectangles (:func:`_disk_rectangles`), a dilation by a union is the union of
    the dilations (an erosion, the intersection of the erosions), and a rectangle
    is two running windows, along ``y`` and ``x`` (:func:`_window`).
    """
    values = np.asarray(mask, dtype=bool)
    y_axis, x_axis = values.ndim - 2, values.ndim - 1
    out: np.ndarray | None = None
    for half_height, half_width in _disk_rectangles(radius_px):
        part = _window(values, half_height, y_axis, erode=erode, border_value=border_value)
        part = _window(part, half_width, x_axis, erode=erode, border_value=border_value)
        out = np.array(part, copy=True) if out is None else (out & part if erode else out | part)
    if out is None:  # pragma: no cover (a disk holds at least its centre)
        raise ValueError(f"radius_px must be >= 0; got {radius_px}")
    return out


def _open(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary opening per frame with a disk; removes specks smaller than the disk."""
    if radius_px <= 0:
        return mask
    # border_value=1 in the erosion: particles cut by the frame edge keep their edge
    eroded = _morph_disk(mask, radius_px, erode=True, border_value=True)
    return _morph_disk(eroded, radius_px, erode=False) & np.asarray(mask, dtype=bool)


def _whole_frames(func, mask: Any, *others: Any, **kwargs) -> Any:
    """Apply a per-frame labelling step on whole frames (a component can span chunks), keep the chunks."""
    if not isinstance(mask, da.Array):
        return func(np.asarray(mask), *others, **kwargs)
    whole = [a.rechunk({1: -1, 2: -1}) for a in (mask, *others)]
    return da.map_blocks(func, *whole, dtype=bool, meta=np.array((), bool), **kwargs).rechunk(mask.chunks)
