"""The whole pipeline: outputs, provenance, skipping finished stages, resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import render_in_browser
from ome_validation import assert_every_store_valid
from temflow.pipeline.config import Config, load_config
from temflow.segmentation.model_files import read_card
from temflow.pipeline.runner import run
from temflow.io.labels import label_names
from temflow.io.store import open_zarr
from temflow.segmentation.tiles import DENOISING_NOISE, TileDataset

_MIN_FIGURES = 5
_SMALL = {
    "input": {"synthetic": {"frames": 16, "size": 96, "radius_nm": [2.0, 5.0], "seed": 3}},
    "segmentation": {"method": "threshold"},
    "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
    "output": {"figure_formats": ["png"]},
}


def _strict_json(path: Path):
    """Parse like a browser's JSON.parse: NaN and Infinity are errors."""

    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _config(folder: Path, **changes) -> Config:
    data = json.loads(json.dumps(_SMALL))
    data["output"]["folder"] = str(folder)
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    return Config.from_dict(data)


def test_a_run_writes_every_stage_and_a_rerun_skips_them(tmp_path):
    lines: list[str] = []
    summary = run(_config(tmp_path / "out"), echo=lines.append)
    out = tmp_path / "out"
    for name in ("raw.zarr", "corrected.zarr", "corrected.zarr/labels/masks", "particles.parquet", "tracks.parquet",
                 "events.parquet", "statistics.parquet", "coarsening.json", "summary.json",
                 "provenance.json", "report.html", "shifts.parquet"):  # fmt: skip
        assert (out / name).exists(), name
    assert Path(summary["report"]) == out / "report.html"
    assert assert_every_store_valid(out) >= 3  # raw, corrected (with its masks) and the true labels: valid OME-Zarr
    assert label_names(out / "corrected.zarr") == ["masks"]
    assert open_zarr(out / "corrected.zarr" / "labels" / "masks").dtype == bool
    for name in ("summary.json", "coarsening.json", "provenance.json"):
        _strict_json(out / name)
    particles = pd.read_parquet(out / "particles.parquet")  # a parquet dataset any reader takes whole
    assert len(particles) > 0 and {"frame", "area", "y", "x"} <= set(particles.columns)
    import pyarrow.parquet as pq

    assert pq.read_schema(out / "tracks.parquet").field("equivalent_diameter").metadata[b"units"] == b"nm"
    assert pq.read_schema(out / "statistics.parquet").field("number_density").metadata[b"units"] == "1/µm^2".encode()
    page = (out / "report.html").read_text()
    assert "mean_diameter <span class='unit'>(nm)</span>" in page
    assert summary["frames"] == 16 and summary["particles_first_frame"] > 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["input"]["synthetic"]["frames"] == 16
    assert provenance["dependencies"]["dask"] and provenance["temflow"]
    assert set(provenance["stage_seconds"]) >= {"load", "drift", "masks", "measure", "report"}
    corrected = open_zarr(out / "corrected.zarr")
    assert corrected.sizes["time"] == 16 and corrected.sizes["y"] < 96  # cropped to what every frame sees
    # the drift stage found the generator's drift
    truth = pd.read_parquet(out / "raw.truth" / "shifts.parquet")
    found = pd.read_parquet(out / "shifts.parquet")
    np.testing.assert_allclose(found[["dy_px", "dx_px"]].to_numpy(), truth[["dy", "dx"]].to_numpy(), atol=0.5)  # plumbing; accuracy is test_drift's

    # the report renders in a real browser, every figure decoded
    dom = render_in_browser(out / "report.html", screenshot=tmp_path / "report.png")
    figures = dom.count("<figure>")
    assert figures >= _MIN_FIGURES
    assert f'data-figures-loaded="{figures}"' in dom
    assert "Verdict:" in dom and "Size statistics per frame" in dom
    assert "Growth laws compared" in dom and "Kolmogorov-Smirnov" in dom
    assert (tmp_path / "report.png").stat().st_size > 10_000

    again: list[str] = []
    run(_config(tmp_path / "out"), echo=again.append)
    assert sum("skipped" in line for line in again) == len([s for s in summary["stage_seconds"]])

    # a changed analysis setting reruns tracking and what follows, nothing before it
    changed: list[str] = []
    run(_config(tmp_path / "out", analysis={"max_step_nm": 3.0}), echo=changed.append)
    skipped = {line.split()[0] for line in changed if "skipped" in line}
    assert skipped == {"load", "context", "drift", "masks", "measure"}


