"""The temflow command: each subcommand on real files; errors are one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import tifffile
from click.testing import CliRunner

import temflow
from temflow.cli import main
from temflow.io.store import is_complete
from temflow.synthetic.generator import make_movie


def test_synth_then_info_then_convert(tmp_path):
    runner = CliRunner()
    store = tmp_path / "movie.zarr"
    result = runner.invoke(main, ["synth", str(store), "--frames", "6", "--size", "48", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "movie.truth" / "particles.parquet").exists()
    expected = make_movie(frames=6, size=48, seed=2).movie
    np.testing.assert_array_equal(temflow.open_zarr(store).values, expected.values)

    result = runner.invoke(main, ["info", str(store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["shape"] == [6, 48, 48] and info["dtype"] == "uint16"
    assert info["pixel_size_nm"] == [0.5, 0.5] and info["frame_interval_s"] == 1.0
    assert info["dims"] == ["time", "y", "x"]

    result = runner.invoke(main, ["info", str(store)])
    assert result.exit_code == 0 and "uint16" in result.output
    assert "source: temflow.synthetic.make_movie\n" in result.output  # one string, not one character per item

    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, expected.values)
    out = tmp_path / "converted.zarr"
    result = runner.invoke(main, ["convert", str(tif), str(out), "--frame-interval-s", "0.25", "--pixel-size-nm", "0.5"])
    assert result.exit_code == 0, result.output
    converted = temflow.open_zarr(out)
    np.testing.assert_array_equal(converted.values, expected.values)
    np.testing.assert_allclose(np.diff(converted.time.values), 0.25)
    np.testing.assert_allclose(np.diff(converted.x.values), 0.5)
    # without a calibration the user is told, in one line, what was assumed and how to fix it
    result = runner.invoke(main, ["info", str(tif)])
    assert result.exit_code == 0
    assert "temflow: warning:" in result.output and "--pixel-size-nm" in result.output
    assert "pixel_size_nm=" not in result.output  # the hint names the flag, not the Python keyword


def _one_line_error(args):
    result = subprocess.run([sys.executable, "-m", "temflow.cli", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_errors_are_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nothing.dm4"
    assert str(missing) in _one_line_error(["info", str(missing)])
    empty = tmp_path / "empty.ser"
    empty.write_bytes(b"")
    assert str(empty) in _one_line_error(["info", str(empty)])
    store = tmp_path / "a.zarr"
    temflow.save_zarr(make_movie(frames=2, size=16).movie, store)
    line = _one_line_error(["convert", str(store), str(store)])
    assert "already exists" in line and "--overwrite" in line and "overwrite=True" not in line
    odd = tmp_path / "movie.xyz"
    odd.write_bytes(b"\x00" * 64)
    line = _one_line_error(["info", str(odd)])
    assert "--format VALUE" in line and "format=" not in line


def test_verbose_shows_the_traceback_quiet_prints_nothing(tmp_path):
    missing = tmp_path / "nothing.dm4"
    loud = subprocess.run([sys.executable, "-m", "temflow.cli", "-v", "info", str(missing)], capture_output=True, text=True, timeout=120)
    assert loud.returncode == 2 and "Traceback" in loud.stderr and str(missing) in loud.stderr.splitlines()[-1]
    store = tmp_path / "m.zarr"
    temflow.save_zarr(make_movie(frames=3, size=16).movie, store)
    quiet = CliRunner().invoke(main, ["-q", "convert", str(store), str(tmp_path / "copy.zarr")])
    assert quiet.exit_code == 0 and quiet.output == ""
    assert CliRunner().invoke(main, ["-v", "-q", "info", str(store)]).exit_code == 2


def test_progress_goes_to_stderr_only_on_a_terminal(tmp_path):
    store = tmp_path / "m.zarr"
    temflow.save_zarr(make_movie(frames=6, size=16, chunks=2).movie, store)
    # a pipe: the result line on stdout, nothing at all on stderr (no bar, no escape codes)
    piped = subprocess.run([sys.executable, "-m", "temflow.cli", "convert", str(store), str(tmp_path / "c.zarr"),
                            "--frames-per-chunk", "2"], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and piped.stdout.startswith("wrote ") and "\r" not in piped.stdout


def test_help_and_version_import_nothing_heavy():
    # the measured cost of --help was 6 s: dask.array, scipy.signal, pandas and xarray at import
    code = (
        "import sys; from temflow.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'dask', 'xarray', 'pandas', 'scipy', 'zarr', 'torch', 'distributed') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    version = subprocess.run([sys.executable, "-m", "temflow.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert version.stdout.strip() == f"temflow, version {temflow.__version__}"


def test_predict_command_writes_probabilities_and_masks(tmp_path):
    import torch

    from temflow.segmentation.inference import predict
    from temflow.segmentation.models import UNet
    from temflow.segmentation.model_files import save_model

    truth = make_movie(frames=4, size=64, seed=1)
    movie_store = temflow.save_zarr(truth.movie, tmp_path / "movie.zarr")
    torch.manual_seed(0)
    model = save_model(
        UNet(depth=2, width=4).eval(), tmp_path / "unet.safetensors",
        normalisation={"method": "percentile", "low": 100.0, "high": 600.0}, tile_size=32,
    )
    out, masks = tmp_path / "p.zarr", tmp_path / "m.zarr"
    result = CliRunner().invoke(
        main, ["predict", str(movie_store), str(model), str(out), "--masks", str(masks), "--tile", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "Dask dashboard: http://127.0.0.1:" in result.output
    expected = predict(temflow.open_zarr(movie_store).compute(), model, tile=64)
    np.testing.assert_allclose(temflow.open_zarr(out).values, expected.values, atol=1e-5)
    np.testing.assert_array_equal(temflow.open_zarr(masks).values, expected.values > 0.5)


def test_pixel_size_flag_silences_the_default_pixel_warning(tmp_path):
    tif = tmp_path / "bare.tif"
    tifffile.imwrite(tif, np.zeros((1, 8, 8), "uint16"))
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(tif), "--json"])
    assert result.exit_code == 0
    assert "1 px = 1 nm" in result.output and "--pixel-size-nm" in result.output and "[input]" in result.output
    result = runner.invoke(main, ["info", str(tif), "--json", "--pixel-size-nm", "0.2"])
    assert result.exit_code == 0 and "warning" not in result.output
    info = json.loads(result.output)
    assert info["pixel_size_nm"] == [0.2, 0.2]
    assert not any("1 px = 1 nm" in note for note in info["metadata"].get("notes", []))


def _tif(tmp_path, frames=6):
    movie = make_movie(frames=frames, size=32, seed=2).movie
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, movie.values)
    return path, movie


def test_convert_resumes_after_a_kill_and_suggests_only_real_flags(tmp_path):
    tif, movie = _tif(tmp_path)
    store = tmp_path / "out.zarr"
    convert = ["convert", str(tif), str(store), "--frames-per-chunk", "2", "--pixel-size-nm", "0.5", "--frame-interval-s", "1"]
    # a conversion killed after its first chunk: store created, incomplete
    code = (
        "import sys; from temflow.io import store as s; from temflow.cli import main\n"
        "orig = s._write_block; n = [0]\n"
        "def die(*a):\n"
        "    n[0] += 1\n"
        "    if n[0] > 1: import os; os._exit(9)\n"
        "    return orig(*a)\n"
        "s._write_block = die\n"
        "import dask; dask.config.set(scheduler='synchronous')\n"
        f"main({convert!r})\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    assert store.exists() and not is_complete(store)
    line = _one_line_error(convert)
    assert "--resume" in line and "--overwrite" in line and "=True" not in line
    result = CliRunner().invoke(main, [*convert, "--resume"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(temflow.open_zarr(store).values, movie.values)
    result = CliRunner().invoke(main, [*convert, "--resume"])
    assert result.exit_code == 0 and "already complete" in result.output
    assert "exclude each other" in _one_line_error([*convert, "--resume", "--overwrite"])


def test_convert_on_a_full_disk_says_so_in_one_line_and_resume_recovers(tmp_path):
    tif, movie = _tif(tmp_path)
    store = tmp_path / "out.zarr"
    convert = ["convert", str(tif), str(store), "--frames-per-chunk", "2", "--pixel-size-nm", "0.5", "--frame-interval-s", "1"]
    code = (
        "import errno; from temflow.io import store as s; from temflow.cli import main\n"
        "orig = s._write_block; n = [0]\n"
        "def full(*a):\n"
        "    n[0] += 1\n"
        "    if n[0] > 1: raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return orig(*a)\n"
        "s._write_block = full\n"
        "import dask; dask.config.set(scheduler='synchronous')\n"
        f"main({convert!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "no space left" in lines[0] and str(store) in lines[0] and "--resume" in lines[0]
    result = CliRunner().invoke(main, [*convert, "--resume"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(temflow.open_zarr(store).values, movie.values)


# --- the holder log and dose flags of `run` and `watch` ---------------------------------------------

_RUN_SETTINGS = """
[input]
path = "{path}"
frame_interval_s = 0.5
[output]
folder = "{out}"
figure_formats = ["png"]
[segmentation]
method = "threshold"
[drift]
enabled = false
[cluster]
n_workers = 1
threads_per_worker = 1
processes = false
dashboard_address = "127.0.0.1:0"
"""


def _frames_and_log(tmp_path):
    """Six 48 x 48 frames (DM4, 0.5 nm pixels) and a Protochips log: 300 °C + 20 °C/s, a record every 0.1 s."""
    from formats_writers import write_dm, write_protochips

    movie = make_movie(frames=6, size=48, pixel_size_nm=0.5, radius_nm=(2.0, 4.0), seed=4, jumps=0).movie.values
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(movie):
        write_dm(folder / f"frame_{index:02d}.dm4", frame, version=4, pixel_size=0.5)
    t_ms = np.arange(0.0, 20_001.0, 100.0)
    log = write_protochips(tmp_path / "heating.csv", ["Channel A Temperature"], {"Temperature": "Degrees C"}, t_ms,
                           300.0 + 20.0 * t_ms / 1000, calibration_first=True)
    return folder, log, movie


def _run_file(tmp_path, name, folder, insitu=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(_RUN_SETTINGS.format(path=folder, out=tmp_path / name) + insitu)
    return path


def test_run_takes_the_holder_log_and_dose_from_flags_as_from_the_run_file(tmp_path, monkeypatch):
    import pandas as pd

    from temflow.pipeline.runner import run

    folder, log, movie = _frames_and_log(tmp_path)
    by_file = _run_file(tmp_path, "by_file", folder, f'[insitu]\nholder_log = "{log}"\nclock_offset_s = 2.0\n'
                                                     "counts_per_electron = 8.0\nexposure_s = 0.5\n")
    run(by_file)
    # the flags replace a wrong offset of the run file; the log's path is the working folder's
    by_flags = _run_file(tmp_path, "by_flags", folder, "[insitu]\nclock_offset_s = 99.0\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", str(by_flags), "--holder-log", "heating.csv", "--clock-offset-s", "2",
                                       "--counts-per-electron", "8", "--exposure-s", "0.5"])
    assert result.exit_code == 0, result.output
    expected = pd.read_parquet(tmp_path / "by_file" / "context.parquet")
    context = pd.read_parquet(tmp_path / "by_flags" / "context.parquet")
    pd.testing.assert_frame_equal(context, expected)
    # the physics: the log's temperature at movie time + offset; median counts / 8 / (5 Å)² per frame
    np.testing.assert_allclose(context["temperature_C"], 300.0 + 20.0 * (context["time"] + 2.0), rtol=1e-9)
    np.testing.assert_allclose(context["frame_dose_e_per_A2"],
                               np.median(movie.reshape(6, -1).astype(float), axis=1) / 8.0 / 25.0, rtol=1e-12)
    # where the values came from: provenance and the report
    provenance = json.loads((tmp_path / "by_flags" / "provenance.json").read_text())
    assert provenance["overrides"]["insitu.clock_offset_s"] == {"value": 2.0, "origin": "--clock-offset-s",
                                                               "replaced": 99.0}
    assert provenance["overrides"]["insitu.holder_log"]["value"] == str(log)
    assert provenance["config"]["insitu"]["counts_per_electron"] == 8.0
    assert json.loads((tmp_path / "by_file" / "provenance.json").read_text())["overrides"] == {}
    report = (tmp_path / "by_flags" / "report.html").read_text()
    assert "--clock-offset-s 2.0 replaced [insitu] clock_offset_s = 99.0" in report


def test_bad_holder_and_dose_flags_are_one_line_naming_the_flag(tmp_path):
    folder, log, _ = _frames_and_log(tmp_path)
    run_file = _run_file(tmp_path, "out", folder)
    bad = [
        (["--holder-log", str(tmp_path / "missing.csv")], "--holder-log '" + str(tmp_path / "missing.csv")),
        (["--holder-log", str(log), "--clock-offset-s", "nan"], "--clock-offset-s must be a finite number; got nan"),
        (["--clock-offset-s", "inf"], "--clock-offset-s must be a finite number"),
        (["--clock-offset-s", "two"], "--clock-offset-s': 'two' is not a valid float"),
        (["--counts-per-electron", "-8"], "--counts-per-electron must be positive; got -8.0"),
        (["--holder-vendor", "gatan"], "'--holder-vendor': 'gatan' is not one of"),
        (["--holder-log", str(log), "--holder-vendor", "generic"], "--holder-vendor 'generic' needs holder_time_column"),
    ]
    for command in (["run", str(run_file)], ["watch", str(folder), "--output", str(tmp_path / "w"), "--no-finish"]):
        for flags, message in bad:
            result = CliRunner().invoke(main, [*command, *flags])
            assert result.exit_code == 2, (command, flags, result.output)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("temflow: error: "), result.stderr
            assert message in lines[0], (lines[0], message)
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()  # refused before anything ran
