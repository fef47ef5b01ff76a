"""``.emd`` files (HDF5): Berkeley EMD and Thermo Fisher Velox EMD.

*Berkeley EMD* (as ncempy's ``emd.fileEMD`` writes it): groups with attribute
``emd_group_type = 1`` holding ``data`` and one ``dimN`` vector per axis with
``name`` and ``units`` attributes (``"[n_m]"`` style units are understood). A
3-D dataset is ``(time, y, x)``.

*Velox EMD*: ``/Data/Image/<uuid>/Data`` is stored ``(y, x, frame)`` (the frame
axis last, as ncempy's ``emdVelox`` returns it too); each task reads its frames
``[:, :, start:stop]`` and moves the frame axis first. Calibration and
instrument settings come from the JSON in ``Metadata`` (one column per frame).
Of several images, the one opened is a scanning or camera image (never an EDS or
EELS element map), the one with most frames, then the largest, HAADF first; the
others are listed in the notes. Velox pixel sizes are in metres; reciprocal
units (``1/m``) are diffraction patterns and are refused. Frame times: a camera
stack's per-frame microsecond time stamps when present, else the nominal frame
period (``Scan.FrameTime`` for a scanning detector, the camera's
``ExposureTime`` otherwise), checked against each frame's acquisition start
time (whole seconds); when they disagree the start times win (an EDS spectrum
image's HAADF frames are seconds apart whatever the scan's frame time is).

Every task opens the file by path with h5py and closes it: no h5py object is
ever captured in the graph.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from temflow.movie import time_to_s
from temflow.errors import MovieFileError
from temflow.io.formats._common import (
    RawMovie,
    MAX_COMPRESSION,
    check_extent,
    check_file,
    check_shape,
    fail,
    first_number,
    frame_times,
    frames_per_chunk,
    jsonable,
    lazy_frames,
    pixel_calibration,
)

__all__ = ["read_emd"]

_FMT = "emd"


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


def _unit(value: Any) -> str:
    """EMD units such as ``"[n_m]"`` or ``"nm"`` -> ``"nm"``."""
    return _text(value).strip().strip("[]").replace("_", "").replace("^", "")


_MAX_METADATA_BYTES = 2**24  # a Velox metadata column is a few kB of JSON


def _check_dataset(path: Path, data: Any, n_frames: int, frame_shape: tuple[int, int]) -> None:
    """Refuse a dataset whose declared shape is absurd or larger than the bytes stored for it.

    HDF5 lets a file declare any shape and allocate storage lazily: a dataset of
    (10^9, 64, 64) can sit in a 2 kB file and reads back as fill values. Every
    chunk of a real acquisition was written, so the stored chunks (or the
    contiguous block) must cover the declared shape.
    """
    import h5py

    needed = check_shape(path, _FMT, n_frames, frame_shape, data.dtype.itemsize)
    fix = "the file is damaged or its writer stopped early; copy the file again"
    dsid = data.id
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        if offset is None or dsid.get_storage_size() < needed:
            raise fail(path, _FMT, f"{data.name} declares {n_frames} frames of {frame_shape} px ({needed} bytes) but "
                       f"only {dsid.get_storage_size()} bytes were written", fix)
        check_extent(path, _FMT, int(offset) + needed, path.stat().st_size, f"{data.name}")
    elif layout == h5py.h5d.CHUNKED:
        grid = math.prod(-(-int(n) // int(c)) for n, c in zip(data.shape, data.chunks))
        written = dsid.get_num_chunks()
        if written < grid:
            raise fail(path, _FMT, f"{data.name} declares {n_frames} frames of {frame_shape} px in {grid} chunks but "
                       f"only {written} chunks were written", fix)
        if plist.get_nfilters() == 0 and dsid.get_storage_size() < needed:
            raise fail(path, _FMT, f"{data.name} declares {needed} bytes but stores {dsid.get_storage_size()}", fix)
        if needed > MAX_COMPRESSION * max(1, dsid.get_storage_size()):
            raise fail(path, _FMT, f"{data.name} declares {needed} bytes but stores only {dsid.get_storage_size()}; "
                       "no compression packs that tightly", fix)
    elif layout == h5py.h5d.VIRTUAL:
        raise fail(path, _FMT, f"{data.name} is a virtual dataset (it points into other files)",
                   "open the source files, or save the data into the EMD file itself")


def _read_emd_block(path: str, dataset: str, frame_axis_last: bool, start: int, stop: int) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f[dataset]
            if data.ndim == 2:
                block = data[...][None]
            elif frame_axis_last:
                block = np.moveaxis(data[:, :, start:stop], -1, 0)
            else:
                block = data[start:stop]
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError...
        raise fail(path, _FMT, f"reading frames {start}..{stop - 1} of {dataset} failed ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(block)


def _velox_meta(group: Any, column: int = 0) -> dict[str, Any] | None:
    """The JSON metadata of one frame (one column of ``Metadata``), or ``None`` if absent or unreadable."""
    if "Metadata" not in group or group["Metadata"].ndim != 2 or column >= group["Metadata"].shape[1]:
        return None
    if group["Metadata"].shape[0] > _MAX_METADATA_BYTES:  # a few kB of JSON; more is a damaged header
        return None
    raw = np.asarray(group["Metadata"][:, column], dtype=np.uint8)
    try:
        meta = json.loads(raw[raw > 0].tobytes().decode("utf-8", "ignore"))
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _detector(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``Detectors`` entry of the detector that made this image (``{}`` if unknown)."""
    name = meta.get("BinaryResult", {}).get("Detector")
    for detector in meta.get("Detectors", {}).values():
        if isinstance(detector, dict) and detector.get("DetectorName") == name:
            return detector
    return {}


