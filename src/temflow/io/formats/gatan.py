"""Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` files and Gatan In-Situ folder trees.

Headers are parsed with ncempy's DM reader (``ncempy.io.dm.fileDM``); pixels are
read per task straight from the data block whose offset the header gives (the
same access ``fileDM.getMemmap`` uses), so opening reads no pixel data and the
graph holds only paths and offsets.

ncempy is not defensive: it checks the ``%%%%`` tag delimiter with ``assert``
(removed by ``python -O``; here a subclass checks it explicitly), never compares
sizes, and tracks the image list with counters that assume the thumbnail has
calibrations. So every file is checked first (version word 3 or 4, byte order,
the root length the header promises against the file's size), the image, its
dimensions and calibrations are taken from the tag tree by name, and the end
of the data block is checked against the file's size.

Calibrations: x and y must both be lengths (nm, µm as U+00B5 or U+03BC, Å, pm...)
to give a pixel size, kept as ``(dy, dx)`` when the pixels are not square. An
image calibrated in reciprocal space (``1/nm``: a diffraction pattern) is refused,
unless the user gives ``pixel_size_nm``. A dataset with an energy axis (eV: an
EELS/EDS spectrum, line or spectrum image) is refused, naming the axis and unit.
A stack's third axis gives the frame time when it is in a time unit; calibrated
as a length (a focal or depth series) it is refused unless the user gives
``frame_interval_s``; without a calibration the frames are uncalibrated in time.

A Gatan In-Situ movie is a folder tree ``Hour_HH/Minute_MM/Second_SS/*.dm4``
with one frame per file. Frames are ordered by (hour, minute, second, file
name in natural order). Their times come from the folder names, which resolve
whole seconds: the frame rate is the number of frames in a complete second,
the first (partial) second's frames are placed at its end and every other
second's from its start. Pass ``frame_interval_s`` to use a known rate
instead. The "director" ``.dm4`` that DigitalMicrograph saves beside
``Hour_00`` opens the whole tree. Only the first file's header is parsed at
opening (plus any file whose size differs from it, to refuse frames of
another shape or dtype); each read task parses the headers of its own files.
A plain folder (or glob) of one-frame DM files is the ``dm-series`` format:
natural file order, no frame times (pass ``frame_interval_s``).
"""

from __future__ import annotations

import functools
import glob
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from temflow.io.formats._common import (
    RawMovie,
    check_extent,
    check_file,
    check_shape,
    fail,
    first_number,
    frames_per_chunk,
    jsonable,
    lazy_frames,
    natural_key,
    per_nm,
    pixel_calibration,
    read_contiguous,
    unit_kind,
)

__all__ = ["read_dm", "read_dm_series", "read_insitu", "is_insitu_folder"]

_DM_DTYPES = {1: "<i2", 2: "<f4", 6: "<u1", 7: "<i4", 9: "<i1", 10: "<u2", 11: "<u4", 12: "<f8"}
_UNSUPPORTED_DM_TYPES = {3: "complex64", 13: "complex128", 14: "binary", 23: "RGB"}
_MAX_METADATA_TAGS = 400
_PART = re.compile(r"^(Hour|Minute|Second)_(\d+)$", re.IGNORECASE)


