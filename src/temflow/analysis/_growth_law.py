"""Growth-law fits of :mod:`temflow.analysis.coarsening`: ``<r>^n - <r0>^n = K t`` through the mean radius.

:class:`GrowthFit` holds one fit (or why the data cannot give one);
:func:`fit_growth_law` makes it, ``n`` free or fixed;
:func:`temflow.analysis._growth_comparison.compare_growth_laws` sets
``n = 2, 3, 4`` and ``n`` free side by side with information criteria.

How the fit works, and why:

* **Model and time origin.** ``<r>(t)^n = r0^n + K (t - t_first)``: time runs
  from the first frame used, and ``r0`` (the mean radius then) is a free
  parameter, not the noisy first measurement; so the unknown moment at which
  the law would give ``r = 0`` is free too.
* **Weights.** Each frame's mean radius has the standard error of a mean,
  ``std / sqrt(count)`` (count statistics); the fit minimises chi-square on the
  radius itself, ``n`` by a profile over a grid (refined by a parabola),
  ``r0^n`` and ``K`` by weighted least squares on ``r^n`` with the errors
  propagated (``sigma(r^n) = n r^(n-1) sigma(r)``).
* **Intervals.** The mean radii of successive frames are averages over largely
  the same particles, so their errors are strongly correlated and a
  chi-square (or covariance) interval is far too narrow. With the particle
  table the intervals come from a bootstrap over particles (whole particles
  resampled with replacement, every frame's mean recomputed, everything
  refitted): percentile intervals. Without it, a profile-likelihood interval
  (chi-square rise scaled by the reduced chi-square when that exceeds 1), which
  assumes independent frames and is flagged as such.
* **Undetermined.** Too few frames, too few particles, too little growth for
  its uncertainty, or an interval for ``n`` wider than ``max_exponent_range``:
  then ``ok`` is False and ``reason`` says which, with the numbers; no ``n``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from temflow.analysis._growth_profile import (
    _N_GRID,
    _best_exponent,
    _Data,
    _fit_at,
    _frame_data,
    _profile,
    _profile_interval,
    _rate_interval,
    _z,
)
from temflow.movie import check_table


@dataclass(frozen=True)
class GrowthFit:
    """A fit of ``<r>^n - <r0>^n = K t`` to the mean radius, or why there is none.

    Attributes
    ----------
    ok : bool
        Whether the data determine the fit; when False, ``reason`` says why and
        ``n`` (when free) is NaN.
    n, n_error : float
        Growth exponent and the half-width of its interval divided by the
        normal quantile (a standard-error equivalent; 0 when fixed).
    rate, rate_error : float
        ``K``, nm^n / s, and its standard-error equivalent.
    r0, r0_error : float
        Mean radius at the first frame used (the time origin), nm.
    exponent_fixed : bool
        Whether ``n`` was fixed rather than fitted.
    rms_residual_nm : float
        RMS of the mean radius about the fitted curve, nm.
    frames_used : int
        Frames with enough particles that entered the fit.
    reason : str
        Why the fit is undetermined; empty when ``ok``.
    n_low, n_high, rate_low, rate_high : float
        The ``confidence`` interval of ``n`` and ``K``.
    confidence : float
        Coverage of the intervals (0.95).
    interval_method : str
        How the intervals were made ("bootstrap over 120 particles, 200 resamples",
        or "profile likelihood (frames assumed independent)").
    chi2 : float
        Chi-square of the mean radius about the fit (weights ``std / sqrt(count)``).
    aic, bic : float
        Akaike and Bayesian information criteria, ``chi2 + 2 k`` and
        ``chi2 + k ln(frames)`` (``k`` = 2 fitted parameters, 3 with ``n``).
    particles_used : int
        Distinct particles behind the means (0 when only the statistics were given).
    time_origin_s : float
        Time of the first frame used, s: ``t`` in the law is counted from here.
    """

    ok: bool
    n: float
    n_error: float
    rate: float
    rate_error: float
    r0: float
    r0_error: float
    exponent_fixed: bool
    rms_residual_nm: float
    frames_used: int
    reason: str = ""
    n_low: float = math.nan
    n_high: float = math.nan
    rate_low: float = math.nan
    rate_high: float = math.nan
    confidence: float = 0.95
    interval_method: str = ""
    chi2: float = math.nan
    aic: float = math.nan
    bic: float = math.nan
    particles_used: int = 0
    time_origin_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fit as a plain dict."""
        return asdict(self)

    def predict(self, time_s: np.ndarray) -> np.ndarray:
        """Mean radius (nm) the fit gives at ``time_s`` (s, the movie's clock)."""
        t = np.asarray(time_s, dtype=float) - self.time_origin_s
        base = self.r0**self.n + self.rate * t
        with np.errstate(invalid="ignore"):
            return np.where(base > 0, np.abs(base) ** (1.0 / self.n), np.nan)

    def describe(self) -> str:
        """One line: the exponent with its interval, or "undetermined" and why."""
        if not self.ok:
            what = f"n = {self.n:g} (fixed)" if self.exponent_fixed else "n"
            return f"{what}: undetermined ({self.reason})"
        pct = f"{self.confidence:.0%}"
        if self.exponent_fixed:
            return f"n = {self.n:g} (fixed), K = {self.rate:.3g} nm^{self.n:g}/s [{self.rate_low:.3g}, {self.rate_high:.3g}] ({pct})"
        return (
            f"n = {self.n:.2f} [{self.n_low:.2f}, {self.n_high:.2f}] ({pct}), "
            f"K = {self.rate:.3g} nm^n/s [{self.rate_low:.3g}, {self.rate_high:.3g}]"
        )


