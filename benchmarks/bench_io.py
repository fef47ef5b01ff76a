"""Benchmark temflow's readers and store against tifffile and zarr, and conversion memory.

Two parts, one run:

1. **Read throughput** (MB/s of decompressed pixels, best of ``--repeats``):
   the same synthetic movie saved as a temflow zarr store (``temflow.save_zarr``)
   and as an uncompressed TIFF stack, read back through temflow
   (``open_zarr`` / ``open_movie`` + ``compute`` on dask's threaded scheduler)
   and directly with ``zarr`` / ``tifffile`` into one numpy array. The ratio
   is temflow's time over the direct read's (1.0 = no overhead). ``compute()``
   ends with dask concatenating all chunks into a fresh array (one more copy);
   the ``da.store`` rows write the chunks into a preallocated array instead,
   which is closer to what a pipeline that processes chunk by chunk pays.

2. **Conversion memory**: a lazily rendered synthetic movie
   (``temflow.synthetic.generator.make_movie``) is written to zarr on a one-worker
   ``distributed.LocalCluster`` with a ``--memory-limit``, at three lengths
   growing to several times that limit. The worker process's RSS is sampled
   every 20 ms; peak memory must stay flat as the movie grows.

Run ``python benchmarks/bench_io.py --quick`` for a small, fast run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import numpy as np


def _best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(frames: int, size: int, chunk_frames: int, repeats: int, workdir: Path) -> list[tuple[str, float, float]]:
    import tifffile
    import zarr

    import temflow
    from temflow.io.reader import open_movie
    from temflow.synthetic.generator import make_movie

    movie = make_movie(frames=frames, size=size, seed=0).movie.compute()
    array = movie.values
    megabytes = array.nbytes / 1e6
    store = temflow.save_zarr(movie, workdir / "bench.zarr", chunks=chunk_frames)
    tiff = workdir / "bench.tif"
    tifffile.imwrite(tiff, array)

    def temflow_zarr() -> None:
        temflow.open_zarr(store).data.compute(scheduler="threads")

    def direct_zarr() -> None:
        zarr.open_array(str(store), path="0", mode="r")[...]

    def temflow_tiff() -> None:
        open_movie(tiff, chunks=chunk_frames, frame_interval_s=1.0, pixel_size_nm=1.0).data.compute(scheduler="threads")

    def direct_tiff() -> None:
        tifffile.imread(tiff)

    target = np.empty_like(array)

    def temflow_zarr_store() -> None:
        dask.array.store(temflow.open_zarr(store).data, target, lock=False, scheduler="threads")

    def temflow_tiff_store() -> None:
        movie = open_movie(tiff, chunks=chunk_frames, frame_interval_s=1.0, pixel_size_nm=1.0)
        dask.array.store(movie.data, target, lock=False, scheduler="threads")

    def temflow_tiff_open_only() -> None:
        open_movie(tiff, chunks=chunk_frames, frame_interval_s=1.0, pixel_size_nm=1.0)

    rows = []
    for name, function in (("zarr via temflow.open_zarr", temflow_zarr), ("zarr direct (zarr.open_array[...])", direct_zarr),
                           ("tiff via temflow.open_movie", temflow_tiff), ("tiff direct (tifffile.imread)", direct_tiff),
                           ("zarr via temflow, da.store into array", temflow_zarr_store),
                           ("tiff via temflow, da.store into array", temflow_tiff_store)):
        function()  # warm the page cache and imports
        seconds = _best(function, repeats)
        rows.append((name, seconds, megabytes / seconds))
    open_seconds = _best(temflow_tiff_open_only, repeats)
    rows.append(("tiff open_movie only (headers)", open_seconds, float("nan")))
    return rows


def _sample_rss(pids: list[int], stop: threading.Event, peak: list[float]) -> None:
    import psutil

    processes = [psutil.Process(pid) for pid in pids]
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in processes) / 1e6)
        except psutil.Error:
            pass
        time.sleep(0.02)


def conversion_memory(lengths: list[int], size: int, chunk_frames: int, memory_limit: str,
                      workdir: Path) -> list[tuple[int, float, float, float, float]]:
    from distributed import Client, LocalCluster

    import temflow
    from temflow.synthetic.generator import make_movie

    rows = []
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        client.run(lambda: __import__("temflow.synthetic.generator") and None)  # imports count as baseline
        for length in lengths:
            movie = make_movie(frames=length, size=size, seed=1, chunks=chunk_frames).movie
            client.run(__import__("gc").collect)
            import psutil

            baseline = sum(psutil.Process(pid).memory_info().rss for pid in pids) / 1e6
            peak = [baseline]
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_rss, args=(pids, stop, peak), daemon=True)
            sampler.start()
            start = time.perf_counter()
            target = workdir / f"convert-{length}.zarr"
            temflow.save_zarr(movie, target, chunks=chunk_frames)
            seconds = time.perf_counter() - start
            stop.set()
            sampler.join()
            shutil.rmtree(target)
            rows.append((length, movie.nbytes / 1e6, baseline, peak[0], seconds))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast smoke run")
    parser.add_argument("--frames", type=int, default=128, help="frames in the throughput movie")
    parser.add_argument("--size", type=int, default=1024, help="frame size (px) for throughput")
    parser.add_argument("--chunk-frames", type=int, default=16, help="frames per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit", default="512MB", help="worker memory limit for the conversion")
    parser.add_argument("--convert-size", type=int, default=512, help="frame size (px) for the conversion")
    parser.add_argument("--lengths", type=int, nargs=3, default=[1024, 2048, 4096],
                        help="three movie lengths (frames) for the conversion")
    parser.add_argument("--part", choices=["all", "throughput", "memory"], default="all", help="which part to run")
    parser.add_argument("--workdir", default=None, help="folder for temporary files (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.repeats = 32, 512, 2
        args.convert_size, args.lengths = 256, [256, 512, 1024]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="temflow-bench-io-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.part in ("all", "throughput"):
            _print_throughput(args, workdir)
        if args.part in ("all", "memory"):
            _print_memory(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _print_throughput(args: argparse.Namespace, workdir: Path) -> None:
    with dask.config.set(scheduler="threads"):
        rows = throughput(args.frames, args.size, args.chunk_frames, args.repeats, workdir)
    megabytes = args.frames * args.size**2 * 2 / 1e6
    print(f"\nRead throughput: {args.frames} frames of {args.size}x{args.size} uint16 = {megabytes:.0f} MB, "
          f"{args.chunk_frames} frames per chunk, {os.cpu_count()} CPUs, best of {args.repeats}")
    print(f"{'reader':40s} {'seconds':>9s} {'MB/s':>9s} {'temflow/direct time':>20s}")
    direct = {"zarr": rows[1][1], "tiff": rows[3][1]}
    for name, seconds, rate in rows:
        kind = "zarr" if name.startswith("zarr") else "tiff"
        ratio = f"{seconds / direct[kind]:.2f}" if "temflow" in name and "open_movie only" not in name else ""
        rate_text = f"{rate:9.0f}" if np.isfinite(rate) else f"{'-':>9s}"
        print(f"{name:40s} {seconds:9.3f} {rate_text} {ratio:>20s}")


def _print_memory(args: argparse.Namespace, workdir: Path) -> None:
    rows_memory = conversion_memory(args.lengths, args.convert_size, args.chunk_frames, args.memory_limit, workdir)
    print(f"\nConversion of a lazily rendered synthetic movie to zarr on 1 worker x 2 threads, "
          f"memory_limit={args.memory_limit}, {args.convert_size}x{args.convert_size} uint16, "
          f"{args.chunk_frames} frames per chunk")
    print(f"{'frames':>7s} {'movie MB':>9s} {'worker RSS before':>18s} {'peak RSS MB':>12s} {'peak-before':>12s} "
          f"{'seconds':>8s} {'MB/s':>7s}")
    for length, size_mb, base, peak, seconds in rows_memory:
        print(f"{length:7d} {size_mb:9.0f} {base:18.0f} {peak:12.0f} {peak - base:12.0f} {seconds:8.1f} "
              f"{size_mb / seconds:7.1f}")
    growth = rows_memory[-1][3] / rows_memory[0][3]
    print(f"movie grew x{rows_memory[-1][1] / rows_memory[0][1]:.0f}; peak worker memory grew x{growth:.2f}")


if __name__ == "__main__":
    sys.exit(main())