def _check_dm_header(path: Path, fmt: str, size: int) -> int:
    """Version and byte-order words; the root length must fit in the file. Returns the version."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 16:
        raise fail(path, fmt, f"the file is too short ({size} bytes) for a DM header", "it is not a complete DM file")
    version = struct.unpack(">I", head[:4])[0]
    if version not in (3, 4):
        raise fail(
            path, fmt, f"wrong magic bytes: a DM file starts with version 3 or 4, this one with {head[:4]!r}",
            "check that this is a DigitalMicrograph file (or pass the right format=...)",
        )
    if version == 3:
        root_length, order = struct.unpack(">II", head[4:12])
    else:
        root_length, order = struct.unpack(">QI", head[4:16])
    if order != 1:
        raise fail(path, fmt, "the tags are big-endian (an old Macintosh DM file), which ncempy cannot read",
                   "re-save it from DigitalMicrograph on a PC")
    # DM writes the root length as (file size - 16) for DM3 and (file size - 24) for DM4; whatever
    # the convention, the tag directory cannot be longer than the whole file.
    if root_length > size:
        raise fail(path, fmt, f"the file is truncated: the header promises a tag directory of {root_length} bytes "
                   f"but the file has {size} bytes", "copy the file again; an interrupted transfer leaves files like this")
    return version


class _TagDelimiterError(OSError):
    """A data tag without its ``%%%%`` delimiter: the tag tree is damaged."""


@functools.lru_cache(maxsize=1)
def _checked_reader() -> type:
    """ncempy's ``fileDM`` with its ``assert`` on the tag delimiter made explicit.

    ``fileDM._readTagType`` checks the ``%%%%`` delimiter with ``assert``, which
    ``python -O`` strips; parsing would then go on through garbage. This subclass
    peeks at the delimiter before delegating, whatever the interpreter flags.
    """
    from ncempy.io import dm as ncem_dm

    class CheckedDM(ncem_dm.fileDM):
        def _readTagType(self) -> None:  # noqa: N802 - ncempy's name
            position = self.tell() + (8 if self._dmType == 4 else 0)
            if self._on_memory:
                delimiter = bytes(self.fid[position : position + 4])
            else:
                here = self.fid.tell()
                self.fid.seek(position)
                delimiter = self.fid.read(4)
                self.fid.seek(here)
            if delimiter != b"%%%%":
                raise _TagDelimiterError(f"tag {self._curTagName!r} at byte {position} has no %%%% delimiter")
            super()._readTagType()

    return CheckedDM


def _close_map(reader: Any) -> None:
    """Close ncempy's memory map of the file.

    ncempy parses through ``numpy.frombuffer`` views of the map; one that is still waiting for
    the garbage collector (held by a reference cycle) makes ``mmap.close`` raise ``BufferError``
    ("cannot close exported pointers exist"), seen now and then when several threads parse
    frames at once. The tags are read by then: collect, and close again; a map another thread
    still holds a view of is left to be closed when its last view goes (the file is sound).
    """
    try:
        reader.fid.close()
    except BufferError:
        import gc

        gc.collect()
        try:
            reader.fid.close()
        except BufferError:
            pass


def _parse(path: Path, fmt: str) -> dict[str, Any]:
    """Header facts of one DM file: frames, shape, dtype, data offset, calibrations, tags."""
    size = check_file(path, fmt)
    version = _check_dm_header(path, fmt, size)
    try:
        reader = _checked_reader()(path, on_memory=True)
        tags = dict(reader.allTags)
        _close_map(reader)
    except MemoryError:
        raise
    except Exception as exc:  # ncempy raises IOError, IndexError, struct/numpy errors...
        raise fail(path, fmt, f"the tag structure is damaged ({type(exc).__name__}: {exc})",
                   "the file is corrupt or not a DM file; copy it again") from None
    # Read the image list from the tag tree itself rather than from ncempy's running
    # counters, which assume the thumbnail (RGB, DataType 23) has calibrations too.
    entries = []
    k = 1
    while f".ImageList.{k}.ImageData.Data.arrayOffset" in tags or f".ImageList.{k}.ImageData.DataType" in tags:
        entries.append(k)
        k += 1
    images = [k for k in entries if int(first_number(tags.get(f".ImageList.{k}.ImageData.DataType")) or 0) != 23
              and f".ImageList.{k}.ImageData.Data.arrayOffset" in tags]
    if not images:
        raise fail(path, fmt, "the file holds no image data (only tags or a thumbnail)",
                   "open a DM file that contains an image")
    entry = images[0]
    base = f".ImageList.{entry}.ImageData."
    dm_type = int(first_number(tags.get(base + "DataType")) or -1)
    if dm_type in _UNSUPPORTED_DM_TYPES:
        raise fail(path, fmt, f"the image is {_UNSUPPORTED_DM_TYPES[dm_type]}, not a real-valued movie",
                   "convert it to a real image in DigitalMicrograph")
    if dm_type not in _DM_DTYPES:
        raise fail(path, fmt, f"unknown DM data type {dm_type}", "the file is damaged or from an unknown DM version")
    dims: list[int] = []
    while base + f"Dimensions.{len(dims) + 1}" in tags:
        dims.append(int(first_number(tags[base + f"Dimensions.{len(dims) + 1}"]) or 0))
    scale, units = [], []
    for d in range(1, len(dims) + 1):
        key = base + f"Calibrations.Dimension.{d}."
        scale.append(first_number(tags.get(key + "Scale")) or 1.0)
        unit = tags.get(key + "Units", "")
        units.append(unit.strip() if isinstance(unit, str) else "")
    _refuse_spectra(path, fmt, dims, scale, units)
    ndim = len([d for d in dims if d > 1]) if len(dims) > 2 else len(dims)
    if len(dims) < 2 or ndim > 3 or min(dims) <= 0:
        raise fail(path, fmt, f"the dataset has dimensions {dims}; temflow reads 2-D images and 3-D stacks",
                   "spectra and 4D-STEM data are not movies")
    dtype = np.dtype(_DM_DTYPES[dm_type])
    n_frames = math.prod(dims[2:])  # Python ints: np.prod wraps around for dimensions near 2^32
    frame_shape = (dims[1], dims[0])  # DM lists the fastest dimension (x) first
    offset = int(tags[base + "Data.arrayOffset"])
    needed = check_shape(path, fmt, n_frames, frame_shape, dtype.itemsize)
    check_extent(path, fmt, offset + needed, size)
    declared = first_number(tags.get(base + "Data.arraySize"))
    if declared is not None and int(declared) < needed:
        raise fail(path, fmt, f"the data array holds {int(declared)} bytes, less than its dimensions {dims} need",
                   "the file is damaged")
    prefix = f".ImageList.{entry}.ImageTags."
    image_tags = {k[len(prefix):]: v for k, v in tags.items() if k.startswith(prefix)}
    return {
        "version": version,
        "dtype": dtype,
        "n_frames": n_frames,
        "frame_shape": frame_shape,
        "offset": offset,
        "scale": scale,
        "units": units,
        "image_tags": image_tags,
        "size": size,
    }


def _instrument(tags: dict[str, Any]) -> dict[str, Any]:
    """The instrument settings DigitalMicrograph records under ImageTags."""
    out: dict[str, Any] = {}
    voltage = first_number(tags.get("Microscope Info.Voltage"))
    if voltage is not None:
        out["voltage_kV"] = voltage / 1000.0
    for key in ("Microscope Info.Indicated Magnification", "Microscope Info.Actual Magnification"):
        value = first_number(tags.get(key))
        if value is not None:
            out["magnification"] = value
            break
    for key in ("Acquisition.Parameters.High Level.Exposure (s)", "DataBar.Exposure Time (s)",
                "Acquisition.Parameters.Detector.exposure (s)"):
        value = first_number(tags.get(key))
        if value is not None:
            out["exposure_s"] = value
            break
    for key, name in (("Acquisition.Device.Name", "camera"), ("Microscope Info.Microscope", "microscope"),
                      ("Microscope Info.Operation Mode", "mode"), ("Microscope Info.Imaging Mode", "imaging_mode")):
        if isinstance(tags.get(key), str) and tags[key]:
            out[name] = tags[key]
    date, time = tags.get("DataBar.Acquisition Date"), tags.get("DataBar.Acquisition Time")
    if isinstance(date, str) or isinstance(time, str):
        out["acquired"] = " ".join(str(v) for v in (date, time) if isinstance(v, str))
    return out


def _metadata(tags: dict[str, Any]) -> dict[str, Any]:
    """ImageTags as a flat, JSON-serialisable dict (array placeholders dropped)."""
    out: dict[str, Any] = {}
    for key, value in tags.items():
        if len(out) >= _MAX_METADATA_TAGS:
            break
        if isinstance(value, str) and value.startswith(("Array unread", "Data unread")):
            continue
        if key.endswith((".arraySize", ".arrayOffset", ".arrayType")):
            continue
        out[key] = jsonable(value)
    return out


def _refuse_spectra(path: Path, fmt: str, dims: list[int], scale: list[float], units: list[str]) -> None:
    """A spectrum (an energy axis, in eV) or a spectrum image is not a movie: say which axis and unit."""
    energy = [i for i, unit in enumerate(units) if unit_kind(unit) == "energy" and i < len(dims)]
    if not energy:
        return
    i = energy[0]
    axis = f"DM dimension {i + 1} ({dims[i]} channels, {scale[i]:g} {units[i]} per channel)"
    spatial = [d for j, d in enumerate(dims) if j != i and d > 1]
    if len(spatial) >= 2:
        what = f"a spectrum image ({' x '.join(map(str, spatial))} positions, EELS/EDS)"
    elif spatial:
        what = f"a line of {spatial[0]} spectra"
    else:
        what = "a single spectrum"
    raise fail(path, fmt, f"{what}: {axis} is an energy axis in {units[i]}, so this is not an image series",
               "open the image or movie acquired beside it (e.g. the HAADF or survey image)")


def _pixel_size(info: dict[str, Any]) -> tuple[tuple[float, float] | None, str | None, list[str], list[str]]:
    scale, units = info["scale"], info["units"]
    return pixel_calibration((scale[1], units[1]), (scale[0], units[0]))


def _frame_axis(info: dict[str, Any]) -> tuple[float | None, str | None, str | None]:
    """The third axis: (frame interval s, time refusal, note)."""
    from temflow.movie import time_to_s

    if info["n_frames"] < 2 or len(info["scale"]) < 3:
        return None, None, None
    scale, unit = info["scale"][2], info["units"][2]
    kind = unit_kind(unit)
    if kind == "time":
        value = time_to_s(scale, unit)
        if value is not None and value > 0:
            return value, None, None
        return None, None, f"the frame axis has a non-positive time step ({scale:g} {unit}); ignored"
    if kind == "length":
        return None, (f"the stack's third axis is calibrated as a length ({scale:g} {unit} per slice): a "
                      "through-focus, tilt or depth series"), None
    if kind == "reciprocal":
        return None, (f"the stack's third axis is in reciprocal space ({per_nm(scale, unit) or scale:g} 1/nm per "
                      "slice)"), None
    if kind == "unknown":
        return None, None, f"the frame axis is calibrated in an unknown unit {unit!r}; no time step taken from it"
    return None, None, None


def read_dm(path: Path, *, chunks: Any = None, fmt: str = "dm4") -> RawMovie:
    """Open a ``.dm3``/``.dm4`` image or stack lazily (header only).

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The DM file.
    chunks : int, tuple or mapping, optional
        As for :func:`temflow.open_movie` (only the time chunking is used here).
    fmt : str
        Format name used in messages and attrs.

    Returns
    -------
    RawMovie
        Frames and the calibrations found, for :func:`temflow.open_movie` to assemble.

    Raises
    ------
    MovieFileError
        If the file is missing, empty, truncated or damaged.
    """
    info = _parse(path, fmt)
    pixel, refusal, pixel_notes, notes = _pixel_size(info)
    interval, time_refusal, time_note = _frame_axis(info)
    if time_note:
        notes.append(time_note)
    per = frames_per_chunk(chunks, info["n_frames"], info["frame_shape"], info["dtype"])
    data = lazy_frames(read_contiguous, (str(path), fmt, info["offset"], info["dtype"].str, info["frame_shape"]),
                       info["n_frames"], info["frame_shape"], info["dtype"], per, fmt)
    tags = info["image_tags"]
    return RawMovie(data=data, format=fmt, sources=[str(path)], pixel_size_nm=pixel, frame_interval_s=interval,
                    instrument=_instrument(tags), metadata={"dm_version": info["version"], "image_tags": _metadata(tags)},
                    notes=notes, pixel_notes=pixel_notes, pixel_refusal=refusal, time_refusal=time_refusal)


# --------------------------------------------------------------------------- In-Situ trees


def _insitu_second(root: Path, file: Path) -> tuple[int, int, int] | None:
    """(hour, minute, second) from a frame's ``Hour_HH/Minute_MM/Second_SS`` folders, or None."""
    parts: dict[str, int] = {}
    for component in file.relative_to(root).parts[:-1]:
        match = _PART.match(component)
        if match:
            parts[match.group(1).lower()] = int(match.group(2))
    return (parts["hour"], parts["minute"], parts["second"]) if len(parts) == 3 else None


