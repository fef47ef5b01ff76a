"""zarr v3 store: exact round trips, explicit completion, resumable writes, one chunk per task."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import temflow
from temflow.errors import IncompleteStoreError, MovieFileError
from temflow.io.store import is_complete
from temflow.synthetic.generator import make_movie
from ome_validation import assert_valid_ome_zarr


@pytest.mark.parametrize("chunks", [None, 3, (4, 20, 33), {"time": 5, "y": 17}])
def test_round_trip_is_exact(tmp_path, chunks):
    movie = make_movie(frames=7, size=(40, 50), seed=1, chunks=3).movie
    path = temflow.save_zarr(movie, tmp_path / "m.zarr", chunks=chunks)
    back = temflow.open_zarr(path)
    np.testing.assert_array_equal(back.values, movie.values)
    assert back.dims == movie.dims and back.dtype == movie.dtype and back.name == movie.name
    for name in movie.coords:
        np.testing.assert_array_equal(back[name].values, movie[name].values)
        assert back[name].attrs == movie[name].attrs
    assert back.attrs == movie.attrs
    array = zarr.open_array(str(path), path="0", mode="r")
    assert array.metadata.dimension_names == ("time", "y", "x")
    # each zarr chunk is exactly one dask chunk of the reopened movie
    assert tuple(c[0] for c in back.data.chunks) == tuple(array.chunks)


def test_bool_and_float_arrays_and_numpy_input(tmp_path):
    truth = make_movie(frames=3, size=32, seed=2)
    masks = (truth.labels > 0).compute()  # numpy-backed
    path = temflow.save_zarr(masks, tmp_path / "masks.zarr")
    assert_valid_ome_zarr(path)
    back = temflow.open_zarr(path)
    assert back.dtype == bool
    np.testing.assert_array_equal(back.values, masks.values)
    prob = truth.movie.astype("float32") / 1000
    np.testing.assert_array_equal(temflow.open_zarr(temflow.save_zarr(prob, tmp_path / "p.zarr")).values, prob.values)
    assert_valid_ome_zarr(tmp_path / "p.zarr")


def test_all_zero_frames_are_written_and_complete(tmp_path):
    # zarr skips chunks equal to the fill value: completion must not depend on chunk files
    movie = temflow.as_movie(da.zeros((6, 16, 16), dtype="uint16", chunks=(2, 16, 16)), pixel_size_nm=0.5)
    path = temflow.save_zarr(movie, tmp_path / "z.zarr")
    assert is_complete(path)
    np.testing.assert_array_equal(temflow.open_zarr(path).values, 0)


def test_ome_zarr_axes_and_scale(tmp_path):
    movie = make_movie(frames=3, size=32, pixel_size_nm=0.25, frame_interval_s=0.5, seed=0).movie
    path = temflow.save_zarr(movie, tmp_path / "m.zarr")
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    multiscale = meta["multiscales"][0]
    # NGFF 0.5: the axes' names are the array's dimension_names
    assert [a["name"] for a in multiscale["axes"]] == ["time", "y", "x"]
    assert json.loads((path / "0" / "zarr.json").read_text())["dimension_names"] == ["time", "y", "x"]
    assert_valid_ome_zarr(path)
    assert [a.get("unit") for a in multiscale["axes"]] == ["second", "nanometer", "nanometer"]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    np.testing.assert_allclose(scale, [0.5, 0.25, 0.25])


def _interrupted_write(movie, path, fail_after):
    """Write with a scheduler that dies after `fail_after` chunk writes."""
    calls = {"n": 0}
    from temflow.io import store

    original = store._write_block

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise KeyboardInterrupt("simulated kill")
        return original(*args, **kwargs)

    store._write_block = flaky
    try:
        with dask.config.set(scheduler="synchronous"), pytest.raises(KeyboardInterrupt):
            temflow.save_zarr(movie, path, chunks=2)
    finally:
        store._write_block = original
    return calls


def test_interrupted_store_is_refused_then_resumed_without_rewriting(tmp_path):
    movie = make_movie(frames=10, size=24, seed=3).movie
    path = tmp_path / "m.zarr"
    _interrupted_write(movie, path, fail_after=2)
    assert not is_complete(path)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        temflow.open_zarr(path)
    with pytest.raises(MovieFileError, match="already exists"):
        temflow.save_zarr(movie, path, chunks=2)
    # resuming writes only the three missing chunks
    written = []
    from temflow.io import store

    original = store._write_block

    def counting(block, p, index, slices):
        written.append(index)
        return original(block, p, index, slices)

    store._write_block = counting
    try:
        with dask.config.set(scheduler="synchronous"):
            temflow.save_zarr(movie, path, chunks=2, resume=True)
    finally:
        store._write_block = original
    assert len(written) == 3
    np.testing.assert_array_equal(temflow.open_zarr(path).values, movie.values)


def test_resume_with_other_shape_is_refused(tmp_path):
    movie = make_movie(frames=6, size=24, seed=3).movie
    path = tmp_path / "m.zarr"
    _interrupted_write(movie, path, fail_after=1)
    with pytest.raises(MovieFileError, match="cannot be resumed"):
        temflow.save_zarr(movie[:4], path, chunks=2, resume=True)


def test_overwrite(tmp_path):
    a = make_movie(frames=2, size=16, seed=1).movie
    b = make_movie(frames=3, size=16, seed=2).movie
    path = temflow.save_zarr(a, tmp_path / "m.zarr")
    temflow.save_zarr(b, path, overwrite=True)
    np.testing.assert_array_equal(temflow.open_zarr(path).values, b.values)


def test_opening_builds_no_compute_on_a_multi_gb_store(tmp_path, no_compute):
    # a 4 GB movie whose chunks are all zero: metadata only, nothing rendered
    big = temflow.as_movie(da.zeros((1000, 1024, 2048), dtype="uint16", chunks=(50, 1024, 2048)), pixel_size_nm=0.5)
    path = tmp_path / "big.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=big.shape, dtype="uint16", chunks=(50, 1024, 2048), dimension_names=big.dims)
    temflow.save_zarr(big[:1], tmp_path / "template.zarr")
    meta = json.loads((tmp_path / "template.zarr" / "zarr.json").read_text())
    meta["attributes"]["temflow"]["complete"] = True
    meta["attributes"]["temflow"]["coords"] = []
    (path / "zarr.json").write_text(json.dumps(meta))
    with no_compute():
        movie = temflow.open_zarr(path)
        assert movie.nbytes > 4e9
        graph = (movie.astype("float32") - movie.mean("time")).std("time")
    assert graph.shape == (1024, 2048)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.zarr", "no such file"),
        (lambda p: (p / "file.zarr").write_text("x") and p / "file.zarr", "is a file"),
        (lambda p: (p / "empty.zarr").mkdir() or p / "empty.zarr", "not a temflow zarr store"),
    ],
)
def test_bad_stores_name_the_path(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(MovieFileError, match=match) as info:
        temflow.open_zarr(path)
    assert str(path) in str(info.value)


def test_bad_arguments(tmp_path):
    movie = make_movie(frames=2, size=16, seed=1).movie
    with pytest.raises(ValueError, match="compressor"):
        temflow.save_zarr(movie, tmp_path / "a.zarr", compressor="gzip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dims"):
        temflow.save_zarr(movie.rename(time="frame"), tmp_path / "b.zarr")
    with pytest.raises(TypeError, match="DataArray"):
        temflow.save_zarr(movie.values, tmp_path / "c.zarr")  # type: ignore[arg-type]


class _Killed(BaseException):
    """A kill: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("moment", ["first array", "coordinates", "temflow metadata", "rename"])
