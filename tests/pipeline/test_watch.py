"""Live mode: a Gatan In-Situ folder written frame by frame is followed, stopped, resumed, and finishes as the batch run."""

from __future__ import annotations

import dataclasses
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


def _write_frames(root: Path, frames: np.ndarray, start: int, stop: int, pause_s: float, where=None) -> None:
    """As the camera does: one frame after the other, each written to a temporary name and renamed.

    ``where(root, index)``: the frame's file (default :func:`_insitu_path`, 4 frames per second).
    """
    for index in range(start, stop):
        path = (where or _insitu_path)(root, index)
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
    # the live tracks, linked frame by frame across the restart, are link()'s on the same table
    from temflow.analysis.track import link

    tracks = pd.read_parquet(out / "live" / "tracks.parquet")
    assert sorted(tracks["frame"].unique()) == list(range(FRAMES))
    pd.testing.assert_frame_equal(link(tracks.drop(columns="particle"), max_step_nm=3.0, memory=2, method="trackpy"),
                                  tracks)


def test_live_tracks_with_laptrack_relink_every_refresh(tmp_path, movie):
    """laptrack's gap closing is global: the live view links all frames again, with link()'s answer."""
    from temflow.analysis.track import link

    folder, out = tmp_path / "frames", tmp_path / "watched"
    _write_frames(folder, movie, 0, 8, 0.0)
    settings = json.loads(json.dumps(_SETTINGS))
    settings["analysis"]["linker"] = "laptrack"
    config = Config.from_dict({**settings, "input": {"path": str(folder)}, "output": {"folder": str(out)}})
    watch(folder, out, config=config, refresh_s=60.0, poll_s=0.01, max_frames=8, finish=False)
    tracks = pd.read_parquet(out / "live" / "tracks.parquet")
    assert len(tracks) and tracks["frame"].max() == 7
    np.testing.assert_allclose(tracks["time"], tracks["frame"] / PER_SECOND)  # the In-Situ folder's times
    pd.testing.assert_frame_equal(link(tracks.drop(columns="particle"), max_step_nm=3.0, memory=2, method="laptrack"),
                                  tracks)


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


def test_watch_command_uses_one_worker_per_usable_core_unless_told(tmp_path, monkeypatch):
    import os

    from click.testing import CliRunner

    from temflow.cli import main
    from temflow.pipeline import live

    if hasattr(os, "sched_getaffinity"):
        # the cores this process may use, not the machine's: 3 of 64 allowed gives 3; many, at most 8
        for allowed, expected in ((set(range(3)), 3), ({5}, 1), (set(range(64)), 8)):
            monkeypatch.setattr(os, "sched_getaffinity", lambda pid, allowed=allowed: allowed)
            monkeypatch.setattr(os, "cpu_count", lambda: 64)
            assert live.default_workers() == expected
        monkeypatch.undo()
    seen = []
    monkeypatch.setattr(live, "watch", lambda *args, **kwargs: seen.append(kwargs["workers"]) or {"frames": 0})
    (tmp_path / "frames").mkdir()
    for extra in ([], ["--workers", "1"]):
        CliRunner().invoke(main, ["watch", str(tmp_path / "frames"), "--output", str(tmp_path / "out"), *extra])
    assert seen == [live.default_workers(), 1]


def test_binned_live_segmentation_keeps_positions_and_sizes(movie):
    from scipy.spatial import cKDTree

    from temflow.pipeline.live import _measure

    config = _config(Path("."), Path("out"))
    binned_config = dataclasses.replace(config, segmentation=dataclasses.replace(config.segmentation, bin_px=2))
    distances, ratios = [], []
    for index in range(FRAMES):
        full = _measure(movie[index], (PIXEL_NM, PIXEL_NM), 0.0, config, index)
        binned = _measure(movie[index], (PIXEL_NM, PIXEL_NM), 0.0, binned_config, index)
        big = full[(full["equivalent_diameter"] > 3.0) & ~full["touches_border"]]
        if not len(big) or not len(binned):
            continue
        distance, nearest = cKDTree(binned[["y", "x"]].to_numpy()).query(big[["y", "x"]].to_numpy())
        found = distance < 4 * PIXEL_NM
        distances.extend(distance[found])
        ratios.extend(binned["equivalent_diameter"].to_numpy()[nearest[found]] / big["equivalent_diameter"].to_numpy()[found])
    # the binned frames' particles sit where the full frames' are, within one binned pixel
    # (the smallest, ~3 binned pixels across, may be lost); sizes close
    assert len(distances) >= 4 and max(distances) < 2 * PIXEL_NM
    assert abs(np.median(ratios) - 1.0) < 0.15


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