def _insitu_files(root: Path) -> list[tuple[tuple[int, int, int], Path]]:
    found = []
    for file in root.rglob("*"):
        if not file.is_file() or file.suffix.lower() != ".dm4":
            continue
        second = _insitu_second(root, file)
        if second is not None:
            found.append((second, file))
    return found


def insitu_times_s(root: Path, files: list[Path]) -> np.ndarray | None:
    """The frame times :func:`read_insitu` gives the In-Situ frames ``files`` (in that order).

    Live mode (:func:`temflow.pipeline.live.watch`) calls this on the frames written so far, so
    its time coordinate is the batch reader's, frame by frame (earlier frames' times can still
    move while the first seconds' rate is not known: the batch reader on the same files would
    move them alike).

    Parameters
    ----------
    root : pathlib.Path
        The folder holding ``Hour_00``.
    files : list of pathlib.Path
        Frame files under ``root``, in acquisition order.

    Returns
    -------
    numpy.ndarray or None
        Seconds from the first frame, one per file; None when the folder names give no
        usable times (a single frame, or times not increasing), as for :func:`read_insitu`.
    """
    seconds = []
    for file in files:
        second = _insitu_second(root, file)
        if second is None:
            raise ValueError(f"{file} is not under {root}/Hour_HH/Minute_MM/Second_SS; not a Gatan In-Situ frame")
        hour, minute, sec = second
        seconds.append(hour * 3600 + minute * 60 + sec)
    if len(seconds) < 2:
        return None
    times = _insitu_times(np.array(seconds, dtype=float))
    times -= times[0]
    return times if np.all(np.diff(times) > 0) else None


