"""The whole pipeline: one call (``temflow.run(config)``) or one command (``temflow run``).

Stages: load → drift correction and crop → (training set → training, when no
model is given) → inference → masks → measurement → tracking → coarsening →
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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from temflow.config import Config, SyntheticConfig, load_config

__all__ = ["run", "demo", "demo_config", "STAGES"]

STAGES = ("load", "drift", "train", "infer", "masks", "measure", "track", "coarsening", "report")
_DEPENDENCIES = (
    "numpy", "scipy", "dask", "distributed", "xarray", "zarr", "scikit-image", "dask-image",
    "ncempy", "tifffile", "mrcfile", "h5py", "pandas", "pyarrow", "matplotlib", "torch",
    "safetensors", "laptrack",
)  # fmt: skip


@dataclass
class _Run:
    """What the stages share during one run."""

    config: Config
    folder: Path
    echo: Callable[[str], None]
    client: Any = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


def _write_table(table: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.parquet")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def _fingerprint(name: str, settings: Any, upstream: list[str]) -> str:
    text = json.dumps({"stage": name, "settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stage(
    run_state: _Run,
    name: str,
    settings: Any,
    upstream: list[str],
    body: Callable[[_Run, bool], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``body`` unless a finished marker with the same fingerprint exists.

    ``body(run_state, resume)`` returns a JSON-able result (paths, numbers);
    ``resume`` is True when an interrupted attempt of this same stage exists.
    """
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
    _write_json(started, {"fingerprint": fp, "started": time.time()})
    run_state.echo(f"  {name:<10} {'resuming' if resume else 'running'}...")
    t0 = time.perf_counter()
    result = body(run_state, resume)
    seconds = time.perf_counter() - t0
    _write_json(done, {"fingerprint": fp, "result": result, "seconds": seconds, "finished": time.time()})
    started.unlink(missing_ok=True)
    run_state.results[name] = result
    run_state.times[name] = seconds
    run_state.echo(f"  {name:<10} finished in {seconds:.1f} s")
    return result


def _save_array(run_state: _Run, array: xr.DataArray, name: str, resume: bool) -> str:
    from temflow.store import save_zarr

    path = run_state.folder / name
    if path.exists() and not resume:
        shutil.rmtree(path)
    save_zarr(array, path, resume=resume, progress=run_state.client is not None)
    return str(path)


def _open(path: str) -> xr.DataArray:
    from temflow.store import open_zarr

    return open_zarr(path)


# --- stages ---------------------------------------------------------------------------------------


def _load(run_state: _Run, resume: bool) -> dict[str, Any]:
    config = run_state.config
    folder = run_state.folder
    syn = config.input.synthetic
    if syn is not None:
        from temflow.synthetic import make_movie, save_truth

        truth = make_movie(
            frames=syn.frames,
            size=syn.size,
            pixel_size_nm=syn.pixel_size_nm,
            frame_interval_s=syn.frame_interval_s,
            mechanism=syn.mechanism,
            radius_nm=(syn.radius_nm[0], syn.radius_nm[1]),
            dose_e_per_px=syn.dose_e_per_px,
            chunks=config.input.frames_per_chunk or None,
            seed=syn.seed,
        )
        path = folder / "raw.zarr"
        if path.exists() and not resume:
            shutil.rmtree(path)
        save_truth(truth, path, overwrite=False) if not path.exists() else _save_array(run_state, truth.movie, "raw.zarr", True)
        if not path.with_suffix(".truth").exists():
            save_truth(truth, path, overwrite=True)
        return {"movie": str(path), "truth": str(path.with_suffix(".truth")), "source": "synthetic"}
    from temflow.io import open_movie
    from temflow.store import is_complete

    source = Path(config.input.path)
    if source.suffix == ".zarr" and is_complete(source):
        return {"movie": str(source), "source": str(source)}
    movie = open_movie(source, frame_interval_s=config.input.frame_interval_s)
    if config.input.frames_per_chunk:
        movie = movie.chunk({"time": config.input.frames_per_chunk, "y": -1, "x": -1})
    return {"movie": _save_array(run_state, movie, "raw.zarr", resume), "source": str(source)}


