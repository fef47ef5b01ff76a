"""The pipeline with in-situ context: a holder log and the dose reach the statistics, the fits and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from temflow.pipeline.config import Config
from temflow.pipeline.runner import run

_SMALL = {
    "input": {"synthetic": {"frames": 16, "size": 96, "radius_nm": [2.0, 5.0], "seed": 3, "frame_interval_s": 1.0,
                            "pixel_size_nm": 0.5, "dose_e_per_px": 50.0}},
    "segmentation": {"method": "threshold"},
    "drift": {"enabled": False},
    "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
    "output": {"figure_formats": ["png"]},
}


def _protochips_log(path: Path) -> Path:
    """Two plateaus, 250 °C then 300 °C, switched at log time 28 s (movie time 8 s with a 20 s offset)."""
    times_ms = np.arange(0, 60_000, 250)
    temperature = np.where(times_ms < 28_000, 250.0, 300.0)
    lines = ["Time, Notes, Channel A Temperature",
             "0, Date (yyyy.mm.dd) = 2024.05.01", "0, Time (hh:mm:ss.ms) = 10:00:00.000",
             "0, Time units = Milliseconds", "0, Temperature units = Degrees C", "0, User = test"]
    lines += [f"{t}, , {v:.1f}" for t, v in zip(times_ms, temperature)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_holder_log_and_dose_reach_the_report(tmp_path):
    log = _protochips_log(tmp_path / "heating.csv")
    data = json.loads(json.dumps(_SMALL))
    data["output"]["folder"] = str(tmp_path / "out")
    # the generator's camera: 8 counts per electron (make_movie's default gain)
    data["insitu"] = {"holder_log": str(log), "clock_offset_s": 20.0, "counts_per_electron": 8.0}
    summary = run(Config.from_dict(data))
    out = tmp_path / "out"
    context = pd.read_parquet(out / "context.parquet")
    expected = np.where(context["time"] + 20.0 < 28.0, 250.0, 300.0)
    # frames away from the switch carry the plateau's temperature; the frame at it an interpolated one
    away = np.abs(context["time"] + 20.0 - 28.0) > 0.25
    np.testing.assert_allclose(context["temperature_C"][away], expected[away])
    # 50 e per 5 Å pixel per 1 s frame: 2 e/Å²/s; the median sits a few % under the support's level
    np.testing.assert_allclose(context["dose_rate_e_per_A2_s"], 2.0, rtol=0.08)
    np.testing.assert_allclose(context["cumulative_dose_e_per_A2"], context["frame_dose_e_per_A2"].cumsum(), rtol=1e-9)
    stats = pd.read_parquet(out / "statistics.parquet")
    assert {"temperature_C", "cumulative_dose_e_per_A2"} <= set(stats.columns)
    rates = pd.read_parquet(out / "rates_per_step.parquet")
    assert rates["temperature_C"].tolist() == [250.0, 300.0]
    coarsening = json.loads((out / "coarsening.json").read_text())
    assert coarsening["arrhenius"]["steps"] == 2
    html = (out / "report.html").read_text()
    for text in ("figures/size_vs_temperature.png", "figures/arrhenius.png", "figures/dose.png",
                 "holder temperature", "cumulative dose", "clock offset 20.000 s (given)"):
        assert text in html, text
    assert summary["frames"] == 16


def test_without_dose_metadata_the_report_says_what_is_missing(tmp_path):
    data = json.loads(json.dumps(_SMALL))
    data["output"]["folder"] = str(tmp_path / "out")
    run(Config.from_dict(data))
    result = json.loads((tmp_path / "out" / "stages" / "context.json").read_text())["result"]
    assert "counts_per_electron" in result["dose"]["reason"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "electron dose: cannot compute the electron dose" in html
    assert "figures/arrhenius.png" not in html


def test_insitu_settings_are_checked(tmp_path):
    data = json.loads(json.dumps(_SMALL))
    data["output"]["folder"] = str(tmp_path / "out")
    with pytest.raises(ValueError, match="insitu.holder_log .* does not exist"):
        Config.from_dict({**data, "insitu": {"holder_log": str(tmp_path / "missing.csv")}})
    with pytest.raises(ValueError, match="'file column = quantity'"):
        Config.from_dict({**data, "insitu": {"holder_columns": ["Pin Measured"]}})
    with pytest.raises(ValueError, match="insitu.counts_per_electron must be positive"):
        Config.from_dict({**data, "insitu": {"counts_per_electron": -1.0}})
