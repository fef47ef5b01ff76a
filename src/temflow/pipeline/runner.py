"""The whole pipeline: one call (``temflow.run(config)``) or one command (``temflow run``).

Stages: load → in-situ context (holder log, electron dose) → drift correction
and crop → (training set → training, when no model is given) → inference → masks → measurement → tracking → coarsening →
report. Every stage writes under one output folder: zarr stores for arrays,
parquet for tables, figures, ``summary.json`` and ``provenance.json``.

Resumable: a stage that finished leaves ``stages/<name>.json`` with a
fingerprint of the configuration it ran with and of the stages before it; a
rerun skips it. A stage interrupted while writing a zarr store resumes it: the
chunks already written are kept (each chunk's marker is written after the chunk
itself), the rest are computed. Tables are written to a temporary file and
renamed, so they are either whole or absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from temflow.errors import DiskFullError, is_disk_full
from temflow._nofollow import confined_to
from temflow.pipeline._folder import check_output_folder
from temflow.pipeline._lock import output_lock
from temflow.pipeline.config import Config, SyntheticConfig, load_config
from temflow.pipeline.stages import STAGE_FUNCTIONS, Run, write_json, model_path

__all__ = ["run", "demo", "demo_config", "STAGES"]

_FULL_BYTES = 16 * 2**20  # under this much free space, a writer's unexplained failure is a full disk
STAGES = ("load", "context", "drift", "train", "infer", "masks", "measure", "track", "coarsening", "report")
_DEPENDENCIES = (
    "numpy", "scipy", "dask", "distributed", "xarray", "zarr", "scikit-image",
    "ncempy", "tifffile", "imagecodecs", "mrcfile", "h5py", "pandas", "pyarrow", "matplotlib", "torch",
    "safetensors", "laptrack",
)  # fmt: skip


def _fingerprint(name: str, settings: Any, upstream: list[str]) -> str:
    text = json.dumps({"stage": name, "settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stage(
    run_state: Run,
    name: str,
    settings: Any,
    upstream: list[str],
    body: Callable[[Run, bool], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``body`` unless a finished marker with the same fingerprint exists.

    ``body(run_state, resume)`` returns a JSON-able result (paths, numbers);
    ``resume`` is True when an interrupted attempt of this same stage exists.
    """
    # a link planted while the run goes on (not only before it) must not lead a stage's writes
    # out of the output folder: look again before each stage
    check_output_folder(run_state.folder, source=run_state.config.source)
    stages = run_state.folder / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(name, settings, [run_state.fingerprints[u] for u in upstream])
    run_state.fingerprints[name] = fp
    done, started = stages / f"{name}.json", stages / f"{name}.started.json"
    if done.exists():
        marker = json.loads(done.read_text())
        if marker.get("fingerprint") == fp:
            run_state.echo(f"  {name:<10} done before, skipped")
            run_state.results[name] = marker["result"]
            run_state.times[name] = marker.get("seconds", 0.0)
            return marker["result"]
        done.unlink()
    resume = started.exists() and json.loads(started.read_text()).get("fingerprint") == fp
    write_json(started, {"fingerprint": fp, "started": time.time()})
    run_state.echo(f"  {name:<10} {'resuming' if resume else 'running'}...")
    t0 = time.perf_counter()
    with confined_to(run_state.folder):  # the stage's files refuse links below the output folder
        result = body(run_state, resume)
    seconds = time.perf_counter() - t0
    # a link planted during the stage, where no temflow writer looked (a zarr chunk's folder),
    # stops the run here, naming the stage, before the stage is marked done
    check_output_folder(run_state.folder, source=run_state.config.source, stage=name)
    write_json(done, {"fingerprint": fp, "result": result, "seconds": seconds, "finished": time.time()})
    started.unlink(missing_ok=True)
    run_state.results[name] = result
    run_state.times[name] = seconds
    run_state.echo(f"  {name:<10} finished in {seconds:.1f} s")
    return result


