"""The particle physics of the synthetic movies: LSW ripening, migration and coalescence, drift.

Simulated eagerly on a small table (particles x frames); the pixels are drawn
from it by :mod:`temflow.synthetic._render`. Used by :func:`temflow.synthetic.generator.make_movie`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["drift_trajectory", "lsw_distribution", "simulate"]

_SUBSTEPS = 8


def lsw_distribution(u: np.ndarray) -> np.ndarray:
    """The Lifshitz-Slyozov-Wagner size distribution ``h(u)``, ``u = r / <r>``.

    Normalised to unit area on ``0 <= u < 1.5``; zero outside.

    Examples
    --------
    >>> import numpy as np
    >>> u = np.linspace(0, 1.5, 3001)
    >>> round(float(np.trapezoid(lsw_distribution(u), u)), 3)
    1.0
    """
    u = np.asarray(u, dtype=float)
    out = np.zeros_like(u)
    ok = (u > 0) & (u < 1.5)
    v = u[ok]
    out[ok] = (
        (4.0 / 9.0)
        * v**2
        * (3.0 / (3.0 + v)) ** (7.0 / 3.0)
        * (1.5 / (1.5 - v)) ** (11.0 / 3.0)
        * np.exp(-v / (1.5 - v))
    )
    return out


def drift_trajectory(
    frames: int,
    rng: np.random.Generator,
    drift_px: float,
    jumps: int,
    jump_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth drift (a random low-frequency path) plus sudden jumps, pixels."""
    t = np.linspace(0.0, 1.0, frames)
    path = np.zeros((frames, 2))
    for axis in range(2):
        # a few random Fourier modes plus a linear trend: a slowly wandering stage
        trend = rng.uniform(-1, 1) * t
        modes = np.sum(
            [rng.normal() / k * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 5)], axis=0
        )
        path[:, axis] = trend + modes - modes[0] if frames > 1 else 0.0
    peak = np.abs(path).max()
    if peak > 0:
        path *= drift_px / peak
    jump_frames = np.array([], dtype=int)
    if jumps > 0 and frames > 2:
        jump_frames = np.sort(rng.choice(np.arange(1, frames), size=min(jumps, frames - 1), replace=False))
        for f in jump_frames:
            angle = rng.uniform(0, 2 * np.pi)
            magnitude = rng.uniform(0.5, 1.0) * jump_px
            path[f:] += magnitude * np.array([np.sin(angle), np.cos(angle)])
    path -= path[0]
    return path, jump_frames


def _initial_radii(
    n: int, radius_nm: tuple[float, float], mechanism: str, rng: np.random.Generator
) -> np.ndarray:
    lo, hi = radius_nm
    if mechanism in ("ostwald", "mixed"):
        # start from the self-similar LSW shape so the mean radius follows
        # <r>^3 - <r0>^3 = K t from the first frame, not after a transient
        u = np.linspace(1e-3, 1.5 - 1e-6, 4000)
        cdf = np.cumsum(lsw_distribution(u))
        cdf /= cdf[-1]
        mean = hi / 1.5
        radii = np.empty(0)
        while radii.size < n:
            draw = mean * np.interp(rng.uniform(size=2 * n), cdf, u)
            radii = np.concatenate([radii, draw[draw >= lo]])
        return radii[:n]
    centre = np.sqrt(lo * hi)
    sigma = max(np.log(hi / lo) / 4.0, 1e-3)
    return np.clip(centre * np.exp(rng.normal(0.0, sigma, n)), lo, hi)


