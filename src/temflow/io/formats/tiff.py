"""TIFF stacks, and folders or globs of single-frame ``.tif`` / ``.png`` files.

A multi-page TIFF is read page by page with tifffile (``TiffFile.asarray(key=...)``
inside each task, the file opened by path and closed again), so only the pages
of a chunk are decoded. The byte range of every page is checked against the
file's size when opening: a truncated stack is refused before any task runs.

Calibration comes from ImageJ metadata (``unit``, ``finterval``) with the
resolution tags, or from the resolution tags in centimetres; a resolution in
inches is a print DPI, not a pixel size, and is ignored.

A frame folder (or glob) is sorted naturally (``f2`` before ``f10``); every frame
must have the same shape and dtype, checked from the headers at opening.
Colour images are refused: a movie is grey-level.
"""

from __future__ import annotations

import glob
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from temflow.movie import length_to_nm
from temflow.errors import MovieFileError
from temflow.io.formats._common import (
    MAX_FRAMES,
    MAX_COMPRESSION,
    RawMovie,
    check_extent,
    check_file,
    check_shape,
    fail,
    frames_per_chunk,
    lazy_frames,
    natural_key,
    read_contiguous,
)

__all__ = ["read_tiff", "read_frames"]

_TIFF = "tiff"
_FRAMES = "frames"
_FRAME_SUFFIXES = (".tif", ".tiff", ".png")
_PNG_DTYPES: dict[int, np.dtype[Any]] = {8: np.dtype("uint8"), 16: np.dtype(">u2")}


def _unit_text(unit: Any) -> str:
    text = unit.decode("utf-8", "replace") if isinstance(unit, bytes) else str(unit)
    return text.replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("micron", "µm").strip()


def _tiff_calibration(tif: Any, page: Any) -> tuple[tuple[float, float] | None, float | None, dict[str, Any]]:
    """Pixel size (nm), frame interval (s) and metadata from one TIFF's tags."""
    meta: dict[str, Any] = {}
    imagej = tif.imagej_metadata or {}
    unit = _unit_text(imagej.get("unit", "")) if imagej else ""
    tags = page.tags
    interval = None
    if imagej:
        meta["imagej"] = {k: v for k, v in imagej.items() if isinstance(v, (str, int, float, bool))}
        if isinstance(imagej.get("finterval"), (int, float)) and imagej["finterval"] > 0:
            interval = float(imagej["finterval"])
    pixel = None
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    resunit = tags.get("ResolutionUnit")
    resunit_value = int(resunit.value) if resunit is not None else 2
    if xres is not None and yres is not None:
        xv, yv = xres.value, yres.value
        px = xv[0] / xv[1] if isinstance(xv, tuple) and xv[1] else float(xv) if not isinstance(xv, tuple) else 0
        py = yv[0] / yv[1] if isinstance(yv, tuple) and yv[1] else float(yv) if not isinstance(yv, tuple) else 0
        if px > 0 and py > 0:
            if unit and unit.lower() not in ("pixel", "pixels", "px"):
                dx, dy = length_to_nm(1.0 / px, unit), length_to_nm(1.0 / py, unit)
                if dx is not None and dy is not None:
                    pixel = (dy, dx)
                else:
                    meta["ignored_unit"] = unit
            elif resunit_value == 3:  # centimetres
                pixel = (1e7 / py, 1e7 / px)
    if getattr(tif, "is_ome", False) and tif.ome_metadata:
        ome_pixel, ome_interval = _ome_calibration(tif.ome_metadata)
        pixel = ome_pixel or pixel
        interval = ome_interval or interval
        meta["ome"] = True
    for name in ("Software", "DateTime", "Make", "Model"):
        tag = tags.get(name)
        if tag is not None and isinstance(tag.value, str) and len(tag.value) < 2000:
            meta[name] = tag.value
    return pixel, interval, meta


def _ome_calibration(xml: str) -> tuple[tuple[float, float] | None, float | None]:
    """Pixel size (nm) and time increment (s) from OME-XML ``Pixels`` attributes."""
    import xml.etree.ElementTree as ET

    from temflow.movie import time_to_s

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return None, None
    sizes = []
    for axis in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # OME's default unit
        sizes.append(length_to_nm(float(value), unit) if value else None)
    pixel = (sizes[0], sizes[1]) if sizes[0] and sizes[1] else None
    interval = None
    increment = pixels.get("TimeIncrement")
    if increment:
        interval = time_to_s(float(increment), pixels.get("TimeIncrementUnit", "s"))
    return pixel, interval if interval and interval > 0 else None


