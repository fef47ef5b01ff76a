"""Hostile files: headers that lie about sizes are refused before anything is allocated.

Every file here is generated small (a few kB) and declares far more than it holds:
dimensions near 2^32, shapes whose byte size overflows int64, HDF5 datasets of 10^9
frames with nothing written, TIFF pages of 10^6 x 10^6 px, stacks cut mid-page. Each
must give one MovieFileError naming the file, quickly and without allocating: checked
in-process with tracemalloc (numpy reports its buffers to it) and, for all of them at
once, in a subprocess whose address space is capped.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from formats_writers import write_dm, write_ser, write_velox_emd

from temflow.errors import MovieFileError
from temflow.io.reader import open_movie

SMALL = (np.arange(3 * 8 * 6) % 251).astype("uint16").reshape(3, 8, 6)
BIG = 2**32 - 1


# --------------------------------------------------------------------------- writers


def dm_dims(tmp: Path, dims: list[int], version: int = 4) -> Path:
    """A DM file of 3 small frames whose header declares ``dims`` (x, y[, frames])."""
    return write_dm(tmp / f"lying{version}.dm{version}", SMALL, version=version, dimensions=dims)


def npy_shape(tmp: Path, shape: tuple[int, ...], dtype: str = "<u2") -> Path:
    """A .npy whose header declares ``shape`` followed by a few bytes of data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    path = tmp / "lying.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body + bytes(256))
    return path


def emd_berkeley(tmp: Path, shape: tuple[int, int, int], *, chunked: bool, time_vector: int | None = None) -> Path:
    """A Berkeley EMD whose data declares ``shape`` with nothing (or only a few frames) written."""
    import h5py

    path = tmp / "lying_berkeley.emd"
    with h5py.File(path, "w") as f:
        f.attrs["version_major"] = 0
        group = f.create_group("data/movie")
        group.attrs["emd_group_type"] = 1
        kwargs = {"chunks": (1, shape[1], shape[2])} if chunked else {}
        data = group.create_dataset("data", shape=shape, dtype="uint16", **kwargs)
        if chunked and shape[0] > 2:
            data[:2] = 1  # a writer that stopped after two frames
        n_time = time_vector if time_vector is not None else shape[0]
        dim = group.create_dataset("dim1", shape=(n_time,), dtype="float64")
        dim.attrs["name"], dim.attrs["units"] = "time", "[s]"
        for i, n in ((2, shape[1]), (3, shape[2])):
            d = group.create_dataset(f"dim{i}", data=np.arange(n) * 0.5)
            d.attrs["name"], d.attrs["units"] = "yx"[i - 2], "[n_m]"
    return path


def emd_velox(tmp: Path, n_frames: int) -> Path:
    """A Velox EMD whose Data declares ``(64, 64, n_frames)`` with one chunk written."""
    import h5py

    path = write_velox_emd(tmp / "lying_velox.emd", SMALL)
    with h5py.File(path, "a") as f:
        group = f["Data/Image/0a1b2c3d4e5f"]
        del group["Data"]
        data = group.create_dataset("Data", shape=(64, 64, n_frames), dtype="uint16", chunks=(64, 64, 1))
        data[:, :, 0] = 1
    return path


def _patch_tag(path: Path, page_index: int, code: int, value: int) -> None:
    """Rewrite one tag of one page as a LONG ``value`` (little-endian classic TIFF)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page_index].tags[code]
        offset = tag.offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<HHII", code, 4, 1, value))


def tiff_size(tmp: Path, width: int, height: int, *, compression: str | None) -> Path:
    """A one-page TIFF of 8 x 6 px whose header claims ``height`` x ``width``."""
    import tifffile

    path = tmp / f"lying_{compression}.tif"
    tifffile.imwrite(path, SMALL[0], compression=compression, metadata=None)
    _patch_tag(path, 0, 256, width)
    _patch_tag(path, 0, 257, height)
    return path


def tiff_cut(tmp: Path, *, compression: str | None, imagej: bool = False) -> Path:
    """A 5-page stack cut in the middle of page 3's pixels."""
    import tifffile

    data = (np.arange(5 * 16 * 16) % 251).astype("uint16").reshape(5, 16, 16)
    path = tmp / f"cut_{compression}_{imagej}.tif"
    tifffile.imwrite(path, data, compression=compression, **({"imagej": True} if imagej else {"metadata": None}))
    with tifffile.TiffFile(path) as tif:
        cut = tif.pages[2].dataoffsets[0] + 40
    path.write_bytes(path.read_bytes()[:cut])
    return path


