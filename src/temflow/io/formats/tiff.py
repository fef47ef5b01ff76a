"""TIFF stacks, and folders or globs of single-frame ``.tif`` / ``.png`` files.

A multi-page TIFF is read page by page with tifffile (``TiffFile.asarray(key=...)``
inside each task, the file opened by path and closed again), so only the pages
of a chunk are decoded. The byte range of every page is checked against the
file's size when opening: a truncated stack is refused before any task runs.
Compressed pages (LZW, deflate, JPEG, ...) are decoded by imagecodecs; a
compression that no installed codec decodes is refused when opening.

Calibration, in order of trust: DigitalMicrograph's private tags (65003-65011:
unit, origin and scale of x, y and the frame axis, so the pixel size in µm and
the frame time in s; non-square pixels are kept as they are), JEOL SightX's
``TemReporter`` XML (pixels per metre at the camera and the magnification;
diffraction is refused as reciprocal space), FEI's metadata (``Scan.PixelWidth``),
OME-XML, ImageJ's ``unit``/``finterval`` with the resolution tags, and resolution
tags in centimetres. A resolution in inches is a print DPI, not a pixel size,
and is ignored.

A frame folder (or glob) is sorted naturally (``f2`` before ``f10``); every frame
must have the same shape and dtype, checked from the headers at opening.
Grey-level frames saved as RGB or RGBA (red = green = blue, as many tools write
them) are read as grey, the alpha channel dropped; a frame whose channels differ is
a colour image and is refused (the first frame when opening, others when read).
"""

from __future__ import annotations

import glob
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

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
from temflow.io.formats._tiff_calibration import tiff_calibration

__all__ = ["read_tiff", "read_frames"]

_TIFF = "tiff"
_FRAMES = "frames"
_FRAME_SUFFIXES = (".tif", ".tiff", ".png")
_PNG_DTYPES: dict[int, np.dtype[Any]] = {8: np.dtype("uint8"), 16: np.dtype(">u2")}


def _grey(block: np.ndarray, samples_axis: int | None, path: str, fmt: str, first: int) -> np.ndarray:
    """Grey-level frames from colour-encoded ones whose R, G and B are equal; refuse real colour.

    ``block`` is ``(frames, y, x)`` or has a samples axis (RGB, RGBA, grey + alpha).
    Alpha is dropped: a movie frame is opaque. ``first`` is the index of the block's
    first frame, for the message.
    """
    if samples_axis is None:
        return block
    block = np.moveaxis(block, samples_axis, -1)
    channels = block.shape[-1]
    if channels in (3, 4):
        red, green, blue = block[..., 0], block[..., 1], block[..., 2]
        same = np.all(red == green, axis=(-2, -1)) & np.all(red == blue, axis=(-2, -1))
        if not np.all(same):
            bad = first + int(np.flatnonzero(~np.atleast_1d(same))[0])
            raise fail(path, fmt, f"frame {bad} is a colour image (its red, green and blue differ); a movie is "
                       "grey-level", "convert the frames to grey-level (one channel) before opening them")
    elif channels not in (1, 2):
        raise fail(path, fmt, f"the image has {channels} samples per pixel; temflow reads grey-level images "
                   "(also stored as RGB or RGBA with equal channels)")
    return np.ascontiguousarray(block[..., 0])


