"""NumPy ``.npy`` files, memory-mapped per task.

The header (magic, version, dtype, shape, order) is read with
``numpy.lib.format``; the data must fill ``prod(shape) * itemsize`` bytes after
the header, else the file is truncated. A ``.npy`` carries no calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from temflow.io.formats._common import RawMovie, check_extent, check_file, check_shape, fail, frames_per_chunk, lazy_frames

__all__ = ["read_npy"]

_FMT = "npy"


def _read_npy_block(path: str, start: int, stop: int) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        block = np.array(array[start:stop] if array.ndim == 3 else array[None][start:stop])
    except (OSError, ValueError) as exc:
        raise fail(path, _FMT, f"reading frames {start}..{stop - 1} failed ({exc})") from None
    return block


def read_npy(path: Path, *, chunks: Any = None) -> RawMovie:
    """Open a ``.npy`` array of shape ``(time, y, x)`` (or one ``(y, x)`` image) lazily.

    Lazy: parses headers only; each dask task opens the file(s) by path and reads its frames.

    Parameters
    ----------
    path : pathlib.Path
        The ``.npy`` file.
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
        with open(path, "rb") as f:
            version = npformat.read_magic(f)
            read_header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, fortran, dtype = read_header(f)  # header only
            header_end = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise fail(path, _FMT, f"the .npy header is damaged ({exc})", "save the array again with numpy.save") from None
    if dtype.hasobject:
        raise fail(path, _FMT, "the array holds Python objects, not pixels", "save a numeric array")
    if len(shape) not in (2, 3):
        raise fail(path, _FMT, f"the array has shape {shape}; a movie is (time, y, x) or one (y, x) image",
                   "reshape it before saving")
    if fortran and len(shape) == 3:
        raise fail(path, _FMT, "the array is stored in Fortran order, so frames are not contiguous",
                   "save it with numpy.save(path, numpy.ascontiguousarray(array))")
    frames = shape[0] if len(shape) == 3 else 1
    frame_shape = (int(shape[-2]), int(shape[-1]))
    # Python ints: np.prod of a hostile shape wraps around int64 and passes the size check
    check_extent(path, _FMT, header_end + check_shape(path, _FMT, frames, frame_shape, dtype.itemsize), size)
    per = frames_per_chunk(chunks, frames, frame_shape, dtype)
    data = lazy_frames(_read_npy_block, (str(path),), frames, frame_shape, dtype, per, _FMT)
    return RawMovie(data=data, format=_FMT, sources=[str(path)])
