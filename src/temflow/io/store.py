"""temflow's zarr v3 movie store: chunked, compressed, resumable, OME-Zarr friendly.

Layout of a store (a folder)::

    movie.zarr/
      zarr.json        group; attrs "ome" (OME-Zarr 0.5 multiscales, one level)
                       and "temflow" (name, attrs, dims, complete flag)
      0/               the frames, dimension_names ("time", "y", "x")
      coords/<name>/   every coordinate, with its own dims and attrs
      labels/          optional NGFF labels group (attrs "ome": {"labels": [...]}),
        <name>/        masks or particle labels: a temflow store of their own with
                       NGFF "image-label" metadata, so napari shows them as Labels
                       (written and read by temflow.io.labels)
      .temflow-done/   one empty marker per finished chunk while writing

The OME-Zarr 0.5 axes are named exactly as the array's ``dimension_names``
(``time``, ``y``, ``x``), as NGFF requires, with units ``second`` and
``nanometer``; the stores validate with ``ome-zarr-models``. ``xarray.open_zarr``
sees the frames as a variable named ``"0"`` without coordinates (they live in
``coords/``): :func:`open_zarr` is the one call that gives the movie with its
coordinates and attrs.

Completion is explicit: the group is first written with ``complete: false``
and set to ``complete: true`` only after every chunk has been written, because
zarr leaves chunks equal to the fill value unwritten (a missing chunk file does
not mean "not written"). Every write task owns exactly one zarr chunk: the dask
chunks are made regular and equal to the zarr chunks before writing, so no two
tasks ever write into the same chunk file (zarr-python issues 3514, 3682).

Creation is atomic: the empty store (arrays, coordinates and the temflow
metadata) is built in a hidden sibling folder, ``.<name>.temflow-new``, and
renamed into place, so a process killed at any moment leaves either no store
or one that ``resume=True`` finishes - never a folder that is neither.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from temflow.movie import DIMS, TIME
from temflow._json import finite
from temflow._nofollow import LinkInOutputError, at_calls, check_directory, confined_root, open_directory
from temflow.errors import DiskFullError, IncompleteStoreError, MovieFileError, is_disk_full
from temflow.io._progress import _compute
from temflow.io.formats.ome_zarr import is_ome_zarr

__all__ = ["save_zarr", "open_zarr", "is_complete"]

_FORMAT = "zarr"
_DATA = "0"
_DONE = ".temflow-done"
_NEW = ".temflow-new"
_MASK_ATTR = "boolean_mask"
_STORE_VERSION = 1
_OME_UNITS = {"s": "second", "nm": "nanometer"}
Compressor = Literal["zstd", "lz4", "none"]


def _jsonable(value: Any) -> Any:
    """Attrs as JSON: numpy values become Python ones, NaN and inf null (zarr.json must parse
    everywhere), keys strings, anything else its text."""
    return json.loads(json.dumps(finite(value), default=str, allow_nan=False))


def _regular(chunks: tuple[tuple[int, ...], ...]) -> bool:
    """True if every dim's chunks are equal except a smaller last one (zarr's grid)."""
    return all(len(set(c[:-1])) <= 1 and (len(c) < 2 or c[-1] <= c[0]) for c in chunks)


def _target_chunks(data: da.Array, chunks: Any) -> tuple[int, ...]:
    if chunks is None:
        if _regular(data.chunks):
            return tuple(c[0] for c in data.chunks)
        frame_bytes = int(np.prod(data.shape[1:])) * data.dtype.itemsize
        per = max(1, min(data.shape[0], (32 * 2**20) // max(frame_bytes, 1)))
        return (per,) + tuple(data.shape[1:])
    if isinstance(chunks, int):
        return (chunks,) + tuple(data.shape[1:])
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - set(DIMS)
        if unknown:
            raise ValueError(f"chunks has unknown dims {sorted(unknown)}; expected some of {DIMS}")
        sizes = [chunks.get(d, -1) for d in DIMS]
    else:
        sizes = list(chunks)
        if len(sizes) != 3:
            raise ValueError(f"chunks must have one size per dim {DIMS}; got {chunks!r}")
    out = []
    for size, n in zip(sizes, data.shape):
        size = n if size in (-1, None) else int(size)
        if size <= 0:
            raise ValueError(f"chunk sizes must be positive; got {chunks!r}")
        out.append(max(1, min(size, n)))
    return tuple(out)


def _codecs(compressor: str, level: int, dtype: np.dtype) -> list[Any]:
    if compressor == "none":
        return []
    if compressor not in ("zstd", "lz4"):
        raise ValueError(f"compressor must be 'zstd', 'lz4' or 'none'; got {compressor!r}")
    if not 0 <= level <= 9:
        raise ValueError(f"compression_level must be in 0..9; got {level!r}")
    shuffle: Any = "bitshuffle" if dtype.itemsize == 1 else "shuffle"
    cname: Any = compressor
    return [BloscCodec(cname=cname, clevel=level, shuffle=shuffle, typesize=dtype.itemsize)]


def _ome_metadata(movie: xr.DataArray) -> dict[str, Any]:
    axes = []
    scale = []
    translation = []
    for dim in DIMS:
        unit = movie.coords[dim].attrs.get("units") if dim in movie.coords else None
        axis: dict[str, Any] = {"name": dim, "type": "time" if dim == TIME else "space"}
        if unit in _OME_UNITS:
            axis["unit"] = _OME_UNITS[unit]
        axes.append(axis)
        values = np.asarray(movie.coords[dim].values, dtype=float) if dim in movie.coords else np.arange(movie.sizes[dim])
        scale.append(float(values[1] - values[0]) if len(values) > 1 and values[1] != values[0] else 1.0)
        translation.append(float(values[0]) if len(values) else 0.0)
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": str(movie.name or "movie"),
                "axes": axes,
                "datasets": [
                    {
                        "path": _DATA,
                        "coordinateTransformations": [
                            {"type": "scale", "scale": scale},
                            {"type": "translation", "translation": translation},
                        ],
                    }
                ],
            }
        ],
    }


def _block_slices(index: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> tuple[slice, ...]:
    out = []
    for i, c in zip(index, chunks):
        start = int(sum(c[:i]))
        out.append(slice(start, start + c[i]))
    return tuple(out)


def _write_block(block: np.ndarray, path: str, index: tuple[int, ...], slices: tuple[slice, ...]) -> int:
    array = zarr.open_array(store=path, path=_DATA, mode="r+")
    array[slices] = block
    # the marker comes after the chunk: a task killed mid-write leaves no marker
    (Path(path) / _DONE / ".".join(map(str, index))).touch()
    return 1


def _read_group_meta(path: Path) -> dict[str, Any] | None:
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise MovieFileError(path, _FORMAT, f"its zarr.json is not valid JSON ({exc})") from None
    return meta.get("attributes", {}).get("temflow")


def _staging_folder(path: Path) -> Path:
    """Where a new store is built before it is renamed to ``path`` (same folder, same disk)."""
    return path.parent / f".{path.name}{_NEW}"


def _create(path: Path, movie: xr.DataArray, shape: tuple[int, ...], dtype: np.dtype, target: tuple[int, ...], codecs: list[Any]) -> None:
    """Create the empty store at ``path`` atomically: built aside, then renamed into place."""
    staging = _staging_folder(path)
    # a staging folder is left only by a process killed while creating: it holds no frames
    shutil.rmtree(staging, ignore_errors=True)
    # inside a pipeline run, no folder between the output folder and the store may be a link
    check_directory(path.parent)
    group = zarr.open_group(str(staging), mode="w")
    fill = False if dtype == bool else 0
    group.create_array(
        _DATA,
        shape=shape,
        dtype=dtype,
        chunks=target,
        compressors=codecs,
        fill_value=fill,
        dimension_names=DIMS,
    )
    for name, coord in movie.coords.items():
        values = np.asarray(coord.values)
        if values.dtype == object or values.dtype.kind in "US":
            values = values.astype(str)
        coord_array = group.create_array(
            f"coords/{name}",
            shape=values.shape,
            dtype=values.dtype,
            chunks=values.shape or (1,),
            compressors=[],
            dimension_names=tuple(coord.dims),
            attributes=_jsonable(dict(coord.attrs)),
        )
        if values.size:
            coord_array[...] = values
    (staging / _DONE).mkdir()
    group.update_attributes(
        {
            "ome": _ome_metadata(movie),
            "temflow": {
                "store_version": _STORE_VERSION,
                "name": movie.name if isinstance(movie.name, str) else None,
                "dims": list(DIMS),
                "coords": list(map(str, movie.coords)),
                "attrs": _jsonable(dict(movie.attrs)),
                "complete": False,
            },
        }
    )
    _rename_checked(staging, path)


def _rename_checked(staging: Path, path: Path) -> None:
    """Rename the staged store into place, checking for links before and after.

    The rename happens inside the parent folder opened without following links
    (see :mod:`temflow._nofollow`); the staged folder must still be a folder
    there, and what lands at ``path`` must be that folder, not a link.
    """
    if not at_calls():
        check_directory(path.parent)
        os.rename(staging, path)
        check_directory(path.parent)
        return
    fd = open_directory(path.parent, create=False)
    try:
        if not stat.S_ISDIR(os.stat(staging.name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise LinkInOutputError(staging, confined_root() or path.parent)
        if os.path.islink(path):  # a link planted at the store's name would be replaced; say so instead
            raise LinkInOutputError(path, confined_root() or path.parent)
        os.rename(staging.name, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        if not stat.S_ISDIR(os.stat(path.name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise LinkInOutputError(path, confined_root() or path.parent)
    finally:
        os.close(fd)
    check_directory(path.parent)  # the chain above it is still free of links


def _is_temflow_store(path: Path) -> bool:
    """True if ``path`` holds temflow's metadata (complete or not)."""
    return _read_group_meta(path) is not None


