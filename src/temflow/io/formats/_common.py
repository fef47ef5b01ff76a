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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from temflow.movie import length_to_nm
from temflow.errors import MovieFileError

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
        What the reader decided about the calibrations and why (kept in the movie's attrs).
    pixel_notes : list of str
        Why the file gives no usable pixel size (unknown unit, a scale without a
        unit...); ``open_movie`` warns with them only when the user gives none.
    pixel_refusal : str or None
        Why the file's pixel calibration is not a real-space length (a diffraction
        pattern in 1/nm...). ``open_movie`` refuses the file unless the user gives
        ``pixel_size_nm``, never labelling such pixels nm.
    time_refusal : str or None
        Why the frame axis is not time (a through-focus or depth series calibrated
        as a length...). ``open_movie`` refuses unless the user gives ``frame_interval_s``.
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
    pixel_notes: list[str] = field(default_factory=list)
    pixel_refusal: str | None = None
    time_refusal: str | None = None


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


_ENERGY_UNITS = {"ev": 1.0, "kev": 1e3, "mev": 1e6}
_NO_UNIT = {"", "px", "pixel", "pixels", "unit1", "unit2", "unit3", "[]", "none", "<auto>"}


def unit_kind(unit: str) -> str:
    """What an axis unit measures: ``"none"``, ``"length"``, ``"reciprocal"``, ``"energy"``, ``"time"`` or ``"unknown"``.

    Examples
    --------
    >>> [unit_kind(u) for u in ("nm", "µm", "1/nm", "1 / nm", "nm^-1", "eV", "s", "", "furlong")]
    ['length', 'length', 'reciprocal', 'reciprocal', 'reciprocal', 'energy', 'time', 'none', 'unknown']
    """
    from temflow.movie import time_to_s

    text = (unit or "").strip()
    compact = text.replace(" ", "")
    if compact.lower() in _NO_UNIT:
        return "none"
    if compact.startswith("1/") or compact.endswith(("^-1", "-1")):
        return "reciprocal"
    if compact.lower() in _ENERGY_UNITS:
        return "energy"
    if length_to_nm(1.0, compact) is not None:
        return "length"
    if time_to_s(1.0, compact) is not None:
        return "time"
    return "unknown"


def per_nm(scale: float, unit: str) -> float | None:
    """A reciprocal-space step (``1/m``, ``1/Å``, ``nm^-1``...) in 1/nm; ``None`` if the unit is not reciprocal.

    Examples
    --------
    >>> round(per_nm(42464134.61, "1/m"), 6), per_nm(0.5, "1/nm"), per_nm(2.0, "nm")
    (0.042464, 0.5, None)
    """
    compact = (unit or "").replace(" ", "")
    if compact.startswith("1/"):
        length = length_to_nm(1.0, compact[2:])
    elif compact.endswith("^-1"):
        length = length_to_nm(1.0, compact[:-3])
    elif compact.endswith("-1"):
        length = length_to_nm(1.0, compact[:-2])
    else:
        return None
    return float(scale) / length if length else None


def describe_reciprocal(scale: float, unit: str) -> str:
    """``"0.0425 1/nm per pixel (stored as 4.246e+07 1/m)"``."""
    value = per_nm(scale, unit)
    if value is None:
        return f"{scale:g} {unit} per pixel"
    stored = "" if unit.replace(" ", "") == "1/nm" else f" (stored as {scale:g} {unit})"
    return f"{value:.6g} 1/nm per pixel{stored}"


def pixel_calibration(
    y: tuple[float, str], x: tuple[float, str]
) -> tuple[tuple[float, float] | None, str | None, list[str], list[str]]:
    """The pixel size from the ``(scale, unit)`` of the y and x axes.

    Returns
    -------
    pixel : (float, float) or None
        ``(dy, dx)`` in nm when both axes are lengths.
    refusal : str or None
        Set when an axis is in reciprocal space (a diffraction pattern): the caller
        puts it in :attr:`RawMovie.pixel_refusal`.
    pixel_notes : list of str
        Why there is no pixel size (no unit, an unknown unit), for the warning.
    notes : list of str
        Facts to keep (non-square pixels).

    Examples
    --------
    >>> pixel_calibration((0.2, "nm"), (0.0002, "µm"))[0]
    (0.2, 0.2)
    >>> pixel_calibration((0.17, "1/nm"), (0.17, "1/nm"))[1]
    'the image is calibrated in reciprocal space (0.17 1/nm per pixel): a diffraction pattern, not a real-space image'
    >>> pixel_calibration((0.03125, ""), (0.03125, ""))[2]
    ['the y and x axes have a scale (0.03125) but no unit']
    """
    kinds = [unit_kind(unit) for _, unit in (y, x)]
    if "reciprocal" in kinds:
        parts = [describe_reciprocal(s, u) for (s, u), k in zip((y, x), kinds) if k == "reciprocal"]
        text = parts[0] if len(set(parts)) == 1 else "y " + parts[0] + ", x " + parts[-1]
        return None, (f"the image is calibrated in reciprocal space ({text}): a diffraction pattern, "
                      "not a real-space image"), [], []
    if kinds == ["length", "length"]:
        dy, dx = length_to_nm(y[0], y[1]), length_to_nm(x[0], x[1])
        if dy is not None and dx is not None and math.isfinite(dy) and math.isfinite(dx) and dy > 0 and dx > 0:
            notes = []
            if not math.isclose(dy, dx, rel_tol=1e-3):
                notes.append(f"the pixels are not square: {dy:.6g} nm (y) x {dx:.6g} nm (x), both kept "
                             f"({y[0]:g} {y[1]} and {x[0]:g} {x[1]} in the file)")
            return (dy, dx), None, [], notes
        return None, None, [f"the pixel size in the file is not positive ({y[0]:g} {y[1]}, {x[0]:g} {x[1]})"], []
    pixel_notes = []
    if kinds == ["none", "none"]:
        scales = {s for s, _ in (y, x)}
        if scales - {0.0, 1.0}:
            pixel_notes.append(f"the y and x axes have a scale ({', '.join(f'{s:g}' for s in sorted(scales))}) but no unit")
    else:
        for (scale, unit), kind, axis in zip((y, x), kinds, ("y", "x")):
            if kind == "none":
                pixel_notes.append(f"the {axis} axis has no unit (scale {scale:g})")
            elif kind != "length":
                pixel_notes.append(f"the {axis} axis is calibrated in {unit!r} ({kind}), not a length")
    return None, None, pixel_notes, []


