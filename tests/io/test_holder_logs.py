"""Holder logs: both vendors' layouts read with units converted; a log lined up with a movie's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import raise_if_dask_computes
from formats_writers import write_impulse, write_protochips

import temflow
from temflow.errors import MovieFileError
from temflow.io.holder_logs import read_holder_log
from temflow.io.holder_sync import add_holder_coords, estimate_clock_offset


def test_protochips_thermal_log(tmp_path):
    t = np.arange(0, 5000, 260.0)
    temp = np.linspace(25, 600, t.size)
    path = write_protochips(tmp_path / "thermal.csv", ["Channel A Temperature"], {"Temperature": "Degrees C"},
                            t, temp, notes={3: "ramp started"})
    log = read_holder_log(path)
    np.testing.assert_allclose(log["time_s"], t / 1000)
    np.testing.assert_allclose(log["temperature_C"], temp, rtol=1e-5)
    assert log.attrs["vendor"] == "protochips"
    assert log.attrs["start"] == "2014-12-15T19:07:04.165000"
    assert log.attrs["notes"] == [[pytest.approx(0.78), "ramp started"]]


@pytest.mark.parametrize(("separator", "calibration_first", "user", "user_line_ms"),
                         [(", ", True, True, 0), (",", False, False, 0), (",", False, True, 47)])
def test_protochips_real_layouts(tmp_path, separator, calibration_first, user, user_line_ms):
    """The variants of the real logs: "," or ", " between fields, header rows repeating the first
    record's values, with or without the calibration and user lines; no record is lost (RosettaSciIO
    takes the first record of a log without a user line for the end of its header)."""
    t = np.array([210.0, 470.0, 721.0, 1055.0])
    values = np.column_stack([np.full(4, 25.0), [744.6, 744.6, 744.4, 744.6]])
    path = write_protochips(tmp_path / "gas.csv", ["Holder Temperature", "Holder Pressure"],
                            {"Temperature": "Degrees C", "Pressure": "Torr"}, t, values, user=user,
                            separator=separator, calibration_first=calibration_first, user_line_ms=user_line_ms)
    log = read_holder_log(path)
    np.testing.assert_allclose(log["time_s"], t / 1000)
    np.testing.assert_allclose(log["pressure_mbar"], values[:, 1] * 1.333224, rtol=1e-6)
    assert log.attrs["start"] == "2014-12-15T19:07:04.165000"


def test_impulse_export_without_its_metadata_file(tmp_path):
    t = np.arange(7.787, 12.0, 0.51)
    path = write_impulse(tmp_path, {"Temperature Measured (degC)": 9.0 + t}, t)
    (tmp_path / "StubExperiment_Metadata.log").unlink()
    log = read_holder_log(path)
    np.testing.assert_allclose(log["time_s"], t, atol=5e-4)
    assert log.attrs["start"] is None and log.attrs["notes"] == []


def test_impulse_heat_raw_export_temperature_without_unit(tmp_path):
    """The "Heat raw" export names its temperature column without a unit; Impulse logs °C."""
    t = np.arange(6.749, 12.0, 0.52)
    path = write_impulse(tmp_path, {"Temperature Measured": 1.05 + 4.5 * (t - t[0])}, t, name="Heat raw",
                         mix_valve=True)
    log = read_holder_log(path)
    np.testing.assert_allclose(log["temperature_C"], 1.05 + 4.5 * (t - t[0]), rtol=1e-5)
    assert log.attrs["assumed_units"] == {"Temperature Measured": "°C"} and "MixValve" in log.attrs["unmapped"]
    assert log.attrs["start"] == "2021-08-06T13:40:19"


def test_protochips_gas_cell_torr_to_mbar_and_primary_column(tmp_path):
    t = np.arange(10) * 260.0
    values = np.column_stack([np.full(10, 300.0), np.full(10, 7.5), np.full(10, 760.0), np.full(10, 1e-3)])
    path = write_protochips(
        tmp_path / "gas.csv", ["Holder Temperature", "Holder Pressure", "Tank1 Pressure", "Vacuum Tank Pressure"],
        {"Temperature": "Degrees C", "Pressure": "Torr", "Current": "Amps"}, t, values, user=False)
    log = read_holder_log(path, vendor="protochips")
    np.testing.assert_allclose(log["pressure_mbar"], 7.5 * 1.333224)  # the holder's pressure is the plain name
    np.testing.assert_allclose(log["pressure_mbar_tank1"], 760 * 1.333224)  # 1 atm
    np.testing.assert_allclose(log["pressure_mbar_vacuum_tank"], 1e-3 * 1.333224)
    np.testing.assert_allclose(log["temperature_C"], 300.0)


def test_protochips_kelvin_converted(tmp_path):
    path = write_protochips(tmp_path / "k.csv", ["Channel A Temperature"], {"Temperature": "Kelvin"},
                            np.array([0.0, 1000.0]), np.array([373.15, 873.15]))
    np.testing.assert_allclose(read_holder_log(path)["temperature_C"], [100.0, 600.0])


def test_impulse_log_with_metadata(tmp_path):
    t = np.arange(0, 20, 0.5)
    cols = {"Temperature Measured (degC)": 20 + 10 * t, "Pin Measured": np.full(t.size, 1.2),
            "Power Measured (mW)": np.full(t.size, 35.0), "% Gas1 Measured": np.full(t.size, 50.0)}
    log = read_holder_log(write_impulse(tmp_path, cols, t))
    assert log.attrs["vendor"] == "impulse"
    np.testing.assert_allclose(log["time_s"], t)
    np.testing.assert_allclose(log["temperature_C"], 20 + 10 * t, rtol=1e-6)
    np.testing.assert_allclose(log["heater_power_W"], 0.035)
    assert log.attrs["start"] == "2021-08-06T13:40:19"
    # the unit of Impulse's pressures is not in the header: never guessed
    assert "Pin Measured" in log.attrs["unmapped"] and "pressure_mbar" not in log
    assert [n for _, n in log.attrs["notes"]] == ["13:46:46: Live note one", "13:46:52: Live note two"]
    stated = read_holder_log(tmp_path / "StubExperiment_Synchronized data.csv", columns={"Pin Measured": "pressure_bar"})
    np.testing.assert_allclose(stated["pressure_mbar"], 1200.0)


def test_generic_log_needs_a_mapping(tmp_path):
    path = tmp_path / "axon.csv"
    path.write_text("elapsed_min,T_sample_K,P_hPa\n0,300,1\n1,400,2\n2,500,3\n")
    with pytest.raises(MovieFileError, match="neither a Protochips log.*vendor='generic'"):
        read_holder_log(path)
    log = read_holder_log(path, vendor="generic", time_column="elapsed_min", time_unit="min",
                          columns={"T_sample_K": "temperature_K", "P_hPa": "pressure_mbar"})
    np.testing.assert_allclose(log["time_s"], [0, 60, 120])
    np.testing.assert_allclose(log["temperature_C"], [26.85, 126.85, 226.85])
    with pytest.raises(ValueError, match="not a quantity temflow knows"):
        read_holder_log(path, vendor="generic", time_column="elapsed_min", columns={"P_hPa": "pressure_hectopascal"})
    with pytest.raises(ValueError, match="'nope', which is not a column"):
        read_holder_log(path, vendor="generic", time_column="elapsed_min", columns={"nope": "temperature_C"})


@pytest.mark.parametrize("content, problem", [(None, "no such file"), ("", "the file is empty")])
def test_unreadable_logs_name_the_file(tmp_path, content, problem):
    path = tmp_path / "log.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MovieFileError, match=f"log.csv.*{problem}"):
        read_holder_log(path)


def _movie(n: int = 16, interval: float = 0.5, chunks: int | None = None) -> xr.DataArray:
    movie = temflow.as_movie(np.zeros((n, 8, 8), "float32"), pixel_size_nm=0.5, frame_interval_s=interval)
    return movie.chunk({"time": chunks}) if chunks else movie


@pytest.mark.parametrize("chunks", [None, 3])
def test_add_holder_coords_interpolates_lazily(chunks):
    movie = _movie(chunks=chunks)
    log = pd.DataFrame({"time_s": np.arange(0.0, 30.0, 0.1)})
    log["temperature_C"] = 200 + 4 * log["time_s"]
    with raise_if_dask_computes():
        out = add_holder_coords(movie, log, offset_s=12.0)
    np.testing.assert_allclose(out["temperature_C"].values, 200 + 4 * (movie["time"].values + 12.0))
    assert out["temperature_C"].attrs["units"] == "degC"
    assert out.attrs["holder_log"]["offset_s"] == 12.0
    assert type(out.data) is type(movie.data) and out.dims == movie.dims


def test_frames_outside_the_log_are_nan_with_a_warning():
    log = pd.DataFrame({"time_s": [0.0, 3.0], "temperature_C": [100.0, 130.0]})
    with pytest.warns(UserWarning, match="9 of 16 frames fall outside"):
        out = add_holder_coords(_movie(), log, offset_s=0.0)
    values = out["temperature_C"].values
    np.testing.assert_allclose(values[:7], 100 + 10 * np.arange(7) * 0.5)
    assert np.isnan(values[7:]).all()


def test_clock_offset_found_from_a_temperature_step():
    """Heating from 300 to 500 °C at log time 111.1 s; the movie (0.5 s frames) starts at log 100.0 s."""
    rng = np.random.default_rng(3)
    interval, true_offset, step_log = 0.5, 100.0, 111.1
    times = np.arange(40) * interval
    # the sample responds within the frame: frames after the step are brighter, with noise
    level = np.where(times + true_offset > step_log, 1.4, 1.0)
    frames = level[:, None, None] + rng.normal(0, 0.02, (40, 8, 8))
    movie = temflow.as_movie(frames.astype("float32"), pixel_size_nm=0.5, frame_interval_s=interval)
    log = pd.DataFrame({"time_s": np.arange(0, 400, 0.26)})
    log["temperature_C"] = np.where(log["time_s"] < step_log, 300.0, 500.0) + rng.normal(0, 0.5, len(log))
    offset = estimate_clock_offset(movie.mean(("y", "x")), log)
    assert abs(offset - true_offset) <= interval
    out = add_holder_coords(movie, log, offset_s=offset)
    assert (out["temperature_C"].values[level > 1.2] > 400).all()


def test_clock_offset_refuses_a_log_without_an_event():
    signal = xr.DataArray(np.r_[np.ones(10), 2 * np.ones(10)], dims="time", coords={"time": np.arange(20.0)})
    flat = pd.DataFrame({"time_s": np.arange(100.0), "temperature_C": np.full(100, 450.0)})
    with pytest.raises(ValueError, match="does not change: there is no event"):
        estimate_clock_offset(signal, flat)
    with pytest.raises(TypeError, match="single dim 'time'"):
        estimate_clock_offset(xr.DataArray(np.ones((2, 2))), flat)