def _read_tiff_block(path: str, paged: bool, samples_axis: int | None, start: int, stop: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if paged:
                block = tif.asarray(key=range(start, stop), series=0)
                if stop - start == 1 or block.ndim == (3 if samples_axis is None else 4) - 1:
                    block = block[None]
            else:
                whole = tif.asarray(series=0)
                frame_ndim = 2 if samples_axis is None else 3
                block = whole.reshape((-1,) + whole.shape[-frame_ndim:])[start:stop]
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types
        raise fail(path, _TIFF, f"reading frames {start}..{stop - 1} failed ({type(exc).__name__}: {exc})") from None
    block = _grey(block, None if samples_axis is None else samples_axis + 1, path, _TIFF, start)
    return np.ascontiguousarray(block).astype(block.dtype.newbyteorder("="), copy=False)


def _check_codec(path: Path, fmt: str, page: Any) -> None:
    """Refuse at opening a compression this installation cannot decode (not at the first compute)."""
    import tifffile

    compression = int(page.compression)
    if compression == 1:
        return
    name = getattr(page.compression, "name", str(compression))
    try:
        available = compression in tifffile.TIFF.DECOMPRESSORS
        if available:
            tifffile.TIFF.DECOMPRESSORS[compression]
    except Exception:  # noqa: BLE001 - a missing codec raises KeyError, ValueError or ImportError
        available = False
    if not available:
        raise fail(path, fmt, f"the pages are compressed with {name} (TIFF compression {compression}), which "
                   "this installation cannot decode", "install imagecodecs (pip install imagecodecs) or save the "
                   "stack uncompressed")


def _samples_axis(axes: str, shape: tuple[int, ...]) -> int | None:
    """Position of the samples (colour) axis within one frame's axes, or ``None`` for grey-level."""
    if "S" not in axes:
        return None
    frame_axes = axes[-3:]
    if "S" not in frame_axes:
        return None
    return frame_axes.index("S")
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

    Lazy: parses headers only (and decodes the first frame of a colour-encoded
    stack, to refuse real colour at opening); each dask task opens the file by path
    and reads its frames. Compressed stacks (LZW, deflate, JPEG... via imagecodecs)
    are read; a compression no installed codec decodes is refused at opening.

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
        If the file is missing, empty, truncated, damaged, compressed with a codec
        that is not installed, or a colour image.
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
            first_page = tif.pages.first
            _check_codec(path, _TIFF, first_page)
            samples = _samples_axis(axes, shape)
            frame_ndim = 2 if samples is None else 3
            if len(shape) < frame_ndim:
                raise fail(path, _TIFF, f"the image has shape {shape} (axes {axes!r})")
            n_frames = math.prod(shape[:-frame_ndim]) if len(shape) > frame_ndim else 1
            contiguous = getattr(series, "dataoffset", None) if samples is None else None
            if contiguous is not None:
                check_extent(path, _TIFF, int(contiguous) + check_shape(
                    path, _TIFF, n_frames, shape[-2:], dtype.itemsize), size)
                file_dtype = dtype.newbyteorder(tif.byteorder)
            _check_all_pages_read(path, tif, n_frames, n_directories)
            calibration = tiff_calibration(tif, first_page, n_frames)
            if samples is not None:  # refuse real colour now, not at the first compute
                _grey(np.asarray(first_page.asarray())[None], samples + 1, str(path), _TIFF, 0)
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fail(path, _TIFF, f"the TIFF structure is damaged ({type(exc).__name__}: {exc})",
                   "copy the file again") from None
    frame_axes = [i for i, axis in enumerate(axes[-frame_ndim:]) if axis != "S"]
    frame_shape = tuple(int(shape[len(shape) - frame_ndim + i]) for i in frame_axes)
    frame_shape = (frame_shape[0], frame_shape[1])
    check_shape(path, _TIFF, n_frames, frame_shape, dtype.itemsize * (1 if samples is None else int(shape[len(shape) - frame_ndim + samples])))
    per = frames_per_chunk(chunks, n_frames, frame_shape, dtype)
    if contiguous is not None:
        # uncompressed and contiguous (tifffile's own test): read the bytes directly, no IFD walk per task
        data = lazy_frames(read_contiguous, (str(path), _TIFF, int(contiguous), file_dtype.str, frame_shape), n_frames,
                           frame_shape, dtype.newbyteorder("="), per, _TIFF)
    else:
        data = lazy_frames(_read_tiff_block, (str(path), n_pages == n_frames, samples), n_frames, frame_shape,
                           dtype.newbyteorder("="), per, _TIFF)
    meta = calibration["metadata"]
    meta["axes"] = axes
    notes = list(calibration["notes"])
    if samples is not None:
        notes.append(f"the frames are stored as colour (axes {axes!r}) with equal red, green and blue; read as grey")
    return RawMovie(data=data, format=_TIFF, sources=[str(path)], pixel_size_nm=calibration["pixel"],
                    frame_interval_s=calibration["interval"], instrument=calibration["instrument"], metadata=meta,
                    notes=notes, pixel_notes=calibration["pixel_notes"], pixel_refusal=calibration["refusal"],
                    time_refusal=calibration["time_refusal"])


# --------------------------------------------------------------------------- frame folders

#: PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
_PNG_COLOUR = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}


def _png_header(path: Path, size: int) -> tuple[tuple[int, int], np.dtype, int]:
    with open(path, "rb") as f:
        head = f.read(33)
        f.seek(max(0, size - 12))
        tail = f.read(12)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise fail(path, _FRAMES, "wrong magic bytes: this is not a PNG file", "check the file")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if b"IEND" not in tail:
        raise fail(path, _FRAMES, "the file is truncated: the PNG has no end chunk (IEND)", "copy the file again")
    if colour not in _PNG_COLOUR:
        raise fail(path, _FRAMES, f"the PNG has an unknown colour type {colour}", "the file is damaged")
    if colour == 3:
        depth = 8  # palette indices map to 8-bit colours
    if depth not in _PNG_DTYPES:
        raise fail(path, _FRAMES, f"the PNG has {depth}-bit pixels; temflow reads 8- and 16-bit PNGs")
    return (height, width), _PNG_DTYPES[depth].newbyteorder("="), colour