# --- frame times, holder log and dose, tracks, trained model --------------------------------------

_IRREGULAR = [2, 5, 3, 4, 2]  # frames in seconds 0..4: a partial first second, an uneven rate, a partial last


def _irregular_path(root: Path, index: int) -> Path:
    second = int(np.searchsorted(np.cumsum(_IRREGULAR), index, side="right"))
    folder = root / "Hour_00" / "Minute_00" / f"Second_{second:02d}"
    return folder / f"Capture_Hour_00_Minute_00_Second_{second:02d}_Frame_{index:04d}.dm4"


def _write_irregular(root: Path, frames: np.ndarray, start: int, stop: int, pause_s: float = 0.0) -> None:
    _write_frames(root, frames, start, stop, pause_s, where=_irregular_path)


def _batch_times(folder: Path, **options) -> np.ndarray:
    import warnings

    from temflow.io.reader import open_movie

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one frame: no time calibration
        return open_movie(folder, **options)["time"].values


def test_live_frame_times_are_the_batch_readers_frame_by_frame(tmp_path, movie):
    from temflow.pipeline._live_context import live_times as _live_times

    folder = tmp_path / "insitu"
    config = _config(folder, tmp_path / "out")
    given = Config.from_dict({**json.loads(json.dumps(_SETTINGS)), "input": {"path": str(folder),
                                                                            "frame_interval_s": 0.3}})
    for n in range(1, FRAMES + 1):  # as the camera writes them: after every frame, the times so far
        _write_irregular(folder, movie, n - 1, n)
        files = list_frame_files(folder)
        np.testing.assert_allclose(_live_times(folder, files, config), _batch_times(folder), atol=1e-12)
        np.testing.assert_allclose(_live_times(folder, files, given), _batch_times(folder, frame_interval_s=0.3))
    times = _batch_times(folder)
    assert len(set(np.round(np.diff(times), 9))) > 1  # irregular indeed: not index x interval


def test_watch_time_coordinate_and_tracks_equal_the_batch(tmp_path, movie):
    """Frames written one by one into an irregular In-Situ tree: the live tables carry the batch reader's
    times, and the live tracks, linked frame by frame, are those of link() on the same table."""
    from temflow.analysis.track import link

    folder, out = tmp_path / "insitu", tmp_path / "watched"
    writer = threading.Thread(target=_write_irregular, args=(folder, movie, 0, FRAMES, 0.03))
    writer.start()
    watch(folder, out, config=_config(folder, out), refresh_s=0.05, poll_s=0.02, max_frames=FRAMES, finish=False)
    writer.join()
    times = _batch_times(folder)
    per_frame = pd.read_parquet(out / "live" / "per_frame.parquet")
    np.testing.assert_allclose(per_frame["time"], times, atol=1e-12)
    particles = pd.read_parquet(out / "live" / "particles.parquet")
    np.testing.assert_allclose(particles["time"], times[particles["frame"]], atol=1e-12)
    tracks = pd.read_parquet(out / "live" / "tracks.parquet")
    np.testing.assert_allclose(tracks["time"], times[tracks["frame"]], atol=1e-12)
    assert len(tracks) == len(particles) and tracks["particle"].nunique() < len(tracks) / 2  # tracks, not dots
    config = _config(folder, out)
    again = link(tracks.drop(columns="particle"), max_step_nm=config.analysis.max_step_nm,
                 memory=config.analysis.memory, method="trackpy")
    pd.testing.assert_frame_equal(again, tracks)