def _place(
    radii: np.ndarray, lo: np.ndarray, hi: np.ndarray, gap_nm: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential placement without overlap, largest first."""
    order = np.argsort(-radii)
    kept_pos: list[np.ndarray] = []
    kept_r: list[float] = []
    for i in order:
        r = radii[i]
        for _ in range(200):
            p = rng.uniform(lo, hi)
            if not kept_pos:
                break
            d = np.hypot(*(np.asarray(kept_pos) - p).T)
            if np.all(d > np.asarray(kept_r) + r + gap_nm):
                break
        else:
            continue
        kept_pos.append(p)
        kept_r.append(r)
    return np.asarray(kept_pos).reshape(-1, 2), np.asarray(kept_r)


def simulate(
    *,
    frames: int,
    frame_interval_s: float,
    mechanism: str,
    radius_nm: tuple[float, float],
    n_particles: int,
    area_lo: np.ndarray,
    area_hi: np.ndarray,
    ripening_rate_nm3_per_s: float,
    diffusion_nm2_per_s: float,
    min_radius_nm: float,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    radii0 = _initial_radii(n_particles, radius_nm, mechanism, rng)
    pos, r = _place(radii0, area_lo, area_hi, gap_nm=1.0, rng=rng)
    ids = np.arange(1, len(r) + 1)
    ripening = mechanism in ("ostwald", "mixed")
    moving = mechanism in ("coalescence", "mixed")
    # dr/dt = (k / r) (1 / <r> - 1 / r) conserves volume and gives
    # <r>^3 - <r0>^3 = (4/9) k t  (Lifshitz-Slyozov-Wagner)
    k_lsw = 9.0 / 4.0 * ripening_rate_nm3_per_s
    dt = frame_interval_s / _SUBSTEPS
    rows: list[np.ndarray] = []
    events: list[tuple[int, str, int, tuple[int, ...]]] = []
    for frame in range(frames):
        if frame > 0:
            for _ in range(_SUBSTEPS):
                if ripening and len(r) > 1:
                    volume = np.sum(r**3)
                    mean_r = r.mean()
                    r = r + dt * k_lsw / r * (1.0 / mean_r - 1.0 / r)
                    gone = ~(r > min_radius_nm) | ~np.isfinite(r)
                    if gone.any():
                        for pid in ids[gone]:
                            events.append((frame, "vanish", int(pid), ()))
                        ids, pos, r = ids[~gone], pos[~gone], r[~gone]
                    if len(r):
                        # the dissolved atoms (and the Euler step's error) join the survivors:
                        # ripening moves volume, it never creates or destroys it
                        r = r * np.cbrt(volume / np.sum(r**3))
                if moving and len(r):
                    # Stokes-Einstein-like mobility: small particles wander more
                    step = np.sqrt(2.0 * diffusion_nm2_per_s * dt) * (radius_nm[0] / r) ** 1.5
                    pos = pos + rng.normal(size=pos.shape) * step[:, None]
                    pos = np.where(pos < area_lo, 2 * area_lo - pos, pos)
                    pos = np.where(pos > area_hi, 2 * area_hi - pos, pos)
                ids, pos, r = _merge_touching(ids, pos, r, frame, events)
        rows.append(
            np.column_stack([ids, np.full(len(ids), frame), pos, r]) if len(ids) else np.empty((0, 5))
        )
    table = np.concatenate(rows) if rows else np.empty((0, 5))
    particles = pd.DataFrame(
        {
            "particle": table[:, 0].astype(np.int64),
            "frame": table[:, 1].astype(np.int64),
            "y": table[:, 2],
            "x": table[:, 3],
            "radius": table[:, 4],
        }
    )
    event_table = pd.DataFrame(events, columns=["frame", "event", "particle", "merged"])
    event_table = event_table.astype({"frame": np.int64, "particle": np.int64})
    return particles, event_table


def _merge_touching(
    ids: np.ndarray,
    pos: np.ndarray,
    r: np.ndarray,
    frame: int,
    events: list[tuple[int, str, int, tuple[int, ...]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge every pair of touching particles, volume conserved, larger id kept."""
    while len(r) > 1:
        tree = cKDTree(pos)
        pairs = tree.query_pairs(2.0 * r.max(), output_type="ndarray")
        if len(pairs) == 0:
            break
        d = np.hypot(*(pos[pairs[:, 0]] - pos[pairs[:, 1]]).T)
        touching = pairs[d < r[pairs[:, 0]] + r[pairs[:, 1]]]
        if len(touching) == 0:
            break
        # merge the most overlapping pair first; repeat until nothing touches
        overlap = r[touching[:, 0]] + r[touching[:, 1]] - d[d < r[pairs[:, 0]] + r[pairs[:, 1]]]
        i, j = touching[np.argmax(overlap)]
        keep, lose = (i, j) if r[i] >= r[j] else (j, i)
        v_keep, v_lose = r[keep] ** 3, r[lose] ** 3
        pos[keep] = (pos[keep] * v_keep + pos[lose] * v_lose) / (v_keep + v_lose)
        r[keep] = np.cbrt(v_keep + v_lose)
        if events and events[-1][0] == frame and events[-1][1] == "merge" and events[-1][2] == ids[keep]:
            events[-1] = (frame, "merge", int(ids[keep]), events[-1][3] + (int(ids[lose]),))
        else:
            events.append((frame, "merge", int(ids[keep]), (int(ids[lose]),)))
        alive = np.arange(len(r)) != lose
        ids, pos, r = ids[alive], pos[alive], r[alive]
    return ids, pos, r
