"""The stages of the pipeline: each reads what the stages before it wrote and writes its own.

Every stage is a function ``stage(run, resume) -> dict`` returning JSON-able
results (paths, numbers); :mod:`temflow.pipeline.runner` decides which stages run, and
passes ``resume=True`` when an interrupted attempt of the same stage exists.
Arrays go to zarr stores (resumable chunk by chunk), tables to parquet written
to a temporary file and renamed (units in the schema), JSON strict (null for NaN), figures to ``figures/``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from temflow.pipeline._report_stage import report_stage
from temflow.pipeline._run import _DECIDED, Run, _figure_formats, _open, _save_array, _write_table, write_json

_AUTOENCODER_MIN_STEPS = 400  # see TrainingConfig.min_steps
_MASK_TASK_PIXELS = 2**21  # pixels per task of the masks stage, as threshold_particles works

__all__ = ["Run", "STAGE_FUNCTIONS", "classical_settings", "model_path", "write_json"]


def _load(run_state: Run, resume: bool) -> dict[str, Any]:
    config = run_state.config
    folder = run_state.folder
    syn = config.input.synthetic
    if syn is not None:
        from temflow.synthetic.generator import make_movie, save_truth

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
        if not resume:
            for old in (path, path.with_suffix(".truth")):
                shutil.rmtree(old, ignore_errors=True)
        # resume=True also writes a fresh store; after an interruption it keeps the chunks written
        save_truth(truth, path, resume=True, progress=run_state.progress)
        return {"movie": str(path), "truth": str(path.with_suffix(".truth")), "source": "synthetic"}
    from temflow.io.reader import open_movie
    from temflow.io.store import is_complete

    source = Path(config.input.path)
    if source.suffix == ".zarr" and is_complete(source):
        return {"movie": str(source), "source": str(source)}
    pixel = config.input.pixel_size_nm
    movie = open_movie(source, frame_interval_s=config.input.frame_interval_s,
                       pixel_size_nm=tuple(pixel) if isinstance(pixel, list) else pixel)  # type: ignore[arg-type]
    if config.input.frames_per_chunk:
        movie = movie.chunk({"time": config.input.frames_per_chunk, "y": -1, "x": -1})
    calibration = {
        "pixel_size_nm": list(movie.attrs["pixel_size_nm"]),
        "frame_interval_s": float(movie.attrs["frame_interval_s"]),
        "source": dict(movie.attrs.get("calibration", {})),  # "file", "user" (the run file) or "default"
        "notes": list(movie.attrs.get("notes", [])),
    }
    return {"movie": _save_array(run_state, movie, "raw.zarr", resume), "source": str(source),
            "calibration": calibration}


def _drift(state: Run, resume: bool) -> dict[str, Any]:
    raw = _open(state.results["load"]["movie"])
    d = state.config.drift
    if not d.enabled:
        return {"movie": state.results["load"]["movie"], "shifts": None}
    from temflow.drift.correction import apply_drift, crop_valid, estimate_drift

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


def classical_settings(state: Run) -> dict[str, Any]:
    """The classical recipe's settings from ``[segmentation]``, as threshold_particles takes them."""
    seg = state.config.segmentation
    out: dict[str, Any] = {"particles": seg.particles}
    for name in ("sigma_nm", "background_nm", "opening_nm", "min_area_nm2", "max_radius_nm"):
        if getattr(seg, name) is not None:
            out[name] = getattr(seg, name)
    return out


