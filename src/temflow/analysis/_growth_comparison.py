"""Growth laws side by side, for :mod:`temflow.analysis.coarsening`: ``n = 2, 3, 4`` and ``n`` free.

The fits are :mod:`temflow.analysis._growth_law`'s (same bootstrap over
particles, same "undetermined" rules); this module tabulates them with AIC and
BIC and says which fixed exponent, if any, the data prefer.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from temflow.analysis._growth_law import _analyse


def compare_growth_laws(
    stats: pd.DataFrame,
    *,
    exponents: tuple[float, ...] = (2.0, 3.0, 4.0),
    particles: pd.DataFrame | None = None,
    min_count: int = 3,
    min_frames: int = 8,
    min_particles: int = 10,
    min_growth_sigma: float = 5.0,
    max_exponent_range: float = 2.0,
    confidence: float = 0.95,
    resamples: int = 200,
    rng: np.random.Generator | int | None = 0,
    decisive_delta_bic: float = 6.0,
    min_support: float = 0.8,
) -> pd.DataFrame:
    """Fit ``n`` = each of ``exponents`` and ``n`` free, side by side, with AIC/BIC.

    Parameters are those of :func:`fit_growth_law`, plus:

    exponents : tuple of float
        The fixed exponents to compare (2 interface-limited ripening, 3
        diffusion-limited LSW, 4 surface diffusion).
    decisive_delta_bic : float
        The lowest-BIC fixed exponent is "preferred" only when every other is
        at least this much higher (6: "strong" evidence, Kass & Raftery) and
        the free fit determines ``n`` with that exponent inside its interval;
        otherwise the comparison is "undecided".
    min_support : float
        With particles, the preferred exponent must also have the lowest
        chi-square in at least this share of the bootstrap resamples (BIC
        alone treats frames as independent, which they are not).

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model`` ("n = 3", "n free"), ``ok``, ``n``,
        ``n_low``, ``n_high``, ``rate`` (nm^n/s), ``rate_low``, ``rate_high``,
        ``r0`` (nm), ``chi2``, ``aic``, ``bic``, ``delta_aic``, ``delta_bic``
        (to the lowest), ``bootstrap_support`` (share of bootstrap resamples
        in which this fixed ``n`` has the lowest chi-square; NaN without
        particles), ``reason``. ``attrs["preferred"]`` is the preferred fixed
        exponent (NaN when undecided) and ``attrs["summary"]`` one sentence.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = np.arange(40.0)
    >>> stats = pd.DataFrame({"time": t, "mean_radius": (27.0 + 3.0 * t) ** (1 / 3), "count": 80, "std_diameter": 0.4})
    >>> table = compare_growth_laws(stats)
    >>> table["model"].tolist(), table.attrs["preferred"]
    (['n = 2', 'n = 3', 'n = 4', 'n free'], 3.0)
    """
    fits, support = _analyse(
        stats,
        exponents=tuple(float(e) for e in exponents) + (None,),
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
    rows = []
    for fit in fits:
        rows.append(
            {
                "model": "n free" if not fit.exponent_fixed else f"n = {fit.n:g}",
                "ok": fit.ok,
                "n": fit.n,
                "n_low": fit.n_low,
                "n_high": fit.n_high,
                "rate": fit.rate,
                "rate_low": fit.rate_low,
                "rate_high": fit.rate_high,
                "r0": fit.r0,
                "chi2": fit.chi2,
                "aic": fit.aic,
                "bic": fit.bic,
                "bootstrap_support": support.get(fit.n, math.nan) if fit.exponent_fixed else math.nan,
                "reason": fit.reason,
            }
        )
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("bic") + 1, "delta_aic", table["aic"] - table["aic"].min())
    table.insert(table.columns.get_loc("delta_aic") + 1, "delta_bic", table["bic"] - table["bic"].min())
    fixed = table.iloc[: len(exponents)]
    free = fits[-1]
    preferred = math.nan
    if not np.isfinite(fixed["bic"]).any():
        summary = f"undetermined: {fits[0].reason}"
    else:
        order = fixed.sort_values("bic")
        best = order.iloc[0]
        best_n = float(exponents[int(order.index[0])])
        gap = float(order["bic"].iloc[1] - best["bic"]) if len(order) > 1 else math.inf
        share = best["bootstrap_support"]
        backing = f", lowest in {share:.0%} of bootstrap resamples" if np.isfinite(share) else ""
        # a fixed exponent is preferred only when the free fit determines n and agrees
        agrees = free.ok and free.n_low <= best_n <= free.n_high
        if gap >= decisive_delta_bic and (not np.isfinite(share) or share >= min_support) and agrees:
            preferred = best_n
            summary = f"{best['model']} preferred (BIC lower by {gap:.1f} than the next{backing})"
        else:
            summary = f"undecided between fixed exponents: {best['model']} has the lowest BIC, {gap:.1f} below the next{backing}"
            if not agrees:
                summary += ", but n free " + ("is undetermined" if not free.ok else f"is {free.n:.2f} [{free.n_low:.2f}, {free.n_high:.2f}]")
    summary += "; free fit: " + free.describe()
    table.attrs = {"preferred": preferred, "summary": summary}
    return table
