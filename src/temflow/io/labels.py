"""NGFF labels inside a temflow movie store: masks and particle labels next to the frames.

A labels image is ``store/labels/<name>``: a temflow store of its own (written by
:func:`temflow.io.save_zarr`, so resumable and atomic) carrying OME-Zarr 0.5 ``image-label``
metadata, and listed in ``store/labels``'s ``ome.labels`` once complete, so a viewer never
finds a half-written one. Boolean masks are stored as uint8 0/1 (NGFF labels are integers)
and come back boolean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from temflow.errors import MovieFileError
from temflow.io.store import _DATA, _FORMAT, _MASK_ATTR, is_complete, open_zarr, save_zarr
from temflow.movie import DIMS

__all__ = ["save_labels", "open_labels", "label_names"]

_LABELS = "labels"


def _check_label_name(name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or name in ("coords", _DATA):
        raise ValueError(f"name must be a plain folder name such as 'masks' or 'particles'; got {name!r}")
    return name


def label_names(store: str | os.PathLike[str]) -> list[str]:
    """Names of the labels images listed in a store's NGFF ``labels/`` group.

    Examples
    --------
    >>> label_names("no-such-store.zarr")
    []
    """
    try:
        meta = json.loads((Path(store) / _LABELS / "zarr.json").read_text())
    except (OSError, ValueError):
        return []
    return [str(n) for n in meta.get("attributes", {}).get("ome", {}).get("labels", [])]


def save_labels(
    labels: xr.DataArray,
    store: str | os.PathLike[str],
    *,
    name: str = "masks",
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> Path:
    """Write masks or particle labels into the NGFF ``labels/`` group of a movie store.

    The labels become ``store/labels/<name>``: a temflow store of their own
    (resumable, opened by :func:`open_labels` or :func:`open_zarr`) carrying
    OME-Zarr 0.5 ``image-label`` metadata, listed in ``store/labels``. Viewers
    that read OME-Zarr (napari with ``napari-ome-zarr``) show them as a Labels
    layer over the movie, in the same physical coordinates.

    Computes: every chunk is computed and written, as by :func:`save_zarr`.

    Parameters
    ----------
    labels : xarray.DataArray
        Dims ``("time", "y", "x")`` and the movie's shape; boolean masks
        (stored as uint8 0/1, NGFF labels are integers) or integer labels
        (0 = background), e.g. from :func:`temflow.label_particles`.
    store : str or path
        A complete movie store written by :func:`save_zarr`.
    name : str
        Name of the labels image inside ``labels/``.
    overwrite, resume, progress : bool
        As for :func:`save_zarr`, for this labels image only.

    Returns
    -------
    pathlib.Path
        The labels image's path, ``store/labels/<name>``.

    Raises
    ------
    MovieFileError
        If ``store`` is not a complete temflow store, or the labels exist
        (and neither ``overwrite`` nor ``resume`` is set).
    ValueError
        If the labels' shape differs from the movie's, or ``name`` is not a
        plain folder name.
    TypeError
        If the labels are not boolean or integer.

    Examples
    --------
    >>> import tempfile, numpy as np, temflow
    >>> movie = temflow.as_movie(np.arange(24, dtype="uint16").reshape(2, 3, 4), pixel_size_nm=0.5)
    >>> path = save_zarr(movie, tempfile.mkdtemp() + "/m.zarr")
    >>> _ = save_labels(movie > 10, path)
    >>> label_names(path), open_labels(path).dtype
    (['masks'], dtype('bool'))
    """
    if not isinstance(labels, xr.DataArray):
        raise TypeError(f"labels must be an xarray.DataArray; got {type(labels).__name__}")
    if tuple(labels.dims) != DIMS:
        raise ValueError(f"labels must have dims {DIMS}; got {tuple(labels.dims)}; use labels.rename(...)")
    name = _check_label_name(name)
    root = Path(store)
    if not is_complete(root):
        raise MovieFileError(root, _FORMAT, "not a complete temflow movie store", "write the movie with temflow.save_zarr first")
    shape = tuple(zarr.open_array(store=str(root), path=_DATA, mode="r").shape)
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but the movie in {str(root)!r} has shape {shape}; "
            "labels must cover the movie frame for frame and pixel for pixel"
        )
    kind = np.dtype(labels.dtype).kind
    if kind not in "biu":
        raise TypeError(
            f"labels must be boolean masks or integer labels; got dtype {labels.dtype}; "
            "turn probabilities into masks with temflow.segment(...) first"
        )
    if kind == "b":
        labels = labels.astype(np.uint8).assign_attrs({_MASK_ATTR: True})
    path = save_zarr(labels, root / _LABELS / name, overwrite=overwrite, resume=resume, progress=progress)
    image = zarr.open_group(str(path), mode="r+")
    ome = dict(image.attrs["ome"])  # type: ignore[arg-type]
    ome["image-label"] = {"version": "0.5", "source": {"image": "../../"}}
    image.update_attributes({"ome": ome})
    # listed only once complete: a viewer never finds a half-written labels image
    group = zarr.open_group(str(root / _LABELS), mode="a")
    names = sorted(set(label_names(root)) | {name})
    group.update_attributes({"ome": {"version": "0.5", "labels": names}})
    return path


def open_labels(store: str | os.PathLike[str], *, name: str = "masks") -> xr.DataArray:
    """Open the labels image ``name`` of a movie store lazily.

    Lazy: as :func:`open_zarr`. Masks saved from booleans come back boolean.

    Parameters
    ----------
    store : str or path
        A movie store with a ``labels/`` group (see :func:`save_labels`).
    name : str
        The labels image's name.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "y", "x")`` with the movie's coordinates.

    Raises
    ------
    MovieFileError
        If the store has no labels image of that name.
    """
    name = _check_label_name(name)
    root = Path(store)
    if name not in label_names(root):
        raise MovieFileError(
            root, _FORMAT, f"no labels image named {name!r} (it has {label_names(root) or 'none'})",
            "write one with temflow.io.save_labels(...)",
        )
    return open_zarr(root / _LABELS / name)
