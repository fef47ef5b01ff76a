"""``.emd`` files (HDF5): Berkeley EMD and Thermo Fisher Velox EMD.

*Berkeley EMD* (as ncempy's ``emd.fileEMD`` writes it): groups with attribute
``emd_group_type = 1`` holding ``data`` and one ``dimN`` vector per axis with
``name`` and ``units`` attributes (``"[n_m]"`` style units are understood). A
3-D dataset is ``(time, y, x)``.

*Velox EMD*: ``/Data/Image/<uuid>/Data`` is stored ``(y, x, frame)`` (the frame
axis last, as ncempy's ``emdVelox`` returns it too); each task reads its frames
``[:, :, start:stop]`` and moves the frame axis first. Calibration and
instrument settings come from the JSON in ``Metadata`` (first frame's column).
Velox pixel sizes are in metres; reciprocal units are diffraction and fall
back to pixels with a warning.

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
    calibrated_length_nm,
    check_extent,
    check_file,
    check_shape,
    fail,
    first_number,
    frames_per_chunk,
    jsonable,
    lazy_frames,
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


def _velox(path: Path, f: Any, notes: list[str]) -> dict[str, Any]:
    images = f["Data/Image"]
    if not len(images):
        raise fail(path, _FMT, "the Velox file holds no image datasets (/Data/Image is empty)")
    names = sorted(images.keys())
    name = names[0]
    group = images[name]
    if len(names) > 1:
        notes.append(f"{path}: the Velox file holds {len(names)} image datasets ({', '.join(names)}); "
                     f"reading the first, {name}")
    if "Data" not in group:
        raise fail(path, _FMT, f"/Data/Image/{name} has no Data dataset", "the file is damaged")
    data = group["Data"]
    shape = data.shape
    if len(shape) == 3:
        frame_shape, n_frames = (shape[0], shape[1]), shape[2]
    elif len(shape) == 2:
        frame_shape, n_frames = (shape[0], shape[1]), 1
    else:
        raise fail(path, _FMT, f"the Velox image has shape {shape}; expected (y, x, frame)")
    _check_dataset(path, data, n_frames, frame_shape)
    meta: dict[str, Any] = {}
    if "Metadata" in group and group["Metadata"].ndim == 2 and group["Metadata"].shape[0] > _MAX_METADATA_BYTES:
        notes.append(f"{path}: the Velox metadata column declares {group['Metadata'].shape[0]} bytes; ignored")
    elif "Metadata" in group:
        column = np.asarray(group["Metadata"][:, 0], dtype=np.uint8)
        raw = column[column > 0].tobytes()
        try:
            meta = json.loads(raw.decode("utf-8", "ignore"))
        except ValueError:
            notes.append(f"{path}: the Velox metadata JSON could not be parsed")
    pixel = None
    binary = meta.get("BinaryResult", {})
    size = binary.get("PixelSize", {})
    if size:
        dx = calibrated_length_nm(path, _FMT, float(size.get("width", 0)), binary.get("PixelUnitX", ""), notes, "x")
        dy = calibrated_length_nm(path, _FMT, float(size.get("height", 0)), binary.get("PixelUnitY", ""), notes, "y")
        pixel = (dy, dx) if dx and dy else None
    instrument: dict[str, Any] = {}
    voltage = first_number(meta.get("Optics", {}).get("AccelerationVoltage"))
    if voltage is not None:
        instrument["voltage_kV"] = voltage / 1000.0
    magnification = first_number(meta.get("Optics", {}).get("NominalMagnification"))
    if magnification is not None:
        instrument["magnification"] = magnification
    if binary.get("Detector"):
        instrument["camera"] = str(binary["Detector"])
    for detector in meta.get("Detectors", {}).values():
        if isinstance(detector, dict) and detector.get("DetectorName") == binary.get("Detector"):
            exposure = first_number(detector.get("ExposureTime"))
            if exposure is not None:
                instrument["exposure_s"] = exposure
    model = meta.get("Instrument", {}).get("InstrumentModel")
    if model:
        instrument["microscope"] = str(model)
    interval = first_number(meta.get("Scan", {}).get("FrameTime"))
    return {"dataset": group["Data"].name, "frame_shape": frame_shape, "n_frames": n_frames, "dtype": data.dtype,
            "frame_axis_last": True, "pixel": pixel, "interval": interval if interval and interval > 0 else None,
            "instrument": instrument, "metadata": {"velox": jsonable({k: meta[k] for k in list(meta)[:40]})}}


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

    pixel = None
    sy, sx = step(dims[-2][0]), step(dims[-1][0])
    if sy and sx:
        dy = calibrated_length_nm(path, _FMT, sy, dims[-2][2], notes, "y")
        dx = calibrated_length_nm(path, _FMT, sx, dims[-1][2], notes, "x")
        pixel = (dy, dx) if dy and dx else None
    times = None
    if ndim == 3 and dims[0][0] is not None:
        unit = dims[0][2]
        factor = time_to_s(1.0, unit) if unit else None
        vector = dims[0][0]
        if factor is not None and vector.size == data.shape[0] and np.all(np.diff(vector) > 0):
            times = (vector - vector[0]) * factor
    attrs = {k: jsonable(v) for k, v in list(group.attrs.items())[:40]}
    return {"dataset": data.name, "frame_shape": tuple(data.shape[-2:]), "n_frames": data.shape[0] if ndim == 3 else 1,
            "dtype": data.dtype, "frame_axis_last": False, "pixel": pixel, "times": times, "instrument": {},
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
                    metadata=metadata, notes=notes)
