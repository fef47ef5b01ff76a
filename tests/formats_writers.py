"""Test-only writers of small, valid microscope files in their documented layouts.

Gatan DM3/DM4 follows the tag-tree layout described by Greg Jefferis (DM3) and
Chris Boothroyd (DM3/DM4): a big-endian header (version, root length, byte
order), nested tag groups, data tags introduced by ``%%%%`` with big-endian type
descriptors and little-endian values, and the image under
``ImageList/<n>/ImageData`` (``Calibrations/Dimension``, ``Data``, ``DataType``,
``Dimensions``). TIA ``.ser`` follows FEI's "Series Data File" description
(header, dimension array, data and tag offset arrays, 2-D data elements with
their own calibration). Velox ``.emd`` copies Thermo Fisher's HDF5 layout:
``/Data/Image/<uuid>/Data`` stored ``(y, x, frame)`` and ``Metadata`` as UTF-8
JSON bytes, one column per frame. Nothing here is copied from those programs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- DM3 / DM4

# DM tag value type codes (documented encoded types)
_DM_TYPES = {
    np.dtype("int16"): 2,
    np.dtype("int32"): 3,
    np.dtype("uint16"): 4,
    np.dtype("uint32"): 5,
    np.dtype("float32"): 6,
    np.dtype("float64"): 7,
    np.dtype("bool"): 8,
    np.dtype("int8"): 10,
    np.dtype("uint8"): 10,
    np.dtype("int64"): 11,
    np.dtype("uint64"): 12,
}
# DM image data type codes (ImageData.DataType)
_DM_IMAGE_TYPES = {
    np.dtype("int16"): 1,
    np.dtype("float32"): 2,
    np.dtype("uint8"): 6,
    np.dtype("int32"): 7,
    np.dtype("int8"): 9,
    np.dtype("uint16"): 10,
    np.dtype("uint32"): 11,
    np.dtype("float64"): 12,
}


class DMArray:
    """An array-valued DM tag (``Data``, or a string as uint16 characters)."""

    def __init__(self, values: np.ndarray, element: int | None = None) -> None:
        self.values = np.ascontiguousarray(values)
        self.element = element if element is not None else _DM_TYPES[self.values.dtype]


def dm_string(text: str) -> DMArray:
    """DM strings are arrays of uint16 characters."""
    return DMArray(np.array([ord(c) for c in text], dtype="<u2"), 4)


def _scalar(value: Any) -> np.ndarray:
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, bool):
        return np.asarray(value, dtype=bool)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int32)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float64)
    raise TypeError(f"unsupported DM tag value {value!r}")


def _encode_data(value: Any, version: int) -> bytes:
    word = ">I" if version == 3 else ">Q"
    if isinstance(value, str):
        value = dm_string(value)
    if isinstance(value, DMArray):
        info = [20, value.element, value.values.size]
        payload = value.values.astype(value.values.dtype.newbyteorder("<")).tobytes()
    else:
        array = _scalar(value)
        info = [_DM_TYPES[array.dtype]]
        payload = array.astype(array.dtype.newbyteorder("<")).tobytes()
    out = b"%%%%" + struct.pack(word, len(info)) + b"".join(struct.pack(word, i) for i in info)
    return out + payload


def _encode_group(group: Sequence[tuple[str, Any]], version: int) -> bytes:
    word = ">I" if version == 3 else ">Q"
    out = bytearray(b"\x01\x00" + struct.pack(word, len(group)))
    for name, value in group:
        label = name.encode("latin-1")
        if isinstance(value, list):
            kind, body = 20, _encode_group(value, version)
        else:
            kind, body = 21, _encode_data(value, version)
        out += struct.pack(">BH", kind, len(label)) + label
        if version == 4:
            out += struct.pack(">Q", len(body))
        out += body
    return bytes(out)


def _tags_from_mapping(tags: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, _tags_from_mapping(v) if isinstance(v, Mapping) else v) for k, v in tags.items()]


def _image_entry(
    data: np.ndarray, scales: Sequence[float], units: Sequence[str], tags: Mapping[str, Any] | None,
    dimensions: Sequence[int] | None = None,
) -> list[tuple[str, Any]]:
    # DM orders dimensions fastest first: x, y, then z (the frames)
    dims = list(dimensions) if dimensions is not None else list(reversed(data.shape))
    dimension = [
        ("", [("Origin", np.float32(0.0)), ("Scale", np.float32(s)), ("Units", dm_string(u))]) for s, u in zip(scales, units)
    ]
    image_data = [
        (
            "Calibrations",
            [
                ("Brightness", [("Origin", np.float32(0)), ("Scale", np.float32(1)), ("Units", dm_string("Counts"))]),
                ("Dimension", dimension),
                ("DisplayCalibratedUnits", True),
            ],
        ),
        ("Data", DMArray(data.ravel())),
        ("DataType", np.int32(_DM_IMAGE_TYPES[data.dtype])),
        ("Dimensions", [("", np.uint32(n)) for n in dims]),
        ("PixelDepth", np.uint32(data.dtype.itemsize)),
    ]
    return [("ImageData", image_data), ("ImageTags", _tags_from_mapping(tags or {})), ("Name", dm_string("movie"))]


def write_dm(
    path: str | Path,
    data: np.ndarray,
    *,
    version: int = 4,
    pixel_size: float | tuple[float, float] = 0.5,
    unit: str = "nm",
    frame_interval: float | None = None,
    time_unit: str = "s",
    tags: Mapping[str, Any] | None = None,
    thumbnail: bool = True,
    dimensions: Sequence[int] | None = None,
) -> Path:
    """Write ``data`` (2-D image or ``(frames, y, x)`` stack) as a DM3 or DM4 file.

    ``pixel_size`` is ``dy, dx`` (or square) in ``unit``; ``frame_interval`` calibrates
    the third dimension in ``time_unit``. ``tags`` become ``ImageTags`` (nested dicts are
    groups). With ``thumbnail`` a small RGB thumbnail comes first, as DigitalMicrograph writes.
    ``dimensions`` (x, y[, frames], DM order) replaces the true ones in the header, to make
    hostile files whose header lies about their size.
    """
    data = np.asarray(data)
    dy, dx = np.broadcast_to(np.asarray(pixel_size, dtype=float), (2,))
    scales: list[float] = [dx, dy]
    units = [unit, unit]
    if data.ndim == 3 and frame_interval is not None:
        # without a time calibration the stack carries calibrations for two axes only, as DM stacks may
        scales.append(frame_interval)
        units.append(time_unit)
    images: list[tuple[str, Any]] = []
    if thumbnail:
        thumb = np.zeros((8, 8), dtype=np.uint32)
        entry = _image_entry(thumb, [1.0, 1.0], ["", ""], {})
        entry[0][1][2] = ("DataType", np.int32(23))  # RGBA thumbnail
        images.append(("", entry))
    images.append(("", _image_entry(data, scales, units, tags, dimensions)))
    root = [
        ("ApplicationBounds", DMArray(np.array([0, 0, 800, 600], dtype="<u4"), 5)),
        ("ImageList", images),
    ]
    body = _encode_group(root, version)
    end = b"\x00" * 8
    if version == 3:
        header_len = 12
        size = header_len + len(body) + len(end)
        header = struct.pack(">III", 3, size - 16, 1)
    elif version == 4:
        header_len = 16
        size = header_len + len(body) + len(end)
        header = struct.pack(">IQI", 4, size - 24, 1)
    else:
        raise ValueError("version must be 3 or 4")
    path = Path(path)
    path.write_bytes(header + body + end)
    return path


def write_insitu(
    root: str | Path,
    frames: np.ndarray,
    *,
    frames_per_second: int,
    start_second: int = 0,
    name: str = "Capture",
    **dm_options: Any,
) -> list[Path]:
    """Write a Gatan In-Situ folder tree: ``Hour_HH/Minute_MM/Second_SS/<name>_..._Frame_NNNN.dm4``."""
    root = Path(root)
    paths = []
    for index, frame in enumerate(frames):
        second = start_second + index // frames_per_second
        h, rest = divmod(second, 3600)
        m, s = divmod(rest, 60)
        folder = root / f"Hour_{h:02d}" / f"Minute_{m:02d}" / f"Second_{s:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{name}_Hour_{h:02d}_Minute_{m:02d}_Second_{s:02d}_Frame_{index:04d}.dm4"
        paths.append(write_dm(file, frame, version=4, **dm_options))
    return paths


# --------------------------------------------------------------------------- TIA .ser

_SER_DTYPES = {np.dtype("uint8"): 1, np.dtype("uint16"): 2, np.dtype("uint32"): 3, np.dtype("int8"): 4,
               np.dtype("int16"): 5, np.dtype("int32"): 6, np.dtype("float32"): 7, np.dtype("float64"): 8}


def write_ser(
    path: str | Path,
    frames: np.ndarray,
    *,
    pixel_size_m: float = 2e-10,
    times: Sequence[int] | None = None,
    total_elements: int | None = None,
    version: int = 0x0220,
) -> Path:
    """Write a TIA series of 2-D images (``frames`` as a reader returns them, top row first).

    TIA stores rows bottom-up, so each frame is flipped on writing. ``times`` are the
    per-frame tag times (whole seconds, as TIA writes them); ``total_elements`` can
    exceed the number of frames, like a series that was stopped early.
    """
    frames = np.asarray(frames)
    n, ny, nx = frames.shape
    total = total_elements or n
    offset_fmt = "<q" if version == 0x0220 else "<i"
    offset_size = struct.calcsize(offset_fmt)
    times = list(times) if times is not None else list(range(n))
    header = struct.pack("<hhh", 0x4949, 0x0197, version)
    header += struct.pack("<iiii", 0x4122, 0x4152, total, n)
    dim_desc = b"Number"
    dim_units = b""
    dims = struct.pack("<i", total) + struct.pack("<dd", 0.0, 1.0) + struct.pack("<ii", 0, len(dim_desc)) + dim_desc
    dims += struct.pack("<i", len(dim_units)) + dim_units
    # header: fixed part, OffsetArrayOffset, NumberDimensions, dimension array
    fixed = len(header) + offset_size + 4
    offset_array_offset = fixed + len(dims)
    data_start = offset_array_offset + 2 * total * offset_size
    elements = []
    data_offsets = []
    pos = data_start
    for frame in frames:
        element = struct.pack("<ddi", 0.0, pixel_size_m, 0) * 2
        element += struct.pack("<h", _SER_DTYPES[frame.dtype]) + struct.pack("<ii", nx, ny)
        element += np.flipud(frame).astype(frame.dtype.newbyteorder("<")).tobytes()
        data_offsets.append(pos)
        elements.append(element)
        pos += len(element)
    tag_offsets = []
    tags = []
    for t in times:
        tag_offsets.append(pos)
        tags.append(struct.pack("<hhi", 0x4152, 0, int(t)))
        pos += 8
    pad = [0] * (total - n)
    body = header + struct.pack(offset_fmt, offset_array_offset) + struct.pack("<i", 1) + dims
    body += b"".join(struct.pack(offset_fmt, o) for o in data_offsets + pad)
    body += b"".join(struct.pack(offset_fmt, o) for o in tag_offsets + pad)
    body += b"".join(elements) + b"".join(tags)
    path = Path(path)
    path.write_bytes(body)
    return path


def write_emi(
    ser_path: str | Path,
    *,
    mode: str | None = " STEM nP SA Zoom Diffraction",
    magnification: float | None = 1300000.0,
    camera_length_m: float | None = 0.135,
    frame_time_s: float | None = None,
    dwell_time_s: float | None = None,
    camera: str | None = None,
    high_tension_kv: float = 300.0,
) -> Path:
    """Write the ``.emi`` metadata beside a TIA series ``<name>_1.ser`` (as ``<name>.emi``).

    TIA's EMI holds an XML ``ObjectInfo`` block: ``ExperimentalDescription`` rows
    (``Label``, ``Value``, ``Unit``: the microscope's state, its ``Mode`` string such
    as FEI's STEM strings ending in "Diffraction") and ``AcquireInfo`` (the scan's
    ``FrameTime`` and ``DwellTimePath``, or the camera's).
    """
    rows = [("High tension", high_tension_kv, "kV"), ("Microscope", "Titan", "")]
    if mode is not None:
        rows.append(("Mode", mode, ""))
    if magnification is not None:
        rows.append(("Magnification", magnification, "x"))
    if camera_length_m is not None:
        rows.append(("Camera length", camera_length_m, "m"))
    description = "".join(f"<Data><Label>{label}</Label><Value>{value}</Value><Unit>{unit}</Unit></Data>"
                          for label, value, unit in rows)
    acquire = ""
    if frame_time_s is not None:
        acquire += f"<FrameTime>{frame_time_s}</FrameTime>"
    if dwell_time_s is not None:
        acquire += f"<DwellTimePath>{dwell_time_s}</DwellTimePath>"
    if camera is not None:
        acquire += f"<CameraNamePath>{camera}</CameraNamePath>"
    xml = (f"<ObjectInfo><Uuid>x</Uuid><AcquireDate>Mon Jan 01 10:00:00 2024</AcquireDate><Manufacturer>FEI"
           f"</Manufacturer><DetectorPixelHeight>1</DetectorPixelHeight><DetectorPixelWidth>1</DetectorPixelWidth>"
           f"<ExperimentalConditions><MicroscopeConditions><Tilt1>0</Tilt1></MicroscopeConditions>"
           f"</ExperimentalConditions><ExperimentalDescription><Root>{description}</Root></ExperimentalDescription>"
           f"<AcquireInfo>{acquire}</AcquireInfo><DetectorRange><StartX>0</StartX></DetectorRange></ObjectInfo>")
    ser_path = Path(ser_path)
    stem = ser_path.stem.rsplit("_", 1)[0]
    out = ser_path.with_name(stem + ".emi")
    out.write_bytes(xml.encode("utf-8"))
    return out


# --------------------------------------------------------------------------- TIFF


def write_dm_tiff(
    path: str | Path,
    frames: np.ndarray,
    *,
    pixel_size: tuple[float, float] = (0.16867, 0.16867),
    unit: str = "µm",
    frame_interval: float | None = None,
    time_unit: str = "s",
) -> Path:
    """A TIFF as DigitalMicrograph exports it: private tags 65003-65011 (x/y/z unit, origin, scale).

    ``pixel_size`` is ``(dy, dx)`` in ``unit`` (latin-1 encoded, as DM writes µm);
    ``frame_interval`` calibrates the frame axis (tag 65011, unit in 65005). The
    resolution tags hold a meaningless 72 dpi, as in DM's exports.
    """
    import tifffile

    frames = np.asarray(frames)
    dy, dx = pixel_size
    encoded = unit.encode("latin-1")
    extratags = [
        (65003, "s", 0, encoded, False), (65004, "s", 0, encoded, False),
        (65006, "d", 1, 0.0, False), (65007, "d", 1, 0.0, False),
        (65009, "d", 1, float(dx), False), (65010, "d", 1, float(dy), False),
    ]
    if frames.ndim == 3 and frame_interval is not None:
        extratags += [(65005, "s", 0, time_unit.encode("latin-1"), False), (65008, "d", 1, 0.0, False),
                      (65011, "d", 1, float(frame_interval), False)]
    tifffile.imwrite(path, frames, extratags=extratags, resolution=(72, 72), resolutionunit="INCH",
                     photometric="minisblack", metadata=None)
    return Path(path)


# --------------------------------------------------------------------------- Velox EMD


def write_velox_emd(
    path: str | Path,
    frames: np.ndarray,
    *,
    pixel_size_m: float = 2e-10,
    unit: str = "m",
    voltage_v: float = 300000.0,
    frame_time_s: float | None = None,
    detector: str = "BM-Ceta",
    exposure_s: float = 0.05,
    start_seconds: Sequence[int] | None = None,
    timestamps_us: Sequence[int] | None = None,
    extra_images: Mapping[str, tuple[np.ndarray, str]] | None = None,
) -> Path:
    """Write a Velox-layout EMD: ``/Data/Image/<uuid>/Data`` as ``(y, x, frame)``.

    ``detector`` ``"HAADF"`` (or another scanning detector) makes a STEM image whose
    frame time is ``Scan.FrameTime``; a camera (``"BM-Ceta"``) has its ``ExposureTime``.
    ``start_seconds`` (whole seconds) and ``timestamps_us`` (the camera's
    microsecond stamps) go into each frame's metadata column, as Velox writes them.
    ``extra_images`` adds more datasets: ``{uuid: (frames, detector)}`` (an EDS map's
    detector is ``"SuperXG2"``).
    """
    import h5py

    frames = np.asarray(frames)

    def metadata(frame: int, detector_name: str) -> dict[str, Any]:
        scanning = detector_name in ("HAADF", "DF2", "DF4", "BF", "DF-S", "BF-S")
        meta: dict[str, Any] = {
            "BinaryResult": {
                "PixelSize": {"width": str(pixel_size_m), "height": str(pixel_size_m)},
                "PixelUnitX": unit,
                "PixelUnitY": unit,
                "Detector": detector_name,
            },
            "Optics": {"AccelerationVoltage": str(voltage_v), "NominalMagnification": "88000",
                       "OperatingMode": "2" if scanning else "1", "ProjectorMode": "1" if scanning else "2"},
            "Acquisition": {"AcquisitionStartDatetime": {
                "DateTime": str(start_seconds[frame] if start_seconds is not None else 1700000000)}},
            "Instrument": {"InstrumentModel": "Talos F200X"},
            "Detectors": {
                "Detector-0": {"DetectorName": "BM-Ceta", "DetectorType": "ImagingDetector",
                               "ExposureTime": str(exposure_s)},
                "Detector-1": {"DetectorName": "HAADF", "DetectorType": "ScanningDetector"},
                "Detector-2": {"DetectorName": "SuperXG2", "DetectorType": "AnalyticalDetector"},
            },
            "CustomProperties": {},
        }
        if frame_time_s is not None:
            meta["Scan"] = {"FrameTime": str(frame_time_s)}
        if timestamps_us is not None:
            meta["CustomProperties"][f"Detectors[{detector_name}].TimeStamp"] = {
                "type": "int64", "value": str(timestamps_us[frame])}
        return meta

    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([b'{"format": "Velox", "version": "3"}']))
        images = {"0a1b2c3d4e5f": (frames, detector), **dict(extra_images or {})}
        for name, (stack, detector_name) in images.items():
            stack = np.asarray(stack)
            group = f.create_group(f"Data/Image/{name}")
            group.create_dataset("Data", data=np.moveaxis(stack, 0, -1), chunks=(stack.shape[1], stack.shape[2], 1))
            columns = [np.frombuffer(json.dumps(metadata(j, detector_name)).encode("utf-8"), dtype=np.uint8)
                       for j in range(stack.shape[0])]
            table = np.zeros((max(c.size for c in columns) + 16, stack.shape[0]), dtype=np.uint8)
            for j, column in enumerate(columns):
                table[: column.size, j] = column
            group.create_dataset("Metadata", data=table)
    return Path(path)


# --------------------------------------------------------------------------- holder logs


def write_protochips(path: Path, names: list[str], units: dict[str, str], times_ms: np.ndarray,
                     values: np.ndarray, notes: dict[int, str] | None = None, user: bool = True,
                     separator: str = ", ", calibration_first: bool = False, user_line_ms: int = 0) -> Path:
    """A Protochips (Clarity) log in the layout of the real logs in RosettaSciIO's test data.

    As there: the column names on line 1 (``Time, Notes`` and then the quantities; the 2014-2016
    gas-cell logs separate the rest by ``","``, the thermal and electrical ones by ``", "``); then
    header rows ``0, <name> = <value>`` that repeat the first record's values in the quantity
    columns (``Calibration file`` first in the thermal log, absent from the gas-cell logs; ``User
    agreeing to terms = ...`` last, missing in older logs, and in the 2014 gas-cell log written on
    a record of its own at 47 ms: ``user_line_ms``); then the records: time in ms, a note (mostly
    empty), the values.
    """
    values = np.asarray(values, dtype=float).reshape(len(times_ms), -1)

    def row(first: str, note: str, record: np.ndarray) -> str:
        return separator.join([first, note, *(f"{v:.6g}" for v in record)])

    lines = ["Time, Notes" + separator + separator.join(names)]
    header = ["Calibration file = E:\\AD21013_8.cal"] if calibration_first else []
    header += ["Date (yyyy.mm.dd) = 2014.12.15", "Time (hh:mm:ss.ms) = 19:07:04.165", "Time units = Milliseconds"]
    header += [f"{q} units = {u}" for q, u in units.items()]
    lines += [row("0", h, values[0]) for h in header]
    if user:
        lines.append(row(str(user_line_ms), "User agreeing to terms = eric", values[0]))
    for i, (t, record) in enumerate(zip(times_ms, values)):
        lines.append(row(f"{t:.0f}", (notes or {}).get(i, ""), record))
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def write_impulse(folder: Path, columns: dict[str, np.ndarray], times_s: np.ndarray,
                  name: str = "Synchronized data", mix_valve: bool = False) -> Path:
    """A DENSsolutions Impulse export and its metadata file, as in RosettaSciIO's real test data.

    ``<experiment>_<name>.csv``: ``TimeStamp`` (clock time with ms), ``Experiment time`` (s since
    the start), one column per quantity (``MixValve`` holds ``"0; 0; 0"`` valve states); the
    sibling ``<experiment>_Metadata.log`` holds ``"key, value"`` lines with quoted text values
    and the live notes last.
    """
    path = folder / f"StubExperiment_{name}.csv"
    header = ["TimeStamp", "Experiment time", *columns] + (["MixValve"] if mix_valve else [])
    rows = [",".join(header)]
    for i, t in enumerate(times_s):
        seconds = 19.0 + float(t)
        stamp = f"13:{40 + int(seconds) // 60:02d}:{seconds % 60:06.3f}"
        rows.append(",".join([stamp, f"{t:.3f}", *(f"{columns[c][i]:.6g}" for c in columns)]
                             + (["0; 0; 0"] if mix_valve else [])))
    path.write_text("\n".join(rows) + "\n", encoding="latin-1")
    (folder / "StubExperiment_Metadata.log").write_text(
        'Experiment date, 06-08-2021\nExperiment time, 13:40:19\nExperiment duration, 00.00:06:45.416\n'
        'Sample, "Gold"\nDescription, "Experiment with stub data"\nGas1, H2\nMassSpec File Location, \n'
        "Live notes, 13:46:46: Live note one\n13:46:52: Live note two\n", encoding="latin-1")
    return path
