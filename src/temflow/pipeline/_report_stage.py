"""The report stage: the run's figures and its HTML page, from what the other stages wrote.

Reads the results of every stage (statistics, tracks, events, fits, the verdict, provenance),
draws the analysis figures into ``figures/`` and writes the report with
:func:`temflow.pipeline.report.write_report`. Writes nothing but figures and the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from temflow.pipeline._run import _DECIDED, Run, _figure_formats, _open


def _number(value: Any, unit: str = "", digits: int = 2) -> str:
    """A number for the report, or "none" where there is none (never "nan nm")."""
    if value is None or not np.isfinite(value):
        return "none"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def report_stage(state: Run, resume: bool) -> dict[str, Any]:
    from temflow.pipeline.report import write_report

    config = state.config
    r = state.results
    figures_dir = state.folder / "figures"
    figures_dir.mkdir(exist_ok=True)
    figures = _figures(state, figures_dir, _figure_formats(state))
    stats = pd.read_parquet(r["coarsening"]["statistics"])
    co = r["coarsening"]
    fit, lsw, verdict = co["fit"], co["fit_lsw"], co["verdict"]
    used = stats[~stats["excluded"]] if "excluded" in stats else stats
    with_particles = used[used["count"] > 0]
    cards: dict[str, Any] = {
        "frames": int(len(stats)),
        "frames left out": int(stats["excluded"].sum()) if "excluded" in stats else 0,
        "particles, first frame": int(with_particles["count"].iloc[0]) if len(with_particles) else 0,
        "particles, last frame": int(with_particles["count"].iloc[-1]) if len(with_particles) else 0,
        "mean diameter, last frame": _number(with_particles["mean_diameter"].iloc[-1], "nm") if len(with_particles) else "none",
        "growth exponent n": (
            f"{fit['n']:.2f} [{fit['n_low']:.2f}, {fit['n_high']:.2f}]" if fit.get("ok") else "undetermined"
        ),
        "K at n = 3 (nm³/s)": (
            f"{lsw['rate']:.3g} [{lsw['rate_low']:.3g}, {lsw['rate_high']:.3g}]" if lsw.get("ok") else "undetermined"
        ),
        "mechanism": verdict["mechanism"],
        "merges": int(verdict["merges"]),
        "vanished": int(verdict["vanishes"]),
    }
    from temflow.pipeline._insitu import insitu_cards, insitu_figures, insitu_notes, override_notes

    cards.update(insitu_cards(stats, r["coarsening"], r.get("context")))
    figures += insitu_figures(state, stats, figures_dir, _figure_formats(state))
    if len(with_particles) == 0:
        verdict_text = (
            "No particles were measured in any frame: there are no statistics, growth law or mechanism to report. "
            "Check the segmentation (the masks figure and the training history)."
        )
    else:
        verdict_text = f"Verdict: {verdict['mechanism']}. {verdict['reason']}."
        law = (
            f"n = {fit['n']:.2f}, {fit['confidence']:.0%} interval [{fit['n_low']:.2f}, {fit['n_high']:.2f}] "
            f"({fit['interval_method']})"
            if fit.get("ok")
            else f"n undetermined: {fit.get('reason', '')}"
        )
        verdict_text += f" Growth law <r>^n - <r0>^n = K t: {law}. Fixed exponents: {co.get('growth_laws_summary', '')}."
        closer = co.get("size_distribution_closer", "")
        verdict_text += f" Size distribution: {'closer to ' + closer if not closer.startswith('too few') else 'not compared, ' + closer}."
    provenance = json.loads((state.folder / "provenance.json").read_text())
    decided = r["masks"].get("decided") or {}
    notes = [
        f"temflow {provenance['temflow']}, Python {provenance['python']}",
        *(
            [
                f"particles: {decided.get('particles')} ({decided.get('particles_reason', '')}); settings "
                + ", ".join(f"{k} {decided[k]:.4g}" for k in _DECIDED[3:8] if isinstance(decided.get(k), (int, float)))
                + f" (from {decided.get('settings_from')})"
            ]
            if decided
            else []
        ),
        *([f"warning: {decided['support_texture']}; the counts and sizes are not reliable"] if decided.get("support_texture") else []),
        f"input: {config.input.path or 'synthetic movie'}",
        *_calibration_lines(r["load"].get("calibration")),
        f"configuration: {config.source}",
        *override_notes(config),
        "stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in state.times.items()),
        *insitu_notes(r.get("context")),
    ]
    events = pd.read_parquet(r["track"]["events"])
    path = write_report(
        state.folder / config.output.report,
        title=f"temflow report: {Path(config.input.path).name if config.input.path else 'synthetic movie'}",
        cards=cards,
        verdict=verdict_text,
        figures=figures,
        tables={
            "Growth laws compared (n fixed at 2, 3, 4 and free; intervals at the fit's confidence)": pd.DataFrame(co.get("growth_laws", [])),
            "Normalised size distribution against theory (Kolmogorov-Smirnov)": pd.DataFrame(co.get("size_distribution", [])),
            "Frames left out of the statistics": pd.DataFrame(
                {"frame": list(co.get("excluded_frames", {})), "why": list(co.get("excluded_frames", {}).values())}
            ),
            "Size statistics per frame": stats,
            "Events (persisting 3 frames)": events,
        },
        notes=notes,
    )
    return {"report": str(path), "figures": [f for _, f in figures]}


def _calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    """The input's calibration and where it came from, for the report's provenance."""
    if not calibration:
        return []
    names = {"file": "from the file", "user": "from the run file", "default": "DEFAULT, not calibrated"}
    dy, dx = calibration["pixel_size_nm"]
    source = calibration.get("source", {})
    return [f"pixel size {dy:.6g} x {dx:.6g} nm ({names.get(source.get('pixel_size'), '?')}); time step "
            f"{calibration['frame_interval_s']:.6g} s ({names.get(source.get('time'), '?')})",
            *(f"calibration note: {note}" for note in calibration.get("notes", []))]


def _figures(state: Run, folder: Path, formats: list[str]) -> list[tuple[str, str]]:
    """Draw the analysis figures; list every figure of the run, in reading order."""
    from temflow.analysis.coarsening import GrowthFit, size_distribution
    from temflow.analysis.measure import label_particles
    from temflow.plots import (
        plot_coarsening,
        plot_particle_outlines,
        plot_scaled_size_distribution,
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
    kept = stats.loc[~stats["excluded"], "frame"].to_numpy() if "excluded" in stats else None
    # lazy: only the chunks of the two frames drawn are labelled and read
    labels = label_particles(masks, split_touching=state.config.analysis.split_touching)
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
            "scaled_size_distribution",
            "Normalised size distribution (r / <r>, frames pooled) against LSW and a log-normal",
            lambda: plot_scaled_size_distribution(tracks, frames=kept),
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
