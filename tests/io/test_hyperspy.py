"""The HyperSpy bridge: signals in lazily with their calibrations, movies out as signals."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import temflow
from conftest import raise_if_dask_computes
from temflow.synthetic.generator import make_movie

hs = pytest.importorskip("hyperspy.api")


def _signal(data, *, y=("µm", 0.002, 0.1), x=("µm", 0.0025, 0.0), time=("ms", 40.0, 0.0), lazy=True, title="run 7"):
    axes = [
        {"name": "time", "units": time[0], "scale": time[1], "offset": time[2], "size": data.shape[0], "navigate": True},
        {"name": "y", "units": y[0], "scale": y[1], "offset": y[2], "size": data.shape[1]},
        {"name": "x", "units": x[0], "scale": x[1], "offset": x[2], "size": data.shape[2]},
    ]
    signal = hs.signals.Signal2D(data, axes=axes, metadata={"General": {"title": title}})
    return signal.as_lazy() if lazy else signal


@pytest.mark.parametrize("chunks", [(2, 10, 12), (3, 5, 7)])
def test_a_lazy_signal_stays_lazy_and_keeps_its_calibration(chunks):
    frames = np.random.default_rng(0).integers(0, 1000, size=(5, 10, 12)).astype("uint16")
    signal = _signal(da.from_array(frames, chunks=chunks))
    with raise_if_dask_computes():  # temflow used to compute the whole signal here
        movie = temflow.as_movie(signal)
    assert isinstance(movie.data, da.Array) and movie.dims == ("time", "y", "x") and movie.name == "run 7"
    np.testing.assert_allclose(movie.y.values, 100.0 + 2.0 * np.arange(10))  # µm -> nm, offset kept
    np.testing.assert_allclose(movie.x.values, 2.5 * np.arange(12))
    np.testing.assert_allclose(movie.time.values, 0.04 * np.arange(5))  # ms -> s
    assert temflow.pixel_size_nm(movie) == pytest.approx((2.0, 2.5))
    assert movie.attrs["pixel_calibrated"] and movie.attrs["time_calibrated"]
    np.testing.assert_array_equal(movie.values, frames)


def test_an_in_memory_signal_gives_an_in_memory_movie_and_irregular_times():
    frames = np.arange(4 * 6 * 8, dtype="float32").reshape(4, 6, 8)
    signal = hs.signals.Signal2D(frames, axes=[
        {"name": "time", "units": "s", "axis": np.array([0.0, 0.5, 2.0, 2.25]), "navigate": True},
        {"name": "y", "units": "Å", "scale": 5.0, "size": 6},
        {"name": "x", "units": "Å", "scale": 5.0, "size": 8},
    ])
    movie = temflow.as_movie(signal)
    assert isinstance(movie.data, np.ndarray)
    np.testing.assert_allclose(movie.time.values, [0.0, 0.5, 2.0, 2.25])
    assert temflow.pixel_size_nm(movie) == (0.5, 0.5)


def test_an_uncalibrated_signal_warns_and_explicit_values_win():
    frames = np.zeros((3, 4, 4), dtype="uint8")
    bare = hs.signals.Signal2D(frames)
    with pytest.warns(UserWarning, match="calibration is incomplete.*pixel_size_nm=..."):
        movie = temflow.as_movie(bare)
    assert temflow.pixel_size_nm(movie) == (1.0, 1.0) and not movie.attrs["pixel_calibrated"]
    movie = temflow.as_movie(bare, pixel_size_nm=0.3, frame_interval_s=0.1)  # no warning: the user said
    assert temflow.pixel_size_nm(movie) == pytest.approx((0.3, 0.3))
    np.testing.assert_allclose(movie.time.values, [0.0, 0.1, 0.2])
    one = temflow.as_movie(_signal(frames[:1], lazy=False).inav[0])  # a single image: one frame
    assert one.sizes["time"] == 1


def test_signals_that_are_not_movies_are_refused():
    with pytest.raises(ValueError, match="at most one navigation axis.*inav"):
        temflow.as_movie(hs.signals.Signal2D(np.zeros((2, 3, 4, 4))))
    with pytest.raises(ValueError, match="0 signal axes|1 signal axes"):
        temflow.as_movie(hs.signals.Signal1D(np.zeros((3, 4))))


@pytest.mark.parametrize("lazy", [True, False])
def test_to_hyperspy_round_trip(lazy):
    movie = make_movie(frames=4, size=24, pixel_size_nm=0.4, frame_interval_s=0.5, seed=1).movie
    if not lazy:
        movie = movie.compute()
    with raise_if_dask_computes():
        signal = temflow.to_hyperspy(movie)
    assert signal._lazy is lazy
    time, y, x = sorted(signal.axes_manager._axes, key=lambda a: a.index_in_array)
    assert (time.name, time.units, time.scale, time.navigate) == ("time", "s", 0.5, True)
    assert (y.units, y.scale, x.units, x.scale) == ("nm", pytest.approx(0.4), "nm", pytest.approx(0.4))
    back = temflow.as_movie(signal)
    xr.testing.assert_allclose(back.drop_attrs(), movie.drop_attrs())
    assert back.name == movie.name


def test_to_hyperspy_keeps_irregular_frame_times():
    movie = temflow.as_movie(np.zeros((3, 4, 4)), times_s=[0.0, 1.0, 5.0], pixel_size_nm=0.2)
    signal = temflow.to_hyperspy(movie)
    assert not signal.axes_manager.navigation_axes[0].is_uniform
    np.testing.assert_allclose(temflow.as_movie(signal).time.values, [0.0, 1.0, 5.0])
