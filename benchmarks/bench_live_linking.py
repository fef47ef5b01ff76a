"""Linking cost per new frame in live mode: incremental (``link_next``) against re-linking every frame.

A table of random walkers (``--particles`` per frame, born and dying, missed now and then) is
linked frame by frame with :func:`temflow.analysis.incremental_link.link_next`, and, for
comparison, by running :func:`temflow.analysis.link` over all frames so far (what ``temflow
watch`` did at every refresh before). Reported: median milliseconds per new frame around frame
50 and around frame 500 (frames 45-54 and 495-504), and that both give the same ids.

Usage::

    python benchmarks/bench_live_linking.py
    python benchmarks/bench_live_linking.py --particles 400 --frames 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from temflow.analysis.incremental_link import link_next, start_link
from temflow.analysis.track import link


def walkers(frames: int, particles: int, seed: int = 0, size_nm: float = 500.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    total = particles * 5
    # a steady population: every walker lives a quarter of the movie, births spread evenly
    life = frames // 4
    start = rng.integers(-life, frames, total)
    end = start + life
    position = rng.uniform(0, size_nm, (total, 2))
    rows = []
    for f in range(frames):
        position += rng.normal(0, 0.5, position.shape)
        alive = np.flatnonzero((start <= f) & (f < end) & (rng.random(total) > 0.03))
        rows.append(pd.DataFrame({"frame": f, "y": position[alive, 0], "x": position[alive, 1]}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=510)
    parser.add_argument("--particles", type=int, default=100, help="about this many per frame")
    parser.add_argument("--max-step-nm", type=float, default=3.0)
    parser.add_argument("--memory", type=int, default=2)
    args = parser.parse_args()
    table = walkers(args.frames, args.particles)
    by_frame = {f: part for f, part in table.groupby("frame")}
    state = start_link(max_step_nm=args.max_step_nm, memory=args.memory)
    incremental_ms, parts = [], []
    for f in range(args.frames):
        t0 = time.perf_counter()
        parts.append(link_next(state, by_frame.get(f, table.iloc[:0])))
        incremental_ms.append(1e3 * (time.perf_counter() - t0))
    live = pd.concat(parts).loc[table.index]
    batch = link(table, max_step_nm=args.max_step_nm, memory=args.memory, method="trackpy")
    same = bool((live["particle"].to_numpy() == batch["particle"].to_numpy()).all())

    def relink_ms(f: int) -> float:
        t0 = time.perf_counter()
        link(table[table["frame"] <= f], max_step_nm=args.max_step_nm, memory=args.memory, method="trackpy")
        return 1e3 * (time.perf_counter() - t0)

    result = {
        "frames": args.frames, "particles_per_frame": round(len(table) / args.frames, 1),
        "incremental_ms_per_frame_at_50": float(np.median(incremental_ms[45:55])),
        "incremental_ms_per_frame_at_500": float(np.median(incremental_ms[495:505])),
        "relink_all_ms_at_50": float(np.median([relink_ms(f) for f in (48, 50, 52)])),
        "relink_all_ms_at_500": float(np.median([relink_ms(f) for f in (498, 500, 502)])),
        "particles_in_frames_45_54": int(table["frame"].between(45, 54).sum() / 10),
        "particles_in_frames_495_504": int(table["frame"].between(495, 504).sum() / 10),
        "same_ids_as_link": same,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
