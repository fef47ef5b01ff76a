"""What the live view (:mod:`temflow.pipeline.live`) keeps around its frames: times, tracks, in-situ context.

* :func:`live_times`: the frame times the batch reader gives the frames written so far;
* :func:`live_tracks`: the particles linked frame by frame (:mod:`temflow.analysis.incremental_link`);
* :func:`note_context` and :func:`live_context`: the holder log (re-read as it grows) and the
  electron dose per frame, computed as the batch ``context`` stage does, for the live report.

``state`` is the live state dict of :mod:`temflow.pipeline.live`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from temflow.pipeline.config import Config

__all__ = ["CONTEXT_COLUMNS", "live_context", "live_times", "live_tracks", "note_context"]


def live_times(folder: Path, files: list[Path], config: Config) -> list[float]:
    """The frame times (s) the batch reader gives the frames ``files``, frame by frame.

    A Gatan In-Situ folder's times come from its folder names (:func:`temflow.io.formats.gatan.insitu_times_s`,
    the function :func:`temflow.open_movie` uses), recomputed at every refresh: the first second's frames
    move once the frame rate is known, as they would for the batch reader on the same files. A given
    ``frame_interval_s`` overrides them, as in the batch run; other folders of frames carry no times
    (the frame index, in s, as the batch reader gives without ``frame_interval_s``).
    """
    from temflow.io.formats.gatan import insitu_root, insitu_times_s, is_insitu_folder

    interval = config.input.frame_interval_s
    if interval is None and len(files) > 1 and is_insitu_folder(folder):
        times = insitu_times_s(insitu_root(folder), list(files))
        if times is not None:
            return [float(t) for t in times]
    return [i * float(interval or 1.0) for i in range(len(files))]


def note_context(state: dict[str, Any], file: Path, frame: np.ndarray, config: Config) -> None:
    """What the dose needs from a frame: the first file's instrument metadata, every frame's median counts."""
    if state["instrument"] is None:
        import warnings

        from temflow.io.reader import open_movie

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # one frame: no time calibration
            attrs = open_movie(file).attrs
        velox = (attrs.get("metadata", {}) or {}).get("velox", {}) or {}
        kept = {"instrument": attrs.get("instrument", {}) or {}, "metadata": {"velox": velox} if velox else {}}
        state["instrument"] = json.loads(json.dumps(kept, default=str))
    if config.insitu.counts_per_electron is not None:
        # the statistic electron_dose takes over the stored frame in the batch run (the NaN-aware float64
        # median; an integer frame has no NaN and its median is the same number, without the copy)
        integer = np.issubdtype(frame.dtype, np.integer)
        state["counts"].append(float(np.median(frame) if integer else np.nanmedian(frame.astype(np.float64))))


def live_tracks(state: dict[str, Any], shift_nm: np.ndarray, times: np.ndarray, config: Config) -> pd.DataFrame:
    """The particles linked through the frames so far, positions in frame 0's coordinates (nm).

    With trackpy (the default linker) each frame is linked once, as soon as its table and every
    earlier one are in, against the tracks so far (:mod:`temflow.analysis.incremental_link`), its
    positions corrected by the drift estimate of that refresh: the cost of a new frame does not grow
    with the movie, and the ids are those :func:`temflow.analysis.link` gives the same table. laptrack
    closes gaps in one problem over the whole movie, so with it every refresh links all frames again.
    A restart links the saved frames again, once.
    """
    from concurrent.futures import Future

    from temflow.analysis.incremental_link import link_next, start_link
    from temflow.analysis.track import link

    a = config.analysis

    def corrected(part: pd.DataFrame) -> pd.DataFrame:
        out = part.copy()
        frame = out["frame"].to_numpy()
        out["y"] = out["y"] - shift_nm[frame, 0]
        out["x"] = out["x"] - shift_nm[frame, 1]
        return out

    if a.linker != "trackpy":
        parts = [state["tables"][k] for k in sorted(state["tables"]) if len(state["tables"][k])]
        if not parts:
            return pd.DataFrame()
        tracks = link(corrected(pd.concat(parts, ignore_index=True)), max_step_nm=a.max_step_nm, memory=a.memory,
                      method=a.linker)
        tracks["time"] = times[tracks["frame"].to_numpy()]
        return tracks
    linking = state.get("linking")
    if linking is None:
        linking = state["linking"] = {"state": start_link(max_step_nm=a.max_step_nm, memory=a.memory), "next": 0,
                                      "parts": []}
    while linking["next"] < state["frames"]:
        part = state["tables"].get(linking["next"])
        if part is None or isinstance(part, Future):
            break  # frames are linked in order: a later one waits for this one
        if len(part):
            linking["parts"].append(link_next(linking["state"], corrected(part)))
        linking["next"] += 1
    if not linking["parts"]:
        return pd.DataFrame()
    tracks = pd.concat(linking["parts"], ignore_index=True)
    linking["parts"] = [tracks]
    tracks = tracks.copy()
    tracks["time"] = times[tracks["frame"].to_numpy()]
    return tracks


CONTEXT_COLUMNS = ("temperature_C", "heater_power_W", "pressure_mbar", "dose_rate_e_per_A2_s",
                    "frame_dose_e_per_A2", "cumulative_dose_e_per_A2")


def _holder_log(state: dict[str, Any], config: Config) -> tuple[pd.DataFrame | None, str | None]:
    """The configured holder log, read again whenever the file changed (it may grow during the movie)."""
    from temflow.pipeline._insitu import read_configured_log

    path = Path(config.insitu.holder_log)
    cached = state.get("holder")
    try:
        stat = path.stat()
    except OSError as error:
        return (cached or {}).get("log"), f"holder log {path} cannot be read now ({error}); tried again at the next refresh"
    key = (stat.st_size, stat.st_mtime_ns)
    if cached is None or cached["key"] != key:
        try:
            log = read_configured_log(config.insitu)
        except ValueError as error:
            # a log caught in the middle of a write: keep the last good reading
            return (cached or {}).get("log"), f"holder log not read at this refresh: {error}"
        state["holder"] = cached = {"key": key, "log": log}
    return cached["log"], None


def live_context(state: dict[str, Any], config: Config, per_frame: pd.DataFrame,
                  live: Path) -> tuple[dict[str, Any], list[tuple[str, str]], list[str]]:
    """Holder log and dose on the live frames, as the batch ``context`` stage puts them on the movie.

    Adds the columns to ``per_frame`` in place; returns report cards, figures and notes. The holder
    log needs ``[insitu] clock_offset_s`` here (the batch run can find the offset from a temperature
    step in the finished movie); frames past the log's end so far are NaN until it grows.
    """
    import warnings

    from temflow.movie import as_movie
    from temflow.pipeline._insitu import add_dose, configured_dose, insitu_notes, override_notes

    ins = config.insitu
    n = state["frames"]
    times = per_frame["time"].to_numpy(float)
    counts = np.asarray(state["counts"] if len(state["counts"]) == n else np.zeros(n), dtype=float)
    attrs = dict(state["instrument"] or {})
    # one 1 x 1 pixel per frame holding the frame's median: what electron_dose reads of the full frames
    probe = as_movie(counts[:, None, None], pixel_size_nm=tuple(state["pixel_nm"]), times_s=times,
                     frame_interval_s=config.input.frame_interval_s or 1.0, attrs=attrs)
    context: dict[str, Any] = {}
    notes: list[str] = []
    if ins.holder_log and ins.clock_offset_s is None:
        notes.append("holder log: no clock offset given ([insitu] clock_offset_s or --clock-offset-s), so the live "
                     "report cannot line it up with the frames; the batch run at the end finds it from a temperature step")
    elif ins.holder_log:
        from temflow.io.holder_sync import add_holder_coords

        log, problem = _holder_log(state, config)
        if problem:
            notes.append(problem)
        if log is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                aligned = add_holder_coords(probe, log, offset_s=float(ins.clock_offset_s))  # type: ignore[arg-type]
            quantities = [c for c in log.columns if c != "time_s"]
            for name in quantities:
                per_frame[name] = aligned[name].values
            context["holder"] = {"path": ins.holder_log, "vendor": log.attrs.get("vendor"),
                                 "offset_s": float(ins.clock_offset_s),  # type: ignore[arg-type]
                                 "offset": "given", "quantities": quantities,
                                 "warnings": [str(w.message) for w in caught]}
    try:
        if ins.counts_per_electron is not None and len(state["counts"]) != n:
            raise ValueError("the frames' counts are missing (the live state was saved without them); "
                             "start the live view afresh in a new output folder")
        dose = configured_dose(probe, ins)
    except ValueError as error:
        context["dose"] = {"reason": str(error)}
    else:
        context["dose"] = add_dose(per_frame, dose, leave_out=("statistic", "dark_counts"))
    notes += insitu_notes(context) + override_notes(config, "insitu.")
    cards: dict[str, Any] = {}
    figures: list[tuple[str, str]] = []
    if "temperature_C" in per_frame:
        now = float(per_frame["temperature_C"].iloc[-1])
        cards["holder temperature now (°C)"] = f"{now:.1f}" if math.isfinite(now) else "past the log's end so far"
        if np.isfinite(per_frame["temperature_C"].to_numpy(float)).any():
            from temflow.plots import plot_size_vs_temperature, save_figure

            save_figure(plot_size_vs_temperature(per_frame), live / "figures" / "size_vs_temperature", formats=["png"])
            figures.append(("Mean diameter and particle count against the holder's temperature (colour: time)",
                            "figures/size_vs_temperature.png"))
    if "cumulative_dose_e_per_A2" in per_frame:
        cards["dose rate now (e/Å²/s)"] = f"{per_frame['dose_rate_e_per_A2_s'].iloc[-1]:.3g}"
        cards["cumulative dose (e/Å²)"] = f"{per_frame['cumulative_dose_e_per_A2'].iloc[-1]:.3g}"
    return cards, figures, notes
