"""End-to-end pipeline cost as the movie grows: time per frame and peak memory.

Runs ``temflow.run`` on synthetic movies of growing length (same frame size,
same settings) and reports, side by side, the wall time, the time per frame,
the stage breakdown and the peak resident memory of the whole process tree
(this process, the local cluster's workers and their children), sampled every
50 ms. Out of core means: time per frame roughly constant and peak memory flat
as the number of frames grows.

Usage::

    python benchmarks/bench_pipeline.py --quick
    python benchmarks/bench_pipeline.py --frames 200 800 3200 --size 1024 --method threshold
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from temflow.pipeline.config import Config
from temflow.pipeline.runner import run


class PeakMemory:
    """Peak RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.stage = "start"
        self.stage_peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0), total)
            time.sleep(self.interval_s)

    def echo(self, line: str) -> None:
        """Follow the pipeline's stage lines, to attribute memory to stages."""
        words = line.split()
        if len(words) >= 2 and words[1] in ("running...", "resuming..."):
            self.stage = words[0]

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_run(
    frames: int, size: int, method: str, epochs: int, workers: int, memory_limit: str, chunk: int, folder: Path
) -> dict:
    config = Config.from_dict(
        {
            "input": {
                "synthetic": {"frames": frames, "size": size, "radius_nm": [2.0, 6.0], "seed": 0},
                "frames_per_chunk": chunk,
            },
            "output": {"folder": str(folder), "figure_formats": ["png"]},
            "segmentation": {"method": method},
            "training": {"epochs": epochs},
            "cluster": {
                "n_workers": workers,
                "threads_per_worker": 1,
                "memory_limit": memory_limit,
                "dashboard_address": "127.0.0.1:0",
            },
        }
    )
    t0 = time.perf_counter()
    with PeakMemory() as memory:
        summary = run(config, echo=memory.echo)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_bytes": memory.peak,
        "stages": summary["stage_seconds"],
        "stage_peaks": memory.stage_peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 800, 3200])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--method", choices=["threshold", "unet", "autoencoder"], default="threshold")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (unet/autoencoder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GiB", help="per worker")
    parser.add_argument(
        "--frames-per-chunk", type=int, default=16, help="the same chunk for every length, so only length varies"
    )
    parser.add_argument("--quick", action="store_true", help="small movies: 20, 40, 80 frames of 256^2")
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs under this folder")
    args = parser.parse_args()
    frames_list, size = (([20, 40, 80], 256) if args.quick else (args.frames, args.size))
    root = args.keep or Path(tempfile.mkdtemp(prefix="temflow-bench-"))
    rows = []
    for frames in frames_list:
        folder = root / f"run-{frames}"
        shutil.rmtree(folder, ignore_errors=True)
        result = one_run(
            frames, size, args.method, args.epochs, args.workers, args.memory_limit, args.frames_per_chunk, folder
        )
        rows.append((frames, result))
        print(f"{frames} frames done in {result['seconds']:.1f} s", flush=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    base_frames, base = rows[0]
    print(f"\nPipeline ({args.method}) on {size}x{size} synthetic movies, {args.workers} workers x 1 thread, "
          f"{args.memory_limit} per worker, {args.frames_per_chunk} frames per chunk")
    print(f"{'frames':>7} {'seconds':>9} {'ms/frame':>9} {'x time':>7} {'x frames':>8} {'peak MiB':>9} {'x memory':>8}")
    for frames, result in rows:
        print(
            f"{frames:>7} {result['seconds']:>9.1f} {1000 * result['seconds'] / frames:>9.1f} "
            f"{result['seconds'] / base['seconds']:>7.2f} {frames / base_frames:>8.2f} "
            f"{result['peak_bytes'] / 2**20:>9.0f} {result['peak_bytes'] / base['peak_bytes']:>8.2f}"
        )
    print("\nStage breakdown, seconds:")
    stages = list(rows[-1][1]["stages"])
    print(f"{'frames':>7} " + " ".join(f"{s:>10}" for s in stages))
    for frames, result in rows:
        print(f"{frames:>7} " + " ".join(f"{result['stages'].get(s, 0.0):>10.1f}" for s in stages))
    print("\nPeak memory of the process tree during each stage, MiB:")
    print(f"{'frames':>7} " + " ".join(f"{s:>10}" for s in stages))
    for frames, result in rows:
        print(f"{frames:>7} " + " ".join(f"{result['stage_peaks'].get(s, 0) / 2**20:>10.0f}" for s in stages))


if __name__ == "__main__":
    main()