def _is_hour(path: Path) -> bool:
    return bool(_PART.match(path.name)) and path.name.lower().startswith("hour")


def insitu_root(path: Path) -> Path:
    """The folder holding ``Hour_HH``: ``path`` itself, or its parent when ``path`` is an ``Hour_HH`` folder."""
    return path.parent if _is_hour(path) else path


def is_insitu_folder(path: Path) -> bool:
    """True if ``path`` is (or holds) a Gatan In-Situ ``Hour_HH`` folder tree."""
    if not path.is_dir():
        return False
    return _is_hour(path) or any(child.is_dir() and _is_hour(child) for child in path.iterdir())


def _read_dm_files(paths: tuple[str, ...], fmt: str, dtype: str, frame_shape: tuple[int, int], start: int,
                       stop: int) -> np.ndarray:
    out = np.empty((stop - start, *frame_shape), dtype=dtype)
    for i, file in enumerate(paths[start:stop]):
        info = _parse(Path(file), fmt)
        if info["frame_shape"] != tuple(frame_shape) or info["dtype"] != np.dtype(dtype):
            raise fail(file, fmt, f"this frame is {info['frame_shape']} {info['dtype']}, the movie is "
                       f"{tuple(frame_shape)} {np.dtype(dtype)}", "remove frames from other acquisitions")
        out[i] = read_contiguous(file, fmt, info["offset"], info["dtype"].str, info["frame_shape"], 0, 1)[0]
    return out


