"""What every reader shares: the parsed-header record, lazy frame graphs, checks.

A reader parses headers only and returns a :class:`RawMovie`: a dask array whose
tasks each open the file *by path* and read their own frames, plus the
calibrations it found. Tasks never hold an open file, a memory map or an h5py
object, so the graph pickles to distributed workers; each task re-raises any
failure as :class:`temflow.errors.MovieFileError` naming the file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from temflow.movie import length_to_nm
from temflow.errors import MovieFileError

#: Words every "calibration ignored" note contains (open_movie then skips its generic warning).
PIXEL_FALLBACK = "using pixels"

#: Default size of one time chunk, whole frames (bytes); the store uses the same order.
DEFAULT_CHUNK_BYTES = 32 * 2**20

# Bounds on what a header may claim, checked before anything is allocated. They sit far
# above any camera (16k x 16k sensors, 10^6-frame In-Situ recordings: 7 h at 400 fps) but
# keep a lying header from asking for a time coordinate of 8 GB or a frame of 10^12 px;
# formats whose bytes are stored raw are also held to the file's size (check_extent).
#: Largest frame side (px) a header may declare.
MAX_FRAME_SIDE = 2**18
#: Largest frame (px) a header may declare.
MAX_FRAME_PIXELS = 2**32
#: Most frames a header may declare (the time coordinate then takes 80 MB).
MAX_FRAMES = 10**7
#: Largest ratio of decoded to stored bytes believed for compressed data (zlib's bound is
#: about 10^3; zstd on dark frames reaches 10^4).
MAX_COMPRESSION = 10**5


@dataclass
class RawMovie:
    """A movie as a reader found it, before physical coordinates are attached.

    Attributes
    ----------
    data : dask.array.Array
        ``(time, y, x)`` frames, lazy.
    format : str
        Format name (a key of ``temflow.io.reader.READERS``).
    sources : list of str
        Every file the frames come from.
    pixel_size_nm : (float, float) or None
        ``(dy, dx)`` in nm; ``None`` when the file carries no length calibration.
    times_s : numpy.ndarray or None
        Acquisition time of every frame in s, relative to the first.
    frame_interval_s : float or None
        Time between frames in s, when the file gives an interval but no times.
    instrument : dict
        Instrument settings found: ``voltage_kV``, ``magnification``, ``exposure_s``,
        ``camera``, ``microscope``, ``acquired`` (date/time string)...
    metadata : dict
        Raw metadata worth keeping, JSON-serialisable.
    notes : list of str
        Calibrations the reader ignored and why (kept in the movie's attrs).
    """

    data: da.Array
    format: str
    sources: list[str]
    pixel_size_nm: tuple[float, float] | None = None
    times_s: np.ndarray | None = None
    frame_interval_s: float | None = None
    instrument: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fail(path: str | os.PathLike[str], fmt: str, problem: str, fix: str | None = None) -> MovieFileError:
    """Build the error (callers ``raise fail(...)``)."""
    return MovieFileError(path, fmt, problem, fix)


def frames_per_chunk(chunks: Any, n_frames: int, frame_shape: Sequence[int], dtype: np.dtype) -> int:
    """Frames per read task from the user's ``chunks`` (int, tuple, mapping or None)."""
    if isinstance(chunks, Mapping) and "time" not in chunks:
        chunks = None  # only spatial chunks given: whole frames per task as by default
    if chunks is None or chunks == "auto":
        frame_bytes = max(1, int(np.prod(frame_shape)) * np.dtype(dtype).itemsize)
        return max(1, min(n_frames, DEFAULT_CHUNK_BYTES // frame_bytes))
    if isinstance(chunks, Mapping):
        value = chunks.get("time", -1)
    elif isinstance(chunks, (tuple, list)):
        value = chunks[0] if chunks else -1
    else:
        value = chunks
    if value in (-1, None):
        return max(1, n_frames)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"the time chunk size must be a positive int or -1; got {value!r}")
    return int(min(value, max(1, n_frames)))


def lazy_frames(
    read: Callable[..., np.ndarray],
    args: tuple[Any, ...],
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: np.dtype,
    per_chunk: int,
    name: str,
    files: Sequence[str] | None = None,
) -> da.Array:
    """A dask array whose task ``i`` calls ``read(*args, start, stop)``.

    ``read`` must be a module-level function (pickled by reference) and ``args``
    plain values (paths as str, ints, tuples): nothing open travels in the graph.
    With ``files`` (one file per frame), task ``i`` calls
    ``read(files[start:stop], *args, 0, stop - start)`` instead, so each task
    carries only its own paths (a long In-Situ recording has 10^5 files).
    """
    if n_frames <= 0:
        raise ValueError("a movie needs at least one frame")
    starts = list(range(0, n_frames, per_chunk))
    chunks = tuple(min(per_chunk, n_frames - s) for s in starts)
    token = f"temflow-read-{name}-" + tokenize(read.__module__, read.__name__, args, files, n_frames, per_chunk)
    if files is not None:
        if len(files) != n_frames:
            raise ValueError(f"one file per frame expected; got {len(files)} files for {n_frames} frames")
        graph = {(token, i, 0, 0): (read, tuple(files[s : s + n]), *args, 0, n)
                 for i, (s, n) in enumerate(zip(starts, chunks))}
    else:
        graph = {(token, i, 0, 0): (read, *args, s, s + n) for i, (s, n) in enumerate(zip(starts, chunks))}
    return da.Array(graph, token, chunks=(chunks, (frame_shape[0],), (frame_shape[1],)), dtype=dtype)


def read_contiguous(path: str, fmt: str, offset: int, dtype: str, frame_shape: tuple[int, int], start: int,
                    stop: int) -> np.ndarray:
    """Frames ``start:stop`` of a block of raw frames stored contiguously from byte ``offset``."""
    frame_size = int(frame_shape[0]) * int(frame_shape[1])
    itemsize = np.dtype(dtype).itemsize
    try:
        with open(path, "rb") as f:
            f.seek(offset + start * frame_size * itemsize)
            out = np.fromfile(f, dtype=dtype, count=(stop - start) * frame_size)
    except OSError as exc:
        raise fail(path, fmt, f"reading frames {start}..{stop - 1} failed ({exc})") from None
    if out.size != (stop - start) * frame_size:
        raise fail(path, fmt, f"the file ended while reading frames {start}..{stop - 1} (did it shrink after opening?)",
                   "copy the file again and re-open it")
    return out.reshape(stop - start, *frame_shape).astype(np.dtype(dtype).newbyteorder("="), copy=False)


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    import re

    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def check_file(path: Path, fmt: str) -> int:
    """Missing, not-a-file and empty checks; returns the size in bytes."""
    if not path.exists():
        raise fail(path, fmt, "no such file", "check the path (and the current directory)")
    if not path.is_file():
        raise fail(path, fmt, "this is a folder, not a file", "pass the file itself")
    size = path.stat().st_size
    if size == 0:
        raise fail(path, fmt, "the file is empty (0 bytes)", "copy the file again from the acquisition computer")
    return size


def check_shape(path: Path | str, fmt: str, n_frames: Any, frame_shape: Sequence[Any], itemsize: int) -> int:
    """Refuse a header's shape that is empty, negative or absurd; return its size in bytes.

    Sizes are computed with Python ints (``np.prod`` wraps around silently in int64:
    dimensions of 2^32 - 1 multiply to a small or negative number), so the result can
    be compared with the file's size by :func:`check_extent` before anything is allocated.

    Parameters
    ----------
    path : path or str
        The file (for the message).
    fmt : str
        Format name (for the message).
    n_frames : int
        Frames the header declares.
    frame_shape : (int, int)
        ``(y, x)`` the header declares, px.
    itemsize : int
        Bytes per pixel.

    Returns
    -------
    int
        ``n_frames * y * x * itemsize``, bytes.

    Raises
    ------
    MovieFileError
        For a zero or negative size, a frame side above :data:`MAX_FRAME_SIDE`, a frame above
        :data:`MAX_FRAME_PIXELS` or more than :data:`MAX_FRAMES` frames.

    Examples
    --------
    >>> check_shape("a.npy", "npy", 4, (8, 8), 2)
    512
    >>> check_shape("a.dm4", "dm4", 2**32 - 1, (2**32 - 1, 2**32 - 1), 2)
    Traceback (most recent call last):
    ...
    temflow.errors.MovieFileError: cannot read 'a.dm4' as dm4: the header declares frames of (4294967295, 4294967295) px, larger than any detector (at most 262144 px a side, 4294967296 px in all); the header is damaged; copy the file again, or re-export it from the acquisition software
    """
    fix = "copy the file again, or re-export it from the acquisition software"
    try:
        frames = int(n_frames)
        ny, nx = (int(v) for v in frame_shape)
    except (TypeError, ValueError, OverflowError):
        raise fail(path, fmt, f"the header declares a shape that is not whole numbers ({n_frames!r}, "
                   f"{tuple(frame_shape)!r}); the header is damaged", fix) from None
    if frames <= 0 or ny <= 0 or nx <= 0:
        raise fail(path, fmt, f"the header declares an empty shape (frames, y, x) = ({frames}, {ny}, {nx}); "
                   "the header is damaged", fix)
    if max(ny, nx) > MAX_FRAME_SIDE or ny * nx > MAX_FRAME_PIXELS:
        raise fail(path, fmt, f"the header declares frames of ({ny}, {nx}) px, larger than any detector (at most "
                   f"{MAX_FRAME_SIDE} px a side, {MAX_FRAME_PIXELS} px in all); the header is damaged", fix)
    if frames > MAX_FRAMES:
        raise fail(path, fmt, f"the header declares {frames} frames, more than temflow accepts ({MAX_FRAMES}); "
                   "the header is damaged", fix + " (or split the recording)")
    return frames * ny * nx * int(itemsize)


def check_extent(path: Path, fmt: str, needed: int, size: int, what: str = "the frames") -> None:
    """Refuse a truncated file: the header promises ``needed`` bytes, the file has ``size``."""
    if needed > size:
        raise fail(
            path,
            fmt,
            f"the file is truncated: the header promises {needed} bytes for {what} but the file has {size} bytes",
            "copy the file again; an interrupted transfer or acquisition leaves files like this",
        )


def calibrated_length_nm(
    path: Path, fmt: str, scale: float, unit: str, notes: list[str], axis: str
) -> float | None:
    """A pixel size in nm, or ``None`` (with a note and a warning) when it is not a length.

    Diffraction calibrations (``1/nm``, ``1/m``...) are reciprocal lengths: the
    movie then falls back to pixels (1 px = 1 nm) rather than mislabel them.
    """
    unit = (unit or "").strip()
    if not unit or unit.lower() in ("px", "pixel", "pixels", "unit1", "unit2", "unit3"):
        return None
    if unit.startswith("1/") or unit.lower().endswith("^-1"):
        message = (
            f"{path}: the {axis} calibration is reciprocal ({scale:g} {unit}, a diffraction pattern), not a "
            "length; using pixels (1 px = 1 nm). Pass pixel_size_nm=... if you know the real-space size"
        )
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=4)
        return None
    value = length_to_nm(scale, unit)
    if value is None:
        message = f"{path}: unknown {axis} length unit {unit!r}; using pixels. Pass pixel_size_nm=... to set it"
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=4)
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


def jsonable(value: Any, depth: int = 0) -> Any:
    """Metadata as plain JSON values (numpy scalars unwrapped, bytes decoded)."""
    if depth > 20:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), depth + 1) if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def first_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (or a numeric string)."""
    try:
        out = float(np.asarray(value).ravel()[0]) if not isinstance(value, str) else float(value.strip().split()[0])
    except (TypeError, ValueError, IndexError):
        return None
    return out if math.isfinite(out) else None
