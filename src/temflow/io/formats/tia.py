"""FEI/TIA ``.ser`` image series (with the ``.emi`` metadata file beside them).

The header and offset arrays are parsed with ncempy's ``fileSER`` (which also
reads the ``<name>.emi`` next to ``<name>_1.ser``); each task reads its frames
with ``fileSER.getDataset``, so pixels come out exactly as ncempy gives them
(rows flipped to TIA's display orientation).

Checked at opening: the offset arrays and the last valid frame must lie inside
the file (a truncated series is refused); only the ``ValidNumberElements``
frames count (TIA allocates more when a series is stopped early); spectra
(``0x4120``) are refused. TIA stores calibrations in metres whatever they are:
a step larger than 1 mm per pixel cannot be a real-space pixel, so it is taken
as a diffraction calibration (1/m), noted, warned about, and the movie falls
back to pixels. Frame times are the per-frame tag times (whole seconds); they
are used only when they strictly increase, since fast series often repeat the
same second.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from temflow.errors import MovieFileError
from temflow.io.formats._common import (
    RawMovie,
    check_extent,
    check_shape,
    check_file,
    fail,
    first_number,
    frames_per_chunk,
    jsonable,
    lazy_frames,
)

__all__ = ["read_ser"]

_FMT = "ser"
_DTYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8"}


@functools.lru_cache(maxsize=2)
def _reader(with_emi: bool) -> type:
    """ncempy's ``fileSER`` whose ``.emi`` reading cannot break the series.

    ``fileSER`` always parses ``<name>.emi`` (XML) on opening and lets any error
    through; a damaged or foreign ``.emi`` must not make good frames unreadable.
    Read tasks skip it altogether (they need no metadata).
    """
    from ncempy.io import ser

    class TolerantSER(ser.fileSER):
        emi_error: str | None = None

        def _read_emi(self) -> None:
            self._emi = None
            if not with_emi:
                return
            try:
                super()._read_emi()
            except Exception as exc:  # noqa: BLE001 - XML, encoding and I/O errors alike
                self._emi = None
                self.emi_error = f"{type(exc).__name__}: {exc}"

    return TolerantSER


def _open(path: str | Path, *, with_emi: bool = False) -> Any:
    return _reader(with_emi)(Path(path))


def _read_ser_block(path: str, frame_shape: tuple[int, int], dtype: str, start: int, stop: int) -> np.ndarray:
    out = np.empty((stop - start, *frame_shape), dtype=dtype)
    try:
        with _open(path) as f:
            for i in range(start, stop):
                frame, _ = f.getDataset(i)
                if frame.shape != tuple(frame_shape):
                    raise fail(path, _FMT, f"frame {i} is {frame.shape}, the series is {tuple(frame_shape)}")
                out[i - start] = frame
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - ncempy raises RuntimeError, IndexError, numpy errors...
        raise fail(path, _FMT, f"reading frames {start}..{stop - 1} failed ({type(exc).__name__}: {exc})") from None
    return out


def _element_header(path: Path, offset: int) -> tuple[tuple[int, int], np.dtype, float, float]:
    """Shape, dtype and the (x, y) calibration steps of the data element at ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(2 * 20 + 2 + 8)
    if len(raw) < 50:
        raise fail(path, _FMT, "the file is truncated inside a frame header", "copy the file again")
    cal = np.frombuffer(raw[:40], dtype=np.dtype([("offset", "<f8"), ("delta", "<f8"), ("element", "<i4")]))
    code = int(np.frombuffer(raw[40:42], "<i2")[0])
    nx, ny = (int(v) for v in np.frombuffer(raw[42:50], "<i4"))
    if code not in _DTYPES:
        raise fail(path, _FMT, f"unknown TIA data type {code}", "the file is damaged")
    if nx <= 0 or ny <= 0:
        raise fail(path, _FMT, f"a frame has shape ({ny}, {nx})", "the file is damaged")
    return (ny, nx), np.dtype(_DTYPES[code]), float(cal["delta"][0]), float(cal["delta"][1])