#: Velox image detectors by preference: a movie is a scanning (HAADF, DF, BF) or camera image, never an
#: element map (an "AnalyticalDetector" image: EDS, EELS).
_VELOX_KINDS = {"ScanningDetector": 0, "ImagingDetector": 0, "": 1, "AnalyticalDetector": 2}


def _velox_choice(path: Path, images: Any, notes: list[str]) -> tuple[str, dict[str, Any]]:
    """The image dataset to open: not an element map; the most frames; the largest; HAADF first."""
    ranked = []
    for name in sorted(images.keys()):
        group = images[name]
        if "Data" not in group or group["Data"].ndim not in (2, 3) or group["Data"].dtype.kind not in "biuf":
            continue
        meta = _velox_meta(group) or {}
        kind = str(_detector(meta).get("DetectorType", ""))
        shape = group["Data"].shape
        frames = shape[2] if len(shape) == 3 else 1
        detector = str(meta.get("BinaryResult", {}).get("Detector", ""))
        ranked.append(((_VELOX_KINDS.get(kind, 1), -frames, -shape[0] * shape[1], detector != "HAADF"), name, meta,
                       f"{name} ({detector or 'unknown detector'}, {shape[0]}x{shape[1]}, {frames} frame(s))"))
    if not ranked:
        raise fail(path, _FMT, "the Velox file holds no real-valued 2-D image dataset under /Data/Image",
                   "open a file that holds an image or movie")
    ranked.sort(key=lambda item: item[0])
    _, name, meta, label = ranked[0]
    if len(ranked) > 1:
        notes.append(f"the Velox file holds {len(ranked)} images; opened {label}; the others: "
                     + "; ".join(item[3] for item in ranked[1:]))
    return name, meta