def _read_png(file: str, colour: int) -> np.ndarray:
    """One PNG as a grey-level frame (colour-encoded grey is reduced; real colour is refused)."""
    from PIL import Image

    if colour == 0:
        with Image.open(file) as image:
            return np.asarray(image)
    import imagecodecs

    with open(file, "rb") as f:
        frame = imagecodecs.png_decode(f.read())  # keeps 16-bit colour, which Pillow would cut to 8 bits
    if frame.ndim == 2:
        return frame
    if colour == 3 and frame.shape[-1] == 1:
        return frame[..., 0]
    return _grey(frame[None], 3, file, _FRAMES, 0)[0]


def _frame_header(path: Path) -> tuple[tuple[int, int], np.dtype, int | None]:
    """Shape, dtype and the colour layout (PNG colour type, TIFF samples axis or ``None``) of one frame file."""
    import tifffile

    size = check_file(path, _FRAMES)
    if path.suffix.lower() == ".png":
        png_shape, png_dtype, colour = _png_header(path, size)
        check_shape(path, _FRAMES, 1, png_shape, png_dtype.itemsize)  # IHDR sizes are 32-bit: 4 x 10^9 px a side
        return png_shape, png_dtype, colour
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            _check_pages(path, _FRAMES, [page], size)
            _check_codec(path, _FRAMES, page)
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), np.dtype(page.dtype), series.axes
    except MovieFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise fail(path, _FRAMES, f"the TIFF structure is damaged ({type(exc).__name__}: {exc})") from None
    samples = _samples_axis(axes, shape)
    if len(shape) != (2 if samples is None else 3):
        raise fail(path, _FRAMES, f"a frame file must hold one grey-level image; this one holds shape {shape}",
                   "open a multi-page stack as one file (format 'tiff'), not as a frame folder")
    grid = [int(n) for n, axis in zip(shape, axes) if axis != "S"]
    return (grid[0], grid[1]), dtype.newbyteorder("="), samples


def _read_frame_files(paths: tuple[str, ...], dtype: str, frame_shape: tuple[int, int], colour: int | None,
                      start: int, stop: int) -> np.ndarray:
    import tifffile

    out = np.empty((stop - start, *frame_shape), dtype=dtype)
    for i, file in enumerate(paths[start:stop]):
        try:
            if file.lower().endswith(".png"):
                frame = _read_png(file, colour or 0)
            else:
                frame = tifffile.imread(file)
                frame = _grey(frame[None], None if colour is None else colour + 1, file, _FRAMES, 0)[0]
        except MovieFileError:
            raise
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
    shape, dtype, colour = _frame_header(files[0])
    for file in files[1:]:
        other_shape, other_dtype, other_colour = _frame_header(file)
        if other_shape != shape or other_dtype != dtype or other_colour != colour:
            raise fail(file, _FRAMES, f"frames differ: this one is {other_shape} {other_dtype}, {files[0].name} is "
                       f"{shape} {dtype}", "keep frames of one acquisition (same size and bit depth) in one folder")
    calibration: dict[str, Any] = {"pixel": None, "refusal": None, "pixel_notes": [], "notes": [],
                                   "instrument": {}, "metadata": {}}
    if files[0].suffix.lower() != ".png":
        import tifffile

        with tifffile.TiffFile(files[0]) as tif:
            calibration = tiff_calibration(tif, tif.pages.first, 1)
    notes = list(calibration["notes"])
    grey_coded = colour != 0 if files[0].suffix.lower() == ".png" else colour is not None
    if grey_coded:
        # decode the first frame now: a colour movie is refused at opening, not at the first compute
        _read_frame_files((str(files[0]),), dtype.str, shape, colour, 0, 1)
        kind = _PNG_COLOUR.get(colour or 0, "colour") if files[0].suffix.lower() == ".png" else "colour samples"
        notes.append(f"the frames are stored as {kind} with equal channels; read as grey (alpha dropped)")
    per = frames_per_chunk(chunks, len(files), shape, dtype)
    data = lazy_frames(_read_frame_files, (dtype.str, shape, colour), len(files), shape, dtype, per, _FRAMES,
                       files=[str(f) for f in files])
    return RawMovie(data=data, format=_FRAMES, sources=[str(f) for f in files],
                    pixel_size_nm=calibration["pixel"], instrument=calibration["instrument"],
                    metadata=calibration["metadata"], notes=notes, pixel_notes=calibration["pixel_notes"],
                    pixel_refusal=calibration["refusal"])