def _insitu_times(seconds: np.ndarray) -> np.ndarray:
    """Frame times from whole-second folder names.

    The frame rate is the median number of frames in the interior seconds (the
    first and last seconds of a recording are partial). Frames of the first second
    are placed at its end (the recording started within it), all others from the
    start of their second at that rate. With fewer than three seconds, each
    second's frames are spread evenly over it.
    """
    labels, counts = np.unique(seconds, return_counts=True)
    times = seconds.copy()
    rate = float(np.median(counts[1:-1])) if labels.size >= 3 else None
    for label, count in zip(labels, counts):
        members = np.flatnonzero(seconds == label)
        if rate is None or count > rate:
            times[members] = label + np.arange(count) / count
        elif label == labels[0]:
            times[members] = label + 1.0 - (count - np.arange(count)) / rate
        else:
            times[members] = label + np.arange(count) / rate
    return times


def read_insitu(path: Path, *, chunks: Any = None, fmt: str = "insitu") -> RawMovie:
    """Open a Gatan In-Situ ``Hour_HH/Minute_MM/Second_SS/*.dm4`` tree lazily.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The folder holding ``Hour_00`` (or ``Hour_00`` itself, or the director ``.dm4`` beside it).
    chunks : int, tuple or mapping, optional
        As for :func:`temflow.open_movie` (only the time chunking is used here).
    fmt : str
        Format name used in messages and attrs.

    Returns
    -------
    RawMovie
        Frames and the calibrations found, for :func:`temflow.open_movie` to assemble.

    Raises
    ------
    MovieFileError
        If the file is missing, empty, truncated or damaged.
    """
    if not path.exists():
        raise fail(path, fmt, "no such folder", "check the path")
    if path.is_file():  # the director image DigitalMicrograph saves beside the Hour_00 tree
        path = path.parent
    root = insitu_root(path)
    found = _insitu_files(root)
    if not found:
        raise fail(path, fmt, "the folder tree holds no .dm4 frames under Hour_*/Minute_*/Second_*",
                   "pass the folder that contains the Hour_00 folder")
    found.sort(key=lambda item: (item[0], natural_key(item[1].name)))
    files = [file for _, file in found]
    movie = _frame_files(files, fmt, chunks)
    movie.metadata.update(time_source="folder names Hour/Minute/Second (whole seconds; rate from complete seconds)",
                          root=str(root))
    movie.times_s = insitu_times_s(root, files)
    return movie


