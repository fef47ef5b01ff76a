"""Peak memory of the pipeline's ``masks`` stage (classical threshold) as the movie grows.

For each length, a synthetic movie of that many frames is written to a zarr
store with temflow's default chunking (the pipeline's ``frames_per_chunk = 0``:
about 64 MiB of frames per chunk, so short movies are one chunk and the chunk
grows with the movie up to that size). Then, in a fresh interpreter, the
pipeline's own ``masks`` stage runs on it on a LocalCluster like the
pipeline's (2 workers x 1 thread by default) while a thread samples, every
20 ms, the resident memory of the whole process tree (the interpreter, the
nanny and worker processes and their children). Out of core means flat: the
peak does not depend on the number of frames.

Usage::

    python benchmarks/bench_memory.py                     # 500, 2000, 8000 frames of 128^2
    python benchmarks/bench_memory.py --quick             # 300, 1200 frames of 128^2
    python benchmarks/bench_memory.py --frames 250 1000 --size 96
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Peak RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = 0
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
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_movie(frames: int, size: int, path: Path) -> None:
    """The synthetic movie, default chunks, as the pipeline's load stage writes it."""
    from temflow.io.store import save_zarr
    from temflow.synthetic.generator import make_movie

    truth = make_movie(frames=frames, size=size, radius_nm=(2.0, 6.0), drift_px=0, jumps=0, seed=0)
    save_zarr(truth.movie, path)


def masks_stage(movie: Path, folder: Path, workers: int) -> dict:
    """Run the pipeline's ``masks`` stage on ``movie`` and measure the process tree."""
    from distributed import Client, LocalCluster

    from temflow.io.store import open_zarr
    from temflow.pipeline.config import Config
    from temflow.pipeline.stages import STAGE_FUNCTIONS, Run

    config = Config.from_dict(
        {"input": {"path": str(movie)}, "output": {"folder": str(folder)}, "segmentation": {"method": "threshold"}},
        source="bench_memory",
    )
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, memory_limit="8GiB", dashboard_address=None, host="127.0.0.1"
    ) as cluster, Client(cluster) as client:
        state = Run(config=config, folder=folder, echo=lambda line: None, client=client)
        state.results["drift"] = {"movie": str(movie)}
        idle = 0
        for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            idle += proc.memory_info().rss
        t0 = time.perf_counter()
        with PeakMemory() as memory:
            result = STAGE_FUNCTIONS["masks"](state, False)
        seconds = time.perf_counter() - t0
    chunks = open_zarr(movie).data.chunks[0]
    return {
        "seconds": seconds,
        "peak_bytes": memory.peak,
        "idle_bytes": idle,
        "movie_chunk_frames": int(max(chunks)),
        "masks_chunk_frames": int(max(open_zarr(result["masks"]).data.chunks[0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--size", type=int, default=128, help="frame side, pixels")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (1 thread each)")
    parser.add_argument("--quick", action="store_true", help="small movies: 300 and 1200 frames of 128^2")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores under this folder")
    parser.add_argument("--one", nargs=3, metavar=("MOVIE", "FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        # the measured run, in its own interpreter: nothing from earlier runs stays in memory
        print(json.dumps(masks_stage(Path(args.one[0]), Path(args.one[1]), int(args.one[2]))))
        return
    if args.quick:
        args.frames, args.size = [300, 1200], 128
    root = args.keep or Path(tempfile.mkdtemp(prefix="temflow-bench-memory-"))
    rows = []
    for frames in args.frames:
        folder = root / f"run-{frames}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_movie(frames, args.size, folder / "movie.zarr")
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(folder / "movie.zarr"), str(folder), str(args.workers)],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        if out.returncode:
            sys.exit(f"the masks stage on {frames} frames failed:\n{out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((frames, result))
        print(f"{frames} frames: masks stage {result['seconds']:.1f} s, peak {result['peak_bytes'] / 2**20:.0f} MiB", flush=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    base_frames, base = rows[0]
    print(
        f"\nmasks stage (classical threshold), {args.size}x{args.size} synthetic frames, default chunks, "
        f"LocalCluster of {args.workers} workers x 1 thread; peak RSS of the process tree"
    )
    print("| frames | movie chunk, frames | masks chunk, frames | seconds | idle MiB | peak MiB | x frames | x peak |")
    print("|---|---|---|---|---|---|---|---|")
    for frames, r in rows:
        print(
            f"| {frames} | {r['movie_chunk_frames']} | {r['masks_chunk_frames']} | {r['seconds']:.1f} | "
            f"{r['idle_bytes'] / 2**20:.0f} | {r['peak_bytes'] / 2**20:.0f} | {frames / base_frames:.0f} | "
            f"{r['peak_bytes'] / base['peak_bytes']:.2f} |"
        )


if __name__ == "__main__":
    main()