def _velox_times(group: Any, n_frames: int, meta: dict[str, Any], scanning: bool,
                 exposure: float | None) -> tuple[np.ndarray | None, float | None, str | None]:
    """Frame times: per-frame camera time stamps (µs), else the nominal frame time checked against the
    per-frame acquisition start times (whole seconds)."""
    nominal = first_number(meta.get("Scan", {}).get("FrameTime")) if scanning else exposure
    what = "Scan.FrameTime" if scanning else "the camera's ExposureTime"
    if n_frames < 2:
        return None, nominal, None
    columns = [_velox_meta(group, j) or {} for j in range(min(n_frames, group["Metadata"].shape[1]))]
    detector = meta.get("BinaryResult", {}).get("Detector", "")
    precise = [first_number(c.get("CustomProperties", {}).get(f"Detectors[{detector}].TimeStamp", {}).get("value"))
               for c in columns]
    if len(precise) == n_frames and all(v is not None for v in precise):
        return frame_times(np.asarray(precise, dtype=float) * 1e-6, resolution_s=1e-6, candidate_s=nominal,
                           candidate=what, stamps=f"{detector} time stamps")
    starts = [first_number(c.get("Acquisition", {}).get("AcquisitionStartDatetime", {}).get("DateTime"))
              for c in columns]
    stamps = np.asarray(starts, dtype=float) if len(starts) == n_frames and None not in starts else None
    return frame_times(stamps, resolution_s=1.0, candidate_s=nominal, candidate=what,
                       stamps="acquisition start times (whole seconds)")


def _velox(path: Path, f: Any, notes: list[str]) -> dict[str, Any]:
    images = f["Data/Image"]
    if not len(images):
        raise fail(path, _FMT, "the Velox file holds no image datasets (/Data/Image is empty)")
    name, meta = _velox_choice(path, images, notes)
    group = images[name]
    data = group["Data"]
    shape = data.shape
    if len(shape) == 3:
        frame_shape, n_frames = (shape[0], shape[1]), shape[2]
    elif len(shape) == 2:
        frame_shape, n_frames = (shape[0], shape[1]), 1
    else:
        raise fail(path, _FMT, f"the Velox image has shape {shape}; expected (y, x, frame)")
    _check_dataset(path, data, n_frames, frame_shape)
    if not meta:
        notes.append(f"{path}: the Velox metadata JSON is missing, too large or could not be parsed")
    binary = meta.get("BinaryResult", {})
    size = binary.get("PixelSize", {})
    pixel: tuple[float, float] | None = None
    refusal: str | None = None
    pixel_notes: list[str] = []
    pixel_facts: list[str] = []
    if size:
        pixel, refusal, pixel_notes, pixel_facts = pixel_calibration(
            (first_number(size.get("height")) or 0.0, str(binary.get("PixelUnitY", ""))),
            (first_number(size.get("width")) or 0.0, str(binary.get("PixelUnitX", ""))))
    else:
        pixel_notes = ["the Velox metadata gives no PixelSize for this image"]
    notes.extend(pixel_facts)
    optics = meta.get("Optics", {})
    instrument: dict[str, Any] = {}
    voltage = first_number(optics.get("AccelerationVoltage"))
    if voltage is not None:
        instrument["voltage_kV"] = voltage / 1000.0
    magnification = first_number(optics.get("NominalMagnification"))
    if magnification is not None:
        instrument["magnification"] = magnification
    if binary.get("Detector"):
        instrument["camera"] = str(binary["Detector"])
    detector = _detector(meta)
    scanning = detector.get("DetectorType") == "ScanningDetector" or (
        not detector and str(optics.get("OperatingMode")) == "2")
    instrument["mode"] = "STEM" if scanning else "TEM"
    exposure = first_number(detector.get("ExposureTime"))
    if exposure is not None and not scanning:
        instrument["exposure_s"] = exposure
    model = meta.get("Instrument", {}).get("InstrumentModel")
    if model:
        instrument["microscope"] = str(model)
    times, interval, time_note = _velox_times(group, n_frames, meta, scanning, exposure)
    if time_note:
        notes.append(time_note)
    return {"dataset": data.name, "frame_shape": frame_shape, "n_frames": n_frames, "dtype": data.dtype,
            "frame_axis_last": True, "pixel": pixel, "pixel_refusal": refusal, "pixel_notes": pixel_notes,
            "times": times, "interval": interval, "instrument": instrument,
            "metadata": {"velox": jsonable({k: meta[k] for k in list(meta)[:40]})}}


