"""Live mode: follow a folder while the microscope writes it (``temflow watch FOLDER``).

Each new frame (a Gatan In-Situ ``Hour_HH/Minute_MM/Second_SS/*.dm4`` tree, or a folder of
frame files, in the order :func:`temflow.open_movie` reads them) is taken once its file has
stopped growing and reads cleanly, and then:

1. appended to ``live/frames.zarr`` (zarr v3, one frame per chunk, Blosc-lz4: the quickest of the store's codecs);
2. registered against the key frames already seen (:mod:`temflow.drift.incremental`: the
   batch algorithm driven frame by frame, so the live drift is the one ``temflow run`` finds);
3. segmented alone, in its raw frame: the classical recipe with a per-frame Otsu threshold
   (the batch run uses one threshold for the whole movie, which needs the whole movie), or the
   trained model of ``[segmentation] model``;
4. measured (sizes in nm), and, at the next refresh, moved into frame 0's coordinates with the
   drift estimate of that refresh and linked once against the tracks so far
   (:mod:`temflow.analysis.incremental_link`: the ids :func:`temflow.analysis.link` gives the
   same table; laptrack, whose gap closing is global, links all frames again at each refresh).

Frame times are the batch reader's (an In-Situ folder's folder-name times, recomputed on the
frames so far at every refresh; ``[input] frame_interval_s`` overrides them as in the batch run).
Every ``refresh_s`` seconds ``live/summary.json`` and ``live/report.html`` are rewritten: frames,
particles per frame, mean diameter, drift, the frames per second processed, and with the run
file's ``[insitu]`` keys the holder's temperature (re-read as the log grows; needs
``clock_offset_s``) and the electron dose per frame, as the batch ``context`` stage gives them. Stopping
(``Ctrl-C``, or ``idle_timeout_s`` without a new frame) saves the state; running again continues
with the next unprocessed frame (frames processed but not yet saved are redone).

When the acquisition is over (``finish=True``), the batch pipeline runs on the finished folder
into the same output folder, so the final results are exactly those of ``temflow run``; the live
numbers are a preview that the finished run replaces (same drift; per-frame rather than
movie-wide thresholds; positions corrected by the provisional drift).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from temflow.errors import MovieFileError
from temflow.pipeline._live_context import CONTEXT_COLUMNS, live_context, live_times, live_tracks, note_context
from temflow.pipeline.config import Config, InputConfig, override_config

__all__ = ["default_workers", "list_frame_files", "watch", "watch_config"]

_FRAME_SUFFIXES = (".dm4", ".dm3", ".tif", ".tiff", ".png")
_MAX_READ_FAILURES = 20


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The frame files of a folder in acquisition order (as :func:`temflow.open_movie` reads them).

    Parameters
    ----------
    folder : str or os.PathLike
        A Gatan In-Situ tree (the folder holding ``Hour_00``) or a folder of frame files
        (``.dm4``, ``.dm3``, ``.tif``, ``.png``), sorted by name with numbers in natural order.

    Returns
    -------
    list of pathlib.Path
    """
    from temflow.io.formats._common import natural_key
    from temflow.io.formats.gatan import _insitu_files, is_insitu_folder

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; temflow watch follows a folder that the microscope writes into")
    if is_insitu_folder(root):
        base = root.parent if root.name.lower().startswith("hour_") else root
        found = sorted(_insitu_files(base), key=lambda item: (item[0], natural_key(item[1].name)))
        return [file for _, file in found]
    return sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in _FRAME_SUFFIXES),
                  key=lambda p: natural_key(p.name))


