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


@pytest.mark.parametrize("value, expected", [("0.384", 0.384), ("[0.5, 0.25]", [0.5, 0.25])])
def test_the_run_file_sets_the_calibration(tmp_path, value, expected):
    (tmp_path / "m.tif").write_bytes(b"")
    config = load_config(_write(tmp_path, f"[input]\npath='m.tif'\npixel_size_nm = {value}\nframe_interval_s = 2\n"))
    assert config.input.pixel_size_nm == expected and config.input.frame_interval_s == 2.0


# --------------------------------------------------------------------------- hostile run files


def _float_keys():
    """Every float-valued key of every section (``section.key`` or ``input.synthetic.key``)."""
    import dataclasses
    import typing

    from temflow.pipeline import config as module

    sections = {"input": module.InputConfig, "input.synthetic": module.SyntheticConfig,
                "output": module.OutputConfig, "cluster": module.ClusterConfig, "drift": module.DriftConfig,
                "segmentation": module.SegmentationConfig, "training": module.TrainingConfig,
                "inference": module.InferenceConfig, "analysis": module.AnalysisConfig}
    keys = []
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            tp = hints[field.name]
            if tp is float or float in typing.get_args(tp) or typing.get_args(tp) == (float,):
                keys.append(f"{section}.{field.name}")
    return keys


FLOAT_KEYS = _float_keys()


def test_the_float_keys_are_all_found():
    # the parametrisation below must cover every float key, including lists of floats
    assert {"input.frame_interval_s", "input.synthetic.radius_nm", "training.learning_rate",
            "segmentation.threshold", "analysis.max_step_nm"} <= set(FLOAT_KEYS)
    assert len(FLOAT_KEYS) >= 10


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_nan_and_inf_are_refused_for_every_float_key(tmp_path, key, value):
    section, name = key.rsplit(".", 1)
    literal = f"[{value}, 2.0]" if name == "radius_nm" else value
    base = "[input.synthetic]\nframes = 4\n" if section == "input.synthetic" else "[input]\npath = 'm.tif'\n"
    if section == "input.synthetic":
        text = base + f"{name} = {literal}\n"
    elif section == "input":
        text = base + f"{name} = {literal}\n"
    else:
        text = base + f"[{section}]\n{name} = {literal}\n"
    (tmp_path / "m.tif").write_bytes(b"")
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="must be a finite number") as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and name in message


@pytest.mark.parametrize(
    "text, match",
    [
        ("[input]\npath='m.tif'\npixel_size_nm = -1\n", "input.pixel_size_nm must be positive"),
        ("[input]\npath='m.tif'\npixel_size_nm = [1, 2, 3]\n", r"input.pixel_size_nm must be one number or \[dy, dx\]"),
        ("[input]\npath='m.tif'\npixel_size_nm = 'big'\n", "input.pixel_size_nm must be"),
        ("[input.synthetic]\nframes = 4\n[input]\npixel_size_nm = 1\n", "are for files"),
    ],
)
def test_bad_calibration_keys(tmp_path, text, match):
    (tmp_path / "m.tif").write_bytes(b"")
    with pytest.raises(ValueError, match=match):
        load_config(_write(tmp_path, text))


def test_run_file_calibration_reaches_the_movie_and_its_provenance(tmp_path):
    """An uncalibrated file: the run file's keys calibrate it, no "1 px = 1 nm" warning, provenance says "user"."""
    import warnings

    import numpy as np
    import tifffile

    from temflow.io.store import open_zarr
    from temflow.pipeline.stages import STAGE_FUNCTIONS, Run

    tifffile.imwrite(tmp_path / "m.tif", np.zeros((3, 8, 8), "uint16"), photometric="minisblack")
    config = load_config(_write(tmp_path, "[input]\npath='m.tif'\npixel_size_nm = [0.5, 0.25]\n"
                                          "frame_interval_s = 2\n[output]\nfolder = 'out'\n"))
    config.folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = STAGE_FUNCTIONS["load"](Run(config=config, folder=config.folder, echo=lambda line: None), False)
    movie = open_zarr(result["movie"])
    np.testing.assert_allclose(np.diff(movie.y.values), 0.5)
    np.testing.assert_allclose(np.diff(movie.x.values), 0.25)
    np.testing.assert_allclose(np.diff(movie.time.values), 2.0)
    calibration = result["calibration"]
    assert calibration["source"] == {"pixel_size": "user", "time": "user"}
    assert calibration["pixel_size_nm"] == [0.5, 0.25] and calibration["frame_interval_s"] == 2.0
    assert not any("1 px = 1 nm" in note for note in calibration["notes"])
    assert any("given by the user" in note for note in calibration["notes"])


