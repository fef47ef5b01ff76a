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

The goal of issue 16: the live mode keeps pace with >= 10 frames/s acquisition at 1024 x 1024
on 2 cores. The numbers depend on the machine's load: say which machine and how loaded.

Usage::

    python benchmarks/bench_watch.py --frames 60 --size 1024
    python benchmarks/bench_watch.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def write_folder(folder: Path, frames: int, size: int, seed: int) -> float:
    """The synthetic movie as one TIFF per frame; returns the seconds it took."""
    t0 = time.perf_counter()
    truth = make_movie(frames=frames, size=size, seed=seed, radius_nm=(2.0, 6.0), chunks=4)
    folder.mkdir(parents=True)
    for index in range(frames):
        tifffile.imwrite(folder / f"frame_{index:05d}.tif", truth.movie[index].values)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--refresh-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="Processes segmenting frames side by side (live).")
    parser.add_argument("--bin", type=int, default=1, help="Live segmentation on frames binned this much.")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 frames of 256 x 256")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size = 20, 256
    work = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    try:
        folder = work / "frames"
        seconds = write_folder(folder, args.frames, args.size, args.seed)
        print(f"wrote {args.frames} frames of {args.size}^2 in {seconds:.1f} s; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        settings = {
            "input": {"path": str(folder), "frame_interval_s": 0.1},
            "segmentation": {"method": "threshold"},
            "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
            "output": {"folder": str(work / "batch"), "figure_formats": ["png"]},
        }
        results: dict[str, object] = {"frames": args.frames, "size": args.size, "cpus": os.cpu_count(),
                                      "load_average_before": os.getloadavg()[0]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TIFF frames without a pixel calibration: 1 px = 1 nm
            t0 = time.perf_counter()
            summary = watch(folder, work / "live", config=Config.from_dict(settings), refresh_s=args.refresh_s,
                            poll_s=0.01, idle_timeout_s=0.2, finish=False, workers=args.workers,
                            bin_px=args.bin)
            live_wall = time.perf_counter() - t0 - 0.2  # the idle timeout at the end is not work
            results["live_frames_per_s_per_frame_work"] = summary["frames_per_s"]
            results["live_frames_per_s_session"] = args.frames / live_wall
            print(f"live ({args.workers} workers, bin {args.bin}): {summary['frames_per_s']:.2f} frames/s (read + zarr + drift + masks + "
                  "measure, time with frames in flight); "
                  f"{args.frames / live_wall:.2f} frames/s for the whole session with refreshes every "
                  f"{args.refresh_s} s ({live_wall:.1f} s)")
            if not args.skip_batch:
                t0 = time.perf_counter()
                batch = run(Config.from_dict(settings))
                batch_wall = time.perf_counter() - t0
                stages = batch["stage_seconds"]
                core = sum(stages.get(k, 0.0) for k in ("drift", "masks", "measure"))
                results.update(batch_wall_s=batch_wall, batch_frames_per_s=args.frames / batch_wall,
                               batch_drift_masks_measure_frames_per_s=args.frames / core, batch_stage_seconds=stages)
                print(f"batch: {batch_wall:.1f} s, {args.frames / batch_wall:.2f} frames/s; drift + masks + measure "
                      f"{core:.1f} s = {args.frames / core:.2f} frames/s; stages "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
        results["load_average_after"] = os.getloadavg()[0]
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
