"""FEI/TIA ``.ser`` image series (with the ``.emi`` metadata file beside them).

The header and offset arrays are parsed with ncempy's ``fileSER`` (which also
reads the ``<name>.emi`` next to ``<name>_1.ser``); each task reads its frames
with ``fileSER.getDataset``, so pixels come out exactly as ncempy gives them
(rows flipped to TIA's display orientation).

Checked at opening: the offset arrays and the last valid frame must lie inside
the file (a truncated series is refused); only the ``ValidNumberElements``
frames count (TIA allocates more when a series is stopped early); spectra
(``0x4120``) are refused.

Real or reciprocal space: TIA labels every calibration "m", a diffraction
pattern's 1/m too. The EMI's mode string says how the image was formed (its
first word: ``STEM`` is a scanned, real-space image, although FEI's STEM mode
strings end in "Diffraction"; ``TEM ... Diffraction`` is a camera image of the
diffraction plane), and the calibration's magnitude must agree (a real-space
pixel is below 1 mm; pixel x magnification is checked and noted). Reciprocal
space is refused, saying so and giving the value in 1/nm.

Frame times: a time axis in the series header if there is one; else the
per-frame tag times (whole seconds), checked against the EMI ``FrameTime`` of a
STEM series: when the tags are all equal or zero (TIA often writes them so) or
agree with it, the ``FrameTime`` is the time step; a camera's exposure is not
its frame period and is never used as one.
"""

from __future__ import annotations

import functools
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
    frame_times,
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


def _mode(emi: dict[str, Any]) -> str:
    """TIA's mode string, e.g. ``" STEM nP SA Zoom Diffraction"`` (key ``"Mode []"`` or ``"Mode"``)."""
    for key, value in emi.items():
        if key.lower().split(" [")[0] == "mode" and isinstance(value, str):
            return value.strip()
    return ""


def _number(emi: dict[str, Any], *names: str) -> float | None:
    for key, value in emi.items():
        if key.lower().split(" [")[0] in names:
            number = first_number(value)
            if number is not None:
                return number
    return None


def _pixel_size(step_y: float, step_x: float, emi: dict[str, Any]) -> tuple[tuple[float, float] | None, str | None,
                                                                           str | None]:
    """Real or reciprocal space, from what the metadata says, not from a word in the mode string.

    TIA labels every calibration "m". The mode string's first word says how the
    image was formed: ``STEM`` images are scanned, so they are real space even
    though the projector is in "Diffraction" (FEI's STEM mode strings end in
    "Diffraction"); ``TEM ... Diffraction`` is a camera image of the back focal
    plane (reciprocal space); ``TEM ... Image`` is real space. The calibration's
    magnitude must agree: a real-space pixel is below 1 mm (TIA's reciprocal
    steps, in 1/m, are 1e5 and up), and the pixel times the magnification is the
    pixel's size at the detector or scan display, between 1 µm and 10 cm.

    Returns ``(pixel nm, refusal, note)``.
    """
    mode = _mode(emi)
    words = mode.split()
    scanned = bool(words) and words[0].upper() == "STEM"
    diffraction_camera = bool(words) and words[0].upper() == "TEM" and words[-1].lower().startswith("diffraction")
    step = max(abs(step_x), abs(step_y))
    magnification = _number(emi, "magnification")
    camera_length = _number(emi, "camera length")
    where = f"TIA mode {mode!r}" if mode else "no TIA mode string"
    if step <= 0 or step == 1.0:
        return None, None, f"the TIA series is not calibrated (step {step:g}); {where}"
    if step >= 1e-3 or diffraction_camera:
        length = f", camera length {camera_length:g} m" if camera_length else ""
        value = f"{step * 1e-9:.6g} 1/nm per pixel (stored as {step:g} in TIA's 'm', i.e. 1/m)"
        why = ("TEM diffraction mode" if diffraction_camera else
               "a step of 1 mm or more cannot be a real-space pixel")
        return None, (f"this is a diffraction pattern (reciprocal space): {value}; {why} ({where}{length})"), None
    if abs(abs(step_x) - abs(step_y)) > 1e-3 * step:
        pixel = (abs(step_y) * 1e9, abs(step_x) * 1e9)
    else:
        pixel = (step * 1e9, step * 1e9)
    how = "scanned (STEM) image" if scanned else "TEM image" if words else "image"
    note = f"real space: {how}, {where}"
    if magnification and magnification > 1:
        product = step * magnification
        if not 1e-6 <= product <= 0.1:
            note += (f"; note the pixel ({step * 1e9:.4g} nm) times the magnification ({magnification:g}x) is "
                     f"{product:.3g} m, outside 1 µm..10 cm: check the calibration")
        else:
            note += f"; pixel x magnification = {product * 1e6:.3g} µm, consistent"
    return pixel, None, note


