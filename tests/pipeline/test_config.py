"""The run file: typed, validated, with errors that name the key and the file."""

from __future__ import annotations

import pytest

from temflow.pipeline.config import Config, load_config


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_a_full_file_is_read_with_types_and_paths_relative_to_it(tmp_path):
    (tmp_path / "movie.tif").write_bytes(b"")
    path = _write(
        tmp_path,
        """
[input]
path = "movie.tif"
frame_interval_s = 0.5

[output]
folder = "results"
figure_formats = ["png"]

[drift]
upsample = 50

[segmentation]
method = "threshold"

[analysis]
max_step_nm = 4
""",
    )
    config = load_config(path)
    assert config.input.path == str(tmp_path / "movie.tif")
    assert config.folder == tmp_path / "results"
    assert config.input.frame_interval_s == 0.5
    assert config.drift.upsample == 50
    assert config.analysis.max_step_nm == 4.0 and isinstance(config.analysis.max_step_nm, float)
    assert config.segmentation.method == "threshold"
    assert config.to_dict()["drift"]["upsample"] == 50


def test_synthetic_input_and_defaults():
    config = Config.from_dict({"input": {"synthetic": {"frames": 30, "mechanism": "coalescence"}}})
    assert config.input.synthetic.frames == 30
    assert config.input.synthetic.mechanism == "coalescence"
    assert config.segmentation.method == "unet"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[input]\npath='m.tif'\n[drift]\nupsampel = 3\n", r"unknown key 'upsampel' in \[drift\]"),
        ("[input]\npath='m.tif'\n[drfit]\n", "unknown key 'drfit' in the top level"),
        ("[input]\npath='m.tif'\n[drift]\nupsample = 'ten'\n", "drift.upsample must be an integer"),
        ("[input]\npath='m.tif'\n[drift]\nupsample = -2\n", "drift.upsample must be positive"),
        ("[input]\npath='m.tif'\n[segmentation]\nmethod = 'magic'\n", "segmentation.method must be one of"),
        ("[input]\npath='m.tif'\n[output]\nreport = '../../etc/report.html'\n", "inside the output folder"),
        ("[input]\npath='m.tif'\n[output]\nreport = '/tmp/report.html'\n", "inside the output folder"),
        ("[output]\nfolder = 'x'\n", "exactly one of 'path' or a"),
        ("[input]\npath='m.tif'\n[training]\nlabels = 'truth'\n", "needs a synthetic input"),
        ("[input]\npath='m.tif'\n[segmentation]\nmodel = 'nope.safetensors'\n", "does not exist"),
        ("[input\npath='m.tif'\n", "not valid TOML"),
        ("[input]\npath='m.tif'\n[segmentation]\nmethod = 'autoencoder'\nthreshold = 1.5\n", "darkness .* between 0 and 1"),
        ("[input]\npath='m.tif'\n[segmentation]\nmethod = 'unet'\nthreshold = 0\n", "probability and must be between 0 and 1"),
        ("[input]\npath='m.tif'\n[segmentation]\nmethod = 'threshold'\nthreshold = 0.2\n", "sets its own"),
        ("[input]\npath='m.tif'\n[training]\nadded_noise = -0.1\n", "training.added_noise must be non-negative"),
        ("[input]\npath='m.tif'\n[training]\nmin_steps = 1.5\n", "training.min_steps must be an integer"),
        ("[input]\npath='m.tif'\n[segmentation]\nparticles = 'white'\n", "segmentation.particles must be one of"),
        ("[input]\npath='m.tif'\n[segmentation]\nsigma_nm = -1\n", "segmentation.sigma_nm must be non-negative"),
        ("[input]\npath='m.tif'\n[segmentation]\nmax_radius_nm = 0\n", "segmentation.max_radius_nm must be positive"),
        ("[input]\npath='m.tif'\n[training]\nsplit = 'random'\n", "training.split must be one of"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, match):
    (tmp_path / "m.tif").write_bytes(b"")
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(ValueError, match="does not exist"):
        load_config("no/such/run.toml")
