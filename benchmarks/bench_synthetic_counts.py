"""The classical segmentation's defaults against the synthetic generator's truth, sparse to dense.

For every combination of seed, particle radius range and area fraction, a 12-frame 256^2
bright-field movie (``temflow.synthetic.make_movie``, its default noise and support grain) is
segmented with ``threshold_particles`` at its defaults (``--imaging haadf``: bright particles); reported per case: particles found per
true particle (components of the mask per frame against the truth's labels) and the IoU of the
masks with the true particle pixels. With ``--baseline SRC`` (another temflow source tree) the
same cases are run on that tree in a child process, side by side.

Run:  python benchmarks/bench_synthetic_counts.py [--baseline /tmp/temflow_old/src]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

CASES = list(itertools.product([0, 1, 2], [(2.0, 6.0), (2.0, 8.0), (1.0, 4.0)], [0.04, 0.08]))


def scores(imaging: str = "bright_field") -> list[tuple[float, float]]:
    """(found / true particles, IoU) per case, with whatever temflow is imported."""
    from scipy import ndimage as ndi

    from temflow.analysis.threshold import threshold_particles
    from temflow.synthetic.generator import make_movie

    out = []
    for seed, radius, fraction in CASES:
        truth = make_movie(frames=12, size=256, seed=seed, radius_nm=radius, area_fraction=fraction, chunks=4,
                           imaging=imaging)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            masks = threshold_particles(truth.movie.compute()).values
        labels = truth.labels.values
        found = np.mean([ndi.label(frame)[1] for frame in masks])
        present = np.mean([len(np.unique(frame)) - 1 for frame in labels])
        iou = np.mean([(m & (t > 0)).sum() / max((m | (t > 0)).sum(), 1) for m, t in zip(masks, labels)])
        out.append((float(found / present), float(iou)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=None, help="another temflow source tree to run alongside")
    parser.add_argument("--imaging", choices=["bright_field", "haadf"], default="bright_field")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scores(args.imaging)))
        return
    runs = {"this": scores(args.imaging)}
    if args.baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        done = subprocess.run([sys.executable, __file__, "--child", "--imaging", args.imaging], env=env, check=True, capture_output=True, text=True)
        runs["baseline"] = json.loads(done.stdout.strip().splitlines()[-1])
    header = "  seed  radius nm   area  found/true  IoU" + ("   | baseline found/true  IoU" if "baseline" in runs else "")
    print(header)
    for k, (seed, radius, fraction) in enumerate(CASES):
        line = f"  {seed:4d}  {radius[0]:.0f}-{radius[1]:.0f}      {fraction:.2f}  {runs['this'][k][0]:10.2f}  {runs['this'][k][1]:.2f}"
        if "baseline" in runs:
            line += f"   | {runs['baseline'][k][0]:19.2f}  {runs['baseline'][k][1]:.2f}"
        print(line)
    for name, values in runs.items():
        ratio = np.array([v[0] for v in values])
        iou = np.array([v[1] for v in values])
        print(f"{name}: found/true {ratio.min():.2f}-{ratio.max():.2f} (cases outside 0.85-1.15: "
              f"{int(np.sum((ratio < 0.85) | (ratio > 1.15)))} of {len(ratio)}), IoU mean {iou.mean():.3f}, min {iou.min():.2f}")


if __name__ == "__main__":
    main()