def test_a_kill_while_creating_leaves_a_store_that_resume_finishes(tmp_path, monkeypatch, moment):
    from temflow.io import store

    movie = make_movie(frames=6, size=24, seed=3).movie
    path = tmp_path / "m.zarr"
    calls = {"create_array": 0}
    original_create = zarr.Group.create_array

    def create_array(self, name, **kwargs):
        calls["create_array"] += 1
        if (moment == "first array" and calls["create_array"] == 1) or (
            moment == "coordinates" and name.startswith("coords/")
        ):
            raise _Killed(moment)
        return original_create(self, name, **kwargs)

    def update_attributes(self, new_attributes):
        raise _Killed(moment)

    def rename(src, dst, **dir_fds):
        raise _Killed(moment)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Group, "create_array", create_array)
        if moment == "temflow metadata":
            patch.setattr(zarr.Group, "update_attributes", update_attributes)
        if moment == "rename":
            patch.setattr(store.os, "rename", rename)
        with pytest.raises(_Killed):
            temflow.save_zarr(movie, path, chunks=2)
    # never a store without temflow metadata: either nothing, or (not here) a resumable one
    assert not path.exists()
    assert (tmp_path / ".m.zarr.temflow-new").exists()
    temflow.save_zarr(movie, path, chunks=2, resume=True)
    assert is_complete(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]  # the half-built store is gone
    np.testing.assert_array_equal(temflow.open_zarr(path).values, movie.values)


