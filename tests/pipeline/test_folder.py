"""The output folder: symbolic links planted in it never lead the pipeline's writes outside."""

from __future__ import annotations

import pytest

from temflow.pipeline._folder import check_output_folder
from temflow.pipeline.config import Config
from temflow.pipeline.runner import run


@pytest.mark.parametrize("link", ["figures", "training", "stages", "report.html", "drift.zarr/c"])
def test_a_run_refuses_a_link_out_of_its_folder_before_writing(tmp_path, link):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    planted = out / link
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside / "target" if link.endswith(".html") else outside)  # dangling or not
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)}},
                              source="run.toml")
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
    config = Config.from_dict({"input": {"synthetic": {"frames": 4, "size": 32}}, "output": {"folder": str(out)}},
                              source="run.toml")
    with pytest.raises(ValueError, match="symbolic link .* points outside it"):
        run(config)
    assert list(outside.iterdir()) == []
    assert not (out / "stages" / "drift.json").exists()  # the stage after the planting never ran
