"""Size-distribution shapes against theory, for :mod:`temflow.analysis.coarsening`.

:func:`compare_size_distributions` pools ``u = r / <r>`` over frames and
measures it against LSW (ripening) and a log-normal (coalescence) with the
Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from temflow.movie import check_table
from temflow.synthetic.generator import lsw_distribution


def _lognormal_cdf(u: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.stats import lognorm

    # mean 1: the distribution of r / <r>
    return lognorm.cdf(u, s=sigma, scale=math.exp(-0.5 * sigma**2))


def _lsw_cdf(u: np.ndarray) -> np.ndarray:
    grid = np.linspace(0.0, 1.5, 3001)
    density = lsw_distribution(grid)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.interp(u, grid, cdf, left=0.0, right=1.0)


def compare_size_distributions(
    table: pd.DataFrame,
    *,
    include_border: bool = False,
    frames: np.ndarray | None = None,
    min_particles: int = 20,
) -> pd.DataFrame:
    """The normalised size distribution against LSW (ripening) and a log-normal (coalescence).

    Every frame's radii are scaled by that frame's mean (``u = r / <r>``) and
    pooled. Ripening in the diffusion-limited LSW regime gives the LSW shape
    (no free parameter, nothing beyond ``u = 1.5``); migration and
    coalescence gives a broad, right-skewed, close to log-normal shape (one
    parameter: the width ``sigma`` of ``ln u``, fitted). The Kolmogorov-Smirnov
    statistic ``D`` (largest gap between the cumulative distributions; 0
    identical) measures the fit; its p-value uses the number of distinct
    particles (the same particle in many frames is not new evidence), and for
    the log-normal it is approximate (its width was fitted, which makes the
    test lenient).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`temflow.analysis.measure.measure_particles` or ``link`` (a
        ``particle`` column sets the effective sample size).
    include_border : bool
        Keep particles touching the border (their size is cut).
    frames : array of int, optional
        The frames to pool (e.g. those not excluded); default all.
    min_particles : int
        Fewer distinct particles give NaN numbers and a reason.

    Returns
    -------
    pandas.DataFrame
        Rows ``"LSW (ripening)"`` and ``"log-normal (coalescence)"``, columns
        ``model``, ``ks_statistic``, ``p_value``, ``sigma`` (the log-normal's
        fitted width; NaN for LSW), ``particles`` (the effective sample),
        ``values`` (rows pooled). ``attrs["closer"]`` names the better model
        (empty when undetermined) and ``attrs["reason"]`` says why not.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> d = np.exp(rng.normal(1.5, 0.3, 400))
    >>> table = pd.DataFrame({"frame": np.repeat([0, 1], 200), "equivalent_diameter": d})
    >>> compare_size_distributions(table).attrs["closer"]
    'log-normal (coalescence)'
    """
    from scipy.stats import kstwo

    table = check_table(table, ("frame", "equivalent_diameter"), "table")
    if not include_border and "touches_border" in table.columns:
        table = table[~table["touches_border"].to_numpy(bool)]
    if frames is not None:
        table = table[table["frame"].isin(np.asarray(frames))]
    d = table["equivalent_diameter"].to_numpy(float)
    mean = table.groupby("frame")["equivalent_diameter"].transform("mean").to_numpy(float)
    u = np.sort(d / mean) if d.size else d
    effective = int(table["particle"].nunique()) if "particle" in table.columns else int(len(table))
    models = ("LSW (ripening)", "log-normal (coalescence)")
    rows = []
    reason = ""
    if effective < min_particles or u.size < min_particles:
        reason = f"too few particles to compare shapes: {effective} (at least {min_particles})"
        for model in models:
            rows.append((model, math.nan, math.nan, math.nan, effective, int(u.size)))
    else:
        empirical_hi = np.arange(1, u.size + 1) / u.size
        empirical_lo = np.arange(0, u.size) / u.size
        positive = u[u > 0]
        sigma = float(np.std(np.log(positive), ddof=1)) if positive.size > 1 else math.nan
        for model, cdf in ((models[0], _lsw_cdf(u)), (models[1], _lognormal_cdf(u, sigma))):
            statistic = float(max(np.max(empirical_hi - cdf), np.max(cdf - empirical_lo)))
            p_value = float(kstwo.sf(statistic, effective))
            rows.append((model, statistic, p_value, sigma if model == models[1] else math.nan, effective, int(u.size)))
    out = pd.DataFrame(rows, columns=["model", "ks_statistic", "p_value", "sigma", "particles", "values"])
    closer = ""
    if not reason:
        best = out.sort_values("ks_statistic").iloc[0]
        closer = str(best["model"])
    out.attrs = {"closer": closer, "reason": reason}
    return out