def run(
    config: Config | str | os.PathLike[str],
    *,
    client: Any = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; skip the stages already finished with the same settings.

    Computes everything and writes it under ``config.output.folder``.

    Parameters
    ----------
    config : Config or path
        A :class:`temflow.config.Config` or the path of a TOML run file.
    client : distributed.Client, optional
        An existing client; default: connect as ``config.cluster`` says (a
        LocalCluster on loopback unless a scheduler address is given).
    echo : callable, optional
        Receives one line per event (the CLI prints them); default: silent.

    Returns
    -------
    dict
        The run's summary (also in ``summary.json``): the report's path, the
        particle statistics, the coarsening verdict and the stage times.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    say = echo or (lambda line: None)
    folder = config.folder
    folder.mkdir(parents=True, exist_ok=True)
    state = _Run(config=config, folder=folder, echo=say, client=client)
    if client is not None:
        return _run_stages(state)
    from temflow.cluster import connect, dashboard_link

    c = config.cluster
    with connect(
        c.scheduler or None,
        n_workers=c.n_workers or None,
        threads_per_worker=c.threads_per_worker or None,
        processes=c.processes,
        memory_limit=c.memory_limit,
        dashboard_address=c.dashboard_address,
        tls_ca_file=c.tls_ca_file or None,
        tls_cert=c.tls_cert or None,
        tls_key=c.tls_key or None,
    ) as new_client:
        state.client = new_client
        link = dashboard_link(new_client)
        if link:
            say(f"Dask dashboard: {link}")
        return _run_stages(state)


def _provenance(state: _Run) -> dict[str, Any]:
    from temflow import __version__

    versions = {}
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


def _drift(state: _Run, resume: bool) -> dict[str, Any]:
    raw = _open(state.results["load"]["movie"])
    d = state.config.drift
    if not d.enabled:
        return {"movie": state.results["load"]["movie"], "shifts": None}
    from temflow.drift import apply_drift, crop_valid, estimate_drift

    # the shift array is tiny: compute it once, keep it, and apply it lazily
    shifts = estimate_drift(raw, reference=d.reference, upsample=d.upsample).compute()  # type: ignore[arg-type]
    table = pd.DataFrame(
        {
            "frame": np.arange(shifts.sizes["time"]),
            "time": shifts["time"].values,
            "dy_px": shifts.sel(axis="y").values,
            "dx_px": shifts.sel(axis="x").values,
            "dy_nm": shifts["shift_nm"].sel(axis="y").values,
            "dx_nm": shifts["shift_nm"].sel(axis="x").values,
        }
    )
    for name in ("quality", "flagged", "jump"):
        if name in shifts.coords:
            table[name] = shifts[name].values
    _write_table(table, state.folder / "shifts.parquet")
    from temflow.plots import plot_drift, save_figure

    save_figure(plot_drift(shifts), state.folder / "figures" / "drift", formats=_figure_formats(state))
    corrected = crop_valid(apply_drift(raw, shifts, method=d.method), shifts)
    path = _save_array(state, corrected, "corrected.zarr", resume)
    return {
        "movie": path,
        "shifts": str(state.folder / "shifts.parquet"),
        "flagged_frames": int(table["flagged"].sum()) if "flagged" in table else 0,
        "jumps": int(table["jump"].sum()) if "jump" in table else 0,
        "max_drift_nm": float(np.hypot(table.dy_nm, table.dx_nm).max()),
        "cropped_shape": list(_open(path).shape),
    }


def _figure_formats(state: _Run) -> list[str]:
    """The configured formats, plus PNG for the report page."""
    return sorted(set(state.config.output.figure_formats) | {"png"})


def _model_path(state: _Run) -> str | None:
    seg = state.config.segmentation
    if seg.method == "threshold":
        return None
    if seg.model:
        return seg.model
    return state.results["train"]["model"]


def _train(state: _Run, resume: bool) -> dict[str, Any]:
    import torch

    from temflow.models import Autoencoder, UNet, save_model
    from temflow.plots import plot_training_history, save_figure
    from temflow.tiles import TileDataset, make_tile_set, read_tile_set_info
    from temflow.train import train

    config = state.config
    tr = config.training
    movie = _open(state.results["drift"]["movie"])
    folder = state.folder / "training"
    folder.mkdir(exist_ok=True)
    if config.segmentation.method == "unet":
        if tr.labels == "truth":
            truth_labels = _open(str(Path(state.results["load"]["truth"]) / "labels.zarr"))
            masks: Any = _align_to(truth_labels, movie) > 0
        elif tr.labels == "auto":
            masks = "classical"
        else:
            masks = tr.labels
    else:
        masks = None
    tile_size = min(tr.tile_size, movie.sizes["y"], movie.sizes["x"])
    store = make_tile_set(
        movie, folder / "tiles.zarr", tile_size=tile_size, frames=tr.frames, masks=masks, seed=tr.seed, overwrite=True
    )
    info = read_tile_set_info(store)
    torch.manual_seed(tr.seed)
    model = UNet() if config.segmentation.method == "unet" else Autoencoder()
    dataset = TileDataset(store, split="train", augment=True, seed=tr.seed)
    model, history = train(
        model,
        dataset,
        epochs=tr.epochs,
        batch_size=tr.batch_size,
        lr=tr.learning_rate,
        client=state.client if tr.data_parallel else None,
        checkpoint_dir=folder / "checkpoints",
        resume=resume,
        seed=tr.seed,
    )
    _write_table(history, folder / "history.parquet")
    save_figure(plot_training_history(history), state.folder / "figures" / "training", formats=_figure_formats(state))
    path = save_model(
        model,
        state.folder / "model.safetensors",
        normalisation=info["normalisation"],
        tile_size=tile_size,
        training={"labels": tr.labels, "tiles": str(store), "epochs": tr.epochs, "source": config.input.path or "synthetic"},
    )
    last = history.iloc[-1].to_dict()
    return {"model": str(path), "history": str(folder / "history.parquet"), "last_epoch": last}


def _align_to(array: xr.DataArray, movie: xr.DataArray) -> xr.DataArray:
    """``array`` (raw-frame coordinates) on the corrected movie's grid (synthetic truth only)."""
    if array.shape == movie.shape:
        return array.assign_coords(movie.coords)
    raise ValueError(
        "training.labels = 'truth' needs drift correction off (the true labels are in raw-frame coordinates); "
        "set [drift] enabled = false or use labels = 'auto'"
    )


def _infer(state: _Run, resume: bool) -> dict[str, Any]:
    from temflow.infer import predict

    inf = state.config.inference
    movie = _open(state.results["drift"]["movie"])
    output = predict(movie, _model_path(state), tile=inf.tile, batch_size=inf.batch_size, device=inf.device)  # type: ignore[arg-type]
    return {"output": _save_array(state, output, "prediction.zarr", resume)}


def _masks(state: _Run, resume: bool) -> dict[str, Any]:
    seg = state.config.segmentation
    if seg.method == "threshold":
        from temflow.measure import threshold_particles

        masks = threshold_particles(_open(state.results["drift"]["movie"]))
    else:
        from temflow.infer import segment

        values = _open(state.results["infer"]["output"])
        masks = segment(values, method="threshold" if seg.threshold is not None else None, threshold=seg.threshold)
    return {"masks": _save_array(state, masks, "masks.zarr", resume)}


def _measure(state: _Run, resume: bool) -> dict[str, Any]:
    from temflow.measure import label_particles, measure_particles_to_parquet, read_particles

    masks = _open(state.results["masks"]["masks"])
    movie = _open(state.results["drift"]["movie"])
    path = measure_particles_to_parquet(
        label_particles(masks),
        state.folder / "particles.parquet",
        movie,
        min_area_nm2=state.config.analysis.min_area_nm2,
        overwrite=True,
    )
    table = read_particles(path)
    return {"particles": str(path), "rows": int(len(table))}


def _track(state: _Run, resume: bool) -> dict[str, Any]:
    from temflow.measure import read_particles
    from temflow.track import find_events, link

    a = state.config.analysis
    table = read_particles(state.results["measure"]["particles"])
    tracks = link(table, max_step_nm=a.max_step_nm, memory=a.memory, method=a.linker)
    frames = _open(state.results["masks"]["masks"]).sizes["time"]
    events = find_events(tracks, frames=frames)
    _write_table(tracks, state.folder / "tracks.parquet")
    _write_table(_events_for_parquet(events), state.folder / "events.parquet")
    counts = events["event"].value_counts().to_dict() if len(events) else {}
    return {
        "tracks": str(state.folder / "tracks.parquet"),
        "events": str(state.folder / "events.parquet"),
        "particles_tracked": int(tracks["particle"].nunique()) if len(tracks) else 0,
        "event_counts": {str(k): int(v) for k, v in counts.items()},
    }


def _events_for_parquet(events: pd.DataFrame) -> pd.DataFrame:
    out = events.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, tuple)).any():
            out[column] = out[column].map(lambda v: list(v) if isinstance(v, tuple) else v)
    return out


