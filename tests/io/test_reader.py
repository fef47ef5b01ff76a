"""Readers: every format read back exactly, lazily, with calibrations; every bad input named."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import dask
import numpy as np
import pytest
import xarray as xr
from conftest import raise_if_dask_computes
from formats_writers import write_dm, write_insitu, write_ser, write_velox_emd

import temflow
from temflow.errors import MovieFileError
from temflow.io.reader import READERS, describe, detect_format, open_movie

NT, NY, NX = 7, 12, 10
CHUNKINGS = [None, 1, 3, {"time": 2, "y": 5, "x": -1}]


def frames(dtype: str = "uint16", n: int = NT) -> np.ndarray:
    """Distinct, position-coded pixels so any mix-up of frames, rows or columns shows."""
    t, y, x = np.meshgrid(np.arange(n), np.arange(NY), np.arange(NX), indexing="ij")
    return (t * 1000 + y * 37 + x * 3 + 5).astype(dtype)


def assert_movie(movie: xr.DataArray, expected: np.ndarray, *, pixel_nm: float | None, interval_s: float | None,
                fmt: str) -> None:
    assert movie.dims == ("time", "y", "x")
    assert movie.shape == expected.shape
    assert movie.dtype == expected.dtype
    assert isinstance(movie.data, dask.array.Array)
    np.testing.assert_array_equal(movie.values, expected)
    assert movie.attrs["format"] == fmt
    assert movie.x.attrs["units"] == "nm" and movie.time.attrs["units"] == "s"
    if pixel_nm is not None:
        np.testing.assert_allclose(movie.attrs["pixel_size_nm"], [pixel_nm, pixel_nm], rtol=1e-6)
        np.testing.assert_allclose(np.diff(movie.x.values), pixel_nm, rtol=1e-6)
    if interval_s is not None:
        np.testing.assert_allclose(movie.time.values, np.arange(expected.shape[0]) * interval_s, rtol=1e-6)
    json.dumps(movie.attrs)  # attrs must be JSON-serialisable (the zarr store writes them)
    json.dumps(describe(movie))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("version,unit,scale,expected_nm", [(3, "nm", 0.25, 0.25), (4, "µm", 0.0005, 0.5),
                                                             (4, "μm", 0.0005, 0.5), (3, "Å", 2.5, 0.25)])
def test_dm_stack_round_trip(tmp_path, chunks, version, unit, scale, expected_nm):
    data = frames()
    tags = {"Microscope Info": {"Voltage": 300000.0, "Indicated Magnification": 88000.0, "Microscope": "JEM-2100F"},
            "Acquisition": {"Device": {"Name": "OneView"}, "Parameters": {"High Level": {"Exposure (s)": 0.025}}}}
    path = write_dm(tmp_path / f"stack.dm{version}", data, version=version, pixel_size=scale, unit=unit,
                    frame_interval=40.0, time_unit="ms", tags=tags)
    movie = open_movie(path, chunks=chunks)
    assert_movie(movie, data, pixel_nm=expected_nm, interval_s=0.04, fmt=f"dm{version}")
    assert movie.attrs["instrument"] == {"voltage_kV": 300.0, "magnification": 88000.0, "exposure_s": 0.025,
                                         "camera": "OneView", "microscope": "JEM-2100F"}
    assert movie.attrs["source"] == [str(path)]
    if isinstance(chunks, dict):
        assert movie.data.chunks[1] == (5, 5, 2)


@pytest.mark.parametrize("version", [3, 4])
def test_dm_series_folder_and_glob(tmp_path, version):
    data = frames(n=11)
    for i, frame in enumerate(data):
        write_dm(tmp_path / f"img_{i}.dm{version}", frame, version=version, pixel_size=0.7)
    movie = open_movie(tmp_path, chunks=4, frame_interval_s=0.5)
    assert_movie(movie, data, pixel_nm=0.7, interval_s=0.5, fmt="dm-series")
    by_glob = open_movie(str(tmp_path / f"img_*.dm{version}"), frame_interval_s=0.5)
    np.testing.assert_array_equal(by_glob.values, data)


def test_insitu_partial_first_second(tmp_path):
    write_insitu(tmp_path, frames(n=9), frames_per_second=4, start_second=3, pixel_size=0.4)
    for frame in sorted(tmp_path.rglob("*.dm4"))[:2]:  # the recording started mid-second
        frame.unlink()
    movie = open_movie(tmp_path)
    np.testing.assert_allclose(movie.time.values, np.arange(7) * 0.25)
    np.testing.assert_array_equal(movie.values, frames(n=9)[2:])


def test_dm_stack_without_time_calibration(tmp_path):
    path = write_dm(tmp_path / "s.dm4", frames(), pixel_size=0.3)  # calibrations for x and y only
    with pytest.warns(UserWarning, match="no time calibration"):
        movie = open_movie(path)
    np.testing.assert_allclose(movie.attrs["pixel_size_nm"], [0.3, 0.3], rtol=1e-6)
    assert movie.attrs["time_calibrated"] is False
    np.testing.assert_array_equal(movie.values, frames())


@pytest.mark.parametrize("thumbnail", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "int16", "uint8"])
def test_dm_single_image(tmp_path, thumbnail, dtype):
    image = frames(dtype, n=1)[0] if dtype != "uint8" else (frames(n=1)[0] % 251).astype("uint8")
    path = write_dm(tmp_path / "image.dm4", image, pixel_size=(0.2, 0.3), thumbnail=thumbnail)
    movie = open_movie(path)
    assert movie.shape == (1, NY, NX) and movie.dtype == image.dtype
    np.testing.assert_array_equal(movie.values[0], image)
    np.testing.assert_allclose(movie.attrs["pixel_size_nm"], [0.2, 0.3], rtol=1e-6)


def test_dm_diffraction_is_refused_unless_the_user_gives_the_pixel_size(tmp_path):
    path = write_dm(tmp_path / "diff.dm4", frames(), pixel_size=0.01, unit="1/nm", frame_interval=0.1)
    with pytest.raises(MovieFileError, match=r"diff\.dm4.*reciprocal space \(0\.01 1/nm per pixel\).*pixel_size_nm"):
        open_movie(path)
    # the user can say it is real space after all: no warning, and the override is recorded
    movie = open_movie(path, pixel_size_nm=0.3)
    np.testing.assert_allclose(np.diff(movie.x.values), 0.3)
    assert movie.attrs["calibration"] == {"pixel_size": "user", "time": "file"}
    assert any("given by the user" in note and "1/nm" in note for note in movie.attrs["notes"])


@pytest.mark.parametrize("chunks", [None, 2, 5])
def test_insitu_tree_ordered_by_time(tmp_path, chunks):
    data = frames(n=10)
    root = tmp_path / "insitu"
    write_insitu(root, data, frames_per_second=4, start_second=58, pixel_size=0.4, unit="nm",
                 tags={"Microscope Info": {"Voltage": 200000.0}})
    movie = open_movie(root, chunks=chunks)
    assert_movie(movie, data, pixel_nm=0.4, interval_s=None, fmt="insitu")
    # 4 frames per second, crossing Minute_00 -> Minute_01; the last second is partial
    np.testing.assert_allclose(movie.time.values, np.arange(10) * 0.25)
    assert movie.attrs["instrument"]["voltage_kV"] == 200.0
    assert len(movie.attrs["source"]) == 10
    # each read task carries only its own files, not the whole recording's list
    tasks = dict(movie.data.__dask_graph__()).values()
    assert max(len(t[1]) for t in tasks if isinstance(t, tuple) and isinstance(t[1], tuple)) <= (chunks or 10)
    # the director image beside Hour_00 opens the whole tree
    director = write_dm(root / "Capture.dm4", data[0], pixel_size=0.4)
    assert detect_format(director) == "insitu"
    np.testing.assert_array_equal(open_movie(director).values, data)
    # a known frame rate overrides the names
    movie = open_movie(root / "Hour_00", frame_interval_s=0.25)
    np.testing.assert_allclose(movie.time.values, np.arange(10) * 0.25)


@pytest.mark.parametrize("chunks", [None, 2])
def test_ser_round_trip(tmp_path, chunks):
    data = frames("int32")
    path = write_ser(tmp_path / "series_1.ser", data, pixel_size_m=2.5e-10, times=[100 + 2 * i for i in range(NT)],
                     total_elements=NT + 3)
    (tmp_path / "series.emi").write_bytes(EMI)
    movie = open_movie(path, chunks=chunks)
    assert_movie(movie, data, pixel_nm=0.25, interval_s=2.0, fmt="ser")
    assert movie.attrs["instrument"]["voltage_kV"] == 300.0
    assert movie.attrs["instrument"]["magnification"] == 88000.0


def test_ser_with_damaged_emi_still_reads(tmp_path):
    data = frames("uint16", n=3)
    path = write_ser(tmp_path / "s_1.ser", data, times=[1, 2, 3])
    (tmp_path / "s.emi").write_bytes(b"<ObjectInfo><broken")
    movie = open_movie(path)
    np.testing.assert_array_equal(movie.values, data)
    assert "emi" in movie.attrs["notes"][0] and movie.attrs["instrument"] == {}


def test_ser_repeated_times_without_frame_time(tmp_path):
    data = frames("uint16", n=3)
    path = write_ser(tmp_path / "d_1.ser", data, pixel_size_m=5e-10, times=[7, 7, 7], version=0x0210)
    with pytest.warns(UserWarning, match="no time calibration"):
        movie = open_movie(path)
    assert movie.attrs["time_calibrated"] is False
    assert any("all equal (7)" in note for note in movie.attrs["notes"])
    np.testing.assert_array_equal(movie.values, data)


@pytest.mark.parametrize("chunks", [None, 3])
def test_berkeley_emd_round_trip(tmp_path, chunks):
    from ncempy.io import emd

    data = frames("float32")
    path = tmp_path / "berkeley.emd"
    emd.emdWriter(path, data, pixel_size=(0.5, 0.2, 0.2), pixel_unit=("s", "nm", "nm"))
    movie = open_movie(path, chunks=chunks)
    assert_movie(movie, data, pixel_nm=0.2, interval_s=0.5, fmt="emd")
    assert movie.attrs["metadata"]["variant"] == "berkeley"


@pytest.mark.parametrize("chunks", [None, 2])
def test_velox_emd_frame_axis_last(tmp_path, chunks):
    data = frames()
    path = write_velox_emd(tmp_path / "velox.emd", data, pixel_size_m=3e-10, frame_time_s=0.1, detector="HAADF")
    movie = open_movie(path, chunks=chunks)
    assert_movie(movie, data, pixel_nm=0.3, interval_s=0.1, fmt="emd")
    assert movie.attrs["instrument"]["voltage_kV"] == 300.0
    assert movie.attrs["instrument"]["camera"] == "HAADF"


def test_velox_diffraction_unit_is_refused(tmp_path):
    path = write_velox_emd(tmp_path / "velox.emd", frames(n=2), pixel_size_m=1e8, unit="1/m")
    with pytest.raises(MovieFileError, match=r"reciprocal space \(0\.1 1/nm per pixel \(stored as 1e\+08 1/m\)\)"):
        open_movie(path, frame_interval_s=1.0)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_mrc_round_trip(tmp_path, chunks):
    import mrcfile

    data = frames("int16")
    path = tmp_path / "stack.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 2.5  # Å
    movie = open_movie(path, chunks=chunks, frame_interval_s=0.5)
    assert_movie(movie, data, pixel_nm=0.25, interval_s=0.5, fmt="mrc")


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("layout", ["contiguous", "zlib", "big-endian"])
def test_tiff_stack_round_trip(tmp_path, chunks, layout):
    import tifffile

    data = frames()
    path = tmp_path / "stack.tif"
    options = {"compression": "zlib"} if layout == "zlib" else {"byteorder": ">"} if layout == "big-endian" else {}
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.0004, 1 / 0.0004),
                     metadata={"unit": "um", "finterval": 0.2, "axes": "TYX"}, **options)
    movie = open_movie(path, chunks=chunks)
    assert_movie(movie, data, pixel_nm=0.4, interval_s=0.2, fmt="tiff")


def test_ome_tiff_calibration(tmp_path):
    import tifffile

    data = frames()
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 2.5, "PhysicalSizeXUnit": "Å",
                                                      "PhysicalSizeY": 2.5, "PhysicalSizeYUnit": "Å",
                                                      "TimeIncrement": 50, "TimeIncrementUnit": "ms"})
    movie = open_movie(path, chunks=3)
    assert_movie(movie, data, pixel_nm=0.25, interval_s=0.05, fmt="tiff")


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_frame_folder_and_glob_natural_order(tmp_path, suffix):
    import tifffile
    from PIL import Image

    data = frames(n=11)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(data):
        file = folder / f"frame_{i}{suffix}"  # frame_10 must come after frame_9
        if suffix == ".png":
            Image.fromarray(frame).save(file)
        else:
            tifffile.imwrite(file, frame)
    with pytest.warns(UserWarning, match="pixel-size"):
        movie = open_movie(folder, chunks=4, frame_interval_s=1.0)
    assert_movie(movie, data, pixel_nm=1.0, interval_s=1.0, fmt="frames")
    by_glob = open_movie(str(folder / f"frame_*{suffix}"), frame_interval_s=1.0, pixel_size_nm=0.5)
    np.testing.assert_array_equal(by_glob.values, data)


@pytest.mark.parametrize("chunks", [None, 3])
def test_npy_and_zarr(tmp_path, chunks):
    data = frames()
    np.save(tmp_path / "m.npy", data)
    movie = open_movie(tmp_path / "m.npy", chunks=chunks, frame_interval_s=0.1, pixel_size_nm=0.5)
    assert_movie(movie, data, pixel_nm=0.5, interval_s=0.1, fmt="npy")
    store = temflow.save_zarr(movie, tmp_path / "m.zarr")
    again = open_movie(store)
    xr.testing.assert_identical(again.compute(), movie.compute())
    assert detect_format(store) == "zarr"
    recalibrated = open_movie(store, frame_interval_s=0.5, pixel_size_nm=(0.2, 0.3))
    np.testing.assert_allclose(np.diff(recalibrated.time.values), 0.5)
    np.testing.assert_allclose(recalibrated.attrs["pixel_size_nm"], [0.2, 0.3])
    np.testing.assert_allclose(np.diff(recalibrated.x.values), 0.3)


def test_single_image_has_no_time_warning(tmp_path):
    np.save(tmp_path / "one.npy", frames(n=1)[0])
    movie = open_movie(tmp_path / "one.npy", pixel_size_nm=1.0)
    assert movie.shape == (1, NY, NX)


def test_no_time_calibration_warns(tmp_path):
    np.save(tmp_path / "m.npy", frames())
    with pytest.warns(UserWarning, match="frame_interval_s"):
        movie = open_movie(tmp_path / "m.npy", pixel_size_nm=1.0)
    assert movie.attrs["time_calibrated"] is False


# --------------------------------------------------------------------------- laziness and pickling


def _all_formats(tmp_path: Path) -> list[Path]:
    import tifffile

    data = frames()
    np.save(tmp_path / "a.npy", data)
    tifffile.imwrite(tmp_path / "a.tif", data)
    out = [tmp_path / "a.npy", tmp_path / "a.tif", write_dm(tmp_path / "a.dm4", data, frame_interval=1.0),
           write_ser(tmp_path / "a_1.ser", data), write_velox_emd(tmp_path / "a.emd", data)]
    write_insitu(tmp_path / "insitu", data[:3], frames_per_second=2)
    return out + [tmp_path / "insitu"]


def test_opening_computes_nothing_and_graph_pickles(tmp_path):
    paths = _all_formats(tmp_path)
    movies = []
    with raise_if_dask_computes():
        for path in paths:
            movies.append(open_movie(path, chunks=2, frame_interval_s=1.0, pixel_size_nm=1.0))
    for path, movie in zip(paths, movies):
        clone = pickle.loads(cloudpickle.dumps(movie))
        np.testing.assert_array_equal(clone.values, movie.values)
    # the processes scheduler ships every task to another process
    expected = frames()
    got = movies[2].data.compute(scheduler="processes", num_workers=2)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["npy", "tif"])
def test_multi_gigabyte_files_open_lazily(tmp_path, kind):
    """A 4.3 GB movie (a sparse file: nothing is written) opens and builds graphs without reading pixels."""
    import tifffile

    shape = (2048, 1024, 1024)
    path = tmp_path / f"big.{kind}"
    if kind == "npy":
        created = np.lib.format.open_memmap(path, mode="w+", dtype="uint16", shape=shape)
    else:
        created = tifffile.memmap(path, shape=shape, dtype="uint16")
    del created  # closes the memory map; the file stays sparse
    with raise_if_dask_computes():
        movie = open_movie(path, frame_interval_s=0.01, pixel_size_nm=0.1)
        info = describe(movie)
        mean = movie.mean("time")
        subset = movie.isel(time=slice(100, 104)).chunk({"y": 256})
    assert info["size_gb"] == pytest.approx(4.294967296)
    assert mean.shape == (1024, 1024) and movie.data.npartitions > 100
    np.testing.assert_array_equal(subset.values, np.zeros((4, 1024, 1024), "uint16"))


def test_open_movie_of_large_synthetic_store_is_lazy(tmp_path):
    from temflow.synthetic.generator import make_movie

    synthetic = make_movie(frames=6, size=32, seed=1)
    store = temflow.save_zarr(synthetic.movie, tmp_path / "s.zarr", chunks=2)
    with raise_if_dask_computes():
        movie = open_movie(store)
        info = describe(movie)
    assert info["shape"] == [6, 32, 32] and info["n_chunks"] == 3
    np.testing.assert_array_equal(movie.values, synthetic.movie.values)


def test_describe_fields(tmp_path):
    path = write_dm(tmp_path / "s.dm4", frames(), pixel_size=0.5, frame_interval=0.1,
                    tags={"Microscope Info": {"Voltage": 80000.0}})
    info = describe(open_movie(path, chunks=3))
    assert info["dims"] == ["time", "y", "x"] and info["dtype"] == "uint16"
    assert info["chunks"] == [[3, 1], [NY], [NX]] and info["chunk_shape"] == [3, NY, NX]
    assert info["chunks_per_dim"] == [3, 1, 1] and info["n_chunks"] == 3
    assert info["pixel_size_nm"] == pytest.approx([0.5, 0.5])
    assert info["time"]["end_s"] == pytest.approx(0.6) and info["time"]["calibrated"] is True
    assert info["size_gb"] == pytest.approx(NT * NY * NX * 2 / 1e9)
    assert info["instrument"] == {"voltage_kV": 80.0} and info["format"] == "dm4"
    assert "image_tags" in info["metadata"]["metadata"]
    json.dumps(info)


# --------------------------------------------------------------------------- bad input


def _truncate(path: Path, keep: float = 0.6) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(MovieFileError, match="no such file.*") as err:
        open_movie(tmp_path / "nope.dm4")
    assert err.value.path.endswith("nope.dm4") and err.value.format == "dm4"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MovieFileError, match=r"notes\.txt.*unsupported file type '\.txt'"):
        open_movie(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        open_movie(tmp_path / "notes.txt", format="jpeg")
    assert set(READERS) >= {"dm3", "dm4", "insitu", "dm-series", "ser", "emd", "mrc", "tiff", "frames", "npy", "zarr"}


@pytest.mark.parametrize("name", ["a.dm3", "a.dm4", "a.ser", "a.emd", "a.mrc", "a.tif", "a.png", "a.npy"])
def test_zero_byte_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(MovieFileError, match=r"a\.\w+.*empty \(0 bytes\)"):
        open_movie(tmp_path / name)


def test_empty_folder_and_empty_glob(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MovieFileError, match="empty.*no .tif, .tiff or .png frames"):
        open_movie(tmp_path / "empty")
    with pytest.raises(MovieFileError, match="matches no"):
        open_movie(str(tmp_path / "*.png"))


def _write(kind: str, tmp_path: Path) -> Path:
    import mrcfile
    import tifffile

    data = frames()
    if kind == "dm3":
        return write_dm(tmp_path / "t.dm3", data, version=3)
    if kind == "dm4":
        return write_dm(tmp_path / "t.dm4", data)
    if kind == "ser":
        return write_ser(tmp_path / "t_1.ser", data)
    if kind == "emd":
        return write_velox_emd(tmp_path / "t.emd", data)
    if kind == "mrc":
        with mrcfile.new(tmp_path / "t.mrc") as mrc:
            mrc.set_data(data.astype("int16"))
        return tmp_path / "t.mrc"
    if kind == "tiff":
        tifffile.imwrite(tmp_path / "t.tif", data)
        return tmp_path / "t.tif"
    np.save(tmp_path / "t.npy", data)
    return tmp_path / "t.npy"


@pytest.mark.parametrize("kind", ["dm3", "dm4", "ser", "emd", "mrc", "tiff", "npy"])
def test_truncated_files(tmp_path, kind):
    path = _truncate(_write(kind, tmp_path))
    with pytest.raises(MovieFileError, match=rf"{path.name}.*(truncated|damaged)"):
        open_movie(path, frame_interval_s=1.0, pixel_size_nm=1.0)


@pytest.mark.parametrize("kind,wrong", [("dm4", ".tif"), ("tiff", ".dm3"), ("npy", ".ser"), ("ser", ".emd"),
                                        ("emd", ".npy"), ("mrc", ".tif")])
def test_wrong_extension(tmp_path, kind, wrong):
    path = _write(kind, tmp_path)
    renamed = path.rename(path.with_name("renamed" + wrong))
    with pytest.raises(MovieFileError, match=r"renamed.*wrong magic bytes"):
        open_movie(renamed, frame_interval_s=1.0, pixel_size_nm=1.0)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_damaged_frame_in_insitu_tree_is_named(tmp_path, damage):
    write_insitu(tmp_path, frames(n=6), frames_per_second=3)
    bad = sorted(tmp_path.rglob("*.dm4"))[4]
    if damage == "truncate":
        _truncate(bad, keep=0.9)
    else:
        bad.write_bytes(b"")
    with pytest.raises(MovieFileError, match=rf"{bad.name}.*(truncated|empty)"):
        open_movie(tmp_path)


def test_garbage_after_valid_magic(tmp_path):
    path = tmp_path / "garbage.dm4"
    path.write_bytes(b"\x00\x00\x00\x04" + b"\x00" * 8 + b"\x00\x00\x00\x01" + bytes(range(256)) * 4)
    with pytest.raises(MovieFileError, match=r"garbage\.dm4"):
        open_movie(path)


def test_frames_of_different_shapes_or_dtypes(tmp_path):
    import tifffile

    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "f1.tif", frames(n=1)[0])
    tifffile.imwrite(folder / "f2.tif", frames(n=1)[0][:-1])
    with pytest.raises(MovieFileError, match=r"f2\.tif.*frames differ"):
        open_movie(folder)
    tifffile.imwrite(folder / "f2.tif", frames("float32", n=1)[0])
    with pytest.raises(MovieFileError, match=r"f2\.tif.*frames differ.*float32"):
        open_movie(folder)
    root = tmp_path / "insitu"
    write_insitu(root, frames(n=2), frames_per_second=2)
    odd = next(root.rglob("*Frame_0001.dm4"))
    write_dm(odd, frames(n=1)[0][:, :-2])
    with pytest.raises(MovieFileError, match=r"Frame_0001\.dm4.*frames differ"):
        open_movie(root)


def test_stack_in_a_frame_folder_is_refused(tmp_path):
    import tifffile

    (tmp_path / "f").mkdir()
    tifffile.imwrite(tmp_path / "f" / "a.tif", frames(n=1)[0])
    tifffile.imwrite(tmp_path / "f" / "b.tif", frames(n=3), photometric="minisblack")
    with pytest.raises(MovieFileError, match=r"b\.tif.*must hold one grey-level image"):
        open_movie(tmp_path / "f")


def test_bad_arguments(tmp_path):
    np.save(tmp_path / "m.npy", frames())
    with pytest.raises(ValueError, match="frame_interval_s must be a positive"):
        open_movie(tmp_path / "m.npy", frame_interval_s=-1.0)
    with pytest.raises(ValueError, match="pixel_size_nm must be positive"):
        open_movie(tmp_path / "m.npy", pixel_size_nm=0)
    with pytest.raises(ValueError, match="time chunk size"):
        open_movie(tmp_path / "m.npy", chunks=0)
    with pytest.raises(TypeError, match="path must be"):
        open_movie(3)


def test_errors_under_python_optimize(tmp_path):
    """ncempy checks DM tags with assert; under -O the temflow checks must still catch damage."""
    good = write_dm(tmp_path / "good.dm4", frames())
    raw = bytearray(good.read_bytes())
    at = raw.find(b"%%%%")
    raw[at:at + 4] = b"XXXX"  # break the first tag delimiter: ncempy's assert is gone under -O
    (tmp_path / "broken.dm4").write_bytes(bytes(raw))
    _truncate(write_dm(tmp_path / "short.dm3", frames(), version=3))
    script = textwrap.dedent(f"""
        import sys, warnings
        warnings.simplefilter("ignore")
        assert False, "assert must be disabled"
        from temflow import errors
        from temflow.io.reader import open_movie
        for name in ("broken.dm4", "short.dm3"):
            try:
                open_movie({str(tmp_path)!r} + "/" + name).values
            except errors.MovieFileError as exc:
                print("OK", name, exc)
            else:
                print("NO ERROR", name)
    """)
    src = str(Path(temflow.__file__).parents[1])
    result = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": src, "PATH": ""})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["OK", "broken.dm4"], ["OK", "short.dm3"]], result.stdout


def test_reader_errors_during_compute_name_the_file(tmp_path):
    path = write_dm(tmp_path / "shrinks.dm4", frames(), frame_interval=1.0)
    movie = open_movie(path, chunks=2)
    _truncate(path, keep=0.5)  # the file changes after opening
    with pytest.raises(MovieFileError, match=r"shrinks\.dm4"):
        movie.values


EMI = b"""<ObjectInfo><Uuid>x</Uuid><AcquireDate>Mon Jan 01 10:00:00 2024</AcquireDate><Manufacturer>FEI</Manufacturer>
<DetectorPixelHeight>1</DetectorPixelHeight><DetectorPixelWidth>1</DetectorPixelWidth>
<ExperimentalConditions><MicroscopeConditions><Tilt1>0</Tilt1></MicroscopeConditions></ExperimentalConditions>
<ExperimentalDescription><Root>
<Data><Label>High tension</Label><Value>300.0</Value><Unit>kV</Unit></Data>
<Data><Label>Magnification</Label><Value>88000</Value><Unit>x</Unit></Data>
<Data><Label>Microscope</Label><Value>Titan</Value><Unit></Unit></Data>
</Root></ExperimentalDescription>
<AcquireInfo><FrameTime>0.1</FrameTime></AcquireInfo><DetectorRange><StartX>0</StartX></DetectorRange></ObjectInfo>"""