def _frame_files(files: list[Path], fmt: str, chunks: Any) -> RawMovie:
    """A movie of one-frame DM files, in the given order (headers: first file, and any of another size)."""
    sizes = [check_file(file, fmt) for file in files]
    first = _parse(files[0], fmt)
    if first["n_frames"] != 1:
        raise fail(files[0], fmt, f"a frame file must hold one image; this one holds {first['n_frames']}",
                   "open a stack file on its own")
    for file, size in zip(files[1:], sizes[1:]):
        if size != first["size"]:
            info = _parse(file, fmt)
            if info["frame_shape"] != first["frame_shape"] or info["dtype"] != first["dtype"]:
                raise fail(file, fmt, f"frames differ: this one is {info['frame_shape']} {info['dtype']}, "
                           f"{files[0].name} is {first['frame_shape']} {first['dtype']}",
                           "keep one acquisition per folder")
    pixel, refusal, pixel_notes, notes = _pixel_size(first)
    per = frames_per_chunk(chunks, len(files), first["frame_shape"], first["dtype"])
    data = lazy_frames(_read_dm_files, (fmt, first["dtype"].str, first["frame_shape"]), len(files),
                       first["frame_shape"], first["dtype"], per, fmt, files=[str(f) for f in files])
    tags = first["image_tags"]
    return RawMovie(data=data, format=fmt, sources=[str(f) for f in files], pixel_size_nm=pixel,
                    instrument=_instrument(tags), metadata={"dm_version": first["version"],
                                                            "image_tags": _metadata(tags)}, notes=notes,
                    pixel_notes=pixel_notes, pixel_refusal=refusal)


def read_dm_series(path: Path | str, *, chunks: Any = None, fmt: str = "dm-series") -> RawMovie:
    """Open a folder (or glob pattern) of one-frame ``.dm3``/``.dm4`` files lazily, in natural order.

    Lazy: parses the first header (and any file of another size); each dask task
    opens its own files by path. The files carry no frame times: pass
    ``frame_interval_s`` to :func:`temflow.open_movie`.

    Parameters
    ----------
    path : pathlib.Path or str
        A folder of DM frames, or a glob pattern (str) such as ``"run/*.dm4"``.
    chunks : int, tuple or mapping, optional
        As for :func:`temflow.open_movie` (only the time chunking is used here).
    fmt : str
        Format name used in messages and attrs.

    Returns
    -------
    RawMovie
        Frames and the calibrations found, for :func:`temflow.open_movie` to assemble.

    Raises
    ------
    MovieFileError
        If no DM file matches, or frames differ in shape or dtype, or a file is damaged.
    """
    if isinstance(path, Path) and path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".dm3", ".dm4")]
    else:
        files = [Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in (".dm3", ".dm4")]
    if not files:
        raise fail(path, fmt, "no .dm3 or .dm4 frames found", "check the folder or pattern")
    files.sort(key=lambda p: natural_key(p.name))
    return _frame_files(files, fmt, chunks)