def run(
    config: Config | str | os.PathLike[str],
    *,
    client: Any = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline; skip the stages already finished with the same settings.

    Computes everything and writes it under ``config.output.folder``.

    Parameters
    ----------
    config : Config or path
        A :class:`temflow.pipeline.config.Config` or the path of a TOML run file.
    client : distributed.Client, optional
        An existing client; default: connect as ``config.cluster`` says (a
        LocalCluster on loopback unless a scheduler address is given).
    echo : callable, optional
        Receives one line per event (the CLI prints them); default: silent.
    progress : bool
        Progress on stderr: bars for the zarr writes and the training batches
        when stderr is a terminal, and one line per training epoch either way.

    Returns
    -------
    dict
        The run's summary (also in ``summary.json``): the report's path, the
        particle statistics, the coarsening verdict and the stage times.

    Raises
    ------
    FolderInUseError
        If another run is writing into the same output folder (the lock file
        ``.temflow.lock`` names its pid and host). A lock left by a run that
        was killed is taken over, with a note through ``echo``.
    DiskFullError
        If the disk fills up; after freeing space, the same call resumes.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    say = echo or (lambda line: None)
    folder = config.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_output_folder(folder, source=config.source)
        # every file the run writes (stage markers, tables, figures, report) refuses links below the folder
        with output_lock(folder, say), confined_to(folder):
            return _run_locked(config, folder, say, client, progress)
    except Exception as exc:
        if not (is_disk_full(exc) or (isinstance(exc, RuntimeError) and _nearly_full(folder))):
            raise
        # one line naming the path; the stages are resumable, so a rerun with space finishes
        where = getattr(exc, "path", None) or getattr(exc, "filename", None) or folder
        raise DiskFullError(
            where,
            "free space on that disk (or set [output] folder to another disk), then run the same run file again: "
            "finished stages are skipped and the interrupted one resumes",
        ) from None


def _nearly_full(folder: Path) -> bool:
    """True if the disk holding ``folder`` has (almost) no space left.

    Some writers (torch's checkpoint writer) report a full disk as a bare
    RuntimeError with no errno: the free space tells.
    """
    try:
        return shutil.disk_usage(folder).free < _FULL_BYTES
    except OSError:
        return False


def _run_locked(
    config: Config, folder: Path, say: Callable[[str], None], client: Any, progress: bool
) -> dict[str, Any]:
    state = Run(config=config, folder=folder, echo=say, client=client, progress=progress)
    if client is not None:
        return _run_stages(state)
    from contextlib import ExitStack

    from temflow.cluster import connect, dashboard_link

    c = config.cluster
    with ExitStack() as stack:
        try:  # an unreachable or wrong scheduler: one line naming the key in seconds, not a traceback after 30 s
            new_client = stack.enter_context(connect(
                c.scheduler or None,
                n_workers=c.n_workers or None,
                threads_per_worker=c.threads_per_worker or None,
                processes=c.processes,
                memory_limit=c.memory_limit,
                dashboard_address=c.dashboard_address,
                tls_ca_file=c.tls_ca_file or None,
                tls_cert=c.tls_cert or None,
                tls_key=c.tls_key or None,
                timeout_s=c.connect_timeout_s,
            ))
        except ValueError as exc:
            raise ValueError(f"{config.source}: {'cluster.scheduler' if c.scheduler else '[cluster]'}: {exc}") from None
        state.client = new_client
        link = dashboard_link(new_client)
        if link:
            say(f"Dask dashboard: {link}")
        return _run_stages(state)


def _provenance(state: Run) -> dict[str, Any]:
    from temflow import __version__

    versions: dict[str, str | None] = {}
    for name in _DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "temflow": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dependencies": versions,
        "config": state.config.to_dict(),
        "config_file": state.config.source,
        # keys the command line's flags replaced: {"insitu.holder_log": {"value", "origin": flag, "replaced"}}
        "overrides": state.config.overrides,
        "inputs": _checksums(state.config),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _checksums(config: Config) -> dict[str, Any]:
    """sha256 of every input file (sampled for files over 2 GiB: size + 64 spread MiB)."""
    if config.input.synthetic is not None:
        return {"synthetic": dataclasses.asdict(config.input.synthetic)}
    root = Path(config.input.path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    out: dict[str, Any] = {}
    for path in files[:10000]:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            if size <= 2 * 2**30:
                for block in iter(lambda: fh.read(2**22), b""):
                    digest.update(block)
                kind = "sha256"
            else:
                for k in range(64):
                    fh.seek(k * (size - 2**20) // 63)
                    digest.update(fh.read(2**20))
                kind = "sha256-sampled-64MiB"
        out[str(path)] = {"bytes": size, kind: digest.hexdigest()}
    return out


def _run_stages(state: Run) -> dict[str, Any]:
    config = state.config
    write_json(state.folder / "provenance.json", _provenance(state))
    settings = config.to_dict()
    seg = settings["segmentation"]
    _stage(state, "load", settings["input"], [], STAGE_FUNCTIONS["load"])
    _stage(state, "context", settings["insitu"], ["load"], STAGE_FUNCTIONS["context"])
    _stage(state, "drift", settings["drift"], ["load"], STAGE_FUNCTIONS["drift"])
    upstream_masks = ["drift"]
    if config.segmentation.method != "threshold":
        if not config.segmentation.model:
            _stage(state, "train", [settings["training"], seg["method"]], ["drift"], STAGE_FUNCTIONS["train"])
            model_source = ["drift", "train"]
        else:
            model_source = ["drift"]
        model_hash = _file_hash(Path(model_path(state) or ""))
        _stage(state, "infer", [settings["inference"], seg["method"], model_hash], model_source, STAGE_FUNCTIONS["infer"])
        upstream_masks = ["infer"]
    _stage(state, "masks", seg, upstream_masks, STAGE_FUNCTIONS["masks"])
    _stage(state, "measure", settings["analysis"]["min_area_nm2"], ["masks", "drift"], STAGE_FUNCTIONS["measure"])
    track_settings = [settings["analysis"][k] for k in ("max_step_nm", "memory", "linker")]
    _stage(state, "track", track_settings, ["measure"], STAGE_FUNCTIONS["track"])
    coarsening_settings = [settings["analysis"]["exclude_border"], settings["insitu"]["step_tolerance_C"],
                           settings["insitu"]["arrhenius_exponent"]]
    _stage(state, "coarsening", coarsening_settings, ["track", "context"], STAGE_FUNCTIONS["coarsening"])
    _stage(state, "report", settings["output"], ["coarsening"], STAGE_FUNCTIONS["report"])
    summary = _summary(state)
    write_json(state.folder / "summary.json", summary)
    provenance = json.loads((state.folder / "provenance.json").read_text())
    provenance["stage_seconds"] = state.times
    if "calibration" in state.results.get("load", {}):
        provenance["calibration"] = state.results["load"]["calibration"]  # the file's, the run file's or a default
    provenance["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(state.folder / "provenance.json", provenance)
    return summary


def _file_hash(path: Path) -> str:
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(state: Run) -> dict[str, Any]:
    r = state.results
    stats = pd.read_parquet(r["coarsening"]["statistics"])
    first, last = (stats.iloc[0], stats.iloc[-1]) if len(stats) else (None, None)
    return {
        "report": r["report"]["report"],
        "folder": str(state.folder),
        "frames": int(len(stats)),
        "particles_first_frame": int(first["count"]) if first is not None else 0,
        "particles_last_frame": int(last["count"]) if last is not None else 0,
        "mean_diameter_first_nm": float(first["mean_diameter"]) if first is not None else float("nan"),
        "mean_diameter_last_nm": float(last["mean_diameter"]) if last is not None else float("nan"),
        "events": r["track"]["event_counts"],
        "growth_exponent": r["coarsening"]["fit"],
        "lsw_rate": r["coarsening"]["fit_lsw"],
        "growth_laws_summary": r["coarsening"].get("growth_laws_summary", ""),
        "size_distribution_closer": r["coarsening"].get("size_distribution_closer", ""),
        "excluded_frames": r["coarsening"].get("excluded_frames", {}),
        "verdict": r["coarsening"]["verdict"],
        "drift": {k: v for k, v in r["drift"].items() if k not in ("movie", "shifts")},
        "stage_seconds": state.times,
    }


def demo_config(
    output: str | os.PathLike[str] = "temflow-demo",
    *,
    frames: int | None = None,
    size: int | None = None,
    scheduler: str | None = None,
) -> Config:
    """The configuration of ``temflow demo``: a synthetic ripening movie, a U-Net trained on weak labels.

    Examples
    --------
    >>> config = demo_config("out", frames=40)
    >>> config.input.synthetic.frames, config.segmentation.method, config.training.labels
    (40, 'unet', 'auto')
    """
    # ~70 particles coarsening by ripening, at a dose where single frames are noisy
    # but particles a few nm across are resolvable
    synthetic = SyntheticConfig(
        frames=frames or 120,
        size=size or 320,
        radius_nm=[1.5, 5.0],
        dose_e_per_px=200.0,
        mechanism="ostwald",
        seed=0,
    )
    data: dict[str, Any] = {
        "input": {"synthetic": dataclasses.asdict(synthetic), "frames_per_chunk": 10},
        "output": {"folder": str(output)},
        "training": {"labels": "auto", "epochs": 10, "tile_size": 64, "frames": 16, "batch_size": 16},
        "inference": {"tile": 512},
        "analysis": {"max_step_nm": 3.0, "memory": 2},
        "cluster": {"scheduler": scheduler or "", "dashboard_address": "127.0.0.1:8787"},
    }
    return Config.from_dict(data, source="temflow demo")


def demo(
    output: str | os.PathLike[str] = "temflow-demo",
    *,
    frames: int | None = None,
    size: int | None = None,
    scheduler: str | None = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Make a synthetic in-situ movie and run the whole pipeline on it.

    Computes everything; writes under ``output``. Prints (through ``echo``)
    each stage, a one-screen summary and the report's path; ``progress`` as
    for :func:`run`.
    """
    say = echo or (lambda line: None)
    config = demo_config(output, frames=frames, size=size, scheduler=scheduler)
    syn = config.input.synthetic
    assert syn is not None
    say(
        f"temflow demo: a synthetic {syn.frames}-frame {syn.size}x{syn.size} movie of ripening nanoparticles; "
        f"a U-Net is trained on weak labels, then the whole analysis -> {config.folder}/"
    )
    summary = run(config, echo=say, progress=progress)
    for line in format_summary(summary):
        say(line)
    corrected = json.loads((Path(summary["folder"]) / "stages" / "drift.json").read_text())["result"]["movie"]
    for line in _truth_lines(Path(summary["folder"]) / "raw.truth", corrected, exclude_border=config.analysis.exclude_border):
        say(line)
    return summary


def _truth_lines(folder: Path, corrected_movie: str, *, exclude_border: bool = True) -> list[str]:
    """What the generator knows, on the same field and with the same border rule as the measurement."""
    from temflow.analysis.coarsening import fit_growth_law, size_statistics, sized_particles
    from temflow.io.store import open_zarr

    particles = pd.read_parquet(folder / "particles.parquet")
    events = pd.read_parquet(folder / "events.parquet")
    parameters = json.loads((folder / "parameters.json").read_text())
    movie = open_zarr(corrected_movie)
    half = 0.5 * float(parameters["pixel_size_nm"])
    y0, y1 = float(movie["y"].min()) - half, float(movie["y"].max()) + half
    x0, x1 = float(movie["x"].min()) - half, float(movie["x"].max()) + half
    # the truth's y, x are in frame-0 coordinates, as the drift-corrected movie's are
    y, x, r = particles["y"], particles["x"], particles["radius"]
    inside = particles["visible"] & (y >= y0) & (y <= y1) & (x >= x0) & (x <= x1)
    seen = particles[inside].assign(
        equivalent_diameter=2 * r[inside],
        touches_border=((y - r < y0) | (y + r > y1) | (x - r < x0) | (x + r > x1))[inside],
    )
    times = np.arange(int(parameters["frames"])) * float(parameters["frame_interval_s"])
    stats = size_statistics(seen, include_border=not exclude_border, times_s=times)
    rows = sized_particles(seen, include_border=not exclude_border)
    free = fit_growth_law(stats, particles=rows)
    fixed = fit_growth_law(stats, exponent=3.0, particles=rows)
    where = set(zip(seen["particle"], seen["frame"]))
    local = events[[(int(p), int(f)) in where or (int(p), int(f) - 1) in where for p, f in zip(events["particle"], events["frame"])]]
    kinds = local["event"].value_counts().to_dict() if len(local) else {}
    with_particles = stats[stats["count"] > 0]
    mechanism = parameters["mechanism"]
    if mechanism in ("ostwald", "mixed"):
        law = f"n = 3, K = {parameters['ripening_rate_nm3_per_s']:.3g} nm³/s (LSW, imposed)"
    else:
        law = "none imposed (migration and coalescence sets no exponent)"
    return [
        "",
        f"ground truth on the same field ({x1 - x0:.0f} x {y1 - y0:.0f} nm after the drift crop, "
        + ("border particles left out" if exclude_border else "border particles kept")
        + "):",
        f"particles      {int(with_particles['count'].iloc[0]) if len(with_particles) else 0} in the first frame -> "
        f"{int(with_particles['count'].iloc[-1]) if len(with_particles) else 0} in the last",
        f"mean diameter  {with_particles['mean_diameter'].iloc[0]:.2f} nm -> {with_particles['mean_diameter'].iloc[-1]:.2f} nm"
        if len(with_particles) else "mean diameter  none",
        "events         " + (", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "none"),
        f"growth law     generator: {law}",
        f"               the same fit on the truth: {free.describe()}; at n = 3: "
        + (f"K = {fixed.rate:.3g} [{fixed.rate_low:.3g}, {fixed.rate_high:.3g}] nm³/s" if fixed.ok else "undetermined"),
    ]


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The one-screen summary printed at the end of a run."""
    fit = summary["growth_exponent"]
    verdict = summary["verdict"]
    events = summary["events"]
    lines = [
        "",
        "measured (drift-corrected, cropped field; border particles left out):",
        f"particles      {summary['particles_first_frame']} in the first frame -> {summary['particles_last_frame']} in the last",
        (
            f"mean diameter  {summary['mean_diameter_first_nm']:.2f} nm -> {summary['mean_diameter_last_nm']:.2f} nm"
            if np.isfinite(summary["mean_diameter_first_nm"]) and np.isfinite(summary["mean_diameter_last_nm"])
            else "mean diameter  none (no particles measured in the first or last frame)"
        ),
        "events         " + (", ".join(f"{v} {k}" for k, v in sorted(events.items())) or "none"),
    ]
    if fit.get("ok"):
        lines.append(
            f"growth law     <r>^n - <r0>^n = K t: n = {fit['n']:.2f} [{fit['n_low']:.2f}, {fit['n_high']:.2f}] "
            f"({fit['confidence']:.0%}, {fit['interval_method']})"
        )
    else:
        lines.append(f"growth law     n undetermined: {fit.get('reason', '')}")
    lsw = summary.get("lsw_rate", {})
    if lsw.get("ok"):
        lines.append(f"               at n = 3: K = {lsw['rate']:.3g} [{lsw['rate_low']:.3g}, {lsw['rate_high']:.3g}] nm³/s")
    if summary.get("growth_laws_summary"):
        lines.append(f"               n = 2, 3, 4 compared: {summary['growth_laws_summary'].split('; free fit')[0]}")
    closer = summary.get("size_distribution_closer", "")
    if closer:
        lines.append(f"size shape     {'closer to ' + closer if not closer.startswith('too few') else 'not compared: ' + closer}")
    excluded = summary.get("excluded_frames", {})
    if excluded:
        lines.append(f"left out       {len(excluded)} frames (blank, unregistered or blurred): {', '.join(map(str, list(excluded)[:10]))}")
    lines.append(f"verdict        {verdict['mechanism']}: {verdict['reason']}")
    drift = summary.get("drift", {})
    if drift.get("max_drift_nm") is not None:
        lines.append(f"drift          up to {drift['max_drift_nm']:.1f} nm, {drift.get('jumps', 0)} jumps, cropped to {drift.get('cropped_shape')}")
    lines.append(f"report         {summary['report']}")
    return lines