def _holder_log(path: Path, until_s: float) -> Path:
    """A Protochips heating log: 300 °C + 20 °C/s, one record every 0.1 s up to ``until_s``."""
    from formats_writers import write_protochips

    t_ms = np.arange(0.0, until_s * 1000 + 1, 100.0)
    return write_protochips(path, ["Channel A Temperature"], {"Temperature": "Degrees C"}, t_ms,
                            300.0 + 20.0 * t_ms / 1000, calibration_first=True)


def test_live_report_shows_temperature_and_dose_per_frame_as_the_batch(tmp_path, movie):
    folder, out = tmp_path / "insitu", tmp_path / "watched"
    log = _holder_log(tmp_path / "heating.csv", until_s=6.5)  # still being written: ends before the movie does

    def config() -> Config:
        settings = json.loads(json.dumps(_SETTINGS))
        settings["insitu"] = {"holder_log": str(log), "clock_offset_s": 5.0, "counts_per_electron": 2.0,
                              "exposure_s": 0.2}
        return Config.from_dict({**settings, "input": {"path": str(folder)},
                                 "output": {"folder": str(out), "figure_formats": ["png"]}})

    _write_frames(folder, movie, 0, FRAMES, 0.0)  # 4 frames a second: 0 to 3.75 s, log time 5 to 8.75 s
    first = watch(folder, out, config=config(), refresh_s=60.0, poll_s=0.01, max_frames=FRAMES, finish=False)
    live = pd.read_parquet(out / "live" / "per_frame.parquet")
    log_time = live["time"].to_numpy() + 5.0
    inside = log_time <= 6.5
    np.testing.assert_allclose(live["temperature_C"][inside], 300.0 + 20.0 * log_time[inside], rtol=1e-9)
    assert live["temperature_C"][~inside].isna().all() and (~inside).sum() > 0  # past the log's end so far
    assert np.isnan(first["last"]["temperature_C"])
    report = (out / "live" / "report.html").read_text()
    assert "holder temperature now" in report and "past the log" in report
    assert "cumulative dose" in report and (out / "live" / "figures" / "size_vs_temperature.png").is_file()

    # the log grows; the next session (no new frame) re-reads it and fills the frames in; then the batch run
    _holder_log(log, until_s=10.0)
    second = watch(folder, out, config=config(), refresh_s=60.0, poll_s=0.01, max_frames=FRAMES)
    live = pd.read_parquet(out / "live" / "per_frame.parquet")
    np.testing.assert_allclose(live["temperature_C"], 300.0 + 20.0 * (live["time"] + 5.0), rtol=1e-9)
    assert second["last"]["temperature_C"] == pytest.approx(300.0 + 20.0 * (3.75 + 5.0))
    batch = pd.read_parquet(out / "context.parquet")
    for name in ("temperature_C", "dose_rate_e_per_A2_s", "frame_dose_e_per_A2", "cumulative_dose_e_per_A2"):
        np.testing.assert_allclose(live[name], batch[name], rtol=1e-12, err_msg=name)
    # the dose is the physics: median counts / 2 counts per electron / (5 Å)² pixel, over 0.2 s
    expected = np.median(movie.reshape(FRAMES, -1).astype(float), axis=1) / 2.0 / 25.0
    np.testing.assert_allclose(live["frame_dose_e_per_A2"], expected, rtol=1e-12)
    np.testing.assert_allclose(live["dose_rate_e_per_A2_s"], expected / 0.2, rtol=1e-12)


