"""Live mode against the batch run: frames per second sustained by ``temflow watch``.

Writes a synthetic movie (``temflow.synthetic``) as a folder of TIFF frames, then

* **live**: ``temflow.pipeline.live`` follows the complete folder (every frame is "new") with
  the classical segmentation; reported: frames/s of the per-frame work (read the file, append
  to zarr, incremental drift against the key frames, per-frame masks, measurement), and of the
  whole session including the live report's refreshes (drift solve, linking, HTML) every
  ``--refresh-s`` seconds;
* **batch**: ``temflow.run`` on the same folder with the same settings (load, drift + crop,
  masks, measurement, tracking, coarsening, report); reported: wall time, frames/s, and the
  drift + masks + measure stages alone.

* **steps**: ms per frame of each step of the live per-frame path (read, zarr append, drift,
  masks, labels, measure), single-threaded, on ``--steps`` frames of the folder; with
  ``--baseline SRC`` (another temflow source tree, e.g. ``git archive`` of an older commit
  unpacked somewhere) the same steps of that tree are timed in the same run, alternately with
  this one, and the ratio new / old is printed: on a shared machine only such back-to-back
  ratios mean much.

The goal of issue 16: the live mode keeps pace with >= 10 frames/s acquisition at 1024 x 1024
on 2 cores, i.e. at most ~200 ms of one core per frame for everything. The numbers depend on the
machine's load: say which machine and how loaded.

Usage::

    python benchmarks/bench_watch.py --frames 60 --size 1024
    python benchmarks/bench_watch.py --frames 30 --size 1024 --baseline /tmp/temflow_old/src
    python benchmarks/bench_watch.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile

from temflow.pipeline.config import Config
from temflow.pipeline.runner import run
from temflow.pipeline.live import watch
from temflow.synthetic.generator import make_movie


def write_folder(folder: Path, frames: int, size: int, seed: int) -> tuple[float, float]:
    """The synthetic movie as one TIFF per frame; returns the seconds it took and its true particles per frame."""
    t0 = time.perf_counter()
    truth = make_movie(frames=frames, size=size, seed=seed, radius_nm=(2.0, 6.0), chunks=4)
    folder.mkdir(parents=True)
    for index in range(frames):
        tifffile.imwrite(folder / f"frame_{index:05d}.tif", truth.movie[index].values)
    labels = truth.labels.values
    return time.perf_counter() - t0, float(np.mean([len(np.unique(frame)) - 1 for frame in labels]))


STEPS = ("read", "zarr", "drift", "masks", "labels", "measure")


def time_steps(folder: Path, frames: int) -> dict[str, float]:
    """Median ms per frame of each step of the live per-frame path, on the folder's first frames.

    Runs in whatever temflow is imported (a child process with the tree to time on its path).
    The first frame decides the classical settings (``decide``, once per session) and is not
    in the medians.
    """
    import zarr

    from temflow.analysis.measure import label_particles, measure_particles
    from temflow.analysis.threshold import threshold_particles
    from temflow.drift.incremental import add_frame, start_drift
    from temflow.pipeline import live

    files = live.list_frame_files(folder)[: frames + 1]
    out = Path(tempfile.mkdtemp(prefix="bench_steps_"))
    config = Config.from_dict({"input": {"path": str(folder), "frame_interval_s": 0.1},
                               "segmentation": {"method": "threshold"}, "output": {"folder": str(out)}})
    seconds: dict[str, list[float]] = {step: [] for step in STEPS}
    state: dict[str, object] = {}
    drift = None
    try:
        for index, file in enumerate(files):
            clock = {}
            t0 = time.perf_counter()
            frame, pixel = live._read(file, config)
            clock["read"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if index == 0:
                try:  # the live store's own codec where the tree has one
                    from temflow.io.store import _codecs

                    lz4 = "_codecs(" in Path(live.__file__).read_text()  # the trees before it: zarr's default
                    codecs = {"compressors": _codecs("lz4", 5, frame.dtype)} if lz4 else {}
                except ImportError:
                    codecs = {}
                zarr.create_array(str(out / "frames.zarr"), shape=(0, *frame.shape), chunks=(1, *frame.shape),
                                  dtype=frame.dtype, overwrite=True, **codecs)
                state = {"dtype": str(frame.dtype)}
                drift = start_drift(frame.shape, reference=config.drift.reference, upsample=config.drift.upsample)
            if hasattr(live, "_append_frame"):
                live._append_frame(state, out, frame)
            else:  # the trees before it re-opened the store and appended
                zarr.open_array(str(out / "frames.zarr"), mode="r+").append(frame[None])
            clock["zarr"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            add_frame(drift, frame)
            clock["drift"] = time.perf_counter() - t0
            if index == 0:
                t0 = time.perf_counter()
                try:
                    classical = live._classical_settings(frame, pixel, config)
                except TypeError:  # the trees before [segmentation] bin_px took the binning as an argument
                    classical = live._classical_settings(frame, pixel, config, 1)
                decide = time.perf_counter() - t0
                continue
            try:
                movie = live._frame_movie(frame, pixel)
            except TypeError:
                movie = live._frame_movie(frame, pixel, 1)
            t0 = time.perf_counter()
            masks = threshold_particles(movie, threshold="frame", **classical)
            clock["masks"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            labels = label_particles(masks, split_touching=config.analysis.split_touching)
            clock["labels"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            measure_particles(labels, movie, min_area_nm2=config.analysis.min_area_nm2)
            clock["measure"] = time.perf_counter() - t0
            for step in STEPS:
                seconds[step].append(clock[step])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = {step: 1e3 * float(np.median(values)) for step, values in seconds.items()}
    result["total"] = sum(result[step] for step in STEPS)
    result["decide_once"] = 1e3 * decide
    return result


def _steps_in(src: Path, folder: Path, frames: int) -> dict[str, float]:
    """:func:`time_steps` in a child process that imports temflow from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--steps-child", str(folder), "--steps", str(frames)],
                          env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_steps(folder: Path, frames: int, baseline: Path | None, rounds: int = 2) -> dict[str, dict[str, float]]:
    """Per-step ms of this tree (and of ``baseline``), alternately, the best of ``rounds`` runs each."""
    import temflow

    trees = {"this": Path(temflow.__file__).resolve().parents[1]}
    if baseline is not None:
        trees = {"baseline": baseline.resolve(), **trees}
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, src in trees.items():
            found = _steps_in(src, folder, frames)
            best[name] = {k: min(v, best.get(name, {}).get(k, np.inf)) for k, v in found.items()}
    print(f"per-frame steps at {_frame_size(folder)} (ms per frame, median of {frames} frames, best of {rounds} runs; "
          "one process, single-threaded):")
    header = f"  {'step':12s} {'this tree':>10s}" + (f" {'baseline':>10s} {'this/baseline':>14s}" if baseline else "")
    print(header)
    for step in (*STEPS, "total", "decide_once"):
        line = f"  {step:12s} {best['this'][step]:10.1f}"
        if baseline is not None:
            line += f" {best['baseline'][step]:10.1f} {best['this'][step] / best['baseline'][step]:14.2f}"
        print(line)
    return best


