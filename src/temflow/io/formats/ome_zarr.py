"""OME-Zarr images written by other tools (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3).

The first (full-resolution) dataset of the first multiscale is read lazily with
``dask.array.from_zarr``. Axes are found by their NGFF ``type``: one optional
``time`` axis and the last two ``space`` axes become ``(time, y, x)``; any other
axis (channel, z) must have length 1. The dataset's ``scale`` transformation,
times the multiscale's own one, gives the pixel size and the frame interval in
the axes' units (``nanometer``, ``micrometer``, ``second``, ..., read by
:func:`temflow.movie.length_to_nm` and :func:`temflow.movie.time_to_s`). A space axis
without a unit is uncalibrated; :func:`temflow.open_movie` then warns and
uses pixels. temflow's own stores are read by :mod:`temflow.io.store` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from temflow.io.formats._common import RawMovie, fail, frames_per_chunk
from temflow.movie import length_to_nm, time_to_s

__all__ = ["is_ome_zarr", "read_ome_zarr"]

_FMT = "ome-zarr"

def _attributes(path: Path) -> dict[str, Any] | None:
    """The group's OME attributes (the ``ome`` key in 0.5, the top level in 0.4), or None."""
    for name in ("zarr.json", ".zattrs"):
        try:
            meta = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = meta.get("attributes", {}) if name == "zarr.json" else meta
        ome = attrs.get("ome", attrs)
        if isinstance(ome, dict) and "multiscales" in ome:
            return ome
    return None


def is_ome_zarr(path: Path) -> bool:
    """True if ``path`` is a zarr group with OME-Zarr multiscales metadata."""
    return path.is_dir() and _attributes(path) is not None


def _scale(transforms: Any, ndim: int) -> np.ndarray:
    scale = np.ones(ndim)
    for transform in transforms or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            scale = scale * np.asarray(transform.get("scale", [1.0] * ndim), dtype=float)
    return scale


def read_ome_zarr(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open an OME-Zarr image lazily as a movie's frames and calibrations.

    Lazy: reads metadata only; each dask task reads its zarr chunks by path.

    Parameters
    ----------
    path : pathlib.Path
        The image group (the folder whose metadata holds ``multiscales``).
    chunks : int, tuple or mapping, optional
        As for :func:`temflow.open_movie` (only the time chunking is used).

    Returns
    -------
    RawMovie
        Frames ``(time, y, x)`` and the calibrations found.

    Raises
    ------
    MovieFileError
        If the metadata is not an image's, an axis other than time, y and x
        has more than one element, or the array is missing.
    """
    ome = _attributes(path)
    if ome is None:
        raise fail(path, _FMT, "no OME-Zarr multiscales metadata", "open temflow stores with temflow.open_zarr")
    try:
        multiscale = ome["multiscales"][0]
        axes = [dict(a) if isinstance(a, dict) else {"name": str(a)} for a in multiscale["axes"]]
        dataset = multiscale["datasets"][0]
        array = zarr.open_array(store=str(path), path=str(dataset["path"]), mode="r")
    except (KeyError, IndexError, TypeError, ValueError, OSError, zarr.errors.BaseZarrError) as exc:
        raise fail(path, _FMT, f"the OME-Zarr metadata or its first dataset is unreadable ({type(exc).__name__}: {exc})",
                   "check it with ome-zarr-models (ome-zarr-models validate PATH)") from None
    if len(axes) != array.ndim:
        raise fail(path, _FMT, f"the metadata lists {len(axes)} axes but the array has {array.ndim} dimensions")
    # NGFF 0.4 axes may be bare names; the conventional names then say the type
    for axis in axes:
        axis.setdefault("type", {"t": "time", "c": "channel"}.get(axis["name"], "space"))
    names = [a["name"] for a in axes]
    time_axes = [i for i, a in enumerate(axes) if a["type"] == "time"]
    space_axes = [i for i, a in enumerate(axes) if a["type"] == "space"]
    if len(space_axes) < 2 or len(time_axes) > 1:
        raise fail(path, _FMT, f"axes {names}: a movie needs two space axes (y, x) and at most one time axis")
    y_axis, x_axis = space_axes[-2:]
    keep = time_axes + [y_axis, x_axis]
    for i in range(array.ndim):
        if i not in keep and array.shape[i] != 1:
            raise fail(path, _FMT, f"axis {names[i]!r} has {array.shape[i]} elements; temflow reads one time series "
                       "of 2-D frames", f"write one {names[i]!r} plane per store")
    data = da.from_zarr(array)
    data = data[tuple(slice(None) if i in keep else 0 for i in range(array.ndim))]
    if not time_axes:
        data = data[None]
    scale = _scale(dataset.get("coordinateTransformations"), array.ndim) * _scale(
        multiscale.get("coordinateTransformations"), array.ndim
    )
    notes: list[str] = []
    pixel: list[float] = []
    for i in (y_axis, x_axis):
        unit = axes[i].get("unit")
        size_nm = length_to_nm(float(scale[i]), unit) if isinstance(unit, str) else None
        if size_nm is not None:
            pixel.append(size_nm)
        elif unit is not None:
            notes.append(f"axis {names[i]!r} has unit {unit!r}, not a length temflow converts to nm")
    interval = None
    if time_axes:
        unit = axes[time_axes[0]].get("unit")
        interval = time_to_s(float(scale[time_axes[0]]), unit) if isinstance(unit, str) else None
    if chunks is not None:
        per = frames_per_chunk(chunks, data.shape[0], data.shape[1:], data.dtype)
        data = data.rechunk({0: per})
    return RawMovie(
        data=data,
        format=_FMT,
        sources=[str(path)],
        pixel_size_nm=(pixel[0], pixel[1]) if len(pixel) == 2 and min(pixel) > 0 else None,
        frame_interval_s=interval if interval and interval > 0 else None,
        metadata={"ome": {"version": ome.get("version", multiscale.get("version")), "axes": axes,
                          "name": multiscale.get("name")}},
        notes=notes,
    )