def _coarsening(state: _Run, resume: bool) -> dict[str, Any]:
    from temflow.coarsening import coarsening_mechanism, fit_growth_law, size_statistics

    tracks = pd.read_parquet(state.results["track"]["tracks"])
    events = pd.read_parquet(state.results["track"]["events"])
    movie = _open(state.results["drift"]["movie"])
    from temflow._movie import pixel_size_nm

    dy, dx = pixel_size_nm(movie)
    stats = size_statistics(
        tracks,
        include_border=not state.config.analysis.exclude_border,
        times_s=movie["time"].values,
        field_area_nm2=movie.sizes["y"] * dy * movie.sizes["x"] * dx,
    )
    _write_table(stats, state.folder / "statistics.parquet")
    free = fit_growth_law(stats)
    lsw = fit_growth_law(stats, exponent=3.0)
    verdict = coarsening_mechanism(tracks, events)
    result = {"fit": free.to_dict(), "fit_lsw": lsw.to_dict(), "verdict": verdict.to_dict()}
    _write_json(state.folder / "coarsening.json", result)
    return {"statistics": str(state.folder / "statistics.parquet"), **result}


def _run_stages(state: _Run) -> dict[str, Any]:
    config = state.config
    _write_json(state.folder / "provenance.json", _provenance(state))
    settings = config.to_dict()
    seg = settings["segmentation"]
    _stage(state, "load", settings["input"], [], _load)
    _stage(state, "drift", settings["drift"], ["load"], _drift)
    upstream_masks = ["drift"]
    if config.segmentation.method != "threshold":
        if not config.segmentation.model:
            _stage(state, "train", [settings["training"], seg["method"]], ["drift"], _train)
            model_source = ["drift", "train"]
        else:
            model_source = ["drift"]
        model_hash = _file_hash(Path(_model_path(state) or ""))
        _stage(state, "infer", [settings["inference"], seg["method"], model_hash], model_source, _infer)
        upstream_masks = ["infer"]
    _stage(state, "masks", seg, upstream_masks, _masks)
    _stage(state, "measure", settings["analysis"]["min_area_nm2"], ["masks", "drift"], _measure)
    track_settings = [settings["analysis"][k] for k in ("max_step_nm", "memory", "linker")]
    _stage(state, "track", track_settings, ["measure"], _track)
    _stage(state, "coarsening", settings["analysis"]["exclude_border"], ["track"], _coarsening)
    _stage(state, "report", settings["output"], ["coarsening"], _report)
    summary = _summary(state)
    _write_json(state.folder / "summary.json", summary)
    provenance = json.loads((state.folder / "provenance.json").read_text())
    provenance["stage_seconds"] = state.times
    provenance["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(state.folder / "provenance.json", provenance)
    return summary


def _file_hash(path: Path) -> str:
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(state: _Run) -> dict[str, Any]:
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
) -> dict[str, Any]:
    """Make a synthetic in-situ movie and run the whole pipeline on it.

    Computes everything; writes under ``output``. Prints (through ``echo``)
    each stage, a one-screen summary and the report's path.
    """
    say = echo or (lambda line: None)
    config = demo_config(output, frames=frames, size=size, scheduler=scheduler)
    syn = config.input.synthetic
    assert syn is not None
    say(
        f"temflow demo: a synthetic {syn.frames}-frame {syn.size}x{syn.size} movie of ripening nanoparticles; "
        f"a U-Net is trained on weak labels, then the whole analysis -> {config.folder}/"
    )
    summary = run(config, echo=say)
    for line in format_summary(summary):
        say(line)
    for line in _truth_lines(Path(summary["folder"]) / "raw.truth", syn.pixel_size_nm):
        say(line)
    return summary


