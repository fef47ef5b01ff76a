"""The in-situ context of a run: holder log and electron dose per frame, and what the report shows of them.

The ``context`` stage writes ``context.parquet``: one row per frame (``frame``, ``time``) plus the
holder's quantities on the movie's time axis (``temperature_C``...) and the dose
(``dose_rate_e_per_A2_s``, ``frame_dose_e_per_A2``, ``cumulative_dose_e_per_A2``) when the
configuration and the file give what they need; its result says why a part is missing. Drift
correction crops in space only, so frame ``i`` of the corrected movie is frame ``i`` here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from temflow._nofollow import write_file


__all__ = ["arrhenius_result", "configured_dose", "context_stage", "insitu_cards", "insitu_figures", "insitu_notes",
           "merge_context", "override_notes", "read_configured_log"]

# ``state`` is the pipeline's ``stages.Run`` (not imported: the stages import this module)


def context_stage(state: Any, resume: bool) -> dict[str, Any]:
    """Stage ``context``: holder log on the frame times, and the dose per frame."""
    from temflow.io.store import open_zarr

    ins = state.config.insitu
    movie = open_zarr(state.results["load"]["movie"])
    table = pd.DataFrame({"frame": np.arange(movie.sizes["time"]), "time": movie["time"].values.astype(float)})
    result: dict[str, Any] = {"context": str(state.folder / "context.parquet")}
    if ins.holder_log:
        from temflow.io.holder_sync import add_holder_coords, estimate_clock_offset

        log = read_configured_log(ins)
        if ins.clock_offset_s is not None:
            offset, how = float(ins.clock_offset_s), "given"
        else:
            # one pass over the raw movie: its mean brightness per frame
            brightness = movie.mean(("y", "x")).compute()
            offset, how = estimate_clock_offset(brightness, log), "found from a temperature step (brightness)"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            aligned = add_holder_coords(movie, log, offset_s=offset)
        quantities = [c for c in log.columns if c != "time_s"]
        for name in quantities:
            table[name] = aligned[name].values
        result["holder"] = {"path": ins.holder_log, "vendor": log.attrs.get("vendor"), "start": log.attrs.get("start"),
                            "offset_s": offset, "offset": how, "quantities": quantities,
                            "unmapped": log.attrs.get("unmapped", []),
                            "warnings": [str(w.message) for w in caught]}
        for w in caught:
            state.echo(f"  context    warning: {w.message}")
    else:
        result["holder"] = {"reason": "no holder log given ([insitu] holder_log)"}
    try:
        dose = configured_dose(movie, ins)
    except ValueError as error:
        result["dose"] = {"reason": str(error)}
    else:
        result["dose"] = add_dose(table, dose)
    write_file(state.folder / "context.parquet", lambda file: table.to_parquet(file, index=False))
    return result


def read_configured_log(ins: Any) -> pd.DataFrame:
    """The holder log named by ``[insitu]`` (``ins``: the run's ``InsituConfig``), read as its keys say."""
    from temflow.io.holder_logs import read_holder_log

    columns: dict[str, str] = {}
    for entry in ins.holder_columns:
        name, _, target = entry.partition("=")
        columns[name.strip()] = target.strip()
    return read_holder_log(ins.holder_log, vendor=ins.holder_vendor, columns=columns or None,
                           time_column=ins.holder_time_column or None,
                           time_unit=ins.holder_time_unit or None)  # type: ignore[arg-type]


def configured_dose(movie: Any, ins: Any) -> Any:
    """:func:`temflow.io.dose.electron_dose` of ``movie`` with the ``[insitu]`` settings ``ins``."""
    from temflow.io.dose import electron_dose

    return electron_dose(movie, counts_per_electron=ins.counts_per_electron, exposure_s=ins.exposure_s,
                         beam_current_A=ins.beam_current_A, illuminated_diameter_nm=ins.illuminated_diameter_nm,
                         beam_between_frames=ins.beam_between_frames)


DOSE_COLUMNS = ("dose_rate_e_per_A2_s", "frame_dose_e_per_A2", "cumulative_dose_e_per_A2")


def add_dose(table: pd.DataFrame, dose: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """Put :func:`configured_dose`'s per-frame columns into ``table``; return its attrs as plain values."""
    for name in DOSE_COLUMNS:
        table[name] = dose[name].values
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dose.attrs.items() if k not in leave_out}


def merge_context(stats: pd.DataFrame, context_result: dict[str, Any] | None) -> pd.DataFrame:
    """Per-frame statistics with the context's columns (temperature, dose...) joined on ``frame``."""
    if not context_result or not Path(context_result.get("context", "")).is_file():
        return stats
    context = pd.read_parquet(context_result["context"]).drop(columns=["time"])
    if "frame" not in stats.columns:
        return stats
    return stats.merge(context, on="frame", how="left")


def arrhenius_result(state: Any, stats: pd.DataFrame) -> dict[str, Any]:
    """Rates per temperature step and the Arrhenius fit, written next to the statistics."""
    if "temperature_C" not in stats.columns or not np.isfinite(stats["temperature_C"].to_numpy(float)).any():
        return {"ok": False, "reason": "no holder temperature on the frames"}
    from temflow.analysis.arrhenius import coarsening_rates_per_step, fit_arrhenius

    ins = state.config.insitu
    rates = coarsening_rates_per_step(stats, exponent=ins.arrhenius_exponent, tolerance_C=ins.step_tolerance_C)
    write_file(state.folder / "rates_per_step.parquet", lambda file: rates.to_parquet(file, index=False))
    fit = fit_arrhenius(rates, rng=0)
    out = {**fit.to_dict(), "rates": str(state.folder / "rates_per_step.parquet"), "steps": int(len(rates))}
    text = json.dumps(out, indent=2, default=str).encode()
    write_file(state.folder / "arrhenius.json", lambda file: file.write(text))
    return out


def insitu_cards(stats: pd.DataFrame, coarsening: dict[str, Any], context: dict[str, Any] | None) -> dict[str, Any]:
    """Report cards: temperature range, Ea and its interval, dose."""
    cards: dict[str, Any] = {}
    if "temperature_C" in stats.columns and np.isfinite(stats["temperature_C"].to_numpy(float)).any():
        t = stats["temperature_C"].to_numpy(float)
        cards["holder temperature (°C)"] = f"{np.nanmin(t):.0f} to {np.nanmax(t):.0f}"
    fit = coarsening.get("arrhenius", {})
    if fit.get("ok"):
        low, high = fit["interval_eV"]
        cards["apparent Ea (eV)"] = (f"{fit['activation_energy_eV']:.2f} [{low:.2f}, {high:.2f}] "
                                     f"({100 * fit['confidence']:.0f} %, {fit['steps_used']} steps)")
    elif "temperature_C" in stats.columns:
        cards["apparent Ea"] = f"none: {fit.get('reason', '')}"
    if "cumulative_dose_e_per_A2" in stats.columns:
        cards["dose rate (e/Å²/s)"] = f"{np.nanmedian(stats['dose_rate_e_per_A2_s']):.3g}"
        cards["cumulative dose, last frame (e/Å²)"] = f"{stats['cumulative_dose_e_per_A2'].iloc[-1]:.3g}"
    elif context and "reason" in context.get("dose", {}):
        cards["electron dose"] = "not known (see notes)"
    return cards


def insitu_notes(context: dict[str, Any] | None) -> list[str]:
    """Report notes: where the holder log and the dose came from, or why they are missing."""
    if not context:
        return []
    notes = []
    holder = context.get("holder", {})
    if "offset_s" in holder:
        notes.append(f"holder log: {holder['path']} ({holder['vendor']}), clock offset {holder['offset_s']:.3f} s "
                     f"({holder['offset']}); quantities: {', '.join(holder['quantities'])}")
        notes += [f"holder log: {w}" for w in holder.get("warnings", [])]
    dose = context.get("dose", {})
    if "reason" in dose:
        notes.append(f"electron dose: {dose['reason']}")
    elif dose:
        notes.append("electron dose: " + ", ".join(f"{k} = {v}" for k, v in dose.items()))
    return notes


def override_notes(config: Any, section: str = "") -> list[str]:
    """Report notes: the run file's keys (of ``section``, or all) that a flag or argument replaced (``override_config``)."""
    notes = []
    for key, record in config.overrides.items():
        if key.startswith(section):
            part, _, name = key.partition(".")
            notes.append(f"{record['origin']} {record['value']} replaced [{part}] {name} = "
                         f"{record['replaced']!r} of {config.source}")
    return notes


def insitu_figures(state: Any, stats: pd.DataFrame, folder: Path, formats: list[str]) -> list[tuple[str, str]]:
    """Size against temperature, the Arrhenius plot and the dose, when the run has them."""
    from temflow.plots import plot_arrhenius, plot_dose, plot_size_vs_temperature, save_figure

    figures = []
    if "temperature_C" in stats.columns and np.isfinite(stats["temperature_C"].to_numpy(float)).any():
        save_figure(plot_size_vs_temperature(stats), folder / "size_vs_temperature", formats=formats)
        figures.append(("Mean diameter and particle count against the holder's temperature (colour: time)",
                        "figures/size_vs_temperature.png"))
        fit = state.results["coarsening"].get("arrhenius", {})
        if fit.get("rates"):
            from temflow.analysis.arrhenius import ArrheniusFit

            rates = pd.read_parquet(fit["rates"])
            known = {k: v for k, v in fit.items() if k in ArrheniusFit.__dataclass_fields__}
            save_figure(plot_arrhenius(rates, ArrheniusFit(**known)), folder / "arrhenius", formats=formats)
            figures.append(("Coarsening rate per temperature step against 1/T, with the Arrhenius line",
                            "figures/arrhenius.png"))
    if "cumulative_dose_e_per_A2" in stats.columns:
        save_figure(plot_dose(stats), folder / "dose", formats=formats)
        figures.append(("Electron dose: cumulative (black) and rate (orange) per frame", "figures/dose.png"))
    return figures
