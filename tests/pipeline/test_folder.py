"""The output folder: symbolic links planted in it never lead the pipeline's writes outside."""

from __future__ import annotations

import pytest

from temflow.pipeline._folder import check_output_folder
from temflow.pipeline.config import Config
from temflow.pipeline.runner import run

_CLUSTER = {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"}


@pytest.mark.parametrize("link", ["figures", "training", "stages", "report.html", "drift.zarr/c"])
def test_a_run_refuses_a_link_out_of_its_folder_before_writing(tmp_path, link):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    planted = out / link
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside / "target" if link.endswith(".html") else outside)  # dangling or not
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)},
                               "cluster": _CLUSTER}, source="run.toml")
    with pytest.raises(ValueError, match="symbolic link .* points outside it") as info:
        run(config)
    assert "run.toml" in str(info.value) and str(planted) in str(info.value)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [link.split("/")[0]]  # nothing else written


def test_links_that_stay_inside_and_a_linked_folder_are_allowed(tmp_path):
    real = tmp_path / "real"
    (real / "figures").mkdir(parents=True)
    (real / "latest").symlink_to(real / "figures")
    (tmp_path / "chosen").symlink_to(real)  # the user may give a path through a link
    check_output_folder(tmp_path / "chosen", source="run.toml")
    check_output_folder(real, source="run.toml")


def test_a_link_planted_while_the_run_goes_on_stops_the_next_stage(tmp_path, monkeypatch):
    from temflow.pipeline import stages

    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    load = stages.STAGE_FUNCTIONS["load"]

    def load_then_plant(state, resume):
        result = load(state, resume)
        (out / "figures").symlink_to(outside)  # as another process could, once the run has started
        return result

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "load", load_then_plant)
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)},
                               "cluster": _CLUSTER}, source="run.toml")
    with pytest.raises(ValueError, match="symbolic link .* points outside it"):
        run(config)
    assert list(outside.iterdir()) == []
    assert not (out / "stages" / "drift.json").exists()  # the stage after the planting never ran


def _planting(monkeypatch, stage, plant, *, before):
    """Make ``stage`` plant a link as it runs (before or after its own writes), as another process could."""
    from temflow.pipeline import stages

    body = stages.STAGE_FUNCTIONS[stage]

    def body_with_planting(state, resume):
        if before:
            plant()
        result = body(state, resume)
        if not before:
            plant()
        return result

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, stage, body_with_planting)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_link_planted_during_a_stage_does_not_redirect_its_writes(tmp_path, monkeypatch):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()

    def plant():  # the drift stage is about to write figures/drift.png and .pdf into this folder
        import shutil

        shutil.rmtree(out / "figures", ignore_errors=True)
        (out / "figures").symlink_to(outside)

    _planting(monkeypatch, "drift", plant, before=True)
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)},
                               "cluster": _CLUSTER}, source="run.toml")
    with pytest.raises(ValueError, match="figures' is a symbolic link inside the output folder") as info:
        run(config)
    assert "\n" not in str(info.value) and "remove the link" in str(info.value)
    assert _files(outside) == []  # nothing written through the link
    assert not (out / "stages" / "drift.json").exists()  # the stage is not marked done: a rerun redoes it


def test_a_link_planted_at_a_file_name_is_replaced_not_written_through(tmp_path):
    from temflow._json import write_json
    from temflow._nofollow import confined_to
    from temflow.analysis.tables import write_parquet
    from temflow.plots import save_figure

    import pandas as pd
    from matplotlib.figure import Figure

    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "figures").mkdir(parents=True)
    outside.mkdir()
    victim = outside / "bashrc"
    victim.write_text("keep me")
    for name in ("summary.json", "table.parquet", "figures/plot.png"):
        (out / name).symlink_to(victim)
    with confined_to(out):
        write_json(out / "summary.json", {"a": 1})
        write_parquet(pd.DataFrame({"frame": [0]}), out / "table.parquet")
        save_figure(Figure(), out / "figures" / "plot", formats=["png"])
    assert victim.read_text() == "keep me"
    for name in ("summary.json", "table.parquet", "figures/plot.png"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert _files(out) == ["figures", "figures/plot.png", "summary.json", "table.parquet"]  # no temporary left


def test_a_store_is_not_created_through_a_linked_folder(tmp_path):
    import numpy as np

    from temflow import as_movie
    from temflow._nofollow import LinkInOutputError, confined_to
    from temflow.io.store import save_zarr

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "training").symlink_to(outside)
    movie = as_movie(np.zeros((2, 8, 8), dtype="uint16"), pixel_size_nm=1.0)
    with confined_to(out), pytest.raises(LinkInOutputError, match="training' is a symbolic link"):
        save_zarr(movie, out / "training" / "tiles.zarr")
    assert _files(outside) == []
    save_zarr(movie, out / "movie.zarr")  # outside a pipeline run (no confining folder) nothing changes
    assert (out / "movie.zarr" / "zarr.json").is_file()


def test_a_link_planted_where_no_temflow_writer_looks_stops_the_run_naming_the_stage(tmp_path, monkeypatch):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    _planting(monkeypatch, "drift", lambda: (out / "corrected.zarr" / "elsewhere").symlink_to(outside), before=False)
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)},
                               "cluster": _CLUSTER}, source="run.toml")
    with pytest.raises(ValueError, match="appeared while the 'drift' stage ran") as info:
        run(config)
    assert "\n" not in str(info.value) and "elsewhere" in str(info.value)
    assert not (out / "stages" / "drift.json").exists()
    assert _files(outside) == []


def test_without_openat_links_are_still_refused_by_path(tmp_path, monkeypatch):
    # where openat/renameat are missing (Windows), each folder is checked by path instead
    import numpy as np

    from temflow import _nofollow, as_movie
    from temflow._json import write_json
    from temflow._nofollow import LinkInOutputError, confined_to
    from temflow.io.store import save_zarr

    monkeypatch.setattr(_nofollow, "_AT", False)
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "victim.json").write_text("keep me")
    (out / "figures").symlink_to(outside)
    (out / "summary.json").symlink_to(outside / "victim.json")
    movie = as_movie(np.zeros((2, 8, 8), dtype="uint16"), pixel_size_nm=1.0)
    with confined_to(out):
        with pytest.raises(LinkInOutputError, match="figures' is a symbolic link"):
            write_json(out / "figures" / "a.json", {"a": 1})
        with pytest.raises(LinkInOutputError, match="figures' is a symbolic link"):
            save_zarr(movie, out / "figures" / "m.zarr")
        write_json(out / "summary.json", {"a": 1})
        save_zarr(movie, out / "m.zarr")
    assert (outside / "victim.json").read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.json"]
    assert not (out / "summary.json").is_symlink() and (out / "m.zarr" / "zarr.json").is_file()