def frame_times(
    stamps_s: Sequence[float] | np.ndarray | None,
    *,
    resolution_s: float,
    candidate_s: float | None,
    candidate: str,
    stamps: str,
) -> tuple[np.ndarray | None, float | None, str | None]:
    """Frame times from per-frame time stamps, a nominal frame time, or both.

    Microscope files often stamp frames in whole seconds (TIA, Velox), stamp them
    all alike, or not at all, while their header gives a precise nominal frame time
    (a STEM frame time, a camera exposure). The nominal time is used when the
    stamps agree with it (within their resolution); stamps that disagree win (the
    series paused, or the nominal time is not the frame period); equal stamps
    defer to the nominal time.

    Parameters
    ----------
    stamps_s : sequence of float or None
        One time stamp per frame, in s (any origin); ``None`` when the file has none.
    resolution_s : float
        Resolution of the stamps, s (1.0 for whole seconds).
    candidate_s : float or None
        The nominal frame period from the header, s.
    candidate, stamps : str
        What the nominal time and the stamps are, for the note.

    Returns
    -------
    times : numpy.ndarray or None
        Times relative to the first frame, s, when the stamps are used as they are.
    interval : float or None
        The regular frame period, s, otherwise (``None``: unknown).
    note : str or None
        What was used and why.

    Examples
    --------
    >>> frame_times([7, 7, 7], resolution_s=1.0, candidate_s=0.236, candidate="FrameTime", stamps="tags")[1:]
    (0.236, 'the per-frame tags are all equal (7); time step = FrameTime, 0.236 s')
    >>> frame_times([0, 1, 2, 4, 5], resolution_s=1.0, candidate_s=0.0416, candidate="FrameTime", stamps="tags")[1]
    1.25
    """
    nominal = candidate_s if candidate_s is not None and math.isfinite(candidate_s) and candidate_s > 0 else None
    values = None if stamps_s is None else np.asarray(stamps_s, dtype=float)
    if values is None or values.size < 2 or not np.all(np.isfinite(values)):
        if nominal is None:
            return None, None, None
        return None, nominal, f"time step = {candidate}, {nominal:g} s"
    n = values.size
    span = float(values[-1] - values[0])
    if np.all(values == values[0]):
        if nominal is None:
            return None, None, (f"the per-frame {stamps} are all equal ({values[0]:g}) and the file gives no frame "
                                "time; the time step is unknown")
        return None, nominal, f"the per-frame {stamps} are all equal ({values[0]:g}); time step = {candidate}, {nominal:g} s"
    slack = resolution_s + 1e-9 + 0.01 * abs(span)
    if nominal is not None and abs(span - (n - 1) * nominal) <= slack:
        return None, nominal, (f"time step = {candidate}, {nominal:g} s (the per-frame {stamps} agree: "
                               f"{n} frames over {span:g} s)")
    against = f"; {candidate} ({nominal:g} s) does not match them" if nominal is not None else ""
    if np.all(np.diff(values) > 0) and resolution_s * 10 <= float(np.min(np.diff(values))):
        return values - values[0], None, f"frame times from the per-frame {stamps}{against}"
    if span > 0:
        interval = span / (n - 1)
        return None, interval, (f"time step {interval:.6g} s from the per-frame {stamps} ({n} frames over {span:g} s, "
                                f"resolution {resolution_s:g} s, so +/- {resolution_s / (n - 1):.3g} s){against}")
    return None, nominal, f"the per-frame {stamps} decrease; time step = {candidate}" if nominal else None


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
