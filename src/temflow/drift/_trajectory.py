"""Which frames are registered to which, and the trajectory that best explains all pairings.

Both work on small arrays (a few numbers per frame): the pair plan depends on
frame indices only, so the answer does not depend on the chunking, and the
solve is one sparse least-squares problem in one task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg

# weight of a backup pairing, used only when the main one is lost (a bad frame)
_BACKUP = 1e-3
_KEY_LAGS = (1, 2, 4, 8, 16)
# Tukey biweight constant (95 % efficiency) and the floor on the residual scale, px
_TUKEY_C = 4.685
_MIN_SCALE_PX = 0.05
_IRLS_ITERATIONS = 4
# a faint first-difference prior: frames without any pairing are interpolated
_SMOOTHNESS = 1e-6


def pair_plan(reference: str, frames: int, key_interval: int) -> np.ndarray:
    """The pairings ``(i, j, prior weight)`` of a reference strategy, by frame index only.

    Frame indices alone decide the plan, so the answer does not depend on the
    chunking. ``"first"``: every frame against frame 0. ``"previous"``: every
    frame against the one before, with a backup link to the one before that so
    a single bad frame does not cut the chain. ``"auto"``: key frames every
    ``key_interval`` frames are registered to frame 0 and to the key frames 1,
    2, 4, 8 and 16 keys before; every other frame to its nearest key frame,
    with a backup link to the key on its other side. The direct links to
    frame 0 stop the small biases of scene changes (ripening particles) from
    adding up along the key chain while frame 0 is in view; the key chain
    carries on once it is not.
    """
    rows: list[tuple[int, int, float]] = []
    if reference == "first":
        rows = [(t, 0, 1.0) for t in range(1, frames)]
    elif reference == "previous":
        rows = [(t, t - 1, 1.0) for t in range(1, frames)]
        rows += [(t, t - 2, _BACKUP) for t in range(2, frames)]
    else:
        k = key_interval
        for t in range(1, frames):
            if t % k == 0:
                partners = {t - lag * k for lag in _KEY_LAGS if t - lag * k >= 0} | {0}
                rows += [(t, p, 1.0) for p in sorted(partners, reverse=True)]
            else:
                before, after = (t // k) * k, (t // k) * k + k
                near, far = (before, after) if t - before <= after - t or after >= frames else (after, before)
                rows.append((t, near, 1.0))
                if far < frames:
                    rows.append((t, far, _BACKUP))
    if not rows:
        return np.zeros((0, 3))
    return np.asarray(rows, dtype=float)


def _factor_solve(frames: int, i: np.ndarray, j: np.ndarray, d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares for ``s[i] - s[j] = d`` with ``s[0] = 0`` and a faint smoothness prior."""
    e = len(i)
    rows = np.concatenate([np.arange(e), np.arange(e)])
    a = sparse.csr_matrix((np.concatenate([np.ones(e), -np.ones(e)]), (rows, np.concatenate([i, j]))), shape=(e, frames))
    diff = sparse.diags([-np.ones(frames - 1), np.ones(frames - 1)], [0, 1], shape=(frames - 1, frames))
    scale = float(np.mean(w[w > 0])) if np.any(w > 0) else 1.0
    normal = (a.T @ sparse.diags(w) @ a + _SMOOTHNESS * scale * (diff.T @ diff)).tocsc()[1:, 1:]
    rhs = (a.T @ (w[:, None] * d))[1:]
    solve = splinalg.factorized(normal)
    out = np.zeros((frames, 2))
    out[1:, 0] = solve(np.ascontiguousarray(rhs[:, 0]))
    out[1:, 1] = solve(np.ascontiguousarray(rhs[:, 1]))
    return out


def solve_trajectory(
    results: Sequence[Mapping[str, np.ndarray]], frames: int, min_quality: float, after: object = None
) -> dict[str, np.ndarray]:
    """Shifts of every frame from all pairwise measurements (a small sparse problem).

    Pairs whose PSR is below ``min_quality`` or that touch an unusable frame
    are dropped; the rest are weighted by ``prior * (PSR / min_quality)^2`` and
    refined by iteratively reweighted least squares (Tukey's biweight on the
    residuals), so a wrong peak in one pairing does not bend the trajectory.
    Frames left without any pairing are flagged and interpolated. ``after``
    is ignored (the end of the chain that orders the chunk tasks).
    """
    usable = np.zeros(frames, bool)
    start = np.zeros((frames, 2), np.int64)
    stop = np.zeros((frames, 2), np.int64)
    plans, measured = [], []
    for r in results:
        usable[r["frames"]] = r["usable"]
        start[r["frames"]] = r["start"]
        stop[r["frames"]] = r["stop"]
        plans.append(r["pairs"])
        measured.append(r["measured"])
    plan = np.concatenate(plans) if plans else np.zeros((0, 3))
    meas = np.concatenate(measured) if measured else np.zeros((0, 3))
    i, j, prior = plan[:, 0].astype(np.int64), plan[:, 1].astype(np.int64), plan[:, 2]
    d, psr = meas[:, :2], meas[:, 2]
    ok = (psr >= min_quality) & usable[i] & usable[j]
    base = np.where(ok, prior * (psr / min_quality) ** 2, 0.0)
    weight = base.copy()
    shifts = np.zeros((frames, 2))
    if frames > 1 and np.any(weight > 0):
        for _ in range(_IRLS_ITERATIONS):
            shifts = _factor_solve(frames, i, j, d, weight)
            residual = np.hypot(*(d - (shifts[i] - shifts[j])).T)
            scale = max(_MIN_SCALE_PX, 1.4826 * float(np.median(residual[base > 0])))
            u = residual / (_TUKEY_C * scale)
            weight = base * np.where(u < 1, (1 - u**2) ** 2, 0.0)
        shifts = _factor_solve(frames, i, j, d, weight) if np.any(weight > 0) else shifts
    kept = weight > 0
    quality = np.zeros(frames)
    np.maximum.at(quality, i[kept], psr[kept])
    np.maximum.at(quality, j[kept], psr[kept])
    flagged = ~usable | (quality == 0)
    if frames == 1:
        flagged = ~usable
        quality[:] = np.inf if usable[0] else 0.0
    step = np.r_[0.0, np.hypot(*np.diff(shifts, axis=0).T)] if frames > 1 else np.zeros(1)
    good = ~flagged
    steady = step[1:][good[1:] & good[:-1]] if frames > 1 else np.zeros(0)
    threshold = max(1.0, float(np.median(steady)) + 10 * 1.4826 * float(np.median(np.abs(steady - np.median(steady))))) if steady.size else np.inf
    jump = (step > threshold) & good
    return {
        "shift": shifts,
        "quality": quality.astype(np.float32),
        "flagged": flagged,
        "jump": jump,
        "valid_start": start,
        "valid_stop": stop,
    }