def is_complete(store: str | os.PathLike[str]) -> bool:
    """True if ``store`` is a temflow zarr store whose writing finished.

    Examples
    --------
    >>> is_complete("no-such-store.zarr")
    False
    """
    meta = _read_group_meta(Path(store))
    return bool(meta and meta.get("complete"))


def save_zarr(
    movie: xr.DataArray,
    store: str | os.PathLike[str],
    *,
    chunks: int | tuple[int, int, int] | Mapping[str, int] | None = None,
    compressor: Compressor = "zstd",
    compression_level: int = 3,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> Path:
    """Write a movie (or masks, labels, probabilities) to a zarr v3 store.

    Computes: every chunk is computed and written by the active dask scheduler
    (a ``distributed.Client`` if one is set as default), one task per zarr chunk,
    so peak memory is a few chunks whatever the length of the movie.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``; dask-backed or in memory.
    store : str or path
        Folder of the store to create (conventionally ending in ``.zarr``).
    chunks : int, (int, int, int) or mapping, optional
        zarr chunk shape: frames per chunk, one size per dim, or ``{dim: size}``.
        Default: the movie's own dask chunks when they form a regular grid,
        else about 32 MiB of whole frames. The dask array is rechunked to
        exactly these chunks before writing.
    compressor : {"zstd", "lz4", "none"}
        Blosc compressor (byte-shuffled; bit-shuffled for 8-bit data).
    compression_level : int
        Blosc level, 0..9.
    overwrite : bool
        Replace an existing store at ``store``.
    resume : bool
        Continue an interrupted write of the same shape, dtype and chunks:
        chunks already written are kept, the rest are written. A store that
        is already complete is left as it is; one that does not exist yet (or
        an empty folder) is written from the start.
    progress : bool
        Show a one-line progress bar (chunks written) on stderr when stderr
        is a terminal; nothing in a pipe or a log file. Works with a local
        scheduler and with a ``distributed.Client``.

    Returns
    -------
    pathlib.Path
        The store's path.

    Raises
    ------
    MovieFileError
        If ``store`` exists (and neither ``overwrite`` nor ``resume`` is set),
        an interrupted store has another shape, dtype or chunking, or
        ``resume`` is set and ``store`` is a folder that is not a temflow store.
    DiskFullError
        If the disk fills up while writing; after freeing space, the same call
        with ``resume=True`` finishes the store.

    Examples
    --------
    >>> import tempfile, numpy as np, temflow
    >>> movie = temflow.as_movie(np.arange(24, dtype="uint16").reshape(2, 3, 4), pixel_size_nm=0.5)
    >>> path = save_zarr(movie, tempfile.mkdtemp() + "/m.zarr")
    >>> bool((temflow.open_zarr(path) == movie).all())
    True
    """
    if not isinstance(movie, xr.DataArray):
        raise TypeError(f"movie must be an xarray.DataArray; got {type(movie).__name__}")
    if tuple(movie.dims) != DIMS:
        raise ValueError(f"movie must have dims {DIMS}; got {tuple(movie.dims)}; use movie.rename(...)")
    path = Path(store)
    data = movie.data if isinstance(movie.data, da.Array) else da.from_array(np.asarray(movie.data), chunks=-1)
    if data.dtype == object:
        raise TypeError("movie has dtype object; zarr needs a numeric or boolean dtype")
    target = _target_chunks(data, chunks)
    data = data.rechunk(target)
    dtype = np.dtype(data.dtype)
    codecs = _codecs(compressor, compression_level, dtype)

    try:
        _write(movie, data, path, target, dtype, codecs, overwrite=overwrite, resume=resume, progress=progress)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(
            path,
            "free space on that disk (or write elsewhere), then call save_zarr(..., resume=True): "
            "the chunks already written are kept",
        ) from None
    return path


def _write(
    movie: xr.DataArray,
    data: da.Array,
    path: Path,
    target: tuple[int, ...],
    dtype: np.dtype,
    codecs: list[Any],
    *,
    overwrite: bool,
    resume: bool,
    progress: bool,
) -> None:
    """Create (or reopen), fill and mark complete the store at ``path``; see :func:`save_zarr`."""
    existing = _read_group_meta(path) if path.exists() else None
    if path.exists():
        if overwrite:
            shutil.rmtree(path)
        elif resume and existing is None and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # an empty folder holds nothing to keep
        elif resume and existing is not None:
            if existing.get("complete"):
                shutil.rmtree(path / _DONE, ignore_errors=True)
                return
            array = zarr.open_array(store=str(path), path=_DATA, mode="r")
            if tuple(array.shape) != data.shape or np.dtype(array.dtype) != dtype or tuple(array.chunks) != target:
                raise MovieFileError(
                    path,
                    _FORMAT,
                    f"an interrupted store with shape {array.shape}, dtype {array.dtype}, chunks {array.chunks} "
                    f"cannot be resumed with shape {data.shape}, dtype {dtype}, chunks {target}",
                    "pass overwrite=True to start again",
                )
        elif resume:
            raise MovieFileError(
                path,
                _FORMAT,
                "it exists but is not a temflow store (no temflow metadata in a zarr.json), so there is nothing "
                "to resume: it may hold other data",
                "remove it, or pass overwrite=True to replace it",
            )
        else:
            raise MovieFileError(
                path, _FORMAT, "it already exists", "pass overwrite=True to replace it or resume=True to finish it"
            )
    if not path.exists():
        _create(path, movie, data.shape, dtype, target, codecs)

    done = {p.name for p in (path / _DONE).iterdir()} if (path / _DONE).exists() else set()
    writes = []
    blocks = data.to_delayed()
    for index in np.ndindex(*data.numblocks):
        if ".".join(map(str, index)) in done:
            continue
        writes.append(
            dask.delayed(_write_block, pure=True)(
                blocks[index], str(path), index, _block_slices(index, data.chunks)
            )
        )
    if writes:
        _compute(writes, progress, f"writing {path.name}")
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs["temflow"])  # type: ignore[arg-type]
    meta["complete"] = True
    group.update_attributes({"temflow": meta})
    shutil.rmtree(path / _DONE, ignore_errors=True)