def test_watch_command_takes_the_holder_log_and_dose_from_flags(tmp_path, movie, monkeypatch):
    """``temflow watch --holder-log ... --clock-offset-s ...``: the live table of the run file's route."""
    from click.testing import CliRunner

    from temflow.cli import main

    folder = tmp_path / "insitu"
    log = _holder_log(tmp_path / "heating.csv", until_s=10.0)
    _write_frames(folder, movie, 0, 8, 0.0)
    settings = json.loads(json.dumps(_SETTINGS))
    settings["insitu"] = {"holder_log": str(log), "clock_offset_s": 5.0, "counts_per_electron": 2.0, "exposure_s": 0.2}
    by_file = tmp_path / "by_file"
    watch(folder, by_file, config=Config.from_dict({**settings, "input": {"path": str(folder)}}), refresh_s=60.0,
          poll_s=0.01, max_frames=8, finish=False)
    by_flags = tmp_path / "by_flags"
    monkeypatch.chdir(tmp_path)  # the log's path is the working folder's
    result = CliRunner().invoke(main, ["watch", str(folder), "--output", str(by_flags), "--no-finish", "--workers", "1",
                                       "--refresh-s", "60", "--idle-timeout-s", "0.3", "--holder-log", "heating.csv",
                                       "--clock-offset-s", "5", "--counts-per-electron", "2", "--exposure-s", "0.2"])
    assert result.exit_code == 0, result.output
    columns = ["frame", "time", "temperature_C", "dose_rate_e_per_A2_s", "frame_dose_e_per_A2", "cumulative_dose_e_per_A2"]
    live = pd.read_parquet(by_flags / "live" / "per_frame.parquet")
    pd.testing.assert_frame_equal(live[columns], pd.read_parquet(by_file / "live" / "per_frame.parquet")[columns])
    np.testing.assert_allclose(live["temperature_C"], 300.0 + 20.0 * (live["time"] + 5.0), rtol=1e-9)
    report = (by_flags / "live" / "report.html").read_text()
    assert "holder temperature now" in report and "--clock-offset-s 5.0 replaced" in report


def test_trained_model_route_equals_the_batch_prediction(tmp_path):
    """watch segments with a model trained here; every live frame's particles are those of the batch
    predict + segment + measure on the same (raw) frames."""
    torch = pytest.importorskip("torch")
    from temflow.analysis.measure import label_particles, measure_particles
    from temflow.io.reader import open_movie
    from temflow.segmentation.inference import predict, segment
    from temflow.segmentation.model_files import save_model
    from temflow.segmentation.models import UNet
    from temflow.segmentation.tiles import TileDataset, make_tile_set, percentile_normalisation
    from temflow.segmentation.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads on a shared CPU
    try:
        truth = make_movie(frames=10, size=64, pixel_size_nm=PIXEL_NM, radius_nm=(2.0, 4.0), seed=5, jumps=0)
        tiles = make_tile_set(truth.movie, tmp_path / "tiles.zarr", tile_size=32, frames=10, masks=truth.labels,
                              blocks=5)
        torch.manual_seed(0)
        # a few seconds: enough for a 1-level U-Net to find the particles of this movie
        net, _ = train(UNet(depth=1, width=4), TileDataset(tiles, seed=1), epochs=25, batch_size=8, lr=0.02,
                       device="cpu", seed=3)
        model = save_model(net, tmp_path / "net.safetensors", tile_size=32,
                           normalisation=percentile_normalisation(truth.movie.values))
        folder, out = tmp_path / "insitu", tmp_path / "watched"
        frames = truth.movie.values
        _write_frames(folder, frames, 0, 6, 0.0)
        settings = json.loads(json.dumps(_SETTINGS))
        settings["segmentation"] = {"method": "unet", "model": str(model)}
        config = Config.from_dict({**settings, "input": {"path": str(folder)}, "output": {"folder": str(out)}})
        watch(folder, out, config=config, refresh_s=60.0, poll_s=0.01, max_frames=6, finish=False)
        live = pd.read_parquet(out / "live" / "particles.parquet")
        # two worker processes, started while this process has torch's threads running (the training
        # above): a worker forked from here would hang at its first convolution
        apart = tmp_path / "watched-2"
        watch(folder, apart, config=dataclasses.replace(config, output=dataclasses.replace(config.output,
              folder=str(apart))), refresh_s=60.0, poll_s=0.01, max_frames=6, finish=False, workers=2)
        live_2 = pd.read_parquet(apart / "live" / "particles.parquet")

        raw = open_movie(folder)
        masks = segment(predict(raw, str(model))).compute()
        labels = label_particles(masks, split_touching=config.analysis.split_touching)
        batch = measure_particles(labels, raw, min_area_nm2=config.analysis.min_area_nm2)
    finally:
        torch.set_num_threads(threads)
    # the model found the particles (not an empty comparison) ...
    assert len(batch) >= 6 * 3 and labels.values.any()
    truth_area = (truth.labels.values[:6] > 0).sum()
    assert abs(float(masks.values.sum()) - truth_area) < 0.35 * truth_area
    # ... and the live frames give the batch's particles, frame by frame
    columns = ["frame", "time", "y", "x", "area", "equivalent_diameter", "touches_border"]
    order = ["frame", "y", "x"]
    pd.testing.assert_frame_equal(live[columns].sort_values(order, ignore_index=True),
                                  batch[columns].sort_values(order, ignore_index=True), check_dtype=False)
    # ... in one process or two
    pd.testing.assert_frame_equal(live_2, live)