def _bootstrap_exponents(chi2: np.ndarray) -> np.ndarray:
    best = _best_exponent(chi2, _N_GRID)
    return np.where(np.isfinite(chi2.min(1)), best, np.nan)


def _particle_matrix(particles: pd.DataFrame, frames: np.ndarray) -> np.ndarray:
    """Radius (nm) of every particle (rows) in every used frame (columns), NaN where absent."""
    table = check_table(particles, ("frame", "particle", "equivalent_diameter"), "particles")
    table = table[table["frame"].isin(frames)]
    ids, row = np.unique(table["particle"].to_numpy(np.int64), return_inverse=True)
    col = np.searchsorted(frames, table["frame"].to_numpy(np.int64))
    matrix = np.full((len(ids), len(frames)), np.nan)
    matrix[row, col] = table["equivalent_diameter"].to_numpy(float) / 2.0
    return matrix


def _bootstrap_means(matrix: np.ndarray, resamples: int, rng: np.random.Generator, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean radius and its standard error for resamples of whole particles."""
    present = np.isfinite(matrix).astype(float)
    values = np.nan_to_num(matrix)
    weights = rng.multinomial(matrix.shape[0], np.full(matrix.shape[0], 1.0 / matrix.shape[0]), size=resamples).astype(float)
    count = weights @ present
    total = weights @ values
    square = weights @ values**2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        variance = (square / count - mean**2) * count / (count - 1)
        sigma = np.sqrt(np.clip(variance, 0, None)) / np.sqrt(count)
    ok = count >= min_count
    return np.where(ok, mean, np.nan), np.where(ok & (sigma > 0), sigma, np.inf)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size < 10:
        return math.nan, math.nan
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _analyse(
    stats: pd.DataFrame,
    *,
    exponents: tuple[float | None, ...],
    particles: pd.DataFrame | None,
    min_count: int,
    min_frames: int,
    min_particles: int,
    min_growth_sigma: float,
    max_exponent_range: float,
    confidence: float,
    resamples: int,
    rng: np.random.Generator | int | None,
) -> tuple[list[GrowthFit], dict[float, float]]:
    """Fits for every entry of ``exponents`` (None: ``n`` free), and each fixed ``n``'s bootstrap support."""
    stats = check_table(stats, ("time", "mean_radius", "count"), "stats")
    for value in exponents:
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"exponent must be a positive number (3 for LSW) or None to fit it; got {value!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95 %); got {confidence!r}")
    if int(min_count) < 2:
        raise ValueError(f"min_count must be at least 2 (a standard error needs two particles); got {min_count!r}")
    data = _frame_data(stats, int(min_count))
    used = len(data.t)
    n_particles = 0
    matrix = None
    if particles is not None and used:
        matrix = _particle_matrix(particles, data.frames)
        matrix = matrix[np.isfinite(matrix).any(axis=1)]
        n_particles = int(matrix.shape[0])

    def refuse(reason: str) -> tuple[list[GrowthFit], dict[float, float]]:
        fits = [_no_fit(reason, e, used, n_particles, confidence) for e in exponents]
        return fits, {}

    if used == 0:
        return refuse(f"no frame has {min_count} or more particles to average")
    if used < min_frames:
        return refuse(
            f"only {used} frame{'s' if used != 1 else ''} with {min_count} or more particles; "
            f"at least {min_frames} are needed to separate n from r0 and K"
        )
    most = n_particles if matrix is not None else int(stats["count"].max())
    if most < min_particles:
        return refuse(f"too few particles: {most} (at least {min_particles} are needed for a mean with an error)")
    # growth: a weighted straight line through the mean radius, its rise over the movie in standard errors
    w = 1.0 / data.sigma**2
    slope, intercept = np.polyfit(data.t, data.r, 1, w=np.sqrt(w))
    design = np.column_stack([data.t, np.ones_like(data.t)])
    cov = np.linalg.pinv(design.T @ (design * w[:, None]))
    residual = data.r - (slope * data.t + intercept)
    scatter = max(float(np.sum(w * residual**2)) / max(used - 2, 1), 1.0)
    rise = slope * data.t[-1]
    rise_error = math.sqrt(cov[0, 0] * scatter) * data.t[-1]
    if not rise > min_growth_sigma * rise_error:
        return refuse(
            f"too little growth: the mean radius changed by {rise:+.3g} ± {rise_error:.2g} nm over the "
            f"{data.t[-1]:.3g} s fitted, less than {min_growth_sigma:g} standard errors"
        )

    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    fixed = [float(e) for e in exponents if e is not None]
    boot: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    support: dict[float, float] = {}
    if matrix is not None and resamples > 0:
        means, errors = _bootstrap_means(matrix, int(resamples), generator, int(min_count))
        boot_chi2, _, boot_k = _profile(data.t, means, errors, _N_GRID)
        boot = (means, errors, boot_chi2, boot_k)
        method = f"bootstrap over {n_particles} particles, {int(resamples)} resamples"
        if fixed:
            winner = np.argmin(_profile(data.t, means, errors, np.array(fixed))[0], axis=1)
            support = {n: float(np.mean(winner == i)) for i, n in enumerate(fixed)}
    else:
        method = "profile likelihood (frames assumed independent)"
    chi2_grid, _, _ = _profile(data.t, data.r[None], data.sigma[None], _N_GRID)
    fits = [_one_fit(data, e, chi2_grid, boot, method, n_particles, confidence, max_exponent_range) for e in exponents]
    return fits, support