def _berkeley(path: Path, f: Any, notes: list[str]) -> dict[str, Any]:
    import h5py

    groups: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and int(np.ravel(obj.attrs.get("emd_group_type", [0]))[0]) == 1:
            groups.append(obj)

    f.visititems(visit)
    candidates = [g for g in groups if "data" in g and g["data"].ndim in (2, 3)]
    if not candidates:
        raise fail(path, _FMT, "no EMD data group (emd_group_type = 1) with a 2-D or 3-D dataset",
                   "this HDF5 file is not a Berkeley or Velox EMD movie")
    group = max(candidates, key=lambda g: g["data"].ndim)
    data = group["data"]
    ndim = data.ndim
    _check_dataset(path, data, data.shape[0] if ndim == 3 else 1, tuple(data.shape[-2:]))
    dims: list[tuple[np.ndarray | None, str, str]] = []
    for i in range(1, ndim + 1):
        dim = group.get(f"dim{i}")
        if dim is None or not isinstance(dim, h5py.Dataset):
            dims.append((None, "", ""))
        else:
            # read whole only when it has one value per pixel or frame of the (checked) data: a
            # lying vector of 10^9 values would otherwise be read; its first two give the step
            whole = dim.ndim == 1 and dim.shape[0] == data.shape[i - 1]
            values = dim[...] if whole else dim[:2] if dim.ndim == 1 else np.zeros(0)
            dims.append((np.asarray(values, dtype=float), _text(dim.attrs.get("name", "")),
                         _unit(dim.attrs.get("units", ""))))

    def step(vector: np.ndarray | None) -> float | None:
        return float(vector[1] - vector[0]) if vector is not None and vector.size > 1 else None

    sy, sx = step(dims[-2][0]), step(dims[-1][0])
    pixel, refusal, pixel_notes, facts = pixel_calibration((sy or 0.0, dims[-2][2]), (sx or 0.0, dims[-1][2]))
    notes.extend(facts)
    times = None
    if ndim == 3 and dims[0][0] is not None:
        unit = dims[0][2]
        factor = time_to_s(1.0, unit) if unit else None
        vector = dims[0][0]
        if factor is not None and vector.size == data.shape[0] and np.all(np.diff(vector) > 0):
            times = (vector - vector[0]) * factor
    attrs = {k: jsonable(v) for k, v in list(group.attrs.items())[:40]}
    return {"dataset": data.name, "frame_shape": tuple(data.shape[-2:]), "n_frames": data.shape[0] if ndim == 3 else 1,
            "dtype": data.dtype, "frame_axis_last": False, "pixel": pixel, "pixel_refusal": refusal,
            "pixel_notes": pixel_notes, "times": times, "instrument": {},
            "metadata": {"emd_group": group.name, "dims": [[d[1], d[2]] for d in dims], "attrs": attrs}}


def read_emd(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open a Berkeley or Velox ``.emd`` movie lazily.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The HDF5 file.
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
    import h5py

    check_file(path, _FMT)
    notes: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            info = _velox(path, f, notes) if "Data/Image" in f else _berkeley(path, f, notes)
    except MovieFileError:
        raise
    except OSError as exc:
        raise fail(path, _FMT, f"HDF5 cannot open it ({exc}); the file is truncated or damaged",
                   "copy the file again") from None
    dtype = np.dtype(info["dtype"])
    if dtype.kind not in "biuf":
        raise fail(path, _FMT, f"the data have dtype {dtype}, not real-valued pixels")
    per = frames_per_chunk(chunks, info["n_frames"], info["frame_shape"], dtype)
    data = lazy_frames(_read_emd_block, (str(path), info["dataset"], info["frame_axis_last"]), info["n_frames"],
                       tuple(info["frame_shape"]), dtype.newbyteorder("="), per, _FMT)
    metadata = dict(info["metadata"], variant="velox" if info["frame_axis_last"] else "berkeley",
                    dataset=info["dataset"])
    return RawMovie(data=data, format=_FMT, sources=[str(path)], pixel_size_nm=info["pixel"],
                    times_s=info.get("times"), frame_interval_s=info.get("interval"), instrument=info["instrument"],
                    metadata=metadata, notes=notes, pixel_notes=info["pixel_notes"],
                    pixel_refusal=info["pixel_refusal"])