def open_zarr(
    store: str | os.PathLike[str],
    *,
    chunks: int | tuple[int, int, int] | Mapping[str, int] | None = None,
) -> xr.DataArray:
    """Open a temflow zarr store lazily as a movie.

    Lazy: reads metadata and coordinates only; frames are read chunk by chunk
    when computed. The returned graph pickles (it refers to the store by path),
    so it runs on a distributed cluster that sees the same file system.

    Parameters
    ----------
    store : str or path
        A store written by :func:`save_zarr`.
    chunks : int, tuple or mapping, optional
        Read in these sizes (frames per chunk, one per dim, or ``{dim: size}``);
        default: the store's chunks. Each task reads only its own region, so
        chunks smaller than the store's keep a task's memory small (a store
        chunk is decoded, not held).

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "y", "x")``, coordinates and attrs as saved.

    Raises
    ------
    MovieFileError
        If the path does not exist or is not a temflow zarr store.
    IncompleteStoreError
        If the store's writing never finished.
    """
    path = Path(store)
    if not path.exists():
        raise MovieFileError(path, _FORMAT, "no such file or folder")
    if not path.is_dir():
        raise MovieFileError(path, _FORMAT, "a zarr store is a folder, but this is a file")
    meta = _read_group_meta(path)
    if meta is None:
        if is_ome_zarr(path):
            raise MovieFileError(
                path, _FORMAT, "an OME-Zarr image written by another tool, not a temflow store",
                "open it with temflow.open_movie(path), which reads its axes, scales and units",
            )
        raise MovieFileError(
            path, _FORMAT, "not a temflow zarr store (no temflow metadata in zarr.json)", "write it with temflow.save_zarr"
        )
    if not meta.get("complete"):
        raise IncompleteStoreError(
            path,
            _FORMAT,
            "the store is incomplete: its writing was interrupted or is still running",
            "finish it with save_zarr(..., resume=True) or write it again",
        )
    try:
        group = zarr.open_group(str(path), mode="r")
        array = group[_DATA]
        data = da.from_zarr(array)
        if chunks is not None:
            data = da.from_zarr(array, chunks=_target_chunks(data, chunks))
        coords = {}
        for name in meta.get("coords", []):
            coord = group[f"coords/{name}"]
            if not isinstance(coord, zarr.Array):
                raise KeyError(f"coords/{name} is not an array")
            dims = tuple(getattr(coord.metadata, "dimension_names", None) or ())
            coords[name] = xr.Variable(dims, coord[...], attrs=dict(coord.attrs))
    except (KeyError, ValueError, OSError) as exc:
        raise MovieFileError(path, _FORMAT, f"the store is damaged ({type(exc).__name__}: {exc})") from None
    movie = xr.DataArray(data, dims=DIMS, coords=coords, attrs=dict(meta.get("attrs", {})), name=meta.get("name"))
    if movie.attrs.pop(_MASK_ATTR, False):  # boolean masks kept as NGFF uint8 labels (save_labels)
        movie = movie.astype(bool)
    return movie