def _one_fit(
    data: _Data,
    exponent: float | None,
    chi2_grid: np.ndarray,
    boot: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    method: str,
    n_particles: int,
    confidence: float,
    max_exponent_range: float,
) -> GrowthFit:
    used = len(data.t)
    z = _z(confidence)
    if exponent is None:
        n = float(_best_exponent(chi2_grid, _N_GRID)[0])
        if not np.isfinite(chi2_grid).any():
            return _no_fit("no exponent between 0.5 and 12 describes the mean radius", None, used, n_particles, confidence)
        if boot is not None:
            n_low, n_high = _interval(_bootstrap_exponents(boot[2]), confidence)
        else:
            n_low, n_high = _profile_interval(chi2_grid[0], used, 3, confidence)
    else:
        n = float(exponent)
        n_low = n_high = n
    chi2, a, k = _fit_at(data, n)
    if not (np.isfinite(chi2) and a > 0):
        return _no_fit(f"no curve with n = {n:.3g} and r0 > 0 fits the mean radius", exponent, used, n_particles, confidence)
    if boot is not None:
        # K's interval at the fitted n (K's unit, nm^n/s, depends on n)
        ks = _profile(data.t, boot[0], boot[1], np.array([n]))[2][:, 0]
        rate_low, rate_high = _interval(ks, confidence)
    else:
        rate_low, rate_high = _rate_interval(data, n, chi2, confidence)
    r0 = a ** (1.0 / n)
    pred = np.abs(a + k * data.t) ** (1.0 / n)
    rms = float(np.sqrt(np.mean((data.r - pred) ** 2)))
    params = 2 if exponent is not None else 3
    fit = dict(
        n=n,
        n_error=0.0 if exponent is not None else (n_high - n_low) / (2 * z),
        rate=k,
        rate_error=(rate_high - rate_low) / (2 * z),
        r0=r0,
        r0_error=float(np.median(data.sigma)),
        exponent_fixed=exponent is not None,
        rms_residual_nm=rms,
        frames_used=used,
        n_low=n_low,
        n_high=n_high,
        rate_low=rate_low,
        rate_high=rate_high,
        confidence=confidence,
        interval_method=method,
        chi2=chi2,
        aic=chi2 + 2 * params,
        bic=chi2 + params * math.log(used),
        particles_used=n_particles,
        time_origin_s=data.origin,
    )
    reason = ""
    if not k > 0:
        reason = "the mean radius does not grow; no coarsening law to fit"
    elif exponent is None and not (np.isfinite(n_low) and np.isfinite(n_high)):
        reason = "the interval of n could not be estimated"
    elif exponent is None and (n_high - n_low > max_exponent_range or n_high >= _N_GRID[-2] or n_low <= _N_GRID[1]):
        reason = (
            f"the data allow n anywhere from {n_low:.2g} to {n_high:.2g} ({confidence:.0%}); "
            f"more frames, more particles or more growth are needed"
        )
    elif not (np.isfinite(rate_low) and rate_low > 0):
        reason = f"K is not distinguishable from 0 ({confidence:.0%} interval from {rate_low:.3g})"
    if reason:
        fit["n"] = math.nan if exponent is None else n
        return GrowthFit(ok=False, reason=reason, **fit)  # type: ignore[arg-type]
    return GrowthFit(ok=True, **fit)  # type: ignore[arg-type]