def tiff_odd_page(tmp: Path) -> Path:
    """A 5-page stack whose page 4 header says 16 x 12 instead of 16 x 16 (tifffile splits the series there)."""
    import tifffile

    data = (np.arange(5 * 16 * 16) % 251).astype("uint16").reshape(5, 16, 16)
    path = tmp / "odd_page.tif"
    tifffile.imwrite(path, data, metadata=None, contiguous=False)
    _patch_tag(path, 3, 256, 12)
    return path


def png_size(tmp: Path, width: int, height: int) -> Path:
    """A grey 8-bit PNG of 6 x 8 px whose IHDR claims ``height`` x ``width`` (CRC left stale)."""
    from PIL import Image

    path = tmp / "lying.png"
    Image.fromarray(SMALL[0].astype("uint8")).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)
    path.write_bytes(bytes(raw))
    return path


def ser_frame(tmp: Path, nx: int, ny: int) -> Path:
    """A TIA series (version 0x0220) whose first element declares ``ny`` x ``nx`` px."""
    path = write_ser(tmp / "lying.ser", SMALL)
    raw = bytearray(path.read_bytes())
    offset_array = struct.unpack("<q", raw[22:30])[0]  # after the 22-byte fixed header
    first = struct.unpack("<q", raw[offset_array : offset_array + 8])[0]
    raw[first + 42 : first + 50] = struct.pack("<ii", nx, ny)  # after two calibrations and the type code
    path.write_bytes(bytes(raw))
    return path


