"""Coarsening at several temperatures: rates per temperature step and an apparent activation energy.

A heating experiment often holds the sample at a few temperatures in turn. Within each plateau
the mean radius follows ``<r>^n - <r0>^n = K t`` (:func:`temflow.analysis.coarsening.fit_growth_law`,
``n`` fixed, 3 for ripening by default, so that the rates of different steps are comparable),
and the rates follow Arrhenius' law ``K = A exp(-Ea / (kB T))``: a straight line of ``ln K``
against ``1/T`` whose slope is ``-Ea/kB``. The activation energy is *apparent*: ``K`` of LSW
ripening also carries ``1/T`` and the temperature dependence of solubility and interface
energy, which the line absorbs.

Steps are found in the per-frame temperature (``temperature_C``, from a holder log put on the
movie's time axis): consecutive frames whose temperature stays within ``tolerance_C`` of the
plateau's running median form a step; ramps break into short runs that are dropped
(``min_frames``). Each step's time restarts at its first frame.

The interval on ``Ea``: weighted least squares of ``ln K`` on ``1/T`` (weights from each rate's
standard error); with three or more steps, the covariance is scaled by the reduced chi-square
when the points scatter more than their errors say, and the interval uses Student's t with
``steps - 2`` degrees of freedom; with two steps the line goes through both points, and the
interval comes from their errors alone (normal quantile). A parametric bootstrap (each ``ln K``
redrawn from its error, the line refitted) gives a second, percentile interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from temflow.analysis._growth_law import fit_growth_law
from temflow.movie import check_table

__all__ = ["BOLTZMANN_EV_PER_K", "ArrheniusFit", "coarsening_rates_per_step", "fit_arrhenius", "temperature_steps"]

BOLTZMANN_EV_PER_K = 8.617333262e-5
_EV_TO_KJ_PER_MOL = 96.48533212


@dataclass(frozen=True)
class ArrheniusFit:
    """An Arrhenius line through coarsening rates, or why there is none.

    Attributes
    ----------
    ok : bool
        Whether a line was fitted; when False, ``reason`` says why and the numbers are NaN.
    activation_energy_eV, activation_energy_error_eV : float
        Apparent activation energy and its standard error, eV.
    interval_eV : list of float
        ``[low, high]`` confidence interval of the regression, eV.
    bootstrap_interval_eV : list of float
        ``[low, high]`` percentile interval of the parametric bootstrap, eV.
    confidence : float
        Confidence level of both intervals.
    ln_prefactor : float
        ``ln A``, with ``A`` in the rate's units (nm^n/s).
    steps_used : int
        Temperature steps with a rate that entered the line.
    steps_excluded : int
        Steps left out: no fit, or a rate not above its own standard error (its logarithm
        would be meaningless).
    reason : str
        Why there is no line; empty when ``ok``.
    """

    ok: bool
    activation_energy_eV: float
    activation_energy_error_eV: float
    interval_eV: list[float]
    bootstrap_interval_eV: list[float]
    confidence: float
    ln_prefactor: float
    steps_used: int
    steps_excluded: int = 0
    reason: str = ""

    @property
    def activation_energy_kJ_per_mol(self) -> float:
        """``Ea`` in kJ/mol."""
        return self.activation_energy_eV * _EV_TO_KJ_PER_MOL

    def to_dict(self) -> dict[str, Any]:
        """The fit as a plain dict (with ``activation_energy_kJ_per_mol``)."""
        return {**asdict(self), "activation_energy_kJ_per_mol": self.activation_energy_kJ_per_mol}

    def predict(self, temperature_K: np.ndarray) -> np.ndarray:
        """The rate the line gives at ``temperature_K``."""
        t = np.asarray(temperature_K, dtype=float)
        return np.exp(self.ln_prefactor - self.activation_energy_eV / (BOLTZMANN_EV_PER_K * t))


def temperature_steps(
    stats: pd.DataFrame,
    *,
    tolerance_C: float = 5.0,
    min_frames: int = 4,
) -> pd.DataFrame:
    """Find the plateaus of constant temperature in a per-frame table.

    Parameters
    ----------
    stats : pandas.DataFrame
        One row per frame in time order with ``time`` (s) and ``temperature_C`` (e.g.
        :func:`temflow.analysis.coarsening.size_statistics` with the holder's temperature added).
    tolerance_C : float
        Largest departure from the plateau's running median, °C.
    min_frames : int
        Shorter runs (ramps, spikes) are not steps.

    Returns
    -------
    pandas.DataFrame
        One row per step: ``step`` (0, 1, ...), ``first_row``, ``last_row`` (positions in
        ``stats``), ``start_s``, ``end_s``, ``frames``, ``temperature_C`` (median),
        ``temperature_spread_C`` (max - min within the step).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> temps = [300.0] * 5 + [350.0, 400.0] + [450.0] * 6
    >>> steps = temperature_steps(pd.DataFrame({"time": np.arange(13.0), "temperature_C": temps}))
    >>> steps[["first_row", "last_row", "temperature_C"]].values.tolist()
    [[0.0, 4.0, 300.0], [7.0, 12.0, 450.0]]
    """
    check_table(stats, ("time", "temperature_C"), "stats")
    if not (math.isfinite(tolerance_C) and tolerance_C > 0):
        raise ValueError(f"tolerance_C must be a positive number of °C; got {tolerance_C!r}")
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 2:
        raise ValueError(f"min_frames must be an integer of at least 2; got {min_frames!r}")
    temps = stats["temperature_C"].to_numpy(float)
    times = stats["time"].to_numpy(float)
    runs: list[tuple[int, int]] = []
    start = None
    for i, value in enumerate(temps):
        if not np.isfinite(value):
            if start is not None:
                runs.append((start, i - 1))
            start = None
            continue
        if start is not None and abs(value - np.median(temps[start:i])) > tolerance_C:
            runs.append((start, i - 1))
            start = None
        if start is None:
            start = i
    if start is not None:
        runs.append((start, len(temps) - 1))
    rows: list[dict[str, Any]] = []
    for first, last in runs:
        if last - first + 1 < min_frames:
            continue
        block = temps[first:last + 1]
        rows.append({"step": len(rows), "first_row": first, "last_row": last, "start_s": times[first],
                     "end_s": times[last], "frames": last - first + 1, "temperature_C": float(np.median(block)),
                     "temperature_spread_C": float(block.max() - block.min())})
    columns = ["step", "first_row", "last_row", "start_s", "end_s", "frames", "temperature_C", "temperature_spread_C"]
    return pd.DataFrame(rows, columns=columns)


def coarsening_rates_per_step(
    stats: pd.DataFrame,
    *,
    exponent: float = 3.0,
    tolerance_C: float = 5.0,
    min_frames: int = 4,
    min_count: int = 3,
) -> pd.DataFrame:
    """Fit the growth law with a fixed exponent within each temperature step.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`temflow.analysis.coarsening.size_statistics` plus ``temperature_C``.
    exponent : float
        The growth exponent ``n``, the same for every step so that rates compare (3: LSW).
    tolerance_C, min_frames : float, int
        As for :func:`temperature_steps`.
    min_count : int
        As for :func:`temflow.analysis.coarsening.fit_growth_law`.

    Returns
    -------
    pandas.DataFrame
        :func:`temperature_steps`' columns plus ``temperature_K``, ``rate`` and ``rate_error``
        (nm^n/s), ``r0`` (nm), ``ok`` and ``reason`` (why a step has no rate).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = np.arange(20.0)
    >>> k = np.where(t < 10, 1.0, 4.0)
    >>> r3 = np.where(t < 10, 30 + 1.0 * t, 30 + 9 + 4.0 * (t - 10))
    >>> stats = pd.DataFrame({"time": t, "mean_radius": np.cbrt(r3), "count": 40, "std_diameter": 0.2,
    ...                       "temperature_C": np.where(t < 10, 300.0, 400.0)})
    >>> coarsening_rates_per_step(stats)["rate"].round(2).tolist()
    [1.0, 4.0]
    """
    check_table(stats, ("time", "temperature_C", "mean_radius", "count"), "stats")
    steps = temperature_steps(stats, tolerance_C=tolerance_C, min_frames=min_frames)
    rows = []
    for step in steps.itertuples(index=False):
        part = stats.iloc[int(step.first_row): int(step.last_row) + 1].copy()
        part["time"] = part["time"] - part["time"].iloc[0]
        fit = fit_growth_law(part, exponent=exponent, min_count=min_count)
        rows.append({**step._asdict(), "temperature_K": step.temperature_C + 273.15, "rate": fit.rate,
                     "rate_error": fit.rate_error, "r0": fit.r0, "ok": fit.ok, "reason": fit.reason})
    columns = list(steps.columns) + ["temperature_K", "rate", "rate_error", "r0", "ok", "reason"]
    return pd.DataFrame(rows, columns=columns)


def fit_arrhenius(
    rates: pd.DataFrame,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> ArrheniusFit:
    """Fit ``ln K = ln A - Ea / (kB T)`` to per-step rates (see the module's description).

    Parameters
    ----------
    rates : pandas.DataFrame
        From :func:`coarsening_rates_per_step` (``temperature_K``, ``rate``, ``rate_error``, ``ok``).
    confidence : float
        Confidence level of the intervals (0..1).
    n_bootstrap : int
        Bootstrap resamples (0: no bootstrap interval).
    rng : numpy.random.Generator, int or None
        Randomness of the bootstrap.

    Returns
    -------
    ArrheniusFit
        With ``ok=False`` and a ``reason`` (no exception) when fewer than two steps have a
        positive rate or all steps share one temperature.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> T = np.array([573.15, 623.15, 673.15])
    >>> K = 1e9 * np.exp(-1.0 / (BOLTZMANN_EV_PER_K * T))
    >>> fit = fit_arrhenius(pd.DataFrame({"temperature_K": T, "rate": K, "rate_error": 0.05 * K, "ok": True}), rng=0)
    >>> round(fit.activation_energy_eV, 3), fit.steps_used
    (1.0, 3)
    """
    from scipy import stats as _stats

    check_table(rates, ("temperature_K", "rate", "rate_error"), "rates")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer; got {n_bootstrap!r}")
    ok = rates["ok"].to_numpy(bool) if "ok" in rates.columns else np.ones(len(rates), bool)
    k, k_error = rates["rate"].to_numpy(float), rates["rate_error"].to_numpy(float)
    keep = ok & np.isfinite(k) & (k > 0) & ~(np.isfinite(k_error) & (k_error >= k))
    use = rates[keep]
    excluded = int(len(rates) - keep.sum())
    nan = math.nan
    if len(use) < 2:
        return ArrheniusFit(False, nan, nan, [nan, nan], [nan, nan], confidence, nan, len(use), excluded,
                            f"{len(use)} temperature step(s) with a coarsening rate above its error; an Arrhenius "
                            "line needs 2 or more")
    x = 1.0 / use["temperature_K"].to_numpy(float)
    if np.ptp(x) <= 0:
        return ArrheniusFit(False, nan, nan, [nan, nan], [nan, nan], confidence, nan, len(use), excluded,
                            "every step has the same temperature")
    y = np.log(use["rate"].to_numpy(float))
    rel = use["rate_error"].to_numpy(float) / use["rate"].to_numpy(float)
    # a step without an error estimate gets the largest error seen (weights must stay finite)
    finite = np.isfinite(rel) & (rel > 0)
    sigma = np.where(finite, rel, rel[finite].max() if finite.any() else 1.0)
    slope, intercept, cov = _weighted_line(x, y, sigma)
    dof = len(use) - 2
    if dof > 0:
        chi2 = float(np.sum(((y - (intercept + slope * x)) / sigma) ** 2)) / dof
        cov = cov * max(chi2, 1.0)
        quantile = float(_stats.t.ppf(0.5 + confidence / 2, dof))
    else:
        quantile = float(_stats.norm.ppf(0.5 + confidence / 2))
    energy = -slope * BOLTZMANN_EV_PER_K
    error = math.sqrt(cov[0, 0]) * BOLTZMANN_EV_PER_K
    boot = [nan, nan]
    if n_bootstrap:
        generator = np.random.default_rng(rng)
        draws = y[None, :] + generator.normal(size=(n_bootstrap, y.size)) * sigma[None, :]
        if dof > 0:  # the points' own scatter beyond their errors is part of the uncertainty
            draws = draws + generator.normal(size=draws.shape) * sigma[None, :] * math.sqrt(max(chi2 - 1.0, 0.0))
        energies = np.array([-_weighted_line(x, d, sigma)[0] * BOLTZMANN_EV_PER_K for d in draws])
        tail = 100 * (1 - confidence) / 2
        boot = [float(np.percentile(energies, tail)), float(np.percentile(energies, 100 - tail))]
    return ArrheniusFit(True, float(energy), float(error), [energy - quantile * error, energy + quantile * error],
                        boot, confidence, float(intercept), len(use), excluded)


def _weighted_line(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Slope, intercept and the (unscaled) covariance of ``[slope, intercept]``."""
    w = 1.0 / sigma**2
    design = np.column_stack([x, np.ones_like(x)])
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.inv(normal)
    slope, intercept = cov @ (design.T @ (w * y))
    return float(slope), float(intercept), cov
