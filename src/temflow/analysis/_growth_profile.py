"""The weighted chi-square profile over the growth exponent, and the intervals read from it.

Used by :mod:`temflow.analysis._growth_law` (see its docstring for the model, the weights and why
the intervals are bootstrapped when the particle table is given): ``_frame_data`` takes each
frame's mean radius and its standard error, ``_profile`` gives chi-square, ``r0^n`` and ``K``
for every exponent of ``_N_GRID`` at once, for one data set or many (bootstrap resamples),
``_best_exponent`` refines its minimum, and ``_profile_interval`` and ``_rate_interval`` give
the intervals that assume independent frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2 as chi2_distribution


_N_GRID = np.exp(np.linspace(np.log(0.5), np.log(12.0), 241))
"""Exponents the profile is evaluated at: 0.5 .. 12, 1.3 % apart."""


@dataclass(frozen=True)
class _Data:
    t: np.ndarray  # s from the first frame used
    r: np.ndarray  # mean radius, nm
    sigma: np.ndarray  # its standard error, nm
    frames: np.ndarray  # frame numbers used
    origin: float


def _frame_data(stats: pd.DataFrame, min_count: int) -> _Data:
    use = stats[(stats["count"] >= min_count) & np.isfinite(stats["mean_radius"]) & np.isfinite(stats["time"])]
    if "excluded" in use.columns:
        use = use[~use["excluded"].to_numpy(bool)]
    t = use["time"].to_numpy(float)
    r = use["mean_radius"].to_numpy(float)
    if "std_diameter" in use.columns and len(use):
        sigma = 0.5 * use["std_diameter"].to_numpy(float) / np.sqrt(use["count"].to_numpy(float))
        good = np.isfinite(sigma) & (sigma > 0)
        fill = float(np.median(sigma[good])) if good.any() else max(float(np.std(r)), 1e-3)
        sigma = np.where(good, sigma, fill)
    else:
        sigma = np.full(r.shape, max(float(np.std(r)) if r.size > 1 else 1.0, 1e-3))
    frames = use["frame"].to_numpy(np.int64) if "frame" in use.columns else np.arange(len(use))
    origin = float(t[0]) if t.size else 0.0
    return _Data(t - origin, r, sigma, frames, origin)


def _profile(t: np.ndarray, r: np.ndarray, sigma: np.ndarray, exponents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chi-square, ``r0^n`` and ``K`` for every exponent, for one or many data sets.

    ``r`` and ``sigma`` are ``(sets, frames)``; frames with ``sigma`` = inf
    (or NaN ``r``) do not count. Returns arrays ``(sets, exponents)``.
    """
    r = np.atleast_2d(r)
    sigma = np.atleast_2d(sigma)
    valid = np.isfinite(r) & np.isfinite(sigma) & (sigma > 0)
    scale = np.nanmedian(np.where(valid, r, np.nan), axis=1, keepdims=True)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    x = np.where(valid, r / scale, 1.0)
    s = np.where(valid, sigma / scale, 1.0)
    chi2 = np.full((r.shape[0], len(exponents)), np.inf)
    a_out = np.full_like(chi2, np.nan)
    k_out = np.full_like(chi2, np.nan)
    tt = np.broadcast_to(t, x.shape)
    for j, n in enumerate(exponents):
        y = x**n
        w = np.where(valid, 1.0 / (n * x ** (n - 1.0) * s) ** 2, 0.0)
        sw, st, sy = w.sum(1), (w * tt).sum(1), (w * y).sum(1)
        stt, sty = (w * tt * tt).sum(1), (w * tt * y).sum(1)
        det = sw * stt - st * st
        with np.errstate(invalid="ignore", divide="ignore"):
            k = (sw * sty - st * sy) / det
            a = (sy - k * st) / sw
            base = a[:, None] + k[:, None] * tt
            pred = np.where(base > 0, np.abs(base) ** (1.0 / n), 0.0)
            c = np.where(valid, ((x - pred) / s) ** 2, 0.0).sum(1)
        bad = ~(np.isfinite(c) & (a > 0) & np.isfinite(k))
        chi2[:, j] = np.where(bad, np.inf, c)
        a_out[:, j] = a * scale[:, 0] ** n
        k_out[:, j] = k * scale[:, 0] ** n
    return chi2, a_out, k_out


def _best_exponent(chi2: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The exponent at the profile's minimum, refined by a parabola in log n."""
    i = np.argmin(chi2, axis=1)
    out = grid[i].astype(float)
    logs = np.log(grid)
    inner = (i > 0) & (i < len(grid) - 1)
    rows = np.flatnonzero(inner & np.isfinite(chi2[np.arange(len(i)), i]))
    for row in rows:
        j = i[row]
        c0, c1, c2 = chi2[row, j - 1], chi2[row, j], chi2[row, j + 1]
        denom = c0 - 2 * c1 + c2
        if np.isfinite(denom) and denom > 0:
            step = logs[j + 1] - logs[j]
            out[row] = math.exp(logs[j] + 0.5 * step * (c0 - c2) / denom)
    return out


def _fit_at(data: _Data, n: float) -> tuple[float, float, float]:
    chi2, a, k = _profile(data.t, data.r[None], data.sigma[None], np.array([n]))
    return float(chi2[0, 0]), float(a[0, 0]), float(k[0, 0])


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def _profile_interval(profile: np.ndarray, frames: int, params: int, confidence: float) -> tuple[float, float]:
    best = float(np.min(profile))
    scale = max(best / max(frames - params, 1), 1.0)
    inside = profile <= best + scale * float(chi2_distribution.ppf(confidence, 1))
    if not inside.any():
        return math.nan, math.nan
    idx = np.flatnonzero(inside)
    return float(_N_GRID[idx[0]]), float(_N_GRID[idx[-1]])


def _rate_interval(data: _Data, n: float, chi2: float, confidence: float) -> tuple[float, float]:
    """K's interval from the weighted straight line of ``r^n`` (frames independent)."""
    y = data.r**n
    sy = n * data.r ** (n - 1) * data.sigma
    design = np.column_stack([np.ones_like(data.t), data.t])
    cov = np.linalg.pinv(design.T @ (design / sy[:, None] ** 2))
    scale = max(chi2 / max(len(data.t) - 2, 1), 1.0)
    k = float(np.linalg.lstsq(design / sy[:, None], y / sy, rcond=None)[0][1])
    half = _z(confidence) * math.sqrt(cov[1, 1] * scale)
    return k - half, k + half
