"""Open microscope movies lazily as labelled arrays: one entry point, many formats.

:func:`open_movie` picks a reader from the file's suffix (or ``format=...``),
checks the file before any library touches it (missing, empty, truncated,
wrong magic bytes), and returns a dask-backed ``xarray.DataArray`` with dims
``("time", "y", "x")``, time in s and lengths in nm. Opening reads headers
only; every dask task opens its file by path and reads just its frames, so the
graph pickles to a distributed cluster.

Readers (``READERS``: format name -> function; pixels read with):

- ``dm3``, ``dm4``: Gatan DigitalMicrograph image or stack (ncempy header, raw offsets);
- ``insitu``: Gatan In-Situ tree ``Hour_HH/Minute_MM/Second_SS/*.dm4`` (ncempy header per frame);
- ``dm-series``: folder or glob of one-frame ``.dm3`` / ``.dm4`` files;
- ``ser``: FEI/TIA series with its ``.emi`` metadata (ncempy ``fileSER``);
- ``emd``: Berkeley EMD and Thermo Fisher Velox EMD (h5py, per task);
- ``mrc``: ``.mrc`` / ``.mrcs`` / ``.st`` (mrcfile memory map);
- ``tiff``: multi-page TIFF stack (raw offsets when uncompressed, else tifffile per page);
- ``frames``: folder or glob of ``.tif`` / ``.png`` frames (tifffile / Pillow);
- ``npy``: NumPy ``.npy`` (numpy memory map);
- ``zarr``: temflow's own store (:func:`temflow.io.store.open_zarr`), or an OME-Zarr image
  written by another tool (NGFF 0.4/0.5; ``ome-zarr`` reads only those).

Any failure, from the checks or from the library underneath (also under
``python -O``, where ncempy's ``assert`` checks vanish), is raised as
:class:`temflow.errors.MovieFileError` naming the path, the format, the
problem and the fix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from temflow.movie import DIMS, TIME, X, Y, as_movie, check_movie
from temflow.errors import MovieFileError
from temflow.io.formats import emd, gatan, mrc, npy, ome_zarr, tia, tiff
from temflow.io.formats._common import RawMovie, frames_per_chunk, jsonable
from temflow.io.store import _is_temflow_store, open_zarr

__all__ = ["open_movie", "describe", "READERS", "SUFFIXES", "detect_format"]

Chunks = int | tuple[int, int, int] | Mapping[str, int] | None


def _dm3(path: Path, *, chunks: Chunks = None) -> RawMovie:
    return gatan.read_dm(path, chunks=chunks, fmt="dm3")


def _dm4(path: Path, *, chunks: Chunks = None) -> RawMovie:
    return gatan.read_dm(path, chunks=chunks, fmt="dm4")


def _zarr(path: Path, *, chunks: Chunks = None) -> xr.DataArray | RawMovie:
    if not _is_temflow_store(path) and ome_zarr.is_ome_zarr(path):
        return ome_zarr.read_ome_zarr(path, chunks=chunks)  # an OME-Zarr image from another tool
    return open_zarr(path, chunks=chunks)


#: format name -> reader; each returns a :class:`temflow.io.formats._common.RawMovie`
#: (``zarr`` returns the finished movie for temflow's stores).
READERS: dict[str, Callable[..., Any]] = {
    "dm3": _dm3,
    "dm4": _dm4,
    "insitu": gatan.read_insitu,
    "dm-series": gatan.read_dm_series,
    "ser": tia.read_ser,
    "emd": emd.read_emd,
    "mrc": mrc.read_mrc,
    "tiff": tiff.read_tiff,
    "frames": tiff.read_frames,
    "npy": npy.read_npy,
    "zarr": _zarr,
    "ome-zarr": ome_zarr.read_ome_zarr,
}

#: file suffix -> format name
SUFFIXES: dict[str, str] = {
    ".dm3": "dm3",
    ".dm4": "dm4",
    ".ser": "ser",
    ".emd": "emd",
    ".mrc": "mrc",
    ".mrcs": "mrc",
    ".st": "mrc",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "frames",
    ".npy": "npy",
    ".zarr": "zarr",
}

_GLOB_CHARS = set("*?[")


def _sniff(path: Path) -> str | None:
    """The format a file's first bytes say it is (``None`` if unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "emd"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "frames"
    if head[:6] == b"II\x97\x01\x10\x02" or head[:6] == b"II\x97\x01\x20\x02":
        return "ser"
    if len(head) >= 16 and head[:4] in (b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"):
        return "dm3" if head[3] == 3 else "dm4"
    if len(head) >= 212 and head[208:211] == b"MAP":
        return "mrc"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format name :func:`open_movie` would use for ``path``.

    Parameters
    ----------
    path : str or path
        File, folder or glob pattern.

    Returns
    -------
    str
        A key of :data:`READERS`.

    Raises
    ------
    MovieFileError
        If the suffix is not one temflow reads, or a folder holds no movie.

    Examples
    --------
    >>> detect_format("run_0001.dm4"), detect_format("frames/*.tif"), detect_format("movie.zarr")
    ('dm4', 'frames', 'zarr')
    """
    text = os.fspath(path)
    if _GLOB_CHARS & set(text):
        return "dm-series" if text.lower().endswith((".dm3", ".dm4")) else "frames"
    p = Path(text)
    if p.is_dir():
        if p.suffix.lower() == ".zarr" or (p / "zarr.json").exists() or (p / ".zattrs").exists():
            return "zarr"
        if gatan.is_insitu_folder(p):
            return "insitu"
        suffixes = {child.suffix.lower() for child in p.iterdir() if child.is_file()}
        if suffixes & {".dm3", ".dm4"} and not suffixes & {".tif", ".tiff", ".png"}:
            return "dm-series"
        return "frames"
    suffix = p.suffix.lower()
    if suffix == ".dm4" and gatan.is_insitu_folder(p.parent):
        return "insitu"  # the In-Situ "director" image saved beside its Hour_00 frame tree
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    sniffed = _sniff(p) if p.is_file() else None
    hint = f"its first bytes look like {sniffed}; pass format={sniffed!r}" if sniffed else (
        f"convert it to one of {sorted(set(SUFFIXES))} or pass format=... with one of {sorted(READERS)}")
    raise MovieFileError(p, suffix.lstrip(".") or "unknown", f"unsupported file type {suffix or '(no suffix)'!r}", hint)


def _check_magic(path: Path, fmt: str) -> None:
    """Refuse a file whose first bytes belong to another format (a renamed or wrong file)."""
    if fmt in ("zarr", "ome-zarr", "insitu", "dm-series") or path.is_dir() or not path.is_file():
        return
    if path.stat().st_size == 0:
        raise MovieFileError(path, fmt, "the file is empty (0 bytes)", "copy the file again from the acquisition computer")
    sniffed = _sniff(path)
    same = {fmt} | ({"dm3", "dm4"} if fmt in ("dm3", "dm4") else set()) | ({"tiff", "frames"} if fmt in (
        "tiff", "frames") else set())
    if sniffed is not None and sniffed not in same:
        raise MovieFileError(path, fmt, f"wrong magic bytes: the content is a {sniffed} file, the name says {fmt}",
                             f"rename it with the right suffix or pass format={sniffed!r}")
    if sniffed is None and fmt not in ("mrc",):
        raise MovieFileError(path, fmt, f"wrong magic bytes: this is not a {fmt} file (unrecognised content)",
                             "check that the file is what its name says, or that it was copied completely")


def _spatial_chunks(chunks: Chunks) -> dict[str, int] | None:
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - set(DIMS)
        if unknown:
            raise ValueError(f"chunks has unknown dims {sorted(unknown)}; expected some of {DIMS}")
        spatial = {d: chunks[d] for d in (Y, X) if d in chunks}
        return spatial or None
    if isinstance(chunks, (tuple, list)):
        if len(chunks) != 3:
            raise ValueError(f"chunks must have one size per dim {DIMS}; got {chunks!r}")
        return {Y: chunks[1], X: chunks[2]}
    if chunks is None or chunks == "auto" or (isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool)):
        return None
    raise TypeError(f"chunks must be an int (frames per chunk), a (time, y, x) tuple or a mapping; got {chunks!r}")


def open_movie(
    path: str | os.PathLike[str],
    *,
    chunks: Chunks = None,
    frame_interval_s: float | None = None,
    pixel_size_nm: float | tuple[float, float] | None = None,
    format: str | None = None,
) -> xr.DataArray:
    """Open a microscope movie lazily as a ``("time", "y", "x")`` DataArray.

    Lazy: reads headers only; frames are read chunk by chunk when computed, each
    task opening its file by path (the graph pickles for distributed clusters).

    Parameters
    ----------
    path : str or path
        A file (``.dm3 .dm4 .ser .emd .mrc .mrcs .tif .tiff .png .npy``), a folder
        (temflow ``.zarr`` store, Gatan In-Situ ``Hour_HH`` tree, or a folder of
        one-frame ``.dm3``/``.dm4``/``.tif``/``.png`` files) or a glob pattern of
        such frames (``"run/*.tif"``), sorted naturally (``f2`` before ``f10``).
    chunks : int, (int, int, int) or mapping, optional
        Frames per chunk, one size per dim, or ``{dim: size}``; ``-1`` means the
        whole extent. Default: about 32 MiB of whole frames per chunk.
    frame_interval_s : float, optional
        Time between frames in s. Overrides the file's time calibration; needed
        when the file has none (else the frame index is used as time, with a warning).
    pixel_size_nm : float or (float, float), optional
        Pixel size ``(dy, dx)`` in nm. Overrides the file's calibration; needed
        when it has none or only a diffraction (reciprocal) calibration, which
        temflow does not treat as a length (it warns and falls back to 1 px = 1 nm).
    format : str, optional
        A key of :data:`READERS`, to override the suffix.

    Returns
    -------
    xarray.DataArray
        Dask-backed, dims ``("time", "y", "x")``, coordinates ``time`` (s), ``y``,
        ``x`` (nm) with units in their attrs. Attrs: ``pixel_size_nm`` ``[dy, dx]``,
        ``frame_interval_s``, ``source`` (list of file paths), ``format``,
        ``instrument`` (``voltage_kV``, ``magnification``, ``exposure_s``,
        ``camera``... where the file has them), ``metadata`` (raw header values,
        JSON-serialisable), ``time_calibrated`` and ``pixel_calibrated`` (bools),
        and ``notes`` when a calibration was ignored.

    Raises
    ------
    MovieFileError
        If the file is missing, empty, truncated, of another format than its name
        says, unsupported, holds frames of different shapes or dtypes, or the
        reader underneath fails for any reason.
    ValueError, TypeError
        For bad ``chunks``, ``frame_interval_s`` or ``pixel_size_nm``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/frames.npy"
    >>> np.save(path, np.zeros((4, 8, 8), dtype="uint16"))
    >>> movie = open_movie(path, frame_interval_s=0.1, pixel_size_nm=0.2, chunks=2)
    >>> movie.dims, movie.shape, movie.data.chunks[0], float(movie.time[-1])
    (('time', 'y', 'x'), (4, 8, 8), (2, 2), 0.30000000000000004)
    """
    spatial = _spatial_chunks(chunks)
    frames_per_chunk(chunks, 1, (1, 1), np.dtype("uint8"))  # validate before any file is touched
    if frame_interval_s is not None and (not isinstance(frame_interval_s, (int, float)) or isinstance(
            frame_interval_s, bool) or not math.isfinite(frame_interval_s) or frame_interval_s <= 0):
        raise ValueError(f"frame_interval_s must be a positive number of seconds; got {frame_interval_s!r}")
    if pixel_size_nm is not None:
        sizes = np.broadcast_to(np.asarray(pixel_size_nm, dtype=float), (2,))
        if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
            raise ValueError(f"pixel_size_nm must be positive; got {pixel_size_nm!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    text = os.fspath(path)
    if format is None:
        fmt = detect_format(text)
    elif format not in READERS:
        raise ValueError(f"format must be one of {sorted(READERS)}; got {format!r}")
    else:
        fmt = format
    target: Path | str = text if (_GLOB_CHARS & set(text)) else Path(text)
    if isinstance(target, Path):
        if not target.exists():
            raise MovieFileError(target, fmt, "no such file or folder", "check the path (and the current directory)")
        _check_magic(target, fmt)
    reader = READERS[fmt]
    try:
        with warnings.catch_warnings():
            # libraries' deprecation chatter is not the user's to act on; temflow's own
            # UserWarnings (calibrations ignored) pass through.
            warnings.simplefilter("ignore", DeprecationWarning)
            raw = reader(target, chunks=chunks)
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - every dependency failure becomes temflow's error
        raise MovieFileError(text, fmt, f"the reader failed ({type(exc).__name__}: {exc})",
                             "the file may be corrupt or of another kind than its name says") from None
    if isinstance(raw, xr.DataArray):  # temflow's own store is already a movie
        return _override(raw, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm)
    return _assemble(raw, chunks=spatial, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm)


def _override(movie: xr.DataArray, *, frame_interval_s: float | None,
              pixel_size_nm: float | tuple[float, float] | None) -> xr.DataArray:
    """Replace the calibrations of an already-assembled movie (a zarr store) by the user's, noting it."""
    notes = list(movie.attrs.get("notes", []))
    calibration = dict(movie.attrs.get("calibration", {}))
    if frame_interval_s is not None:
        times = np.arange(movie.sizes[TIME]) * float(frame_interval_s)
        movie = movie.assign_coords({TIME: (TIME, times, dict(movie[TIME].attrs))})
        movie.attrs.update(frame_interval_s=float(frame_interval_s), time_calibrated=True)
        notes.append(f"time between frames {float(frame_interval_s):.6g} s given by the user, overriding the store's")
        calibration["time"] = "user"
    if pixel_size_nm is not None:
        dy, dx = (float(v) for v in np.broadcast_to(np.asarray(pixel_size_nm, dtype=float), (2,)))
        for dim, step in ((Y, dy), (X, dx)):
            start = float(movie[dim].values[0]) if dim in movie.coords else 0.0
            values = start + np.arange(movie.sizes[dim]) * step
            movie = movie.assign_coords({dim: (dim, values, dict(movie[dim].attrs) if dim in movie.coords else {})})
        movie.attrs.update(pixel_size_nm=[dy, dx], pixel_calibrated=True)
        notes.append(f"pixel size {dy:.6g} x {dx:.6g} nm (y x x) given by the user, overriding the store's")
        calibration["pixel_size"] = "user"
    if frame_interval_s is not None or pixel_size_nm is not None:
        movie.attrs.update(notes=notes, calibration=calibration)
    return movie


#: How to give a calibration, in every message that asks for one.
PIXEL_HOW = ("give the pixel size: open_movie(..., pixel_size_nm=...), the CLI's --pixel-size-nm, "
             "or pixel_size_nm under [input] in the run file")
TIME_HOW = ("give the time between frames: open_movie(..., frame_interval_s=...), the CLI's --frame-interval-s, "
            "or frame_interval_s under [input] in the run file")


def _assemble(raw: RawMovie, *, chunks: dict[str, int] | None, frame_interval_s: float | None,
              pixel_size_nm: float | tuple[float, float] | None) -> xr.DataArray:
    """Attach coordinates; apply (and record) the user's calibrations; refuse what is not a movie."""
    where = raw.sources[0] if len(raw.sources) == 1 else f"{raw.sources[0]} (+ {len(raw.sources) - 1} more files)"
    if raw.pixel_refusal and pixel_size_nm is None:
        raise MovieFileError(
            raw.sources[0], raw.format,
            f"{raw.pixel_refusal}; temflow refuses it rather than label reciprocal-space pixels nm",
            "open a real-space image or movie; if this file is real space and only its calibration is wrong, "
            + PIXEL_HOW)
    if raw.time_refusal and frame_interval_s is None:
        raise MovieFileError(raw.sources[0], raw.format, f"{raw.time_refusal}; it is not a movie in time",
                             "if the frames are in fact a time series, " + TIME_HOW)
    notes = list(raw.notes)
    if pixel_size_nm is not None:
        dy, dx = (float(v) for v in np.broadcast_to(np.asarray(pixel_size_nm, dtype=float), (2,)))
        if raw.pixel_size_nm is not None:
            found = f"{raw.pixel_size_nm[0]:.6g} x {raw.pixel_size_nm[1]:.6g} nm"
        else:
            found = raw.pixel_refusal or "; ".join(raw.pixel_notes) or "no pixel size"
        notes.append(f"pixel size {dy:.6g} x {dx:.6g} nm (y x x) given by the user, overriding the file ({found})")
        pixel, pixel_source = (dy, dx), "user"
    elif raw.pixel_size_nm is not None:
        pixel, pixel_source = raw.pixel_size_nm, "file"
    else:
        reasons = "; ".join(raw.pixel_notes) or "the file has no pixel-size calibration"
        message = f"{where}: {reasons}; using 1 px = 1 nm, so every length is in pixels. To fix it, {PIXEL_HOW}"
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        pixel, pixel_source = (1.0, 1.0), "default"
    n_frames = raw.data.shape[0]
    times = None
    interval: float | None
    if frame_interval_s is not None:
        interval, time_source = float(frame_interval_s), "user"
        found_time = ("per-frame times" if raw.times_s is not None else f"{raw.frame_interval_s:.6g} s"
                      if raw.frame_interval_s is not None else raw.time_refusal or "no time step")
        notes.append(f"time between frames {interval:.6g} s given by the user, overriding the file ({found_time})")
    elif raw.times_s is not None:
        times, interval, time_source = raw.times_s, None, "file"
    elif raw.frame_interval_s is not None:
        interval, time_source = raw.frame_interval_s, "file"
    elif n_frames == 1:
        interval, time_source = 1.0, "default"  # one image: no time axis to calibrate
    else:
        message = (f"{where}: the movie has no time calibration; using the frame index as time in s. "
                   f"To fix it, {TIME_HOW}")
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        interval, time_source = 1.0, "default"
    attrs = {
        "source": list(raw.sources),
        "format": raw.format,
        "instrument": jsonable(raw.instrument),
        "metadata": jsonable(raw.metadata),
        "time_calibrated": time_source != "default",
        "pixel_calibrated": pixel_source != "default",
        "calibration": {"pixel_size": pixel_source, "time": time_source},
    }
    if notes:
        attrs["notes"] = notes
    movie = as_movie(raw.data, pixel_size_nm=pixel, frame_interval_s=interval, times_s=times, attrs=attrs)
    if chunks:
        movie = movie.chunk(chunks)
    return movie


def _sources(source: Any) -> list[str]:
    """The ``source`` attr as a list of strings (a synthetic movie's is one string, not a list)."""
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    return [os.fspath(s) if isinstance(s, os.PathLike) else str(s) for s in source]


def describe(movie: xr.DataArray) -> dict[str, Any]:
    """A JSON-serialisable summary of a movie, as ``temflow info`` prints it.

    Lazy: reads nothing from disk (shape, chunks and attrs only).

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``.

    Returns
    -------
    dict
        ``dims`` (list of str), ``shape`` (list of int), ``dtype`` (str),
        ``chunks`` (per dim, the distinct chunk sizes, largest first; ``None`` for an
        in-memory movie), ``chunks_per_dim`` (number of chunks along each dim),
        ``chunk_shape`` (largest chunk), ``n_chunks`` (total), ``pixel_size_nm``
        (``[dy, dx]``), ``frame_interval_s``, ``time`` (``start_s``, ``end_s``,
        ``n_frames``, ``calibrated``), ``field_of_view_nm`` (``[height, width]``),
        ``size_gb`` (decompressed, 1e9 bytes), ``format``, ``source`` (list),
        ``instrument`` (dict) and ``metadata`` (the remaining attrs).

    Examples
    --------
    >>> import numpy as np, json, temflow
    >>> m = temflow.as_movie(np.zeros((3, 4, 5), "uint16"), pixel_size_nm=0.5, frame_interval_s=2.0)
    >>> info = describe(m)
    >>> info["shape"], info["pixel_size_nm"], info["time"]["end_s"], info["size_gb"]
    ([3, 4, 5], [0.5, 0.5], 4.0, 1.2e-07)
    >>> _ = json.dumps(info)
    """
    from temflow.movie import frame_interval_s as _interval
    from temflow.movie import pixel_size_nm as _pixel

    check_movie(movie)
    data = movie.data
    chunks = [sorted({int(v) for v in c}, reverse=True) for c in data.chunks] if isinstance(data, da.Array) else None
    counts = [len(c) for c in data.chunks] if isinstance(data, da.Array) else [1, 1, 1]
    times = np.asarray(movie[TIME].values, dtype=float) if TIME in movie.coords else np.arange(movie.sizes[TIME])
    dy, dx = _pixel(movie)
    known = {"source", "format", "instrument", "pixel_size_nm", "frame_interval_s", "time_calibrated",
             "pixel_calibrated", "calibration"}
    return jsonable({
        "dims": list(movie.dims),
        "shape": list(map(int, movie.shape)),
        "dtype": str(movie.dtype),
        "chunks": chunks,
        "chunks_per_dim": counts,
        "chunk_shape": [c[0] for c in chunks] if chunks else list(map(int, movie.shape)),
        "n_chunks": int(np.prod(counts)),
        "pixel_size_nm": [dy, dx],
        "frame_interval_s": _interval(movie),
        "time": {
            "start_s": float(times[0]) if times.size else None,
            "end_s": float(times[-1]) if times.size else None,
            "n_frames": int(movie.sizes[TIME]),
            "calibrated": bool(movie.attrs.get("time_calibrated", True)),
        },
        "field_of_view_nm": [dy * movie.sizes[Y], dx * movie.sizes[X]],
        "size_gb": float(movie.size * movie.dtype.itemsize / 1e9),
        "format": movie.attrs.get("format"),
        "source": _sources(movie.attrs.get("source")),
        "instrument": dict(movie.attrs.get("instrument", {})),
        "metadata": {k: v for k, v in movie.attrs.items() if k not in known},
    })