# name -> (writer, expected words in the message)
CASES = {
    "dm4 dims 2^32-1 cubed": (lambda t: dm_dims(t, [BIG, BIG, BIG]), "larger than any detector"),
    "dm3 dims 2^32-1 squared": (lambda t: dm_dims(t, [BIG, BIG], version=3), "larger than any detector"),
    "dm4 2^32-1 frames": (lambda t: dm_dims(t, [6, 8, BIG]), "frames"),
    "dm4 10^6 frames of 6x8": (lambda t: dm_dims(t, [6, 8, 10**6]), "truncated"),
    "dm4 product wraps to 0": (lambda t: dm_dims(t, [2**16, 2**16, 2**16, 2**16, 2**16]), "dimensions"),
    "npy overflowing shape": (lambda t: npy_shape(t, (2**62, 2**62, 4)), "larger than any detector"),
    "npy shape wrapping to 0": (lambda t: npy_shape(t, (2**32, 2**32, 2)), "larger than any detector"),
    "npy 10^9 frames": (lambda t: npy_shape(t, (10**9, 64, 64)), "frames"),
    "npy 10^5 frames": (lambda t: npy_shape(t, (10**5, 64, 64)), "truncated"),
    "npy zero frames": (lambda t: npy_shape(t, (0, 64, 64)), "empty shape"),
    "npy zero width": (lambda t: npy_shape(t, (4, 64, 0)), "empty shape"),
    "emd (1e9, 64, 64) unwritten": (lambda t: emd_berkeley(t, (10**9, 64, 64), chunked=False), "frames"),
    "emd (1e6, 64, 64) unwritten": (lambda t: emd_berkeley(t, (10**6, 64, 64), chunked=False), "written"),
    "emd (1e6, 64, 64) chunked, 2 written": (lambda t: emd_berkeley(t, (10**6, 64, 64), chunked=True), "written"),
    "emd zero frames": (lambda t: emd_berkeley(t, (0, 64, 64), chunked=False), "empty shape"),
    "velox 1e9 frames": (lambda t: emd_velox(t, 10**9), "frames"),
    "velox 1e5 frames, 1 written": (lambda t: emd_velox(t, 10**5), "written"),
    "tiff 10^6 x 10^6 raw": (lambda t: tiff_size(t, 10**6, 10**6, compression=None), "larger than any detector"),
    "tiff 60000 x 60000 raw": (lambda t: tiff_size(t, 60000, 60000, compression=None), "strips or tiles hold only"),
    "tiff 60000 x 60000 zlib": (lambda t: tiff_size(t, 60000, 60000, compression="zlib"), "compression"),
    "tiff zero width": (lambda t: tiff_size(t, 0, 8, compression=None), "empty shape"),
    "tiff cut mid-page raw": (lambda t: tiff_cut(t, compression=None), "truncated"),
    "tiff cut mid-page imagej": (lambda t: tiff_cut(t, compression=None, imagej=True), "truncated"),
    "tiff cut mid-page zlib": (lambda t: tiff_cut(t, compression="zlib"), "truncated"),
    "tiff page of another shape": (tiff_odd_page, "pages but its stack holds only"),
    "png 10^6 x 10^6": (lambda t: png_size(t, 10**6, 10**6), "larger than any detector"),
    "png zero height": (lambda t: png_size(t, 8, 0), "empty shape"),
    "ser frame 2^31-1 squared": (lambda t: ser_frame(t, 2**31 - 1, 2**31 - 1), "larger than any detector"),
    "ser frame 4096 squared": (lambda t: ser_frame(t, 4096, 4096), "truncated"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lying_header_is_refused_before_allocating(tmp_path, case):
    write, words = CASES[case]
    path = write(tmp_path)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MovieFileError, match=words) as info:
            open_movie(path, frame_interval_s=1.0, pixel_size_nm=1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 10
    assert peak < 64 * 2**20, f"{case}: {peak / 2**20:.0f} MiB allocated before refusing"
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_time_vector_longer_than_the_data_is_not_read(tmp_path):
    # an honest (4, 8, 6) dataset whose time vector declares 10^9 values: only its start is read
    import h5py

    path = emd_berkeley(tmp_path, (4, 8, 6), chunked=False, time_vector=10**9)
    with h5py.File(path, "a") as f:
        f["data/movie/data"][...] = SMALL[0]
    tracemalloc.start()
    try:
        movie = open_movie(path, frame_interval_s=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
    assert movie.shape == (4, 8, 6)
    np.testing.assert_allclose(movie.time.values, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(movie.attrs["pixel_size_nm"], [0.5, 0.5])
    np.testing.assert_array_equal(movie.values, np.broadcast_to(SMALL[0], (4, 8, 6)))


def test_honest_chunked_emd_and_multipage_tiff_still_open(tmp_path):
    import tifffile

    data = (np.arange(5 * 16 * 16) % 251).astype("uint16").reshape(5, 16, 16)
    for compression in (None, "zlib"):
        path = tmp_path / f"ok_{compression}.tif"
        tifffile.imwrite(path, data, compression=compression, metadata=None)
        np.testing.assert_array_equal(open_movie(path, frame_interval_s=1.0, pixel_size_nm=1.0).values, data)
    path = write_velox_emd(tmp_path / "ok.emd", data, frame_time_s=0.2)
    np.testing.assert_array_equal(open_movie(path).values, data)


def test_no_lying_header_gets_memory_under_a_capped_address_space(tmp_path):
    # the strongest form of "refuse before allocating": with 3 GiB of address space, any
    # attempt at the 7-32 GiB these headers ask for would die with MemoryError instead
    paths = []
    for i, case in enumerate(sorted(CASES)):
        folder = tmp_path / str(i)
        folder.mkdir()
        paths.append(str(CASES[case][0](folder)))
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
        from temflow.errors import MovieFileError
        from temflow.io.reader import open_movie
        for path in {paths!r}:
            try:
                open_movie(path, frame_interval_s=1.0, pixel_size_nm=1.0)
            except MovieFileError:
                continue
            sys.exit("opened: " + path)
        print("all refused")
    """)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all refused" in result.stdout
