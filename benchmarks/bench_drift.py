"""Drift estimation and correction: temflow against its peers, side by side, on one synthetic movie.

Run ``python benchmarks/bench_drift.py --quick`` for a small run (a minute or two) or, for the
issue's setting, ``python benchmarks/bench_drift.py --size 1024 --frames 60 --peer-frames 16``.

Parts (each prints a table):

1. estimation speed and accuracy on a noisy drifting movie with jumps and ripening particles:
   temflow (numpy path and dask graph), ``skimage.registration.phase_cross_correlation`` in a loop
   (upsample 10 and 100, against the first and the previous frame), pystackreg
   ``StackReg(TRANSLATION)`` and HyperSpy ``estimate_shift2D`` (when installed), and the FFT floor
   (one real FFT and one inverse per frame); frames/s, ms/frame, RMS error against the truth,
   and ratios to temflow;
2. error growth with movie length (temflow's three references, short vs 10x longer movie);
3. out of core: zarr -> correct_drift -> zarr in a child process at two movie lengths: peak memory
   and throughput, against reading the movie alone.

Peers with their own sign conventions are compared after matching the sign to the truth
(a convention, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rms(error: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.asarray(error) ** 2, axis=-1))))


def _signed_rms(estimate: np.ndarray, truth: np.ndarray) -> float:
    return min(_rms(estimate - truth), _rms(-estimate - truth))


def _row(name: str, seconds: float, frames: int, error: float | None, base: float | None) -> dict:
    ms = 1e3 * seconds / frames
    return {"method": name, "ms_per_frame": ms, "frames_per_s": frames / seconds, "rms_px": error, "ratio": None if base is None else ms / base}


def _print(rows: list[dict], title: str, ratio_label: str) -> None:
    print(f"\n## {title}")
    print(f"{'method':44s} {'ms/frame':>9s} {'frames/s':>9s} {'RMS px':>8s} {ratio_label:>14s}")
    for r in rows:
        err = "-" if r["rms_px"] is None else f"{r['rms_px']:.3f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['method']:44s} {r['ms_per_frame']:9.1f} {r['frames_per_s']:9.1f} {err:>8s} {ratio:>14s}")


def estimation(size: int, frames: int, peer_frames: int, seed: int) -> None:
    import dask
    import xarray as xr
    from scipy import fft as sfft

    from temflow.drift.correction import estimate_drift
    from temflow.synthetic.generator import make_movie

    truth = make_movie(frames=frames, size=size, seed=seed, jumps=2, chunks=8)
    t0 = time.perf_counter()
    movie = truth.movie.compute()
    print(f"rendered {frames} frames of {size}^2 in {time.perf_counter() - t0:.1f} s; drift up to "
          f"{np.abs(truth.shifts.values).max():.1f} px, jumps at {truth.parameters['jump_frames']}")
    true = truth.shifts.values
    data = movie.values
    rows = []

    # the floor: one real FFT and one inverse per frame, float32, one thread and all cores
    floor = {}
    for workers in (1, os.cpu_count() or 1):
        t0 = time.perf_counter()
        for frame in data:
            sfft.irfft2(sfft.rfft2(frame.astype(np.float32), workers=workers), s=frame.shape, workers=workers)
        floor[workers] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shifts = estimate_drift(movie).values
    t_numpy = time.perf_counter() - t0
    lazy_movie = xr.DataArray(dask.array.from_array(data, chunks=(8, size, size)), dims=movie.dims, coords=movie.coords)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        shifts_dask = estimate_drift(lazy_movie).values
    t_dask = time.perf_counter() - t0
    base = 1e3 * t_numpy / frames
    rows.append(_row("temflow estimate_drift (numpy, 1 thread)", t_numpy, frames, _rms(shifts - true), base))
    rows.append(_row("temflow estimate_drift (dask threads, chunks 8)", t_dask, frames, _rms(shifts_dask - true), base))
    for ref in ("first", "previous"):
        t0 = time.perf_counter()
        s = estimate_drift(movie, reference=ref).values
        rows.append(_row(f"temflow reference={ref!r}", time.perf_counter() - t0, frames, _rms(s - true), base))
    for workers, seconds in floor.items():
        rows.append(_row(f"FFT floor rfft2+irfft2 ({workers} thread{'s' * (workers > 1)})", seconds, frames, None, base))

    # peers on the first `peer_frames` frames (they are slow); temflow's error on the same frames
    n = min(peer_frames, frames)
    sub, sub_true = data[:n].astype(np.float32), true[:n]
    rows.append({**_row(f"  temflow on the peers' first {n} frames", t_numpy * n / frames, n, _rms(shifts[:n] - sub_true), base)})
    from skimage.registration import phase_cross_correlation

    for upsample in (10, 100):
        for ref in ("first", "previous"):
            t0 = time.perf_counter()
            est = np.zeros((n, 2))
            for t in range(1, n):
                other = sub[0] if ref == "first" else sub[t - 1]
                step, _, _ = phase_cross_correlation(other, sub[t], upsample_factor=upsample)
                est[t] = -step if ref == "first" else est[t - 1] - step
            rows.append(_row(f"skimage phase_cross_correlation up={upsample} {ref}", time.perf_counter() - t0, n, _signed_rms(est, sub_true), base))
    try:
        from pystackreg import StackReg

        for ref in ("first", "previous"):
            t0 = time.perf_counter()
            tmats = StackReg(StackReg.TRANSLATION).register_stack(sub, reference=ref)
            est = np.stack([tmats[:, 1, 2], tmats[:, 0, 2]], axis=1)
            rows.append(_row(f"pystackreg TRANSLATION {ref}", time.perf_counter() - t0, n, _signed_rms(est, sub_true), base))
    except ImportError:
        print("pystackreg is not installed: skipped")
    try:
        import hyperspy.api as hs

        for ref in ("current", "cascade"):
            signal = hs.signals.Signal2D(sub)
            t0 = time.perf_counter()
            est = np.asarray(signal.estimate_shift2D(reference=ref, sub_pixel_factor=10, show_progressbar=False))
            rows.append(_row(f"hyperspy estimate_shift2D {ref} sub_pixel 10", time.perf_counter() - t0, n, _signed_rms(est - est[0], sub_true), base))
    except ImportError:
        print("hyperspy is not installed: skipped")
    _print(rows, f"estimation, {size}^2 frames, {frames} frames (peers: {n} frames)", "ms vs temflow")


def growth(size: int, short: int, long: int, seed: int) -> None:
    from temflow.drift.correction import estimate_drift
    from temflow.synthetic.generator import make_movie

    print(f"\n## error growth with movie length ({size}^2, ripening, smooth drift + 2 jumps)")
    print(f"{'reference':12s} {'RMS px, ' + str(short) + ' frames':>20s} {'RMS px, ' + str(long) + ' frames':>20s}")
    movies = {}
    for frames in (short, long):
        # the same per-frame drift speed: the long movie drifts 10x further
        truth = make_movie(frames=frames, size=size, seed=seed, drift_px=0.1 * size * frames / long * 4, jumps=2, jump_px=size / 8)
        movies[frames] = (truth, truth.movie.compute())
    for ref in ("auto", "first", "previous"):
        errors = []
        for frames in (short, long):
            truth, movie = movies[frames]
            errors.append(_rms(estimate_drift(movie, reference=ref).values - truth.shifts.values))
        print(f"{ref:12s} {errors[0]:20.3f} {errors[1]:20.3f}")


def _child(args: argparse.Namespace) -> None:
    """One out-of-core run in a fresh process; RSS sampled every 10 ms above the post-import baseline."""
    import threading

    import dask
    import psutil
    from dask.callbacks import Callback
    from dask.sizeof import sizeof

    import temflow.io.store as store
    from temflow.drift.correction import correct_drift

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    held = [0]

    def posttask(key, result, dsk, state, worker_id) -> None:
        # bytes of task results the scheduler keeps for later tasks (chunks, spectra)
        held[0] = max(held[0], sum(sizeof(v) for v in state["cache"].values()))

    with dask.config.set(scheduler="threads"), Callback(posttask=posttask):
        t0 = time.perf_counter()
        if args.child == "read":
            store.open_zarr(args.source).data.sum().compute()
        else:
            fixed = correct_drift(store.open_zarr(args.source))
            store.save_zarr(fixed, args.target, overwrite=True)
        seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    print(json.dumps({"seconds": seconds, "peak_mb": (peak[0] - baseline) / 2**20, "held_mb": held[0] / 2**20}))


def out_of_core(size: int, lengths: list[int], seed: int) -> None:
    from temflow.io.store import save_zarr
    from temflow.synthetic.generator import make_movie

    print(f"\n## out of core: zarr -> correct_drift -> zarr ({size}^2, uint16, chunks of 8 frames)")
    print("peak MB: resident memory above the process's baseline after imports, sampled every 10 ms;")
    print("held MB: largest total of task results the dask scheduler kept at once (chunks, spectra)")
    print(f"{'frames':>7s} {'movie MB':>9s} {'read s':>7s} {'read peak/held MB':>18s} {'correct+write s':>16s} {'peak/held MB':>13s} {'frames/s':>9s} {'vs reading':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for frames in lengths:
            source = Path(tmp) / f"in-{frames}.zarr"
            save_zarr(make_movie(frames=frames, size=size, seed=seed, chunks=8).movie, source, chunks=8)
            results = {}
            for kind in ("read", "correct"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", kind, "--source", str(source), "--target", str(Path(tmp) / "out.zarr")],
                    check=True, capture_output=True, text=True,
                )
                results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            mb = frames * size * size * 2 / 2**20
            r, c = results["read"], results["correct"]
            print(f"{frames:7d} {mb:9.0f} {r['seconds']:7.2f} {r['peak_mb']:11.0f}/{r['held_mb']:<6.0f} {c['seconds']:16.2f} "
                  f"{c['peak_mb']:6.0f}/{c['held_mb']:<6.0f} {frames / c['seconds']:9.1f} {c['seconds'] / r['seconds']:10.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: 256^2, 32 frames")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--peer-frames", type=int, default=16, help="frames given to the slow peers")
    parser.add_argument("--growth-size", type=int, default=192)
    parser.add_argument("--growth-frames", type=int, nargs=2, default=(100, 1000))
    parser.add_argument("--ooc-size", type=int, default=512)
    parser.add_argument("--ooc-frames", type=int, nargs="+", default=(64, 512))
    parser.add_argument("--skip", nargs="*", default=(), choices=("estimation", "growth", "ooc"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=("read", "correct"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.size, args.frames, args.peer_frames = 256, 32, 12
        args.growth_size, args.growth_frames = 96, (40, 200)
        args.ooc_size, args.ooc_frames = 256, (32, 128)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (other jobs share the machine)")
    if "estimation" not in args.skip:
        estimation(args.size, args.frames, args.peer_frames, args.seed)
    if "growth" not in args.skip:
        growth(args.growth_size, *args.growth_frames, args.seed)
    if "ooc" not in args.skip:
        out_of_core(args.ooc_size, list(args.ooc_frames), args.seed)


if __name__ == "__main__":
    main()