_WARM_UP = 4


def sustained_rate(folder: Path, out: Path, settings: dict, args: argparse.Namespace) -> float:
    """Frames/s of a live session that is already under way: what keeps pace with an acquisition.

    A first session takes the first ``_WARM_UP`` frames (the first frame decides the classical
    settings, once; the modules are imported); the next one continues where it stopped, as after
    a restart, on the rest; its frames/s (the time with frames in flight, refreshes included; the
    worker processes start before its clock) is what a long acquisition sees frame after frame.
    """
    growing = out / "frames"
    growing.mkdir(parents=True)
    files = sorted(folder.iterdir())
    for file in files[:_WARM_UP]:
        shutil.copy(file, growing / file.name)
    config = Config.from_dict({**settings, "input": {**settings["input"], "path": str(growing)}})
    options = dict(config=config, refresh_s=args.refresh_s, poll_s=0.01, idle_timeout_s=0.2, finish=False,
                   workers=args.workers)
    watch(growing, out / "live", **options)
    for file in files[_WARM_UP:]:
        shutil.copy(file, growing / file.name)
    # the session's own clock: time with frames in flight (refreshes included), not the workers' start
    return float(watch(growing, out / "live", **options)["frames_per_s"])


def _one_bin(folder: Path, work: Path, settings: dict, bin_px: int, args: argparse.Namespace) -> dict[str, float]:
    """The live session, its sustained rate and the batch run, all segmenting at ``bin_px``."""
    import pandas as pd

    row: dict[str, float] = {"bin_px": bin_px}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TIFF frames without a pixel calibration: 1 px = 1 nm
        t0 = time.perf_counter()
        summary = watch(folder, work / "live", config=Config.from_dict(settings), refresh_s=args.refresh_s,
                        poll_s=0.01, idle_timeout_s=0.2, finish=False, workers=args.workers)
        live_wall = time.perf_counter() - t0 - 0.2  # the idle timeout at the end is not work
        per_frame = pd.read_parquet(work / "live" / "live" / "per_frame.parquet")
        row.update(live_frames_per_s_per_frame_work=summary["frames_per_s"],
                   live_frames_per_s_session=args.frames / live_wall, live_count_per_frame=float(per_frame["count"].mean()))
        print(f"bin {bin_px}: live ({args.workers} workers) {args.frames / live_wall:.2f} frames/s for the whole session "
              f"({live_wall:.1f} s: the first frame's decision, the workers' start, refreshes every {args.refresh_s} s)")
        sustained = sustained_rate(folder, work / "sustained", settings, args)
        row["live_frames_per_s_sustained"] = sustained
        print(f"bin {bin_px}: live, sustained {sustained:.2f} frames/s once the session is under way (the frames after "
              f"the first {_WARM_UP}; refreshes included)")
        if not args.skip_batch:
            t0 = time.perf_counter()
            batch = run(Config.from_dict(settings))
            batch_wall = time.perf_counter() - t0
            stages = batch["stage_seconds"]
            core = sum(stages.get(k, 0.0) for k in ("drift", "masks", "measure"))
            stats = pd.read_parquet(Path(settings["output"]["folder"]) / "statistics.parquet")
            row.update(batch_wall_s=batch_wall, batch_frames_per_s=args.frames / batch_wall,
                       batch_drift_masks_measure_frames_per_s=args.frames / core,
                       batch_count_per_frame=float(stats["count"].mean()))
            print(f"bin {bin_px}: batch {batch_wall:.1f} s, {args.frames / batch_wall:.2f} frames/s; drift + masks + "
                  f"measure {core:.1f} s = {args.frames / core:.2f} frames/s; stages "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    return row


def _frame_size(folder: Path) -> str:
    import tifffile as tf

    first = sorted(folder.iterdir())[0]
    shape = tf.imread(first).shape
    return f"{shape[0]} x {shape[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--refresh-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="Processes segmenting frames side by side (live).")
    parser.add_argument("--bins", type=lambda text: [int(v) for v in text.split(",")], default=[1, 2],
                        help="Comma-separated [segmentation] bin_px values, each timed live and batch (default 1,2).")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 frames of 256 x 256")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--steps", type=int, default=8, help="Frames on which the per-frame steps are timed (0: none).")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="Another temflow source tree (the folder holding temflow/) to time step by step alongside.")
    parser.add_argument("--steps-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps_child is not None:
        print(json.dumps(time_steps(args.steps_child, args.steps)))
        return
    if args.quick:
        args.frames, args.size = 20, 256
    work = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    try:
        folder = work / "frames"
        seconds, truth_count = write_folder(folder, args.frames, args.size, args.seed)
        print(f"wrote {args.frames} frames of {args.size}^2 in {seconds:.1f} s; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        settings = {
            "input": {"path": str(folder), "frame_interval_s": 0.1},
            "segmentation": {"method": "threshold"},
            "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
            "output": {"folder": str(work / "batch"), "figure_formats": ["png"]},
        }
        results: dict[str, object] = {"frames": args.frames, "size": args.size, "cpus": os.cpu_count(),
                                      "load_average_before": os.getloadavg()[0], "truth_particles_per_frame": truth_count}
        if args.steps > 0:
            results["steps_ms"] = compare_steps(folder, min(args.steps, args.frames - 1), args.baseline)
        rows = []
        for bin_px in args.bins:
            binned = {**settings, "segmentation": {"method": "threshold", "bin_px": bin_px},
                      "output": {**settings["output"], "folder": str(work / f"batch_bin{bin_px}")}}
            rows.append(_one_bin(folder, work / f"bin{bin_px}", binned, bin_px, args))
        results["runs"] = rows
        print(f"\n{args.frames} frames of {args.size}^2, {args.workers} live workers, truth {truth_count:.1f} particles "
              "per frame (live counts: per-frame thresholds on the raw frames; batch: movie-wide, drift-cropped)")
        print(f"  {'bin':>3s} {'live session':>13s} {'live sustained':>15s} {'batch':>7s} {'batch drift+masks+measure':>26s} "
              f"{'sustained / batch':>18s} {'live count':>11s} {'batch count':>12s}")
        for row in rows:
            batch = row.get("batch_frames_per_s", float("nan"))
            print(f"  {row['bin_px']:3d} {row['live_frames_per_s_session']:13.2f} {row['live_frames_per_s_sustained']:15.2f} "
                  f"{batch:7.2f} {row.get('batch_drift_masks_measure_frames_per_s', float('nan')):26.2f} "
                  f"{row['live_frames_per_s_sustained'] / batch:18.2f} {row['live_count_per_frame']:11.1f} "
                  f"{row.get('batch_count_per_frame', float('nan')):12.1f}")
        results["load_average_after"] = os.getloadavg()[0]
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