def _record_decision(state: Run, stage: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Write what the classical recipe decided into provenance.json; return it."""
    decided = {k: attrs[k] for k in _DECIDED if k in attrs}
    path = state.folder / "provenance.json"
    if decided and path.exists():
        provenance = json.loads(path.read_text())
        provenance.setdefault("decided", {})[stage] = decided
        write_json(path, provenance)
    return decided


def model_path(state: Run) -> str | None:
    seg = state.config.segmentation
    if seg.method == "threshold":
        return None
    if seg.model:
        return seg.model
    return state.results["train"]["model"]


def _train(state: Run, resume: bool) -> dict[str, Any]:
    import torch

    from temflow.segmentation.models import Autoencoder, UNet

    from temflow.segmentation.model_files import save_model
    from temflow.plots import plot_training_history, save_figure
    from temflow.segmentation.tiles import DENOISING_NOISE, LABEL_NOISE, TileDataset, make_tile_set, read_tile_set_info
    from temflow.segmentation.training import train

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
    classical = isinstance(masks, str) and masks == "classical"
    store = make_tile_set(
        movie,
        folder / "tiles.zarr",
        tile_size=tile_size,
        frames=tr.frames,
        masks=masks,
        split=tr.split,
        classical=classical_settings(state) if classical else None,
        seed=tr.seed,
        overwrite=True,
    )
    info = read_tile_set_info(store)
    weak_labels = _record_decision(state, "train", info.get("classical") or {})
    torch.manual_seed(tr.seed)
    unet = config.segmentation.method == "unet"
    model: torch.nn.Module = UNet() if unet else Autoencoder()
    noise = tr.added_noise if tr.added_noise is not None else (LABEL_NOISE if unet else DENOISING_NOISE)
    dataset = TileDataset(store, split="train", augment=True, noise_jitter=noise, seed=tr.seed)
    min_steps = tr.min_steps if tr.min_steps is not None else (0 if unet else _AUTOENCODER_MIN_STEPS)
    epochs = max(tr.epochs, math.ceil(min_steps / max(math.ceil(len(dataset) / tr.batch_size), 1)))
    model, history = train(
        model,
        dataset,
        epochs=epochs,
        batch_size=tr.batch_size,
        lr=tr.learning_rate,
        client=state.client if tr.data_parallel else None,
        checkpoint_dir=folder / "checkpoints",
        resume=resume,
        seed=tr.seed,
        progress=state.progress,
    )
    _write_table(history, folder / "history.parquet")
    save_figure(plot_training_history(history), state.folder / "figures" / "training", formats=_figure_formats(state))
    path = save_model(
        model,
        state.folder / "model.safetensors",
        normalisation=info["normalisation"],
        tile_size=tile_size,
        training={
            "labels": tr.labels if unet else None,
            "added_noise": noise,
            "tiles": str(store),
            "epochs": epochs,
            "source": config.input.path or "synthetic",
        },
    )
    last = history.iloc[-1].to_dict()
    out = {"model": str(path), "history": str(folder / "history.parquet"), "last_epoch": last}
    if weak_labels:
        out["weak_labels"] = weak_labels
    return out


def _align_to(array: xr.DataArray, movie: xr.DataArray) -> xr.DataArray:
    """``array`` (raw-frame coordinates) on the corrected movie's grid (synthetic truth only)."""
    if array.shape == movie.shape:
        return array.assign_coords(movie.coords)
    raise ValueError(
        "training.labels = 'truth' needs drift correction off (the true labels are in raw-frame coordinates); "
        "set [drift] enabled = false or use labels = 'auto'"
    )


def _infer(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.segmentation.inference import predict

    inf = state.config.inference
    movie = _open(state.results["drift"]["movie"])
    output = predict(movie, model_path(state), tile=inf.tile, batch_size=inf.batch_size, device=inf.device)  # type: ignore[arg-type]
    return {"output": _save_array(state, output, "prediction.zarr", resume)}


def _masks(state: Run, resume: bool) -> dict[str, Any]:
    seg = state.config.segmentation
    if seg.method == "threshold":
        from temflow.analysis.measure import threshold_particles
        from temflow.io.store import open_zarr

        path = state.results["drift"]["movie"]
        # read and write in tasks of _MASK_TASK_PIXELS: the threshold's temporaries are ~30x
        # the frames, and the stores' chunks grow with the movie (to 2048 frames of 128^2)
        movie = open_zarr(path)
        per = max(1, _MASK_TASK_PIXELS // max(math.prod(movie.shape[1:]), 1))
        if max(movie.data.chunks[0]) > per:
            movie = open_zarr(path, chunks=per)
        masks = threshold_particles(movie, bin_px=seg.bin_px, **classical_settings(state))
    else:
        from temflow.segmentation.inference import segment

        values = _open(state.results["infer"]["output"])
        # the classical settings shape the autoencoder's flat field; a U-Net's probability is
        # thresholded as it is
        flat = seg.method == "autoencoder"
        masks = segment(
            values,
            method="threshold" if seg.threshold is not None else None,
            threshold=seg.threshold,
            **(classical_settings(state) if flat else {}),
        )
    decided = _record_decision(state, "masks", dict(masks.attrs))
    extra = {"decided": decided} if decided else {}
    movie_store = Path(state.results["drift"]["movie"])
    if movie_store.parent == state.folder:
        # a store this run wrote: the masks go into its NGFF labels group, so OME-Zarr viewers
        # (napari) show them over the movie; a user's own input store is never written into
        from temflow.io.labels import save_labels

        path = save_labels(masks, movie_store, name="masks", overwrite=not resume, resume=resume, progress=state.progress)
        return {"masks": str(path), **extra}
    return {"masks": _save_array(state, masks, "masks.zarr", resume), **extra}


def _measure(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.analysis.measure import label_particles, measure_particles_to_parquet, read_particles

    masks = _open(state.results["masks"]["masks"])
    movie = _open(state.results["drift"]["movie"])
    path = measure_particles_to_parquet(
        label_particles(masks, split_touching=state.config.analysis.split_touching),
        state.folder / "particles.parquet",
        movie,
        min_area_nm2=state.config.analysis.min_area_nm2,
        overwrite=True,
    )
    table = read_particles(path)
    if len(table) == 0:
        import warnings

        method = state.config.segmentation.method
        decided = state.results["masks"].get("decided") or {}
        used = ", ".join(f"{k} = {decided[k]!r}" for k in _DECIDED if k in decided and k not in ("particles_reason", "support_texture"))
        if decided:
            other = "bright" if decided.get("particles") == "dark" else "dark"
            where = (
                f"the classical recipe used {used} ({decided.get('particles_reason', '')}); try "
                f"[segmentation] particles = {other!r} if the particles are {other}, a smaller opening_nm and "
                "min_area_nm2 for small particles, or a background_nm of several particle radii"
            )
        else:
            where = f"look at prediction.zarr and the training history in {state.folder / 'training'}"
        warnings.warn(
            f"no particles in any of the {masks.sizes['time']} frames with segmentation.method = {method!r}: "
            f"{where}; the statistics and fits that follow are empty",
            UserWarning,
            stacklevel=2,
        )
    return {"particles": str(path), "rows": int(len(table))}


def _track(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.analysis.measure import read_particles
    from temflow.analysis.track import find_events, link

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


def _coarsening(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.analysis.coarsening import (
        coarsening_mechanism,
        compare_growth_laws,
        compare_size_distributions,
        fit_growth_law,
        mark_excluded_frames,
        size_statistics,
        sized_particles,
    )

    tracks = pd.read_parquet(state.results["track"]["tracks"])
    events = pd.read_parquet(state.results["track"]["events"])
    movie = _open(state.results["drift"]["movie"])
    from temflow.movie import pixel_size_nm

    dy, dx = pixel_size_nm(movie)
    include_border = not state.config.analysis.exclude_border
    stats = size_statistics(
        tracks,
        include_border=include_border,
        times_s=movie["time"].values,
        field_area_nm2=movie.sizes["y"] * dy * movie.sizes["x"] * dx,
    )
    from temflow.pipeline._insitu import arrhenius_result, merge_context

    stats = merge_context(stats, state.results.get("context"))
    flagged, jumps = _drift_flags(state, len(stats))
    # blank, unregistered and motion-blurred frames stay in the table, marked, and out of the fits
    stats = mark_excluded_frames(stats, flagged=flagged, jump_frames=jumps)
    _write_table(stats, state.folder / "statistics.parquet")
    kept = stats.loc[~stats["excluded"], "frame"].to_numpy()
    particles = sized_particles(tracks[tracks["frame"].isin(kept)], include_border=include_border)
    free = fit_growth_law(stats, particles=particles)
    lsw = fit_growth_law(stats, exponent=3.0, particles=particles)
    comparison = compare_growth_laws(stats, particles=particles)
    shapes = compare_size_distributions(tracks, include_border=include_border, frames=kept)
    verdict = coarsening_mechanism(tracks[tracks["frame"].isin(kept)], events)
    result = {
        "fit": free.to_dict(),
        "fit_lsw": lsw.to_dict(),
        "growth_laws": comparison.to_dict(orient="records"),
        "growth_laws_summary": comparison.attrs["summary"],
        "preferred_exponent": comparison.attrs["preferred"],
        "size_distribution": shapes.to_dict(orient="records"),
        "size_distribution_closer": shapes.attrs["closer"] or shapes.attrs["reason"],
        "excluded_frames": {int(f): str(r) for f, r in zip(stats["frame"], stats["exclusion"]) if r},
        "verdict": verdict.to_dict(),
        "arrhenius": arrhenius_result(state, stats),
    }
    write_json(state.folder / "coarsening.json", result)
    return {"statistics": str(state.folder / "statistics.parquet"), **result}


def _drift_flags(state: Run, frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Frames the drift stage could not register, and the frames just after a stage jump."""
    path = state.results["drift"].get("shifts")
    if not path:
        return None, None
    shifts = pd.read_parquet(path)
    if len(shifts) != frames:
        return None, None
    flagged = shifts["flagged"].to_numpy(bool) if "flagged" in shifts else None
    jumps = np.flatnonzero(shifts["jump"].to_numpy(bool)) if "jump" in shifts else None
    return flagged, jumps


def _context(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.pipeline._insitu import context_stage

    return context_stage(state, resume)


STAGE_FUNCTIONS: dict[str, Callable[[Run, bool], dict[str, Any]]] = {
    "load": _load,
    "context": _context,
    "drift": _drift,
    "train": _train,
    "infer": _infer,
    "masks": _masks,
    "measure": _measure,
    "track": _track,
    "coarsening": _coarsening,
    "report": report_stage,
}