def _truth_lines(folder: Path, pixel_size_nm: float) -> list[str]:
    """What the generator knows, in the summary's terms, to compare with what was found."""
    particles = pd.read_parquet(folder / "particles.parquet")
    events = pd.read_parquet(folder / "events.parquet")
    seen = particles[particles["visible"] & ~particles["touches_border"]]
    per_frame = seen.groupby("frame")
    count, diameter = per_frame.size(), 2 * per_frame["radius"].mean()
    kinds = events["event"].value_counts().to_dict() if len(events) else {}
    return [
        "",
        "ground truth of the synthetic movie (whole raw field of view, before cropping):",
        f"particles      {count.iloc[0]} in the first frame -> {count.iloc[-1]} in the last",
        f"mean diameter  {diameter.iloc[0]:.2f} nm -> {diameter.iloc[-1]:.2f} nm",
        "events         " + (", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "none"),
    ]


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The one-screen summary printed at the end of a run."""
    fit = summary["growth_exponent"]
    verdict = summary["verdict"]
    events = summary["events"]
    lines = [
        "",
        f"particles      {summary['particles_first_frame']} in the first frame -> {summary['particles_last_frame']} in the last",
        f"mean diameter  {summary['mean_diameter_first_nm']:.2f} nm -> {summary['mean_diameter_last_nm']:.2f} nm",
        "events         " + (", ".join(f"{v} {k}" for k, v in sorted(events.items())) or "none"),
    ]
    if fit.get("ok"):
        lines.append(f"growth law     <r>^n - <r0>^n = K t with n = {fit['n']:.2f} ± {fit['n_error']:.2f}")
    else:
        lines.append(f"growth law     no fit: {fit.get('reason', '')}")
    lines.append(f"verdict        {verdict['mechanism']}: {verdict['reason']}")
    drift = summary.get("drift", {})
    if drift.get("max_drift_nm") is not None:
        lines.append(f"drift          up to {drift['max_drift_nm']:.1f} nm, {drift.get('jumps', 0)} jumps, cropped to {drift.get('cropped_shape')}")
    lines.append(f"report         {summary['report']}")
    return lines


def _report(state: _Run, resume: bool) -> dict[str, Any]:
    from temflow.report import write_report

    config = state.config
    r = state.results
    figures_dir = state.folder / "figures"
    figures_dir.mkdir(exist_ok=True)
    figures = _figures(state, figures_dir, _figure_formats(state))
    stats = pd.read_parquet(r["coarsening"]["statistics"])
    fit, lsw, verdict = r["coarsening"]["fit"], r["coarsening"]["fit_lsw"], r["coarsening"]["verdict"]
    cards: dict[str, Any] = {
        "frames": int(len(stats)),
        "particles, first frame": int(stats["count"].iloc[0]) if len(stats) else 0,
        "particles, last frame": int(stats["count"].iloc[-1]) if len(stats) else 0,
        "mean diameter, last frame (nm)": float(stats["mean_diameter"].iloc[-1]) if len(stats) else float("nan"),
        "growth exponent n": f"{fit['n']:.2f} ± {fit['n_error']:.2f}" if fit.get("ok") else "no fit",
        "LSW rate K (nm³/s)": f"{lsw['rate']:.3g} ± {lsw['rate_error']:.2g}" if lsw.get("ok") else "no fit",
        "merges": int(verdict["merges"]),
        "vanished": int(verdict["vanishes"]),
    }
    verdict_text = f"Verdict: {verdict['mechanism']}. {verdict['reason']}"
    if not fit.get("ok"):
        verdict_text += f" Growth law: no fit ({fit.get('reason', '')})."
    provenance = json.loads((state.folder / "provenance.json").read_text())
    notes = [
        f"temflow {provenance['temflow']}, Python {provenance['python']}",
        f"input: {config.input.path or 'synthetic movie'}",
        f"configuration: {config.source}",
        "stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in state.times.items()),
    ]
    events = pd.read_parquet(r["track"]["events"])
    path = write_report(
        state.folder / config.output.report,
        title=f"temflow report: {Path(config.input.path).name if config.input.path else 'synthetic movie'}",
        cards=cards,
        verdict=verdict_text,
        figures=figures,
        tables={"Size statistics per frame": stats, "Events": events},
        notes=notes,
    )
    return {"report": str(path), "figures": [f for _, f in figures]}


def _figures(state: _Run, folder: Path, formats: list[str]) -> list[tuple[str, str]]:
    """Draw the analysis figures; list every figure of the run, in reading order."""
    from temflow.coarsening import GrowthFit, size_distribution
    from temflow.measure import label_particles
    from temflow.plots import (
        plot_coarsening,
        plot_particle_outlines,
        plot_size_distribution,
        plot_size_trajectories,
        save_figure,
    )

    r = state.results
    movie = _open(r["drift"]["movie"])
    masks = _open(r["masks"]["masks"])
    tracks = pd.read_parquet(r["track"]["tracks"])
    events = pd.read_parquet(r["track"]["events"])
    stats = pd.read_parquet(r["coarsening"]["statistics"])
    fits = [GrowthFit(**r["coarsening"][key]) for key in ("fit", "fit_lsw") if r["coarsening"][key]["ok"]]
    # lazy: only the chunks of the two frames drawn are labelled and read
    labels = label_particles(masks)
    drawn = [
        (
            "outlines",
            "Particles of the first (cyan) and last (orange) frame over the first image",
            lambda: plot_particle_outlines(movie, labels),
        ),
        (
            "coarsening",
            "Particle count and mean radius against time, with the growth-law fits",
            lambda: plot_coarsening(stats, fits=fits),
        ),
        (
            "size_distribution",
            "Particle size distribution through time",
            lambda: plot_size_distribution(size_distribution(tracks, times_s=movie["time"].values)),
        ),
        (
            "trajectories",
            "Size of every tracked particle against time; merges and vanishings marked",
            lambda: plot_size_trajectories(tracks, events),
        ),
    ]
    figures = []
    if (folder / "drift.png").exists():
        figures.append(("Drift trajectory (nm against time), jumps and flagged frames marked", "figures/drift.png"))
    for name, caption, draw in drawn:
        save_figure(draw(), folder / name, formats=formats)
        figures.append((caption, f"figures/{name}.png"))
    if (folder / "training.png").exists():
        figures.append(("Training and validation loss per epoch", "figures/training.png"))
    return figures