@pytest.mark.parametrize(
    "text, match",
    [
        ('[output]\nreport = "rep\\u0000ort.html"\n', "NUL character"),
        ('[output]\nfolder = "res\\u0000ults"\n', "NUL character"),
        ("[output]\nreport = 'sub/report.html'\n", "file name without folders"),
        ("[output]\nreport = 'sub\\\\report.html'\n", "file name without folders"),
        ("[cluster]\nn_workers = 10000\n", "cluster.n_workers must be at most"),
        ("[cluster]\nthreads_per_worker = 100000\n", "cluster.threads_per_worker must be at most"),
        ("[cluster]\nmemory_limit = 'lots'\n", "cluster.memory_limit must be 'auto' or a size"),
        ("[cluster]\nmemory_limit = '0.5'\n", "between 128 MiB and 1 PiB"),
        ("[cluster]\nmemory_limit = '1kB'\n", "between 128 MiB and 1 PiB"),
        ("[cluster]\nmemory_limit = '99999 PB'\n", "between 128 MiB and 1 PiB"),
        ("[cluster]\nscheduler = 'http://10.0.0.1:8786'\n", "cluster.scheduler must look like"),
        ("[cluster]\nscheduler = 'tcp://10.0.0.1'\n", "cluster.scheduler must look like"),
        ("[cluster]\ndashboard_address = 'http://0.0.0.0:8787'\n", "cluster.dashboard_address must look like"),
        ("[drift]\nupsample = 99999999999999999\n", "drift.upsample must be an integer of at most"),
    ],
)
def test_hostile_values_name_the_key_and_the_file(tmp_path, text, match):
    (tmp_path / "m.tif").write_bytes(b"")
    path = _write(tmp_path, "[input]\npath = 'm.tif'\n" + text)
    with pytest.raises(ValueError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "synthetic, match",
    [("size = 100000", "input.synthetic.size must be at most 8192"),
     ("size = 4096\nframes = 1000", "input.synthetic.frames must be at most 256"),
     ("frames = 10000000", "input.synthetic.frames must be at most"),
     ("radius_nm = [1e-6, 1e-6]", "radius_nm must lie between one pixel"),
     ("size = 64\nradius_nm = [2.0, 1e6]", "radius_nm must lie between .* half the field of view \\(16 nm\\)"),
     ("pixel_size_nm = 1e9", "radius_nm must lie between one pixel")],
)
def test_absurd_synthetic_sizes_are_refused(tmp_path, synthetic, match):
    path = _write(tmp_path, f"[input.synthetic]\n{synthetic}\n")
    with pytest.raises(ValueError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_sane_cluster_values_pass(tmp_path):
    path = _write(tmp_path, "[input.synthetic]\nframes = 4\n[cluster]\nn_workers = 2\nmemory_limit = '4 GiB'\n"
                  "dashboard_address = ':0'\n")
    assert load_config(path).cluster.memory_limit == "4 GiB"
    path = _write(tmp_path, "[input.synthetic]\nframes = 4\n[cluster]\nscheduler = 'tls://10.1.2.3:8786'\n")
    assert load_config(path).cluster.scheduler == "tls://10.1.2.3:8786"


def test_an_unreachable_scheduler_fails_early_naming_the_key_and_the_file(tmp_path):
    import socket
    import time

    from temflow.pipeline.runner import run

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = _write(tmp_path, f"[input.synthetic]\nframes = 4\nsize = 32\n[cluster]\nscheduler = 'tcp://127.0.0.1:{port}'\n")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="cluster.scheduler: cannot reach the Dask scheduler") as info:
        run(path)
    assert str(path) in str(info.value)
    assert time.perf_counter() - started < 10


def test_overrides_follow_the_run_files_rules_and_name_their_origin(tmp_path):
    from temflow.pipeline.config import override_config

    log = tmp_path / "heating.csv"
    log.write_text("Time, Notes, Channel A Temperature\n")
    run_file = tmp_path / "run.toml"
    run_file.write_text('[input]\npath = "movie.dm4"\n[insitu]\nclock_offset_s = 4.0\n')
    config = load_config(run_file)
    flags = {"insitu.holder_log": "--holder-log", "insitu.clock_offset_s": "--clock-offset-s",
             "insitu.holder_vendor": "--holder-vendor", "insitu.counts_per_electron": "--counts-per-electron"}
    # a log that starts after the movie: a negative offset, as the run file's key takes it
    new = override_config(config, {"insitu.holder_log": str(log), "insitu.clock_offset_s": -3.5}, origin=flags)
    assert (new.insitu.holder_log, new.insitu.clock_offset_s) == (str(log), -3.5)
    assert new.overrides["insitu.clock_offset_s"] == {"value": -3.5, "origin": "--clock-offset-s", "replaced": 4.0}
    assert new == override_config(config, {"insitu.holder_log": str(log), "insitu.clock_offset_s": -3.5},
                                  origin=flags)  # where a value came from is no setting
    assert config.overrides == {} and "overrides" not in new.to_dict()
    # the run file's own errors, in the flag's name
    run_file.write_text('[input]\npath = "movie.dm4"\n[insitu]\nclock_offset_s = nan\n')
    with pytest.raises(ValueError, match=r"run.toml: insitu.clock_offset_s must be a finite number; got nan"):
        load_config(run_file)
    for values, message in (
        ({"insitu.clock_offset_s": float("nan")}, r"^--clock-offset-s must be a finite number; got nan$"),
        ({"insitu.holder_log": str(tmp_path / "no.csv")}, r"^--holder-log '.*no.csv' does not exist$"),
        ({"insitu.holder_vendor": "gatan"}, r"^--holder-vendor must be one of 'auto', .*; got 'gatan'$"),
        ({"insitu.holder_vendor": "generic"}, r"^--holder-vendor 'generic' needs holder_time_column and holder_columns"),
        ({"insitu.counts_per_electron": 0.0}, r"^--counts-per-electron must be positive; got 0.0$"),
    ):
        with pytest.raises(ValueError, match=message):
            override_config(config, values, origin=flags)
    with pytest.raises(ValueError, match="'insitu.holder_logs' is not a key of the run file"):
        override_config(config, {"insitu.holder_logs": "x"}, origin={"insitu.holder_logs": "--x"})