def test_resume_into_an_empty_folder_writes_and_a_foreign_folder_is_refused(tmp_path):
    movie = make_movie(frames=4, size=16, seed=1).movie
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    temflow.save_zarr(movie, empty, resume=True)
    np.testing.assert_array_equal(temflow.open_zarr(empty).values, movie.values)
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("data", shape=(2,), dtype="uint8")
    with pytest.raises(MovieFileError, match="not a temflow store.*nothing to resume.*overwrite=True") as info:
        temflow.save_zarr(movie, foreign, resume=True)
    assert str(foreign) in str(info.value)
    assert (foreign / "data").exists()  # another program's data is never deleted without overwrite


def _full_disk_after(monkeypatch, chunks_written):
    """Make the chunk writer fail with ENOSPC after ``chunks_written`` chunks, as a full disk does."""
    import errno

    from temflow.io import store

    original = store._write_block
    calls = {"n": 0}

    def filling(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > chunks_written:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "_write_block", filling)
    return original


def test_a_full_disk_gives_one_line_and_resume_finishes(tmp_path, monkeypatch):
    from temflow.errors import DiskFullError
    from temflow.io import store

    movie = make_movie(frames=10, size=24, seed=3).movie
    path = tmp_path / "m.zarr"
    original = _full_disk_after(monkeypatch, 2)
    with dask.config.set(scheduler="synchronous"), pytest.raises(DiskFullError) as info:
        temflow.save_zarr(movie, path, chunks=2)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "resume=True" in message
    assert isinstance(info.value, OSError) and info.value.errno == 28
    assert not is_complete(path)
    monkeypatch.setattr(store, "_write_block", original)  # space freed
    temflow.save_zarr(movie, path, chunks=2, resume=True)
    np.testing.assert_array_equal(temflow.open_zarr(path).values, movie.values)


def test_a_full_disk_while_creating_leaves_nothing_to_trip_over(tmp_path, monkeypatch):
    import errno

    from temflow.errors import DiskFullError
    from temflow.io import store

    movie = make_movie(frames=4, size=16, seed=1).movie
    path = tmp_path / "m.zarr"

    def rename(src, dst, **dir_fds):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(store.os, "rename", rename)
        with pytest.raises(DiskFullError, match="m.zarr"):
            temflow.save_zarr(movie, path)
    temflow.save_zarr(movie, path)  # no resume needed: nothing was left at the path
    np.testing.assert_array_equal(temflow.open_zarr(path).values, movie.values)


