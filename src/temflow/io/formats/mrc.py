"""MRC / MRCS image stacks via mrcfile's memory map.

Headers are opened with ``mrcfile.mmap(..., permissive=True)`` so that a damaged
file yields a message rather than an exception from deep inside mrcfile; the
warnings mrcfile emits in permissive mode become the error's text. The size
the header promises (1024 + extended header + nx*ny*nz*itemsize bytes) is
checked against the file. Voxel sizes are in Å and converted to nm; a voxel
size of 0 means "not calibrated". FEI/EPU extended headers give the voltage,
magnification and exposure where present. Sections (z) are the frames.

Direct Electron cameras write ``<name>_movie.mrc`` with a ``<name>_info.txt``
sidecar (``key = value`` lines): its ``Frames Per Second`` gives the time step
and ``Specimen Pixel Size X/Y (nanometers)`` the pixel size when positive. A
sidecar with ``Scan - Enable = Enable`` describes a 4D-STEM scan (one
diffraction pattern per scan point), which is refused: it is not a movie. A
negative cell size (DE's simulator writes one) is not a calibration.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from temflow.errors import MovieFileError
from temflow.io.formats._common import RawMovie, check_extent, check_file, fail, first_number, frames_per_chunk, lazy_frames

__all__ = ["read_mrc"]

_FMT = "mrc"


def _open(path: str | Path) -> tuple[Any, list[str]]:
    import mrcfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mrc = mrcfile.mmap(path, mode="r", permissive=True)
    return mrc, [str(w.message) for w in caught]


def _read_mrc_block(path: str, start: int, stop: int) -> np.ndarray:
    try:
        mrc, problems = _open(path)
        try:
            if mrc.data is None:
                raise fail(path, _FMT, "mrcfile could not map the data: " + "; ".join(problems))
            data = mrc.data if mrc.data.ndim == 3 else mrc.data[None]
            block = np.array(data[start:stop])
        finally:
            mrc.close()
    except MovieFileError:
        raise
    except (OSError, ValueError) as exc:
        raise fail(path, _FMT, f"reading frames {start}..{stop - 1} failed ({exc})") from None
    return block.astype(block.dtype.newbyteorder("="), copy=False)


def _instrument(mrc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        ext = mrc.indexed_extended_header
    except Exception:  # noqa: BLE001 - an unreadable extended header is just absent metadata
        return out
    if ext is None or not hasattr(ext, "dtype") or ext.dtype.names is None or len(ext) == 0:
        return out
    first = ext[0]
    names = set(ext.dtype.names)
    for field, key, scale in (("HT", "voltage_kV", 1e-3), ("Magnification", "magnification", 1.0),
                              ("Exposure time", "exposure_s", 1.0), ("Integration time", "exposure_s", 1.0)):
        if field in names and key not in out:
            value = first_number(first[field])
            if value:
                out[key] = value * scale
    for field in ("Camera name", "Microscope type"):
        if field in names:
            value = first[field]
            text = value.decode("utf-8", "replace").strip("\x00 ") if isinstance(value, bytes) else str(value)
            if text:
                out["camera" if field.startswith("Camera") else "microscope"] = text
    return out


def _sidecar(path: Path) -> tuple[Path | None, dict[str, str]]:
    """A Direct Electron ``<name>_info.txt`` beside ``<name>_movie.mrc`` (or ``<name>.mrc``), parsed."""
    stem = path.stem[: -len("_movie")] if path.stem.endswith("_movie") else path.stem
    info = path.with_name(stem + "_info.txt")
    if not info.is_file():
        return None, {}
    values: dict[str, str] = {}
    for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return info, values


def _de_calibration(path: Path, n_frames: int) -> tuple[tuple[float, float] | None, float | None, dict[str, Any],
                                                         list[str]]:
    """Pixel size (nm) and frame interval (s) from a DE sidecar; refuses a 4D-STEM scan."""
    info, values = _sidecar(path)
    if info is None:
        return None, None, {}, []
    scan_points = first_number(values.get("Scan - Points"))
    if values.get("Scan - Enable", "").lower() == "enable" and scan_points and scan_points > 1:
        size = f"{values.get('Scan - Size X', '?')} x {values.get('Scan - Size Y', '?')}"
        raise fail(path, _FMT, f"its sidecar {info.name} describes a 4D-STEM scan (Scan - Enable, {size} scan, "
                   f"{int(scan_points)} points): each frame is a diffraction pattern at one scan point, not a "
                   "movie frame", "open the in-situ movie itself (a camera acquisition without a scan)")
    notes = [f"calibration from the Direct Electron sidecar {info.name}"]
    fps = first_number(values.get("Frames Per Second"))
    frame_ns = first_number(values.get("Frame Time (nanoseconds)"))
    interval = 1.0 / fps if fps and fps > 0 else frame_ns * 1e-9 if frame_ns and frame_ns > 0 else None
    sx = first_number(values.get("Specimen Pixel Size X (nanometers)"))
    sy = first_number(values.get("Specimen Pixel Size Y (nanometers)"))
    pixel = (sy, sx) if sx and sy and sx > 0 and sy > 0 else None
    instrument: dict[str, Any] = {}
    if values.get("Camera Model"):
        instrument["camera"] = values["Camera Model"]
    exposure = first_number(values.get("Exposure Time (seconds)"))
    if exposure:
        instrument["exposure_s"] = exposure
    return pixel, interval if n_frames > 1 else None, instrument, notes


def read_mrc(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open an ``.mrc``/``.mrcs`` stack lazily (memory-mapped per task).

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The MRC file.
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
    import mrcfile.utils

    size = check_file(path, _FMT)
    if size < 1024:
        raise fail(path, _FMT, f"the file is truncated: an MRC header alone is 1024 bytes, the file has {size}",
                   "copy the file again")
    mrc, problems = _open(path)
    try:
        header = mrc.header
        nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
        try:
            dtype = np.dtype(mrcfile.utils.dtype_from_mode(int(header.mode)))
        except ValueError:
            raise fail(path, _FMT, f"unknown MRC data mode {int(header.mode)}", "the header is damaged") from None
        if dtype.kind == "c":
            raise fail(path, _FMT, f"the data are complex ({dtype}), not a real-valued movie")
        if min(nx, ny, nz) <= 0:
            raise fail(path, _FMT, f"the header gives an empty shape (nx, ny, nz) = ({nx}, {ny}, {nz})",
                       "the header is damaged")
        extended = int(header.nsymbt)
        check_extent(path, _FMT, 1024 + extended + nx * ny * nz * dtype.itemsize, size)
        magic_ok = bytes(header.map).startswith(b"MAP")
        if not magic_ok and (1024 + extended + nx * ny * nz * dtype.itemsize != size):
            raise fail(path, _FMT, "wrong magic bytes: no 'MAP ' label at byte 208 and the sizes do not match an "
                       "old-style MRC file either", "check that this is an MRC file")
        if mrc.data is None:
            raise fail(path, _FMT, "mrcfile could not read the data: " + "; ".join(problems), "the file is damaged")
        if mrc.data.ndim not in (2, 3):
            raise fail(path, _FMT, f"the data have {mrc.data.ndim} dimensions; temflow reads image stacks",
                       "volume stacks are not movies")
        voxel = mrc.voxel_size
        dx, dy = float(voxel.x) / 10.0, float(voxel.y) / 10.0  # Å -> nm
        instrument = _instrument(mrc)
        metadata = {"mrc_mode": int(header.mode), "space_group": int(header.ispg),
                    "extended_header_bytes": extended, "exttyp": bytes(header.exttyp).decode("ascii", "replace"),
                    "labels": [bytes(lbl).decode("ascii", "replace").strip() for lbl in header.label[: int(header.nlabl)]]}
        if problems:
            metadata["mrcfile_warnings"] = problems
    finally:
        mrc.close()
    pixel = (dy, dx) if dx > 0 and dy > 0 else None
    notes: list[str] = []
    if dx < 0 or dy < 0:
        notes.append(f"the MRC cell gives a negative voxel size ({dx * 10:g} x {dy * 10:g} Å): not a calibration")
    de_pixel, interval, de_instrument, de_notes = _de_calibration(path, nz)
    notes.extend(de_notes)
    pixel = de_pixel or pixel
    instrument.update(de_instrument)
    frame_shape = (ny, nx)
    per = frames_per_chunk(chunks, nz, frame_shape, dtype)
    data = lazy_frames(_read_mrc_block, (str(path),), nz, frame_shape, dtype.newbyteorder("="), per, _FMT)
    return RawMovie(data=data, format=_FMT, sources=[str(path)], pixel_size_nm=pixel, frame_interval_s=interval,
                    instrument=instrument, metadata=metadata, notes=notes)
