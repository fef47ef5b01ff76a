"""Live mode: a Gatan In-Situ folder written frame by frame is followed, stopped, resumed, and finishes as the batch run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from formats_writers import write_dm

from temflow.pipeline.config import Config
from temflow.pipeline.runner import run
from temflow.pipeline.live import list_frame_files, watch
from temflow.synthetic.generator import make_movie

FRAMES, PER_SECOND, PIXEL_NM = 16, 4, 0.5
_SETTINGS = {
    "segmentation": {"method": "threshold"},
    "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
    "output": {"figure_formats": ["png"]},
    "analysis": {"max_step_nm": 3.0},
}


def _config(folder: Path, out: Path) -> Config:
    return Config.from_dict({**json.loads(json.dumps(_SETTINGS)), "input": {"path": str(folder)},
                             "output": {"folder": str(out), "figure_formats": ["png"]}})


def _insitu_path(root: Path, index: int) -> Path:
    second = index // PER_SECOND
    folder = root / "Hour_00" / "Minute_00" / f"Second_{second:02d}"
    return folder / f"Capture_Hour_00_Minute_00_Second_{second:02d}_Frame_{index:04d}.dm4"


def _write_frames(root: Path, frames: np.ndarray, start: int, stop: int, pause_s: float) -> None:
    """As the camera does: one frame after the other, each written to a temporary name and renamed."""
    for index in range(start, stop):
        path = _insitu_path(root, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        write_dm(tmp, frames[index], version=4, pixel_size=PIXEL_NM)
        tmp.rename(path)
        time.sleep(pause_s)


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    truth = make_movie(frames=FRAMES, size=64, pixel_size_nm=PIXEL_NM, radius_nm=(2.0, 4.0), seed=5, jumps=0)
    return truth.movie.values


def test_follow_stop_resume_and_finish_as_the_batch_run(tmp_path, movie):
    folder, out = tmp_path / "insitu", tmp_path / "watched"
    # first session: the camera writes 7 frames while temflow watches, then the session is stopped
    writer = threading.Thread(target=_write_frames, args=(folder, movie, 0, 7, 0.02))
    writer.start()
    first = watch(folder, out, config=_config(folder, out), refresh_s=0.1, poll_s=0.02, max_frames=7, finish=False)
    writer.join()
    assert first["frames"] == 7 and first["stopped_by"] == "max_frames" and "batch" not in first
    assert (out / "live" / "report.html").is_file()
    # the acquisition goes on; a second session continues where the first stopped
    writer = threading.Thread(target=_write_frames, args=(folder, movie, 7, FRAMES, 0.02))
    writer.start()
    lines: list[str] = []
    # (stops at the last frame; the idle timeout only guards against a hang on a loaded machine)
    second = watch(folder, out, config=_config(folder, out), refresh_s=0.1, poll_s=0.02, idle_timeout_s=60.0,
                   max_frames=FRAMES, echo=lines.append, workers=2)  # frames segmented side by side in two processes
    writer.join()
    assert any("continuing after 7 frames" in line for line in lines)
    assert second["frames"] == FRAMES and second["stopped_by"] == "max_frames"
    # every frame went into the zarr store once, in order
    stored = zarr.open_array(str(out / "live" / "frames.zarr"), mode="r")
    np.testing.assert_array_equal(stored[:], movie)
    assert list_frame_files(folder) == [_insitu_path(folder, i) for i in range(FRAMES)]

    # the finished watch is the batch run on the finished folder
    batch_out = tmp_path / "batch"
    run(_config(folder, batch_out))
    for name in ("statistics.parquet", "shifts.parquet", "tracks.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(batch_out / name))
    assert second["batch"]["particles_last_frame"] == json.loads((batch_out / "summary.json").read_text())[
        "particles_last_frame"]
    # the live drift, measured frame by frame across both sessions, is the batch drift
    live = pd.read_parquet(out / "live" / "per_frame.parquet")
    shifts = pd.read_parquet(batch_out / "shifts.parquet")
    np.testing.assert_allclose(live[["dy_nm", "dx_nm"]].to_numpy(), shifts[["dy_nm", "dx_nm"]].to_numpy(), atol=1e-9)
    # the live counts (per-frame thresholds, raw frames) preview the batch counts (movie-wide threshold, cropped)
    stats = pd.read_parquet(batch_out / "statistics.parquet")
    assert abs(live["count"].mean() - stats["count"].mean()) <= 0.35 * stats["count"].mean()


def test_watch_refuses_what_it_cannot_follow(tmp_path):
    with pytest.raises(ValueError, match="is not a folder, nor is its parent"):
        watch(tmp_path / "missing" / "insitu", tmp_path / "out", finish=False, max_frames=1)
    with pytest.raises(ValueError, match="is not a folder"):
        list_frame_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="refresh_s must be a positive"):
        watch(tmp_path, tmp_path / "out", refresh_s=0)


def test_watch_command(tmp_path, movie):
    from click.testing import CliRunner

    from temflow.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(6):
        write_dm(folder / f"frame_{index:03d}.dm4", movie[index], version=4, pixel_size=PIXEL_NM)
    result = CliRunner().invoke(main, ["watch", str(folder), "--output", str(tmp_path / "out"), "--refresh-s", "0.1",
                                       "--idle-timeout-s", "0.5", "--no-finish"])
    assert result.exit_code == 0, result.output
    assert "live: 6 frames" in result.output
    summary = json.loads((tmp_path / "out" / "live" / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["stopped_by"] == "idle"
    result = CliRunner().invoke(main, ["watch", str(tmp_path / "nowhere" / "x"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "temflow: error:" in result.output and "nor is its parent" in result.output


def test_binned_live_segmentation_keeps_positions_and_sizes(movie):
    from scipy.spatial import cKDTree

    from temflow.pipeline.live import _measure

    config = _config(Path("."), Path("out"))
    full = _measure(movie[3], (PIXEL_NM, PIXEL_NM), 0.0, config, 3)
    binned = _measure(movie[3], (PIXEL_NM, PIXEL_NM), 0.0, config, 3, bin_px=2)
    big = full[(full["equivalent_diameter"] > 3.0) & ~full["touches_border"]]
    distance, nearest = cKDTree(binned[["y", "x"]].to_numpy()).query(big[["y", "x"]].to_numpy())
    # the binned frame's particles sit where the full frame's are, within one binned pixel
    # (the smallest, ~3 binned pixels across, may be lost); sizes close
    found = distance < 4 * PIXEL_NM
    assert found.sum() >= 2 and np.all(distance[found] < 2 * PIXEL_NM)
    ratio = binned["equivalent_diameter"].to_numpy()[nearest[found]] / big["equivalent_diameter"].to_numpy()[found]
    assert abs(np.median(ratio) - 1.0) < 0.15


def test_the_classical_settings_are_decided_once_and_kept(tmp_path, movie):
    """Every live frame is segmented with the settings decided on the first (and saved with the state)."""
    from temflow.analysis.threshold import threshold_particles
    from temflow.movie import as_movie

    folder, out = tmp_path / "frames", tmp_path / "watched"
    _write_frames(folder, movie, 0, 4, 0.0)
    watch(folder, out, config=_config(folder, out), refresh_s=60.0, poll_s=0.01, idle_timeout_s=0.3, finish=False)
    decided = json.loads((out / "live" / "state.json").read_text())["classical"]
    first = threshold_particles(as_movie(movie[:1], pixel_size_nm=PIXEL_NM), threshold="frame").attrs
    assert decided["particles"] == first["particles"] == "dark"  # bright field, as the generator draws it
    assert decided["sigma_nm"] == first["sigma_nm"] and decided["background_nm"] == first["background_nm"]
    # a later frame segmented with them equals the recipe given those settings, not re-derived ones
    from temflow.pipeline.live import _classical_json, _measure

    settings = _classical_json(decided, load=True)
    table = _measure(movie[3], (PIXEL_NM, PIXEL_NM), 0.0, _config(folder, out), 3, classical=settings)
    from temflow.analysis.measure import label_particles, measure_particles

    frame = as_movie(movie[3:4], pixel_size_nm=PIXEL_NM)
    config = _config(folder, out)
    masks = threshold_particles(frame, threshold="frame", **settings)
    expected = measure_particles(label_particles(masks, split_touching=config.analysis.split_touching), frame,
                                 min_area_nm2=config.analysis.min_area_nm2)
    assert len(table) == len(expected) > 0
    np.testing.assert_allclose(np.sort(table["area"]), np.sort(expected["area"]))