def test_other_os_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    import errno

    from temflow.errors import DiskFullError

    monkeypatch.setattr("temflow.io.store._write_block", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with dask.config.set(scheduler="synchronous"), pytest.raises(OSError, match="I/O error") as info:
        temflow.save_zarr(make_movie(frames=2, size=16, seed=1).movie, tmp_path / "m.zarr")
    assert not isinstance(info.value, DiskFullError)


def test_opening_in_smaller_chunks_reads_only_each_tasks_region(tmp_path):
    from dask.callbacks import Callback

    movie = make_movie(frames=12, size=24, seed=3).movie
    path = temflow.save_zarr(movie, tmp_path / "m.zarr", chunks=12)
    opened = temflow.open_zarr(path, chunks=5)
    assert opened.data.chunks[0] == (5, 5, 2)
    frames = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, np.ndarray) and result.ndim == 3:
                frames.append(result.shape[0])

    with Sizes(), dask.config.set(scheduler="synchronous"):
        blocks = dask.compute(*opened.data.to_delayed().ravel())  # no final concatenation
    np.testing.assert_array_equal(np.concatenate(blocks), movie.values)
    assert frames and max(frames) <= 5  # no task ever held the store's whole 12-frame chunk
class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("scheduler", ["local", "distributed"])
def test_progress_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path, monkeypatch, scheduler):
    movie = make_movie(frames=8, size=16, seed=0, chunks=2).movie
    with contextlib.ExitStack() as stack:
        if scheduler == "distributed":
            from temflow.cluster import connect

            stack.enter_context(connect(n_workers=1, threads_per_worker=2, processes=False,
                                        dashboard_address="127.0.0.1:0"))
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        temflow.save_zarr(movie, tmp_path / "t.zarr", progress=True)
        pipe = io.StringIO()
        monkeypatch.setattr(sys, "stderr", pipe)
        temflow.save_zarr(movie, tmp_path / "p.zarr", progress=True)
    shown = terminal.getvalue()
    assert "writing t.zarr [" in shown and "4/4 chunks" in shown and shown.endswith("\n")
    assert "\x1b" not in shown  # no ANSI escapes, only carriage returns
    assert pipe.getvalue() == ""


_WINDOW_LOG: dict = {"started": [], "finished": []}


def _slow_write(block, path, index, slices):
    """``_write_block``, slower, logging when each chunk starts (with how many had finished) and ends."""
    import time

    from temflow.io import store

    _WINDOW_LOG["started"].append((index[0], len(_WINDOW_LOG["finished"])))
    time.sleep(0.05)
    out = store._original_write_block(block, path, index, slices)
    _WINDOW_LOG["finished"].append(index[0])
    return out


def test_a_distributed_write_keeps_a_bounded_window_of_chunks_in_flight(tmp_path, monkeypatch):
    # given the whole pass at once, the workers ran ahead on reads and early steps and held their
    # results: the masks stage's peak grew with the movie; a sliding window of writes bounds it
    from temflow.cluster import connect
    from temflow.io import _progress, store

    movie = make_movie(frames=24, size=16, seed=0, chunks=2).movie
    _WINDOW_LOG["started"].clear()
    _WINDOW_LOG["finished"].clear()
    monkeypatch.setattr(store, "_original_write_block", store._write_block, raising=False)
    monkeypatch.setattr(store, "_write_block", _slow_write)
    monkeypatch.setattr(_progress, "_window", lambda client: 2)
    # threaded workers (one process): the log is shared
    with connect(n_workers=1, threads_per_worker=4, processes=False, dashboard_address="127.0.0.1:0"):
        path = temflow.save_zarr(movie, tmp_path / "w.zarr")
    assert sorted(_WINDOW_LOG["finished"]) == list(range(12))
    # a chunk is submitted only when all but one of the chunks before it have finished
    assert all(done >= index - 1 for index, done in _WINDOW_LOG["started"]), _WINDOW_LOG["started"]
    np.testing.assert_array_equal(temflow.open_zarr(path).values, movie.values)
