"""Peak memory of the pipeline's ``masks`` stage (classical threshold) as the movie grows.

For each length, a synthetic movie of that many frames is written to a zarr
store with temflow's default chunking (the pipeline's ``frames_per_chunk = 0``:
about 64 MiB of frames per chunk, so short movies are one chunk and the chunk
grows with the movie up to that size). Then, in a fresh interpreter, the
pipeline's own ``masks`` stage runs on it, once on the pipeline's own local
cluster (``temflow.cluster.connect``: 2 worker processes x 1 thread by
default) and once on dask's threaded scheduler in one process (2 threads),
while a thread samples, every 20 ms, the resident memory of the whole process
tree (the interpreter, the nanny and worker processes and their children).
Out of core means flat: the peak does not depend on the number of frames.

Usage::

    python benchmarks/bench_memory.py                     # 500 and 8000 frames of 128^2, both schedulers
    python benchmarks/bench_memory.py --quick             # 300, 1200 frames of 128^2
    python benchmarks/bench_memory.py --frames 250 1000 --size 96 --schedulers processes
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


def masks_stage(movie: Path, folder: Path, workers: int, scheduler: str) -> dict:
    """Run the pipeline's ``masks`` stage on ``movie`` and measure the process tree."""
    from contextlib import nullcontext

    import dask

    from temflow.cluster import connect
    from temflow.io.store import open_zarr
    from temflow.pipeline.config import Config
    from temflow.pipeline.stages import STAGE_FUNCTIONS, Run

    config = Config.from_dict(
        {"input": {"path": str(movie)}, "output": {"folder": str(folder)}, "segmentation": {"method": "threshold"}},
        source="bench_memory",
    )
    if scheduler == "processes":  # the pipeline's own local cluster, as `temflow run` starts it
        cluster = connect(n_workers=workers, threads_per_worker=1, memory_limit="8GiB", dashboard_address="127.0.0.1:0")
        threads = nullcontext()
    else:
        cluster = nullcontext()
        threads = dask.config.set(scheduler="threads", num_workers=workers)
    with cluster as client, threads:
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
    parser.add_argument("--frames", type=int, nargs="+", default=[500, 8000])
    parser.add_argument("--schedulers", nargs="+", choices=["processes", "threads"], default=["processes", "threads"],
                        help="temflow's local cluster (worker processes) and/or dask's threaded scheduler")
    parser.add_argument("--size", type=int, default=128, help="frame side, pixels")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each), or threads")
    parser.add_argument("--quick", action="store_true", help="small movies: 300 and 1200 frames of 128^2")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores under this folder")
    parser.add_argument("--one", nargs=4, metavar=("MOVIE", "FOLDER", "WORKERS", "SCHEDULER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        # the measured run, in its own interpreter: nothing from earlier runs stays in memory
        print(json.dumps(masks_stage(Path(args.one[0]), Path(args.one[1]), int(args.one[2]), args.one[3])))
        return
    if args.quick:
        args.frames, args.size = [300, 1200], 128
    root = args.keep or Path(tempfile.mkdtemp(prefix="temflow-bench-memory-"))
    rows: dict[str, list[tuple[int, dict]]] = {name: [] for name in args.schedulers}
    for frames in args.frames:
        folder = root / f"run-{frames}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_movie(frames, args.size, folder / "movie.zarr")
        for scheduler in args.schedulers:
            shutil.rmtree(folder / "masks.zarr", ignore_errors=True)
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(folder / "movie.zarr"), str(folder), str(args.workers), scheduler],
                capture_output=True,
                text=True,
                env=os.environ,
            )
            if out.returncode:
                sys.exit(f"the masks stage on {frames} frames ({scheduler}) failed:\n{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows[scheduler].append((frames, result))
            print(f"{frames} frames, {scheduler}: masks stage {result['seconds']:.1f} s, "
                  f"peak {result['peak_bytes'] / 2**20:.0f} MiB", flush=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    what = {"processes": f"temflow's local cluster, {args.workers} worker processes x 1 thread",
            "threads": f"dask's threaded scheduler, one process, {args.workers} threads"}
    print(f"\nmasks stage (classical threshold), {args.size}x{args.size} synthetic frames, default chunks; "
          "peak RSS of the process tree")
    print("| scheduler | frames | movie chunk, frames | masks chunk, frames | seconds | idle MiB | peak MiB | x frames | x peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scheduler, measured in rows.items():
        base_frames, base = measured[0]
        for frames, r in measured:
            print(
                f"| {what[scheduler]} | {frames} | {r['movie_chunk_frames']} | {r['masks_chunk_frames']} | "
                f"{r['seconds']:.1f} | {r['idle_bytes'] / 2**20:.0f} | {r['peak_bytes'] / 2**20:.0f} | "
                f"{frames / base_frames:.0f} | {r['peak_bytes'] / base['peak_bytes']:.2f} |"
            )


if __name__ == "__main__":
    main()