def _no_fit(reason: str, exponent: float | None, frames: int, particles: int, confidence: float) -> GrowthFit:
    nan = math.nan
    return GrowthFit(
        ok=False,
        n=nan if exponent is None else float(exponent),
        n_error=nan,
        rate=nan,
        rate_error=nan,
        r0=nan,
        r0_error=nan,
        exponent_fixed=exponent is not None,
        rms_residual_nm=nan,
        frames_used=frames,
        reason=reason,
        confidence=confidence,
        particles_used=particles,
    )


def fit_growth_law(
    stats: pd.DataFrame,
    *,
    exponent: float | None = None,
    particles: pd.DataFrame | None = None,
    min_count: int = 3,
    min_frames: int = 8,
    min_particles: int = 10,
    min_growth_sigma: float = 5.0,
    max_exponent_range: float = 2.0,
    confidence: float = 0.95,
    resamples: int = 200,
    rng: np.random.Generator | int | None = 0,
) -> GrowthFit:
    """Fit ``<r>^n - <r0>^n = K t`` to the mean radius through time, or say why the data cannot.

    See the module docstring for the model, the weights and the intervals.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`temflow.analysis.coarsening.size_statistics` (``time`` in s,
        ``mean_radius`` in nm, ``count``, ``std_diameter`` in nm; ``frame`` and
        ``excluded`` when present: excluded frames are left out).
    exponent : float, optional
        Fix ``n`` (3 for LSW ripening, 2 for interface-limited, 4 for
        surface-diffusion-limited); default: fit it.
    particles : pandas.DataFrame, optional
        The rows behind ``stats`` (``frame``, ``particle``, ``equivalent_diameter``;
        :func:`temflow.analysis.coarsening.sized_particles`): intervals by a
        bootstrap over particles. Without it, a profile-likelihood interval
        that treats frames as independent (too narrow when they share particles).
    min_count : int
        Frames with fewer particles are left out (their mean is too noisy).
    min_frames : int
        Fewer usable frames than this: undetermined.
    min_particles : int
        Fewer distinct particles (or, without ``particles``, fewer in the
        fullest frame) than this: undetermined.
    min_growth_sigma : float
        The mean radius must rise by at least this many standard errors over
        the frames fitted, else undetermined ("too little growth").
    max_exponent_range : float
        An interval of ``n`` wider than this is no measurement: undetermined.
    confidence : float
        Coverage of the intervals.
    resamples : int
        Bootstrap resamples (with ``particles``).
    rng : numpy.random.Generator, int or None
        Seed of the bootstrap; the default gives the same interval every time.

    Returns
    -------
    GrowthFit
        ``ok=False`` with a ``reason`` (never an exception) when the data do not
        determine the law.

    Raises
    ------
    ValueError
        For a table without the columns or impossible options.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = np.arange(20.0)
    >>> stats = pd.DataFrame({"time": t, "mean_radius": (8.0 + 2.0 * t) ** (1 / 3), "count": 50, "std_diameter": 0.5})
    >>> fit = fit_growth_law(stats)
    >>> fit.ok, round(fit.n, 2), round(fit.rate, 2)
    (True, 3.0, 2.0)
    >>> fit_growth_law(stats.head(5)).reason
    'only 5 frames with 3 or more particles; at least 8 are needed to separate n from r0 and K'
    """
    fits, _ = _analyse(
        stats,
        exponents=(exponent,),
        particles=particles,
        min_count=min_count,
        min_frames=min_frames,
        min_particles=min_particles,
        min_growth_sigma=min_growth_sigma,
        max_exponent_range=max_exponent_range,
        confidence=confidence,
        resamples=resamples,
        rng=rng,
    )
    return fits[0]