def _read_tiff_block(path: str, paged: bool, start: int, stop: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if paged:
                block = tif.asarray(key=range(start, stop), series=0)
                block = block.reshape((stop - start,) + block.shape[-2:])
            else:
                whole = tif.asarray(series=0)
                block = whole.reshape((-1,) + whole.shape[-2:])[start:stop]
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types
        raise fail(path, _TIFF, f"reading frames {start}..{stop - 1} failed ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(block).astype(block.dtype.newbyteorder("="), copy=False)


def _count_ifds(path: Path, fmt: str, size: int) -> int:
    """Walk the chain of image directories (IFDs); refuse one that leaves the file or loops.

    tifffile stops at a directory offset past the end of the file with only a log
    message, so a stack truncated mid-page would open with its last frames silently
    missing. Returns the number of directories (pages) in the main chain.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            raise fail(path, fmt, "the TIFF header is damaged (no byte-order mark)", "copy the file again")
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 43:  # BigTIFF: 8-byte offsets and counts
            count_fmt, entry_size, next_fmt, first = "Q", 20, "Q", struct.unpack(order + "Q", head[8:16])[0]
        else:
            count_fmt, entry_size, next_fmt, first = "H", 12, "I", struct.unpack(order + "I", head[4:8])[0]
        count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
        offset, seen = first, set[int]()
        while offset:
            if offset in seen or len(seen) > MAX_FRAMES:
                raise fail(path, fmt, f"the image directories form a loop (page {len(seen)} points back at byte "
                           f"{offset})", "the file is damaged; copy it again")
            if offset < 8 or offset + count_size > size:
                raise fail(path, fmt, f"the file is truncated: page {len(seen) + 1}'s directory would start at byte "
                           f"{offset} but the file has {size} bytes", "copy the file again; an interrupted transfer "
                           "or acquisition leaves files like this")
            seen.add(offset)
            f.seek(offset)
            entries = struct.unpack(order + count_fmt, f.read(count_size))[0]
            end = offset + count_size + entries * entry_size + next_size
            if end > size:
                raise fail(path, fmt, f"the file is truncated inside page {len(seen)}'s directory (it needs bytes up "
                           f"to {end}; the file has {size})", "copy the file again")
            f.seek(offset + count_size + entries * entry_size)
            offset = struct.unpack(order + next_fmt, f.read(next_size))[0]
    return len(seen)


def _check_all_pages_read(path: Path, tif: Any, n_frames: int, n_directories: int) -> None:
    """Refuse a stack whose first series holds fewer frames than the file has full-size pages.

    tifffile starts a new series at a page of another shape or dtype (a damaged
    header in the middle of a stack): the movie would then silently end there.
    Reduced-resolution pages (previews, pyramids) are not frames.
    """
    imagej = tif.imagej_metadata or {}
    declared = imagej.get("images")
    if isinstance(declared, int) and declared > n_frames:
        raise fail(path, _TIFF, f"the ImageJ header declares {declared} images but only {n_frames} can be read; "
                   "the file is truncated or damaged", "copy the file again")
    if n_directories <= n_frames or tif.is_ome or (
            len(tif.series) > 1 and all(getattr(s, "kind", "") == "shaped" for s in tif.series)):
        return  # OME and tifffile's own files declare several series on purpose
    extra = [tif.pages[i] for i in range(n_frames, min(n_directories, n_frames + 64))]
    frames_left = [p for p in extra if p is not None and not getattr(p, "is_reduced", False)]
    if frames_left:
        raise fail(path, _TIFF, f"the file has {n_directories} full-size pages but its stack holds only {n_frames} "
                   f"frames of {tuple(tif.series[0].shape[-2:])} {tif.series[0].dtype}: a page header in the "
                   "middle disagrees with the others (damaged)", "copy the file again, or re-export the stack")


def _check_pages(path: Path, fmt: str, pages: Any, size: int) -> None:
    """Each page's declared shape against its strip/tile byte counts and the file's size."""
    end = 0
    for page in (pages[0], pages[-1]) if len(pages) > 1 else (pages[0],):
        key = getattr(page, "keyframe", None) or page  # a TiffFrame shares its keyframe's tags
        shape = (int(key.imagelength), int(key.imagewidth))
        planes = int(key.imagedepth) * int(key.samplesperpixel)
        itemsize = np.dtype(key.dtype).itemsize if key.dtype is not None else 1
        decoded = check_shape(path, fmt, planes, shape, itemsize)
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        stored = sum(int(c) for c in counts)
        if offsets and counts:
            end = max(end, max(int(o) + int(c) for o, c in zip(offsets, counts)))
        raw = int(getattr(key, "compression", 1) or 1) == 1
        if raw and int(key.bitspersample) >= 8 and stored < decoded:
            raise fail(path, fmt, f"a page declares {shape} px ({decoded} bytes) but its strips or tiles hold only "
                       f"{stored} bytes; the header is damaged or the file truncated", "copy the file again")
        if not raw and decoded > MAX_COMPRESSION * max(stored, 1):
            raise fail(path, fmt, f"a page declares {shape} px ({decoded} bytes) from {stored} compressed bytes, more "
                       "than any compression gives; the header is damaged", "copy the file again")
    check_extent(path, fmt, end, size, "the pages")


def read_tiff(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open a (multi-page) TIFF stack lazily, page by page.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The TIFF file.
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
    import tifffile

    size = check_file(path, _TIFF)
    try:
        n_directories = _count_ifds(path, _TIFF, size)
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise fail(path, _TIFF, "the file holds no image series")
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            pages = series.pages
            n_pages = len(pages)
            _check_pages(path, _TIFF, [p for p in (pages[0], pages[-1]) if p is not None], size)
            contiguous = getattr(series, "dataoffset", None)
            n_frames = math.prod(shape[:-2]) if len(shape) > 2 else 1
            if contiguous is not None:
                check_extent(path, _TIFF, int(contiguous) + check_shape(
                    path, _TIFF, n_frames, shape[-2:], dtype.itemsize), size)
                file_dtype = dtype.newbyteorder(tif.byteorder)
            _check_all_pages_read(path, tif, n_frames, n_directories)
            pixel, interval, meta = _tiff_calibration(tif, tif.pages.first)
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fail(path, _TIFF, f"the TIFF structure is damaged ({type(exc).__name__}: {exc})",
                   "copy the file again") from None
    if "S" in axes:
        raise fail(path, _TIFF, f"the image is colour (axes {axes!r}); a movie is grey-level",
                   "convert the frames to grey-level first")
    if len(shape) < 2:
        raise fail(path, _TIFF, f"the image has shape {shape}")
    frame_shape = (int(shape[-2]), int(shape[-1]))
    check_shape(path, _TIFF, n_frames, frame_shape, dtype.itemsize)
    per = frames_per_chunk(chunks, n_frames, frame_shape, dtype)
    if contiguous is not None:
        # uncompressed and contiguous (tifffile's own test): read the bytes directly, no IFD walk per task
        data = lazy_frames(read_contiguous, (str(path), _TIFF, int(contiguous), file_dtype.str, frame_shape), n_frames,
                           frame_shape, dtype.newbyteorder("="), per, _TIFF)
    else:
        data = lazy_frames(_read_tiff_block, (str(path), n_pages == n_frames), n_frames, frame_shape,
                           dtype.newbyteorder("="), per, _TIFF)
    meta["axes"] = axes
    return RawMovie(data=data, format=_TIFF, sources=[str(path)], pixel_size_nm=pixel, frame_interval_s=interval,
                    metadata=meta)


# --------------------------------------------------------------------------- frame folders


def _png_header(path: Path, size: int) -> tuple[tuple[int, int], np.dtype]:
    with open(path, "rb") as f:
        head = f.read(33)
        f.seek(max(0, size - 12))
        tail = f.read(12)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise fail(path, _FRAMES, "wrong magic bytes: this is not a PNG file", "check the file")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if b"IEND" not in tail:
        raise fail(path, _FRAMES, "the file is truncated: the PNG has no end chunk (IEND)", "copy the file again")
    if colour != 0:
        raise fail(path, _FRAMES, "the PNG is colour or palette-based; a movie is grey-level",
                   "save the frames as grey-level images")
    if depth not in _PNG_DTYPES:
        raise fail(path, _FRAMES, f"the PNG has {depth}-bit pixels; temflow reads 8- and 16-bit grey-level PNGs")
    return (height, width), _PNG_DTYPES[depth].newbyteorder("=")


def _frame_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    import tifffile

    size = check_file(path, _FRAMES)
    if path.suffix.lower() == ".png":
        png_shape, png_dtype = _png_header(path, size)
        check_shape(path, _FRAMES, 1, png_shape, png_dtype.itemsize)  # IHDR sizes are 32-bit: 4 x 10^9 px a side
        return png_shape, png_dtype
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            _check_pages(path, _FRAMES, [page], size)
            shape, dtype = tuple(tif.series[0].shape), np.dtype(page.dtype)
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fail(path, _FRAMES, f"the TIFF structure is damaged ({type(exc).__name__}: {exc})") from None
    if len(shape) != 2:
        raise fail(path, _FRAMES, f"a frame file must hold one grey-level image; this one holds shape {shape}",
                   "open a multi-page stack as one file (format 'tiff'), not as a frame folder")
    return (int(shape[0]), int(shape[1])), dtype.newbyteorder("=")


def _read_frame_files(paths: tuple[str, ...], dtype: str, frame_shape: tuple[int, int], start: int,
                      stop: int) -> np.ndarray:
    import tifffile
    from PIL import Image

    out = np.empty((stop - start, *frame_shape), dtype=dtype)
    for i, file in enumerate(paths[start:stop]):
        try:
            if file.lower().endswith(".png"):
                with Image.open(file) as image:
                    frame = np.asarray(image)
            else:
                frame = tifffile.imread(file)
        except Exception as exc:  # noqa: BLE001
            raise fail(file, _FRAMES, f"reading the frame failed ({type(exc).__name__}: {exc})") from None
        if frame.shape != tuple(frame_shape):
            raise fail(file, _FRAMES, f"this frame is {frame.shape}, the movie's frames are {tuple(frame_shape)}",
                       "keep frames of one acquisition in one folder")
        out[i] = frame
    return out


def read_frames(path: Path | str, *, chunks: Any = None) -> RawMovie:
    """Open a folder, a glob pattern or a single ``.png``/``.tif`` of one-frame files lazily.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path or str
        A folder, one frame file, or a glob pattern (str).
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
    text = str(path)
    if isinstance(path, Path) and path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _FRAME_SUFFIXES]
        where = f"the folder {text}"
    elif isinstance(path, Path):
        files = [path]
        where = text
    else:
        files = [Path(p) for p in glob.glob(text) if Path(p).is_file()]
        where = f"the pattern {text!r}"
    if not files:
        raise fail(text, _FRAMES, f"{where} matches no .tif, .tiff or .png frames (empty folder?)",
                   "check the folder or pattern; a stack file can be opened directly")
    files.sort(key=lambda p: natural_key(p.name))
    shape, dtype = _frame_header(files[0])
    for file in files[1:]:
        other_shape, other_dtype = _frame_header(file)
        if other_shape != shape or other_dtype != dtype:
            raise fail(file, _FRAMES, f"frames differ: this one is {other_shape} {other_dtype}, {files[0].name} is "
                       f"{shape} {dtype}", "keep frames of one acquisition (same size and bit depth) in one folder")
    pixel: tuple[float, float] | None = None
    interval: float | None = None
    meta: dict[str, Any] = {}
    if files[0].suffix.lower() != ".png":
        import tifffile

        with tifffile.TiffFile(files[0]) as tif:
            pixel, _, meta = _tiff_calibration(tif, tif.pages.first)
    per = frames_per_chunk(chunks, len(files), shape, dtype)
    data = lazy_frames(_read_frame_files, (dtype.str, shape), len(files), shape, dtype, per, _FRAMES,
                       files=[str(f) for f in files])
    return RawMovie(data=data, format=_FRAMES, sources=[str(f) for f in files], pixel_size_nm=pixel,
                    frame_interval_s=interval, metadata=meta)