def watch(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    config: Config | None = None,
    refresh_s: float = 5.0,
    poll_s: float = 0.5,
    idle_timeout_s: float | None = None,
    max_frames: int | None = None,
    finish: bool = True,
    workers: int = 1,
    bin_px: int | None = None,
    echo: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Follow ``folder`` as frames arrive; keep a live report; finish with the batch run.

    Computes and writes under ``output`` (``live/`` for the live state, the batch run's files
    next to it when finished).

    Parameters
    ----------
    folder : str or os.PathLike
        The Gatan In-Situ folder (holding ``Hour_00``) or folder of frames being written.
    output : str or os.PathLike
        The output folder (``[output] folder`` of ``config`` is replaced by it).
    config : Config, optional
        Drift, segmentation and analysis settings as for ``temflow run`` (its ``[input]`` is
        replaced by ``folder``); default: the classical segmentation and default settings.
    refresh_s : float
        Seconds between rewrites of the live report and saves of the state.
    poll_s : float
        Seconds between looks at the folder when nothing new is there.
    idle_timeout_s : float, optional
        Stop after this long without a new frame (default: run until ``should_stop`` or
        ``Ctrl-C``).
    max_frames : int, optional
        Stop after this many frames in total.
    finish : bool
        When stopping, run the batch pipeline on the folder (the final results).
    workers : int
        Processes that segment and measure frames side by side (registration stays in order
        in this process); 1: everything here. ``temflow watch`` uses :func:`default_workers`
        (one per usable core) unless ``--workers`` says otherwise.
    bin_px : int, optional
        Segment frames binned ``bin_px`` x ``bin_px`` (``bin_px**2`` times less work; outlines
        at the binned pixel's step): replaces ``[segmentation] bin_px`` of ``config``, for the
        live frames and the batch run that finishes, so both give the same particles.
        Registration and the zarr store keep the full frames.
    echo : callable, optional
        Receives progress lines.
    should_stop : callable, optional
        Polled between frames; True stops watching.

    Returns
    -------
    dict
        The live summary (``frames``, ``frames_per_s``, ``last`` frame's count and mean diameter,
        and its ``temperature_C``, dose rate and cumulative dose when the ``[insitu]`` settings give
        them, ``drift_nm``...), with ``batch`` (the batch run's summary) when finished. The live
        folder holds ``per_frame.parquet`` (times, counts, sizes, drift, holder and dose columns),
        ``particles.parquet`` (raw-frame positions) and ``tracks.parquet`` (linked, drift-corrected).
    """
    say = echo or (lambda line: None)
    for name, value in (("refresh_s", refresh_s), ("poll_s", poll_s)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds; got {value!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    if not Path(folder).is_dir() and not Path(folder).parent.is_dir():
        raise ValueError(f"{folder} is not a folder, nor is its parent; check the path (temflow watch waits for a "
                         "folder that does not exist yet only inside an existing one)")
    out = Path(output)
    config = watch_config(folder, out, config)
    if bin_px is not None:  # checked by the run file's rules (a whole number, the classical method only)
        config = override_config(config, {"segmentation.bin_px": bin_px}, origin={"segmentation.bin_px": "bin_px"})
    live = out / "live"
    live.mkdir(parents=True, exist_ok=True)
    state = _load_state(live, config)
    files_done = len(state["files"])
    if files_done:
        say(f"temflow watch: continuing after {files_done} frames already processed")
    executor = _executor(workers, config)  # before the clock starts: starting the pool is not idle time
    last_refresh = last_new = time.monotonic()
    pending: dict[Path, tuple[int, float]] = {}
    failures: dict[Path, int] = {}
    stopped_by = "stop"
    try:
        while True:
            started = time.monotonic()
            busy = _collect(state) > 0
            if should_stop is not None and should_stop():
                break
            if max_frames is not None and len(state["files"]) >= max_frames:
                stopped_by = "max_frames"
                break
            ready = _ready_frames(Path(folder), state, pending)
            if max_frames is not None:
                ready = ready[: max(0, max_frames - len(state["files"]))]
            busy |= bool(ready)
            for file in ready:
                try:
                    _process(state, file, config, executor)
                except MovieFileError:
                    # a file that looked complete but does not read yet (written in several goes):
                    # try again at the next look, give up after a few
                    failures[file] = failures.get(file, 0) + 1
                    if failures[file] >= _MAX_READ_FAILURES:
                        raise
                    pending.pop(file, None)
                    ready = []
                    break
                last_new = time.monotonic()
            now = time.monotonic()
            if now - last_refresh >= refresh_s and state["frames"] > 0:
                _collect(state, wait=True)
                state["seconds_now"] += time.monotonic() - started if busy else 0.0
                started, busy = time.monotonic(), False
                summary = _refresh(state, live, config)
                say(_line(summary))
                last_refresh = now = time.monotonic()
            if not ready:
                # a file seen but not yet stable is a frame on its way, not idleness
                if idle_timeout_s is not None and now - last_new >= idle_timeout_s and not pending and _collect(state) == 0:
                    stopped_by = "idle"
                    break
                time.sleep(poll_s)
            if busy:  # frames in flight or taken in this look: the time was spent on them
                state["seconds_now"] += time.monotonic() - started
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        _collect(state, wait=True)
        if executor is not None:
            executor.shutdown()
    summary = _refresh(state, live, config) if state["frames"] else {"frames": 0}
    say(_line(summary) if state["frames"] else "temflow watch: no frame yet")
    summary["stopped_by"] = stopped_by
    if finish and state["frames"] and stopped_by != "interrupt":
        from temflow.pipeline.runner import run

        say("temflow watch: acquisition over; the batch run on the finished folder gives the final results")
        summary["batch"] = run(config, echo=say)
    from temflow._nofollow import write_file

    text = json.dumps(summary, indent=2, default=_json_default).encode()
    write_file(live / "summary.json", lambda file: file.write(text))
    return summary


def watch_config(folder: str | os.PathLike[str], output: str | os.PathLike[str], config: Config | None = None) -> Config:
    """The configuration :func:`watch` runs with: ``config``'s settings on ``folder``, written to ``output``.

    ``config``'s ``[input]`` path and ``[output]`` folder are replaced (its ``frame_interval_s`` is kept);
    without ``config``: the classical segmentation and default settings.

    Examples
    --------
    >>> watch_config("insitu", "results").segmentation.method
    'threshold'
    """
    out = Path(output)
    if config is None:
        config = Config.from_dict({"input": {"path": os.fspath(folder)}, "output": {"folder": str(out)},
                                   "segmentation": {"method": "threshold"}}, source="temflow watch")
    elif not isinstance(config, Config):
        raise TypeError(f"config must be a temflow Config; got {type(config).__name__}")
    inp = InputConfig(path=os.fspath(folder), frame_interval_s=config.input.frame_interval_s,
                      frames_per_chunk=config.input.frames_per_chunk)
    return dataclasses.replace(config, input=inp, output=dataclasses.replace(config.output, folder=str(out)))


def _settings_key(config: Config) -> dict[str, Any]:
    """What the live state depends on: changing it starts the live state afresh."""
    return {"drift": dataclasses.asdict(config.drift), "segmentation": dataclasses.asdict(config.segmentation),
            "min_area_nm2": config.analysis.min_area_nm2, "frame_interval_s": config.input.frame_interval_s,
            "split_touching": config.analysis.split_touching,
            # frame medians are kept for the dose only when counts_per_electron is set
            "dose_counts": config.insitu.counts_per_electron is not None}


def _load_state(live: Path, config: Config) -> dict[str, Any]:
    state: dict[str, Any] = {"files": [], "frames": 0, "tables": {}, "drift": None, "shape": None, "dtype": None,
                             "pixel_nm": None, "times": [], "started": time.monotonic(), "processed_now": 0,
                             "seconds_now": 0.0, "counts": [], "instrument": None}
    saved = live / "state.json"
    if not saved.is_file():
        return state
    meta = json.loads(saved.read_text())
    if meta.get("settings") != json.loads(json.dumps(_settings_key(config))):
        return state  # other settings: the live state is rebuilt from the first frame
    import zarr

    from temflow.drift.incremental import resume_drift

    frames = zarr.open_array(str(live / "frames.zarr"), mode="r+")
    n = int(meta["frames"])
    if frames.shape[0] > n:  # frames appended after the last save are redone
        frames.resize((n, *frames.shape[1:]))
    record = dict(np.load(live / "drift.npz"))
    state.update(files=[Path(p) for p in meta["files"]], frames=n, shape=tuple(meta["shape"]),
                 dtype=meta["dtype"], pixel_nm=tuple(meta["pixel_nm"]), times=list(meta["times"]),
                 classical=_classical_json(meta.get("classical"), load=True), counts=list(meta.get("counts", []))[:n],
                 instrument=meta.get("instrument"))
    state["drift"] = resume_drift(record, lambda i: np.asarray(frames[i]), state["shape"], **_drift_options(config))
    if (live / "particles.parquet").is_file():
        table = pd.read_parquet(live / "particles.parquet")
        state["tables"] = {int(k): part for k, part in table[table["frame"] < n].groupby("frame")}
    return state


def _drift_options(config: Config) -> dict[str, Any]:
    return {"reference": config.drift.reference, "upsample": config.drift.upsample}


def _ready_frames(folder: Path, state: dict[str, Any], pending: dict[Path, tuple[int, float]]) -> list[Path]:
    """New files, in order, whose size and modification time did not change since the last look."""
    if not folder.is_dir():
        return []  # the microscope has not created it yet
    files = list_frame_files(folder)
    done = len(state["files"])
    if done and files[:done] != state["files"][:done]:
        raise ValueError(f"{folder}: the frames already processed are no longer the first files of the folder "
                         "(files were removed or renamed); start again with a new output folder")
    ready: list[Path] = []
    blocked = False
    for file in files[done:]:
        stat = file.stat()
        seen = (stat.st_size, stat.st_mtime)
        # frames are taken in order: one still being written holds back the ones after it
        if not blocked and stat.st_size > 0 and pending.get(file) == seen:
            ready.append(file)
        else:
            blocked = True
        pending[file] = seen
    for file in ready:
        pending.pop(file, None)
    return ready


def _read(file: Path, config: Config) -> tuple[np.ndarray, tuple[float, float]]:
    import warnings

    from temflow.io.reader import open_movie
    from temflow.movie import pixel_size_nm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a single frame has no time calibration: the folder's is used
        movie = open_movie(file)
    return np.asarray(movie.values[0]), pixel_size_nm(movie)


_MAX_DEFAULT_WORKERS = 8  # each holds a frame's recipe temporaries (~100 MB at 1024^2); more rarely pays


def default_workers() -> int:
    """Worker processes ``temflow watch`` uses unless told: the cores this process may use, at most 8.

    The per-frame segmentation and measurement is single-threaded numpy/scipy work and
    frames are independent, so one process per core keeps them all busy; registration,
    the zarr append and the report stay in the watching process (about a tenth of a
    frame's work at 1024^2). One core: 1, everything in one process.

    Examples
    --------
    >>> 1 <= default_workers() <= 8
    True
    """
    return max(1, min(_usable_cores(), _MAX_DEFAULT_WORKERS))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (Linux: cgroups, taskset)
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return os.cpu_count() or 1


def _executor(workers: int, config: Config) -> Any:
    """The processes that segment and measure frames (``None``: all in this process), started and ready.

    The workers are started by a fork server (spawned where there is none), never forked from this
    process: by the time a pool forks (its first task) this process runs threads (zarr's I/O
    loop, torch's intra-op pool when a model ran here, the caller's), and a child forked from a
    threaded process can wait forever on a lock one of those threads held (seen on this project's
    machine: after one convolution in the parent, a forked worker's first convolution never
    returned). The server is a fresh interpreter that imports this module (and torch, for a
    model) once and forks the workers from there, before any torch thread exists. As with every
    non-fork start, each worker imports the caller's main script, which must therefore guard its
    own call under ``if __name__ == "__main__":``. The cost, paid once per session before the
    clock starts (this project's 2 shared cores at load 3 to 4, two workers, fresh interpreters):
    1.9 to 2.4 s to ready for the classical recipe, 3.4 to 5.9 s with a model (torch imported);
    to both first 256^2 frames measured, 2.4 to 3.3 s and 4.9 to 7.5 s, against 0.16 to 0.29 s and
    5.8 to 7.0 s with fork (whose workers inherit this process's imports). Python 3.12 warns on a
    fork of a threaded process and 3.14 no longer forks by default. With a model, each worker gets
    an equal share of the cores for torch (two workers on two cores: one thread each) instead of
    torch's default of every core in each.
    """
    if workers == 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    model = config.segmentation.method != "threshold"
    modules = [__name__, "temflow.analysis.measure", "temflow.analysis.threshold"]
    if model:  # torch starts no thread until its first operation
        modules += ["temflow.segmentation.inference", "torch"]
    if "forkserver" in methods:
        # what every task needs, imported once in the server rather than in every worker; a server already
        # running (an earlier pool in this process) keeps its own list, and each worker imports the rest
        context.set_forkserver_preload(modules)
    threads = max(1, _usable_cores() // workers) if model else 0
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                   initargs=(modules, threads))
    # the pool starts its processes on demand: start them all now, so that the first frames do not wait
    try:
        for future in [executor.submit(os.getpid) for _ in range(workers)]:
            future.result()
    except BrokenProcessPool:
        executor.shutdown(cancel_futures=True)
        # a new process imports the caller's main script: unguarded, it runs the watch again there
        raise ValueError(f"workers={workers}: the worker processes stopped while starting; a script that calls "
                         "watch with workers > 1 must do so under `if __name__ == '__main__':` (each worker imports "
                         "the script), or pass workers=1") from None
    except BaseException:
        executor.shutdown(cancel_futures=True)
        raise
    return executor


def _start_worker(modules: list[str], torch_threads: int) -> None:
    """A worker's set-up: the ``modules`` its tasks use, and ``torch_threads`` intra-op threads (0: no model).

    Ctrl-C reaches every process of the terminal's group: the watching process stops and finishes the
    frames in flight, so a worker ignores it rather than dying with a traceback mid-frame.
    """
    import importlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in modules:
        importlib.import_module(name)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)


def _collect(state: dict[str, Any], *, wait: bool = False) -> int:
    """Take in the finished per-frame tables; return how many are still being computed."""
    from concurrent.futures import Future

    running = 0
    for index, value in list(state["tables"].items()):
        if isinstance(value, Future):
            if wait or value.done():
                state["tables"][index] = value.result()
            else:
                running += 1
    return running


def _process(state: dict[str, Any], file: Path, config: Config, executor: Any) -> None:
    """Read, store and register one frame here; segment and measure it here or in a worker."""
    import zarr

    from temflow.drift.incremental import add_frame, start_drift

    frame, pixel = _read(file, config)
    live = Path(config.output.folder) / "live"
    if state["shape"] is None:
        state.update(shape=frame.shape, dtype=str(frame.dtype), pixel_nm=pixel)
        from temflow.io.store import _codecs

        # lz4: a third of the default zstd's time per 1024^2 frame (7 against 20 ms), files as small
        zarr.create_array(str(live / "frames.zarr"), shape=(0, *frame.shape), chunks=(1, *frame.shape),
                          dtype=frame.dtype, compressors=_codecs("lz4", 5, frame.dtype), overwrite=True)
        state["drift"] = start_drift(frame.shape, **_drift_options(config))
    if frame.shape != tuple(state["shape"]):
        raise ValueError(f"{file}: this frame is {frame.shape} px, the movie's frames are {tuple(state['shape'])} px; "
                         "frames of another acquisition are in the folder")
    _append_frame(state, live, frame)
    index = state["frames"]
    interval = config.input.frame_interval_s or 1.0
    state["times"].append(index * interval)
    add_frame(state["drift"], frame)
    note_context(state, file, frame, config)
    if config.segmentation.method == "threshold" and state.get("classical") is None:
        state["classical"] = _classical_settings(frame, tuple(state["pixel_nm"]), config)
    args = (frame, tuple(state["pixel_nm"]), state["times"][index], config, index,
            state.get("classical"))
    state["tables"][index] = executor.submit(_measure, *args) if executor is not None else _measure(*args)
    state["files"].append(file)
    state["frames"] = index + 1
    state["processed_now"] += 1


def _append_frame(state: dict[str, Any], live: Path, frame: np.ndarray) -> None:
    """Append one frame to ``live/frames.zarr``, kept open between frames.

    Grown by one frame and written as its own chunk (zarr's ``append`` took twice as long
    on a 1024^2 frame); the open array rides in the state under a key that is not saved.
    """
    import zarr

    store = state.get("_frames_array")
    if store is None:
        store = state["_frames_array"] = zarr.open_array(str(live / "frames.zarr"), mode="r+")
    index = store.shape[0]
    store.resize((index + 1, *store.shape[1:]))
    store[index] = frame.astype(state["dtype"], copy=False)


def _frame_movie(frame: np.ndarray, pixel_nm: tuple[float, float]) -> Any:
    """One frame as a movie in its raw coordinates (nm)."""
    from temflow.movie import as_movie

    return as_movie(frame[None], pixel_size_nm=pixel_nm, frame_interval_s=1.0)


_CLASSICAL = ("particles", "sigma_nm", "background_nm", "opening_nm", "min_area_nm2", "max_radius_nm")


def _classical_settings(frame: np.ndarray, pixel_nm: tuple[float, float], config: Config) -> dict[str, Any]:
    """The classical recipe's contrast and lengths, decided once on the first frame.

    The run file's ``[segmentation]`` settings are used as given; the ones it leaves out are
    derived from the first frame (as the batch run derives them from its sampled frames) and
    then kept, so every later frame is segmented alike and the sample is not re-measured per frame.
    """
    from temflow.analysis.threshold import threshold_particles

    seg = config.segmentation
    given = {name: getattr(seg, name) for name in _CLASSICAL if getattr(seg, name) is not None}
    attrs = threshold_particles(_frame_movie(frame, pixel_nm), threshold="frame", bin_px=seg.bin_px, **given).attrs
    decided = {name: attrs[name] for name in _CLASSICAL}
    if decided["max_radius_nm"] == "inf":
        decided["max_radius_nm"] = math.inf
    return decided


def _classical_json(settings: dict[str, Any] | None, *, load: bool = False) -> dict[str, Any] | None:
    """The decided settings as strict JSON (no largest radius: null) and back (null: infinity)."""
    if settings is None:
        return None
    radius = settings["max_radius_nm"]
    if load:
        return {**settings, "max_radius_nm": math.inf if radius is None else radius}
    return {**settings, "max_radius_nm": None if radius == math.inf else radius}


def _measure(frame: np.ndarray, pixel_nm: tuple[float, float], time_s: float, config: Config,
             index: int, classical: dict[str, Any] | None = None) -> pd.DataFrame:
    """Masks and particle table of one frame, in its raw coordinates (nm).

    ``classical``: the classical recipe's settings decided on the first frame (see
    :func:`_classical_settings`); derived from this frame alone when ``None``.
    """
    from temflow.analysis.measure import label_particles, measure_particles

    movie = _frame_movie(frame, pixel_nm)
    seg = config.segmentation
    if seg.method == "threshold":
        from temflow.analysis.threshold import threshold_particles

        masks = threshold_particles(movie, threshold="frame", bin_px=seg.bin_px, **(classical or {}))
    else:
        if not seg.model:
            raise ValueError("temflow watch segments with a trained model only when [segmentation] model names one; "
                             "train it on an earlier movie, or use method = 'threshold'")
        from temflow.segmentation.inference import predict, segment

        values = predict(movie, seg.model)
        masks = segment(values, method="threshold" if seg.threshold is not None else None,
                        threshold=seg.threshold).compute()
    labels = label_particles(masks, split_touching=config.analysis.split_touching)
    table = measure_particles(labels, movie, min_area_nm2=config.analysis.min_area_nm2)
    table["frame"] = index
    table["time"] = time_s
    return table


def _refresh(state: dict[str, Any], live: Path, config: Config) -> dict[str, Any]:
    """Solve the drift, correct and link the particles, write the live report and save the state."""
    from temflow.drift.incremental import solve_drift
    from temflow.pipeline.report import write_report

    drift = solve_drift(state["drift"])
    shift_nm = drift["shift"] * np.asarray(state["pixel_nm"])[None, :]
    _collect(state, wait=True)
    state["times"] = live_times(Path(config.input.path), state["files"], config)
    times = np.asarray(state["times"], dtype=float)
    parts = [state["tables"][k] for k in sorted(state["tables"]) if len(state["tables"][k])]
    raw = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(raw):
        raw["time"] = times[raw["frame"].to_numpy()]
    tracks = live_tracks(state, shift_nm, times, config)
    frames = np.arange(state["frames"])
    inside = tracks[~tracks["touches_border"]] if len(tracks) and "touches_border" in tracks else tracks
    per_frame = pd.DataFrame({"frame": frames, "time": state["times"][: state["frames"]]})
    if len(inside):
        groups = inside.groupby("frame")["equivalent_diameter"]
        per_frame["count"] = groups.size().reindex(frames, fill_value=0).to_numpy()
        per_frame["mean_diameter"] = groups.mean().reindex(frames).to_numpy()
        per_frame["std_diameter"] = groups.std(ddof=0).reindex(frames).to_numpy()
    else:
        per_frame["count"], per_frame["mean_diameter"], per_frame["std_diameter"] = 0, np.nan, np.nan
    per_frame["dy_nm"], per_frame["dx_nm"] = shift_nm[:, 0], shift_nm[:, 1]
    context_cards, context_figures, context_notes = live_context(state, config, per_frame, live)
    elapsed = max(state["seconds_now"], 1e-9)
    summary: dict[str, Any] = {
        "folder": str(config.input.path),
        "frames": int(state["frames"]),
        "frames_per_s": state["processed_now"] / elapsed if state["processed_now"] else None,
        "particles_tracked": int(tracks["particle"].nunique()) if len(tracks) else 0,
        "last": {"count": int(per_frame["count"].iloc[-1]),
                 "mean_diameter_nm": float(per_frame["mean_diameter"].iloc[-1])},
        "drift_nm": [float(v) for v in shift_nm[-1]],
        "max_drift_nm": float(np.hypot(shift_nm[:, 0], shift_nm[:, 1]).max()),
        "jumps": int(np.sum(drift["jump"])),
        "flagged_frames": int(np.sum(drift["flagged"])),
    }
    for name in CONTEXT_COLUMNS:
        if name in per_frame:
            summary["last"][name] = float(per_frame[name].iloc[-1])
    write_report(
        live / "report.html",
        title=f"temflow watch: {Path(config.input.path).name} (live)",
        cards={"frames": summary["frames"], "particles, last frame": summary["last"]["count"],
               "mean diameter, last frame (nm)": f"{summary['last']['mean_diameter_nm']:.2f}",
               "drift now (nm)": f"{summary['drift_nm'][0]:.1f}, {summary['drift_nm'][1]:.1f}",
               "frames/s processed": f"{summary['frames_per_s']:.1f}" if summary["frames_per_s"] else "-",
               **context_cards},
        verdict="Live preview: per-frame thresholds and provisional drift; the batch run when the acquisition "
                "ends gives the final results.",
        figures=context_figures,
        tables={"Per frame (latest first)": per_frame.iloc[::-1]},
        notes=[f"updated {time.strftime('%Y-%m-%d %H:%M:%S')}", *context_notes],
    )
    _save(state, live, config, raw, per_frame, tracks)
    return summary


def _save(state: dict[str, Any], live: Path, config: Config, raw: pd.DataFrame, per_frame: pd.DataFrame,
          tracks: pd.DataFrame) -> None:
    from temflow.drift.incremental import drift_record

    from temflow._nofollow import write_file

    record = drift_record(state["drift"])
    # each file atomically (a temporary renamed into place), never through a symbolic link
    write_file(live / "drift.npz", lambda file: np.savez(file, **record))  # type: ignore[arg-type]
    if len(raw):
        write_file(live / "particles.parquet", lambda file: raw.to_parquet(file, index=False))
    write_file(live / "per_frame.parquet", lambda file: per_frame.to_parquet(file, index=False))
    if len(tracks):
        write_file(live / "tracks.parquet", lambda file: tracks.to_parquet(file, index=False))
    meta = {"frames": state["frames"], "files": [str(f) for f in state["files"]], "shape": list(state["shape"]),
            "dtype": state["dtype"], "pixel_nm": list(state["pixel_nm"]), "times": state["times"],
            "settings": _settings_key(config), "classical": _classical_json(state.get("classical")),
            "counts": state["counts"], "instrument": state["instrument"]}
    text = json.dumps(meta, default=_json_default).encode()
    write_file(live / "state.json", lambda file: file.write(text))


def _line(summary: dict[str, Any]) -> str:
    fps = f"{summary['frames_per_s']:.1f} frames/s" if summary.get("frames_per_s") else "-"
    return (f"  live: {summary['frames']} frames ({fps}), {summary['last']['count']} particles in the last, "
            f"mean diameter {summary['last']['mean_diameter_nm']:.2f} nm, drift {summary['max_drift_nm']:.1f} nm max")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