def _chunk_mtimes(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store / "0")): p.stat().st_mtime_ns for p in (store / "0").rglob("*") if p.is_file() and p.name != "zarr.json"}


def _arrays_and_tables(folder: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for store in ("raw.zarr", "corrected.zarr", "corrected.zarr/labels/masks"):
        out[store] = open_zarr(folder / store).values
    for table in ("shifts.parquet", "tracks.parquet", "events.parquet", "statistics.parquet"):
        out[table] = pd.read_parquet(folder / table)
    return out


def test_killed_mid_stage_then_rerun_equals_an_uninterrupted_run(tmp_path):
    toml = textwrap.dedent(
        """
        [input.synthetic]
        frames = 24
        size = 96
        radius_nm = [2.0, 5.0]
        seed = 5
        [input]
        frames_per_chunk = 1
        [segmentation]
        method = "threshold"
        [cluster]
        n_workers = 1
        threads_per_worker = 1
        processes = false
        dashboard_address = "127.0.0.1:0"
        [output]
        folder = "{folder}"
        figure_formats = ["png"]
        """
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for folder in (whole, killed):
        (tmp_path / f"{folder.name}.toml").write_text(toml.format(folder=folder))
    command = [sys.executable, "-m", "temflow.cli", "run"]
    subprocess.run(command + [str(tmp_path / "whole.toml")], check=True, capture_output=True, timeout=300)

    # kill the second run while the masks store is half written
    process = subprocess.Popen(
        command + [str(tmp_path / "killed.toml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    masks = killed / "corrected.zarr" / "labels" / "masks"  # the movie's NGFF labels group
    done = masks / ".temflow-done"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if done.exists() and len(list(done.iterdir())) >= 5:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (killed / "stages" / "masks.json").exists()
    before = _chunk_mtimes(masks)
    finished_before = {p.name for p in done.iterdir()}
    assert 0 < len(finished_before) < 24

    result = subprocess.run(command + [str(tmp_path / "killed.toml")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "masks      resuming" in result.stdout
    assert "load       done before, skipped" in result.stdout
    # the chunks finished before the kill were kept, not recomputed
    after = _chunk_mtimes(masks)
    for marker in finished_before:
        chunk = "c/" + marker.replace(".", "/")  # zarr v3's default chunk key
        if chunk in before:  # all-False chunks are never written (fill value)
            assert after[chunk] == before[chunk], chunk
    assert sum(("c/" + m.replace(".", "/")) in before for m in finished_before) >= 1
    a, b = _arrays_and_tables(whole), _arrays_and_tables(killed)
    for name in a:
        if isinstance(a[name], np.ndarray):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_bad_config_file_fails_with_one_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[input]\npath = 'missing.tif'\n[analysis]\nmax_stepnm = 3\n")
    result = subprocess.run([sys.executable, "-m", "temflow.cli", "run", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "max_stepnm" in result.stderr and str(path) in result.stderr
    with pytest.raises(ValueError, match="max_stepnm"):
        load_config(path)


def test_autoencoder_route_finds_the_true_particles(tmp_path):
    # drift correction off, so the masks stay on the raw frames' grid, where the truth is
    out = tmp_path / "out"
    summary = run(
        _config(out, segmentation={"method": "autoencoder"}, drift={"enabled": False}, training={"tile_size": 32, "min_steps": 300}),
        echo=lambda line: None,
    )
    card = read_card(out / "model.safetensors")
    assert card["architecture"] == "Autoencoder"
    # trained as a denoiser, for at least min_steps optimiser steps
    tiles = TileDataset(out / "training" / "tiles.zarr", split="train")
    assert card["training"]["added_noise"] == DENOISING_NOISE
    assert card["training"]["epochs"] * -(-len(tiles) // 16) >= 300
    assert open_zarr(out / "prediction.zarr").attrs["quantity"] == "reconstruction"
    masks = open_zarr(out / "raw.zarr" / "labels" / "masks").values  # drift off: the masks label raw.zarr
    truth = open_zarr(out / "raw.truth" / "labels.zarr").values > 0
    raw = open_zarr(out / "raw.zarr").values.astype(np.float32)
    recorded = raw > 0.05 * np.median(raw)  # black drift borders are not scored
    iou = (masks & truth & recorded).sum() / ((masks | truth) & recorded).sum()
    assert iou > 0.8  # 0.86 measured; the classical route gets 0.85 on this small movie
    assert summary["particles_first_frame"] > 0


def test_a_movie_without_particles_warns_instead_of_reporting_silence(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    bare = rng.poisson(400.0, size=(8, 64, 64)).astype(np.uint16)  # a bare support: shot noise only
    # ImageJ calibration: 2 px per nm, 1 s per frame
    tifffile.imwrite(tmp_path / "bare.tif", bare, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm", "finterval": 1.0, "axes": "TYX"})
    data = json.loads(json.dumps(_SMALL))
    data["input"] = {"path": str(tmp_path / "bare.tif")}
    data["output"]["folder"] = str(tmp_path / "out")
    data["drift"] = {"enabled": False}
    # the warning says which contrast and settings the recipe used, and what to try
    with pytest.warns(UserWarning, match=r"no particles in any of the 8 frames .* 'threshold'.* particles = 'dark'.*"
                      r"sigma_nm = .*try \[segmentation\] particles = 'bright'"):
        summary = run(Config.from_dict(data), echo=lambda line: None)
    assert summary["particles_first_frame"] == 0
    # no particles: the fits and mean sizes are undefined, written as null, and every JSON parses strictly
    out = tmp_path / "out"
    for name in ("summary.json", "coarsening.json", "provenance.json"):
        _strict_json(out / name)
    assert _strict_json(out / "summary.json")["mean_diameter_first_nm"] is None
    assert pd.read_parquet(out / "particles.parquet").empty

    # the report says there is nothing, rather than print nan or an empty fit as numbers
    page = (tmp_path / "out" / "report.html").read_text()
    assert "No particles were measured in any frame" in page and "undetermined" in page
    assert "nan nm" not in page and ">nan<" not in page
    from temflow.pipeline.runner import format_summary

    text = "\n".join(format_summary(summary))
    assert "n undetermined" in text and "mean diameter  none" in text and "insufficient evidence" in text

    decided = json.loads((tmp_path / "out" / "provenance.json").read_text())["decided"]["masks"]
    assert decided["particles"] == "dark" and "no blob" in decided["particles_reason"]
    assert "particles: dark" in (tmp_path / "out" / "report.html").read_text()


def test_a_full_disk_mid_run_is_one_line_and_a_rerun_with_space_finishes(tmp_path, monkeypatch):
    import errno

    from temflow.errors import DiskFullError
    from temflow.io import store

    out = tmp_path / "out"
    original = store._write_block

    def filling(block, path, index, slices):
        if path.endswith(("masks.zarr", "labels/masks")) and index[0] > 0:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original(block, path, index, slices)

    config = _config(out, input={"frames_per_chunk": 4})
    with monkeypatch.context() as patch:
        patch.setattr(store, "_write_block", filling)
        with pytest.raises(DiskFullError) as info:
            run(config)
    message = str(info.value)
    assert "\n" not in message and str(out / "corrected.zarr" / "labels" / "masks") in message
    assert "run the same run file again" in message
    assert not (out / "stages" / "masks.json").exists()
    lines: list[str] = []
    summary = run(config, echo=lines.append)  # space freed
    assert "  masks      resuming..." in lines and summary["frames"] == 16
    assert not any("took over" in line for line in lines)  # the failed run released its lock


def test_the_masks_stage_works_in_bounded_chunks_whatever_the_stores(tmp_path, monkeypatch):
    from temflow.io.store import save_zarr
    from temflow.pipeline import stages
    from temflow.synthetic.generator import make_movie

    movie = make_movie(frames=12, size=48, radius_nm=(2.0, 4.0), seed=2).movie
    store = save_zarr(movie, tmp_path / "corrected.zarr", chunks=12)  # one long chunk, as the readers make
    monkeypatch.setattr(stages, "_MASK_TASK_PIXELS", 5 * 48 * 48)
    state = stages.Run(config=_config(tmp_path / "out"), folder=tmp_path, echo=lambda line: None)
    state.results["drift"] = {"movie": str(store)}
    result = stages.STAGE_FUNCTIONS["masks"](state, False)
    masks = open_zarr(result["masks"])
    assert masks.data.chunks[0] == (5, 5, 2)
    from temflow.analysis.threshold import threshold_particles

    np.testing.assert_array_equal(masks.values, threshold_particles(movie.compute()).values)
