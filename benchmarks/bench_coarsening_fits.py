"""Coverage of the growth-law intervals and correctness of the mechanism verdict, many seeds.

For each mechanism, movie length and seed the generator simulates the particles
(its truth table: no pixels are rendered, so the study stays light on CPU), a
measurement-noise model is applied (radius error 3 % + 0.15 nm per frame, a
detection limit of 5 nm^2 and the border particles dropped, as the measurement
does), and the analysis runs on that table: ``size_statistics`` ->
``compare_growth_laws`` (bootstrap over particles) -> ``find_events`` ->
``coarsening_mechanism``. Prints one markdown table row per case: how often
the 95 % interval of ``n`` covers the truth (3 for ripening), how often ``n``
was undetermined, and the verdicts.

    PYTHONPATH=src python3 benchmarks/bench_coarsening_fits.py --seeds 10

``--measure N`` also renders N small movies per case and measures them with
the classical threshold (slower; a few seeds only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from temflow.analysis.coarsening import coarsening_mechanism, compare_growth_laws, size_statistics, sized_particles
from temflow.analysis.track import find_events
from temflow.synthetic.generator import make_movie

MIN_AREA_NM2 = 5.0
EXPECTED = {"ostwald": "ostwald ripening", "coalescence": "migration and coalescence"}


def truth_table(truth, seed: int, noise: bool = True) -> pd.DataFrame:
    """The generator's particles as a measurement would report them."""
    p = truth.particles
    p = p[p["visible"]].copy()
    rng = np.random.default_rng([seed, 99])
    r = p["radius"].to_numpy()
    if noise:
        r = r * (1 + 0.03 * rng.normal(size=r.size)) + 0.15 * rng.normal(size=r.size)
    p["equivalent_diameter"] = 2 * r
    p = p[np.pi * r**2 >= MIN_AREA_NM2]
    return p.reset_index(drop=True)


def movie_for(mechanism: str, frames: int, seed: int, size: int):
    common = dict(pixel_size_nm=0.5, drift_px=0, jumps=0, area_fraction=0.12, dose_e_per_px=400.0, seed=seed)
    if mechanism == "ostwald":
        r0 = 5.0 / 1.5
        return make_movie(frames=frames, size=size, mechanism="ostwald", radius_nm=(1.5, 5.0),
                          ripening_rate_nm3_per_s=(2.0**3 - 1.0) * r0**3 / (frames - 1), **common)
    return make_movie(frames=frames, size=size, mechanism=mechanism, radius_nm=(2.0, 5.0), **common)


def analyse(table: pd.DataFrame, frames: int) -> dict:
    stats = size_statistics(table, times_s=np.arange(frames, dtype=float), min_relative_diameter=0.0)
    comparison = compare_growth_laws(stats, particles=sized_particles(table))
    free = comparison.iloc[-1]
    events = find_events(table, frames=frames)
    verdict = coarsening_mechanism(table, events)
    return {"free": free, "preferred": comparison.attrs["preferred"], "verdict": verdict.mechanism}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--frames", type=int, nargs="*", default=[40, 100, 400])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--measure", type=int, default=0)
    args = parser.parse_args()
    print("| mechanism | frames | seeds | n determined | 95 % interval covers n = 3 | median n [interval] | preferred fixed n | verdicts |")
    print("|---|---|---|---|---|---|---|---|")
    for mechanism in ("ostwald", "coalescence"):
        for frames in args.frames:
            t0 = time.perf_counter()
            rows = []
            for seed in range(args.seeds):
                truth = movie_for(mechanism, frames, seed, args.size)
                rows.append(analyse(truth_table(truth, seed), frames))
            determined = [r for r in rows if r["free"]["ok"]]
            covers = [r["free"]["n_low"] <= 3.0 <= r["free"]["n_high"] for r in determined]
            verdicts = pd.Series([r["verdict"] for r in rows]).value_counts().to_dict()
            preferred = pd.Series([r["preferred"] for r in rows]).value_counts(dropna=False).to_dict()
            med = (
                f"{np.median([r['free']['n'] for r in determined]):.2f} "
                f"[{np.median([r['free']['n_low'] for r in determined]):.2f}, {np.median([r['free']['n_high'] for r in determined]):.2f}]"
                if determined else "-"
            )
            cover = f"{sum(covers)}/{len(covers)}" if mechanism == "ostwald" else "(no generator n)"
            print(
                f"| {mechanism} | {frames} | {len(rows)} | {len(determined)}/{len(rows)} | {cover} | {med} | "
                f"{', '.join(f'{k}: {v}' for k, v in preferred.items())} | "
                f"{', '.join(f'{k}: {v}' for k, v in verdicts.items())} |  <!-- {time.perf_counter() - t0:.0f} s -->",
                flush=True,
            )
    if args.measure:
        measured(args.measure)


def measured(seeds: int) -> None:
    """A few seeds measured on rendered pixels (classical threshold), 40 frames of 256 x 256."""
    from temflow.analysis.measure import label_particles, measure_particles, threshold_particles
    from temflow.analysis.track import link

    print()
    print("| mechanism | seed | n (measured, 95 %) | preferred fixed n | verdict | events |")
    print("|---|---|---|---|---|---|")
    for mechanism in ("ostwald", "coalescence"):
        for seed in range(seeds):
            truth = movie_for(mechanism, 40, seed, 256)
            movie = truth.movie.compute()
            table = measure_particles(label_particles(threshold_particles(movie)), movie, min_area_nm2=MIN_AREA_NM2)
            tracks = link(table, max_step_nm=3.0 if mechanism == "ostwald" else 6.0, memory=1)
            stats = size_statistics(tracks)
            comparison = compare_growth_laws(stats, particles=sized_particles(tracks))
            free = comparison.iloc[-1]
            events = find_events(tracks)
            verdict = coarsening_mechanism(tracks, events)
            n_text = f"{free['n']:.2f} [{free['n_low']:.2f}, {free['n_high']:.2f}]" if free["ok"] else f"undetermined ({free['reason']})"
            kinds = events["event"].value_counts().to_dict() if len(events) else {}
            print(f"| {mechanism} | {seed} | {n_text} | {comparison.attrs['preferred']} | {verdict.mechanism} | {kinds} |", flush=True)


if __name__ == "__main__":
    main()
