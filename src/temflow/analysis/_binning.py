"""Binning frames for the classical recipe, and masks back to the movie's own pixels.

``threshold_particles(..., bin_px=2)`` segments the mean of every 2 x 2 block of pixels: a
quarter of the work, the particles' outline at the binned pixel. The frames are binned whole
(a block never straddles two tasks), so every chunking of the movie gives the same masks; the
last rows and columns that do not fill a block are binned over the pixels they have.
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from temflow.analysis._filters import _bounded_time_chunks
from temflow.movie import DIMS, TIME, pixel_size_nm

def _bin_frames(frames: np.ndarray, bin_px: int) -> np.ndarray:
    """The mean of every ``bin_px`` x ``bin_px`` block of each frame, over its recorded (finite) pixels.

    One formula whatever the block holds (NaN borders, a partial block at the far edges), so a
    frame is binned to the same numbers in any task; a block with no finite pixel is NaN. The
    blocks' sums are taken in float64, one strided view of the frames per pixel of a block
    (contiguous passes: a twentieth of the time of a reduction over reshaped axes).
    """
    values = np.asarray(frames, dtype=np.float32)
    nt, ny, nx = values.shape
    pad_y, pad_x = (-ny) % bin_px, (-nx) % bin_px
    valid: np.ndarray | None = None
    if not np.isfinite(values).all():
        valid = np.isfinite(values)
        values = np.where(valid, values, np.float32(0.0))
    if pad_y or pad_x:
        values = np.pad(values, ((0, 0), (0, pad_y), (0, pad_x)))
        valid = np.pad(np.ones((nt, ny, nx), dtype=bool) if valid is None else valid, ((0, 0), (0, pad_y), (0, pad_x)))
    shape = (nt, (ny + pad_y) // bin_px, (nx + pad_x) // bin_px)
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.int32)
    for dy in range(bin_px):
        for dx in range(bin_px):
            total += values[:, dy::bin_px, dx::bin_px]
            if valid is not None:
                count += valid[:, dy::bin_px, dx::bin_px]
    if valid is None:  # every block full and finite
        return (total / (bin_px * bin_px)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def binned(movie: xr.DataArray, bin_px: int) -> xr.DataArray:
    """``movie`` binned ``bin_px`` x ``bin_px``: float32 block means, coordinates at the blocks' centres (nm)."""
    nt, ny, nx = (movie.sizes[d] for d in DIMS)
    dy, dx = pixel_size_nm(movie)
    out_y, out_x = math.ceil(ny / bin_px), math.ceil(nx / bin_px)
    data = movie.data
    if isinstance(data, da.Array):
        whole = _bounded_time_chunks(data).rechunk({1: -1, 2: -1})
        small = whole.map_blocks(_bin_frames, bin_px, chunks=(whole.chunks[0], (out_y,), (out_x,)), dtype=np.float32,
                                 meta=np.array((), np.float32))
    else:
        small = _bin_frames(np.asarray(data), bin_px)
    centre = (bin_px - 1) / 2.0
    coords: dict[str, Any] = {TIME: movie[TIME]} if TIME in movie.coords else {}
    y0 = float(movie["y"].values[0]) if "y" in movie.coords else 0.0
    x0 = float(movie["x"].values[0]) if "x" in movie.coords else 0.0
    coords["y"] = y0 + (np.arange(out_y) * bin_px + centre) * dy
    coords["x"] = x0 + (np.arange(out_x) * bin_px + centre) * dx
    attrs = {**movie.attrs, "pixel_size_nm": [dy * bin_px, dx * bin_px]}
    return xr.DataArray(small, dims=DIMS, coords=coords, attrs=attrs, name=movie.name)


def unbinned(mask: xr.DataArray, bin_px: int, movie: xr.DataArray) -> xr.DataArray:
    """Masks of the binned frames on ``movie``'s pixels: each block takes its binned pixel's value."""
    ny, nx = movie.sizes["y"], movie.sizes["x"]

    def spread(block: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.asarray(block), bin_px, axis=1), bin_px, axis=2)[:, :ny, :nx]

    data = mask.data
    if isinstance(data, da.Array):
        whole = data.rechunk({1: -1, 2: -1})
        full = whole.map_blocks(spread, chunks=(whole.chunks[0], (ny,), (nx,)), dtype=bool, meta=np.array((), bool))
        if isinstance(movie.data, da.Array):
            full = full.rechunk(movie.data.chunks)
    else:
        full = spread(np.asarray(data))
    return xr.DataArray(full, dims=DIMS, coords=movie.coords, attrs=dict(mask.attrs), name=mask.name)
