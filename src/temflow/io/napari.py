"""The napari bridge: a movie, its masks or labels and its tracks as napari layers.

napari is not imported: :func:`napari_layers` returns napari's *layer data
tuples* ``(data, keyword arguments, layer type)``, the form napari's readers
return, so that ``viewer.add_<type>(data, **kwargs)`` (or
``viewer._add_layer_from_data(*layer)``) shows them. Every layer is placed in
the movie's physical coordinates (``scale`` and ``translate`` in s and nm), so
the masks sit on the particles and the tracks follow them, and the dask-backed
movie stays lazy: napari reads the frames it shows. Stores written by
:func:`temflow.save_zarr` with masks in their NGFF ``labels/`` group
(:func:`temflow.io.save_labels`) open in napari directly with the
``napari-ome-zarr`` plugin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from temflow.movie import DIMS, check_movie, check_table

__all__ = ["napari_layers"]


def _placement(movie: xr.DataArray) -> dict[str, tuple[float, ...]]:
    scale, translate = [], []
    for dim in DIMS:
        values = np.asarray(movie[dim].values, dtype=float) if dim in movie.coords else np.arange(movie.sizes[dim], dtype=float)
        # napari's grid is regular: irregular frame times are shown at their median step
        scale.append(float(np.median(np.diff(values))) if values.size > 1 else 1.0)
        translate.append(float(values[0]) if values.size else 0.0)
    return {"scale": tuple(scale), "translate": tuple(translate)}


def napari_layers(
    movie: xr.DataArray,
    *,
    masks: xr.DataArray | None = None,
    tracks: pd.DataFrame | None = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """napari layer data tuples for a movie, its masks or labels and its tracks.

    Lazy: the image and labels layers hold the movie's and the masks' own
    (dask or numpy) arrays; nothing is computed.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``: an ``image`` layer.
    masks : xarray.DataArray, optional
        Boolean masks or integer labels of the same shape: a ``labels`` layer
        (booleans as 0/1).
    tracks : pandas.DataFrame, optional
        A linked table (from :func:`temflow.link`) with ``particle``, ``time``
        (s), ``y`` and ``x`` (nm): a ``tracks`` layer.

    Returns
    -------
    list of (data, kwargs, layer type)
        In drawing order: image, labels, tracks, all in world coordinates
        (s, nm); set ``viewer.dims.axis_labels = ("time", "y", "x")`` to
        name the sliders.

    Raises
    ------
    ValueError
        If the masks' shape differs from the movie's or the table lacks columns.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=3, size=32, pixel_size_nm=0.5, seed=0)
    >>> layers = napari_layers(truth.movie, masks=truth.labels > 0)
    >>> [kind for _, _, kind in layers], layers[0][1]["scale"]
    (['image', 'labels'], (1.0, 0.5, 0.5))
    """
    check_movie(movie)
    placement = _placement(movie)
    common: dict[str, Any] = dict(placement)  # scale and translate: accepted by every napari since 0.4
    layers: list[tuple[Any, dict[str, Any], str]] = [
        (movie.data, {**common, "name": str(movie.name or "movie")}, "image")
    ]
    if masks is not None:
        check_movie(masks, "masks")
        if masks.shape != movie.shape:
            raise ValueError(f"masks have shape {masks.shape} but the movie has {movie.shape}; they must match frame for frame")
        kind = np.dtype(masks.dtype).kind
        if kind not in "biu":
            raise TypeError(f"masks must be boolean or integer labels; got dtype {masks.dtype}; use temflow.segment(...) first")
        data = masks.data.astype(np.uint8) if kind == "b" else masks.data
        layers.append((data, {**common, "name": str(masks.name or "masks"), "opacity": 0.5}, "labels"))
    if tracks is not None:
        table = check_table(tracks, ["particle", "time", "y", "x"], "tracks")
        ordered = table.sort_values(["particle", "time"])
        # napari tracks: one row per point, (track id, t, y, x) in world coordinates
        data = ordered[["particle", "time", "y", "x"]].to_numpy(dtype=float)
        layers.append((data, {"name": "tracks", "tail_length": 10}, "tracks"))
    return layers
