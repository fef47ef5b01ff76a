"""Benchmark the particle analysis: measurement against a plain regionprops loop, linking against
laptrack and trackpy used directly.

Measurement: a synthetic movie and its true labels are written to zarr stores; each contender
runs in a fresh process (so peak RSS is its own) and measures every particle of every frame
with mean intensity:

* ``temflow``        - ``measure_particles(open_zarr(labels), open_zarr(movie))``, chunk by chunk;
* ``regionprops``    - the usual script: load both arrays, loop ``regionprops_table`` over frames;
* ``regionprops/frame`` - the same loop reading one frame at a time from zarr (memory-flat).

Linking: a long movie's detection table is synthesised from ``make_movie``'s particle table
(thousands of frames, hundreds of particles, no pixels rendered) and linked with the same
search radius and one frame of memory by ``temflow.analysis.track.link`` (both methods),
``laptrack.LapTrack`` and ``trackpy.link``; ``find_events`` is timed on top.

Run:  PYTHONPATH=src python benchmarks/bench_analysis.py --quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_temflow(labels_path: str, movie_path: str) -> tuple[float, float, int]:
    from temflow.analysis.measure import measure_particles
    from temflow.io.store import open_zarr

    start = time.perf_counter()
    table = measure_particles(open_zarr(labels_path), open_zarr(movie_path), min_area_nm2=0.0)
    return time.perf_counter() - start, _peak_rss_mib(), len(table)


def _run_regionprops(labels_path: str, movie_path: str) -> tuple[float, float, int]:
    from skimage.measure import regionprops_table

    from temflow.io.store import open_zarr

    start = time.perf_counter()
    labels = open_zarr(labels_path).values
    movie = open_zarr(movie_path).values
    rows = 0
    for k in range(len(labels)):
        props = regionprops_table(
            labels[k], intensity_image=movie[k].astype(np.float32),
            properties=("label", "area", "centroid", "perimeter", "eccentricity", "orientation", "intensity_mean"),
        )
        rows += len(pd.DataFrame(props))
    return time.perf_counter() - start, _peak_rss_mib(), rows


def _run_regionprops_per_frame(labels_path: str, movie_path: str) -> tuple[float, float, int]:
    from skimage.measure import regionprops_table

    from temflow.io.store import open_zarr

    start = time.perf_counter()
    labels, movie = open_zarr(labels_path), open_zarr(movie_path)
    rows = 0
    for k in range(labels.sizes["time"]):
        props = regionprops_table(
            labels[k].values, intensity_image=movie[k].values.astype(np.float32),
            properties=("label", "area", "centroid", "perimeter", "eccentricity", "orientation", "intensity_mean"),
        )
        rows += len(pd.DataFrame(props))
    return time.perf_counter() - start, _peak_rss_mib(), rows


def _baseline() -> tuple[float, float, int]:
    import temflow.analysis.measure  # noqa: F401  (same imports, nothing measured)
    import temflow.io.store  # noqa: F401

    return 0.0, _peak_rss_mib(), 0


def _in_fresh_process(func, *args):
    context = mp.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(func, args)


def bench_measurement(frames: int, size: int, chunk_frames: int) -> pd.DataFrame:
    from temflow.io.store import save_zarr
    from temflow.synthetic.generator import make_movie

    truth = make_movie(frames=frames, size=size, mechanism="coalescence", radius_nm=(2.0, 5.0), drift_px=0,
                       jumps=0, area_fraction=0.12, chunks={"time": chunk_frames}, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        labels_path, movie_path = str(Path(tmp) / "labels.zarr"), str(Path(tmp) / "movie.zarr")
        save_zarr(truth.labels, labels_path, chunks={"time": chunk_frames, "y": -1, "x": -1})
        save_zarr(truth.movie, movie_path, chunks={"time": chunk_frames, "y": -1, "x": -1})
        base = _in_fresh_process(_baseline)[1]
        rows = []
        for name, func in (
            ("temflow measure_particles", _run_temflow),
            ("regionprops loop (all loaded)", _run_regionprops),
            ("regionprops loop (frame by frame)", _run_regionprops_per_frame),
        ):
            seconds, peak, count = _in_fresh_process(func, labels_path, movie_path)
            rows.append({"contender": name, "seconds": seconds, "frames_per_s": frames / seconds,
                         "peak_rss_over_imports_mib": peak - base, "rows": count})
    table = pd.DataFrame(rows)
    reference = table.iloc[0]
    table["speed_vs_temflow"] = table["frames_per_s"] / reference["frames_per_s"]
    table["memory_vs_temflow"] = table["peak_rss_over_imports_mib"] / reference["peak_rss_over_imports_mib"]
    return table


def _detections(frames: int, size: int, n_particles: int) -> pd.DataFrame:
    from temflow.synthetic.generator import make_movie

    truth = make_movie(frames=frames, size=size, mechanism="coalescence", radius_nm=(2.0, 5.0), drift_px=0, jumps=0,
                       n_particles=n_particles, diffusion_nm2_per_s=0.5, seed=0)
    p = truth.particles[truth.particles["visible"]]
    return pd.DataFrame({"frame": p["frame"].to_numpy(), "time": p["time"].to_numpy(), "y": p["y"].to_numpy(),
                         "x": p["x"].to_numpy(), "equivalent_diameter": 2 * p["radius"].to_numpy(),
                         "touches_border": p["touches_border"].to_numpy()})


def bench_linking(frames: int, size: int, n_particles: int, max_step_nm: float) -> tuple[pd.DataFrame, int]:
    import trackpy
    from laptrack import LapTrack

    from temflow.analysis.track import find_events, link

    table = _detections(frames, size, n_particles)
    rows = []
    link(table[table["frame"] < 3], max_step_nm=max_step_nm, method="trackpy")  # imports and numba warm-up

    start = time.perf_counter()
    tracks = link(table, max_step_nm=max_step_nm, memory=1)
    rows.append({"contender": "temflow link", "seconds": time.perf_counter() - start,
                 "tracks": tracks["particle"].nunique()})
    start = time.perf_counter()
    fast = link(table, max_step_nm=max_step_nm, memory=1, method="trackpy")
    rows.append({"contender": "temflow link (method='trackpy')", "seconds": time.perf_counter() - start,
                 "tracks": fast["particle"].nunique()})
    start = time.perf_counter()
    events = find_events(tracks)
    rows.append({"contender": "temflow find_events", "seconds": time.perf_counter() - start, "tracks": len(events)})

    start = time.perf_counter()
    tracker = LapTrack(metric="sqeuclidean", cutoff=max_step_nm**2, gap_closing_cutoff=(max_step_nm * 2**0.5) ** 2,
                       gap_closing_max_frame_count=2, splitting_cutoff=False, merging_cutoff=False)
    found, _, _ = tracker.predict_dataframe(table[["frame", "y", "x"]], ["y", "x"], frame_col="frame")
    rows.append({"contender": "laptrack direct", "seconds": time.perf_counter() - start,
                 "tracks": found["track_id"].nunique()})

    trackpy.quiet()
    trackpy.link(table[table["frame"] < 3][["frame", "y", "x"]], search_range=max_step_nm, pos_columns=["y", "x"])  # warm-up
    start = time.perf_counter()
    linked = trackpy.link(table[["frame", "y", "x"]], search_range=max_step_nm, memory=1, pos_columns=["y", "x"],
                          link_strategy="auto")
    rows.append({"contender": "trackpy link", "seconds": time.perf_counter() - start,
                 "tracks": linked["particle"].nunique()})
    result = pd.DataFrame(rows)
    result["rows_per_s"] = len(table) / result["seconds"]
    result["time_vs_temflow_link"] = result["seconds"] / result["seconds"].iloc[0]
    return result, len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--frames", type=int, default=200, help="frames of the measured movie")
    parser.add_argument("--size", type=int, default=512, help="frame size of the measured movie, px")
    parser.add_argument("--link-frames", type=int, default=2000, help="frames of the linked movie")
    parser.add_argument("--link-particles", type=int, default=300, help="particles of the linked movie")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.link_frames, args.link_particles = 40, 256, 300, 100
    pd.set_option("display.width", 160)
    pd.set_option("display.float_format", lambda v: f"{v:.3g}")

    print(f"measurement: {args.frames} frames of {args.size} x {args.size} px, chunks of 10 frames")
    print(bench_measurement(args.frames, args.size, 10).to_string(index=False))
    print()
    # the linked movie's field grows with the particle count: ~300 nm^2 per particle
    size = int(np.sqrt(args.link_particles * 300.0) / 0.5)
    result, rows = bench_linking(args.link_frames, size, args.link_particles, max_step_nm=3.0)
    print(f"linking: {args.link_frames} frames, {args.link_particles} particles at the start ({rows} detections)")
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()