def _instrument(emi: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in emi.items():
        low = key.lower()
        number = first_number(value)
        if low.startswith("high tension") and number is not None:
            out["voltage_kV"] = number if "[kv]" in low else number / 1000.0
        elif low.startswith("magnification") and number is not None:
            out["magnification"] = number
        elif low.startswith(("integration time", "exposure time")) and number is not None:
            out["exposure_s"] = number
        elif low.startswith("microscope") and isinstance(value, str) and value.strip():
            out["microscope"] = value.strip()
        elif low.startswith("mode") and isinstance(value, str):
            out["mode"] = value.strip()
        elif low.startswith("camera") and "length" not in low and isinstance(value, str):
            out["camera"] = value.strip()
    if emi.get("AcquireDate"):
        out["acquired"] = str(emi["AcquireDate"])
    return out


def read_ser(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open a TIA ``.ser`` image series lazily.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The ``.ser`` file (its ``.emi`` is found beside it).
    chunks : int, tuple or mapping, optional
        As for :func:`temflow.open_movie` (only the time chunking is used here).

    Returns
    -------
    RawMovie
        Frames and the calibrations found, for :func:`temflow.open_movie` to assemble.

    Raises
    ------
    MovieFileError
        If the file is missing, empty, truncated or damaged.
    """
    size = check_file(path, _FMT)
    try:
        with _open(path, with_emi=True) as f:
            head = dict(f.head)
            emi = dict(f._emi or {})
            emi_error = f.emi_error
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fail(path, _FMT, f"the series header is damaged ({type(exc).__name__}: {exc})",
                   "copy the file again (and its .emi)") from None
    if int(head["DataTypeID"]) != 0x4122:
        raise fail(path, _FMT, "the series holds spectra (1-D data), not images", "open image series only")
    offset_size = 4 if int(head["SeriesVersion"]) == 0x0210 else 8
    total, valid = int(head["TotalNumberElements"]), int(head["ValidNumberElements"])
    check_extent(path, _FMT, int(head["OffsetArrayOffset"]) + 2 * total * offset_size, size, "the offset arrays")
    # ncempy reads ValidNumberElements offsets for each array, but both arrays hold
    # TotalNumberElements entries: read them here so a stopped series keeps its tags.
    with open(path, "rb") as fh:
        fh.seek(int(head["OffsetArrayOffset"]))
        offsets = np.frombuffer(fh.read(2 * total * offset_size), "<i4" if offset_size == 4 else "<i8")
    data_offsets = [int(o) for o in offsets[:valid] if int(o) > 0]
    tag_offsets = [int(o) for o in offsets[total : total + valid]]
    if not data_offsets:
        raise fail(path, _FMT, "the series holds no valid frames (ValidNumberElements = 0)",
                   "the acquisition recorded nothing")
    frame_shape, dtype, step_x, step_y = _element_header(path, data_offsets[0])
    element = 50 + check_shape(path, _FMT, len(data_offsets), frame_shape, dtype.itemsize) // len(data_offsets)
    check_extent(path, _FMT, max(data_offsets) + element, size, f"{len(data_offsets)} frames")
    notes: list[str] = []
    if emi_error:
        notes.append(f"{path}: the .emi metadata file could not be read ({emi_error}); instrument settings are missing")
    pixel = None
    mode = str(emi.get("Mode", "")) + " " + " ".join(str(v) for k, v in emi.items() if k.lower().startswith("mode"))
    if step_x > 1e-3 or step_y > 1e-3 or "diffraction" in mode.lower():
        message = (f"{path}: the TIA calibration ({step_x:g} per pixel) is a diffraction (1/m) calibration, not a "
                   "length; using pixels (1 px = 1 nm). Pass pixel_size_nm=... if you know the real-space size")
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    elif step_x > 0 and step_y > 0:
        pixel = (step_y * 1e9, step_x * 1e9)
    times = None
    if len(tag_offsets) == len(data_offsets) > 1 and min(tag_offsets) > 0 and max(tag_offsets) + 8 <= size:
        stamps = []
        with open(path, "rb") as fh:
            for offset in tag_offsets:
                fh.seek(offset)
                stamps.append(int(np.frombuffer(fh.read(8), "<i4")[1]))
        stamps_array = np.asarray(stamps, dtype=float)
        if np.all(np.diff(stamps_array) > 0):
            times = stamps_array - stamps_array[0]
        else:
            notes.append(f"{path}: the TIA frame times repeat (whole seconds); pass frame_interval_s=...")
    per = frames_per_chunk(chunks, len(data_offsets), frame_shape, dtype)
    data = lazy_frames(_read_ser_block, (str(path), frame_shape, dtype.str), len(data_offsets), frame_shape,
                       dtype.newbyteorder("="), per, _FMT)
    metadata = {"series_version": hex(int(head["SeriesVersion"])), "total_elements": total, "valid_elements": valid,
                "emi": jsonable(emi)}
    return RawMovie(data=data, format=_FMT, sources=[str(path)], pixel_size_nm=pixel, times_s=times,
                    instrument=_instrument(emi), metadata=metadata, notes=notes)