def _times(path: Path, size: int, emi: dict[str, Any], head: dict[str, Any], tag_offsets: list[int], n_frames: int,
           real_space: bool) -> tuple[np.ndarray | None, float | None, str | None]:
    """Frame times: the series' time axis, else the tag times checked against the EMI frame time."""
    if n_frames < 2:
        return None, _number(emi, "frametime"), None
    dimensions = head.get("Dimensions") or ()
    if dimensions:
        first = dimensions[0]
        units = str(first.get("Units", "")).strip().lower()
        delta = float(first.get("CalibrationDelta", 0.0))
        if units in ("s", "sec", "second", "seconds") and delta > 0:
            return None, delta, f"time step {delta:g} s from the series' time axis"
    stamps = None
    if len(tag_offsets) == n_frames and min(tag_offsets) > 0 and max(tag_offsets) + 8 <= size:
        values = []
        with open(path, "rb") as fh:
            for offset in tag_offsets:
                fh.seek(offset)
                values.append(int(np.frombuffer(fh.read(8), "<i4")[1]))
        stamps = np.asarray(values, dtype=float)
    elif tag_offsets and (min(tag_offsets) <= 0):
        stamps = np.zeros(n_frames)  # TIA leaves the tags of a stopped series' later frames unwritten
    # A STEM frame's time is the scan's FrameTime; a camera's exposure is not its frame period.
    nominal = _number(emi, "frametime")
    times, interval, note = frame_times(stamps, resolution_s=1.0, candidate_s=nominal, candidate="the EMI FrameTime",
                                        stamps="tag times (whole seconds)")
    if interval is None and times is None and real_space:
        exposure = _number(emi, "dwelltimepath", "exposure time", "integration time")
        if exposure:
            note = (note or "no frame times in the file") + (f"; the camera exposure ({exposure:g} s) is not the "
                                                             "frame period, so it is not used")
    return times, interval, note


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
        sizes = [int(d.get("DimensionSize", 0)) for d in head.get("Dimensions") or ()]
        what = (f"a {' x '.join(map(str, sizes))} spectrum image" if len(sizes) >= 2 else
                f"a series of {sizes[0]} spectra" if sizes else "spectra")
        raise fail(path, _FMT, f"the series holds 1-D spectra ({what}; TIA data type 0x4120), not images",
                   "open an image series (e.g. the HAADF image acquired with it)")
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
    elif not emi:
        notes.append(f"{path}: no .emi metadata file beside the series; real space is inferred from the "
                     "calibration's magnitude alone")
    pixel, refusal, space_note = _pixel_size(step_y, step_x, emi)
    if space_note:
        notes.append(space_note)
    times, interval, time_note = _times(path, size, emi, head, tag_offsets, len(data_offsets), refusal is None)
    if time_note:
        notes.append(time_note)
    per = frames_per_chunk(chunks, len(data_offsets), frame_shape, dtype)
    data = lazy_frames(_read_ser_block, (str(path), frame_shape, dtype.str), len(data_offsets), frame_shape,
                       dtype.newbyteorder("="), per, _FMT)
    metadata = {"series_version": hex(int(head["SeriesVersion"])), "total_elements": total, "valid_elements": valid,
                "emi": jsonable(emi)}
    return RawMovie(data=data, format=_FMT, sources=[str(path)], pixel_size_nm=pixel, times_s=times,
                    frame_interval_s=interval, instrument=_instrument(emi), metadata=metadata, notes=notes,
                    pixel_refusal=refusal)