def test_two_worker_processes_give_the_one_process_answer(tmp_path, movie):
    """The classical route: frames segmented and measured in two worker processes, tables as in one."""
    folder = tmp_path / "frames"
    _write_frames(folder, movie, 0, 8, 0.0)
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"watched-{workers}"
        summary = watch(folder, out, config=_config(folder, out), refresh_s=60.0, poll_s=0.01, max_frames=8,
                        finish=False, workers=workers)
        assert summary["frames"] == 8
        tables[workers] = {name: pd.read_parquet(out / "live" / name)
                           for name in ("particles.parquet", "per_frame.parquet", "tracks.parquet")}
    assert len(tables[1]["particles.parquet"]) > 8 * 3  # particles were found: not an empty comparison
    for name, table in tables[1].items():
        pd.testing.assert_frame_equal(tables[2][name], table, obj=name)


def test_a_worker_pool_that_cannot_start_is_one_clear_error(tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from temflow.pipeline import live

    class Broken:  # what an unguarded main script gives: the workers die while starting
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, *args):
            raise BrokenProcessPool("a process in the process pool was terminated abruptly")

        def shutdown(self, **kwargs):
            pass

    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    with pytest.raises(ValueError, match=r"workers=2: .*if __name__ == '__main__'.*or pass workers=1"):
        live._executor(2, _config(tmp_path, tmp_path / "out"))


def test_binned_watch_finishes_as_the_binned_batch_run(tmp_path, movie):
    """--bin reaches the batch run that finishes the session: both segment the same binned frames."""
    from click.testing import CliRunner

    from temflow.cli import main

    folder, out = tmp_path / "insitu", tmp_path / "watched"
    _write_frames(folder, movie, 0, 6, 0.0)
    config = tmp_path / "run.toml"
    config.write_text(f'[input]\npath = "{folder}"\n[segmentation]\nmethod = "threshold"\n[analysis]\nmax_step_nm = 3.0\n'
                      '[cluster]\nn_workers = 1\nthreads_per_worker = 2\nprocesses = false\n'
                      'dashboard_address = "127.0.0.1:0"\n[output]\nfigure_formats = ["png"]\n')
    done = CliRunner().invoke(main, ["watch", str(folder), "--output", str(out), "--config", str(config),
                                     "--bin", "2", "--idle-timeout-s", "0.5", "--workers", "1"])
    assert done.exit_code == 0, done.output
    # these particles (2-4 nm at 0.5 nm/px) are too small for 2 x 2 blocks, and both runs say so
    assert "binned pixels in radius" in done.output
    binned = dataclasses.replace(_config(folder, tmp_path / "batch"), segmentation=dataclasses.replace(
        _config(folder, tmp_path / "batch").segmentation, bin_px=2))
    with pytest.warns(UserWarning, match="binned pixels in radius"):
        run(binned)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "statistics.parquet"),
                                  pd.read_parquet(tmp_path / "batch" / "statistics.parquet"))
    unbinned = run(_config(folder, tmp_path / "full"))
    assert unbinned["stage_seconds"]  # the full-resolution run differs: binning reached the finishing run
    assert not pd.read_parquet(out / "statistics.parquet").equals(pd.read_parquet(tmp_path / "full" / "statistics.parquet"))
    # a model segments full frames: binning it is refused, naming the option
    model_config = tmp_path / "model.toml"
    model_config.write_text(f'[input]\npath = "{folder}"\n[segmentation]\nmethod = "unet"\n')
    refused = CliRunner().invoke(main, ["watch", str(folder), "--output", str(tmp_path / "m"), "--config",
                                        str(model_config), "--bin", "2", "--idle-timeout-s", "0.5"])
    assert refused.exit_code == 2 and "--bin bins the frames of the classical recipe" in refused.output
