"""Holder logs: both vendors' layouts read with units converted; a log lined up with a movie's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import raise_if_dask_computes

import temflow
from temflow.errors import MovieFileError
from temflow.io.holder_logs import read_holder_log
from temflow.io.holder_sync import add_holder_coords, estimate_clock_offset


def write_protochips(path: Path, names: list[str], units: dict[str, str], times_ms: np.ndarray,
                     values: np.ndarray, notes: dict[int, str] | None = None, user: bool = True) -> Path:
    """A Protochips log as RosettaSciIO's reader and tests describe it (``", "`` separated)."""
    lines = [", ".join(["Time", "Notes", *names])]
    header = ["Date (yyyy.mm.dd) = 2014.12.15", "Time (hh:mm:ss.ms) = 19:07:04.165", "Time units = Milliseconds"]
    header += [f"{q} units = {u}" for q, u in units.items()]
    header += ["Calibration file = C:\\Protochips\\AD21013_8.cal"] + (["User = eric"] if user else [])
    lines += [f"0, {h}" for h in header]
    for i, (t, row) in enumerate(zip(times_ms, values)):
        lines.append(", ".join([f"{t:.0f}", (notes or {}).get(i, ""), *(f"{v:.6g}" for v in np.atleast_1d(row))]))
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def write_impulse(folder: Path, columns: dict[str, np.ndarray], times_s: np.ndarray) -> Path:
    """An Impulse export and its metadata file, as RosettaSciIO's reader and tests describe them."""
    path = folder / "StubExperiment_Synchronized data.csv"
    header = ["TimeStamp", "Experiment time", *columns]
    rows = [",".join(header)]
    for i, t in enumerate(times_s):
        stamp = f"13:40:{19 + int(t) // 1:02d}"
        rows.append(",".join([stamp, f"{t:.3f}", *(f"{columns[c][i]:.6g}" for c in columns)]))
    path.write_text("\n".join(rows) + "\n", encoding="latin-1")
    (folder / "StubExperiment_Metadata.log").write_text(
        "Experiment date,06-08-2021\nExperiment time,13:40:19\nSample,Gold\nGas1,H2\n"
        "Live notes,13:46:46: Live note one\n13:46:52: Live note two\n", encoding="latin-1")
    return path


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
