"""Growth-law fits of :mod:`temflow.analysis.coarsening`: ``<r>^n - <r0>^n = K t`` through the mean radius.

:class:`GrowthFit` holds a fit (or why there is none); :func:`fit_growth_law`
makes it by weighted least squares, ``n`` free or fixed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from temflow.movie import check_table

@dataclass(frozen=True)
class GrowthFit:
    """A fit of ``<r>^n - <r0>^n = K t`` to the mean radius.

    Attributes
    ----------
    ok : bool
        Whether a fit was made; when False, ``reason`` says why and the numbers are NaN.
    n, n_error : float
        Growth exponent and its standard error (``n_error`` 0 when fixed).
    rate, rate_error : float
        ``K`` and its standard error, nm^n / s.
    r0, r0_error : float
        Mean radius at ``t = 0``, nm.
    exponent_fixed : bool
        Whether ``n`` was fixed rather than fitted.
    rms_residual_nm : float
        RMS of the mean radius about the fitted curve, nm.
    frames_used : int
        Frames with particles that entered the fit.
    reason : str
        Why there is no fit; empty when ``ok``.
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

    def to_dict(self) -> dict[str, Any]:
        """The fit as a plain dict."""
        return asdict(self)

    def predict(self, time_s: np.ndarray) -> np.ndarray:
        """Mean radius (nm) the fit gives at ``time_s``."""
        t = np.asarray(time_s, dtype=float)
        base = self.r0**self.n + self.rate * t
        return np.where(base > 0, np.abs(base) ** (1.0 / self.n), np.nan)


def _no_fit(reason: str, exponent: float | None, frames: int) -> GrowthFit:
    nan = math.nan
    return GrowthFit(False, nan if exponent is None else float(exponent), nan, nan, nan, nan, nan, exponent is not None, nan, frames, reason)


def fit_growth_law(
    stats: pd.DataFrame,
    *,
    exponent: float | None = None,
    min_count: int = 3,
) -> GrowthFit:
    """Fit ``<r>^n - <r0>^n = K t`` to the mean radius through time.

    Least squares on the mean radius itself (its noise is what was
    measured), weighted by the standard error of each frame's mean
    (``std / sqrt(count)``); uncertainties are the standard errors from the
    covariance, scaled by the reduced chi-square.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`size_statistics` (``time``, ``mean_radius``, ``count``,
        ``std_diameter``).
    exponent : float, optional
        Fix ``n`` (3 for LSW ripening, 2 for interface-limited); default fit it.
    min_count : int
        Frames with fewer particles are left out (their mean is too noisy).

    Returns
    -------
    GrowthFit
        With ``ok=False`` and a ``reason`` (no exception) when there is nothing
        to fit: no particles, too few frames, no growth.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = np.arange(20.0)
    >>> stats = pd.DataFrame({"time": t, "mean_radius": (8.0 + 2.0 * t) ** (1 / 3), "count": 50, "std_diameter": 0.5})
    >>> fit = fit_growth_law(stats)
    >>> round(fit.n, 2), round(fit.rate, 2)
    (3.0, 2.0)
    >>> fit_growth_law(stats.assign(count=0)).reason
    'no frame has 3 or more particles to average'
    """
    from scipy.optimize import curve_fit

    stats = check_table(stats, ("time", "mean_radius", "count"), "stats")
    if exponent is not None and not (math.isfinite(exponent) and exponent > 0):
        raise ValueError(f"exponent must be a positive number (3 for LSW) or None to fit it; got {exponent!r}")
    use = stats[(stats["count"] >= min_count) & np.isfinite(stats["mean_radius"])]
    if use.empty:
        return _no_fit(f"no frame has {min_count} or more particles to average", exponent, 0)
    need = 3 if exponent is not None else 4
    if len(use) < need:
        return _no_fit(f"only {len(use)} frames have {min_count} or more particles; the fit needs {need}", exponent, len(use))
    t = use["time"].to_numpy(float)
    r = use["mean_radius"].to_numpy(float)
    if "std_diameter" in use.columns:
        sigma = 0.5 * use["std_diameter"].to_numpy(float) / np.sqrt(use["count"].to_numpy(float))
        sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.nanmedian(sigma[sigma > 0]) if np.any(sigma > 0) else 1.0)
    else:
        sigma = np.ones_like(r)
    # least-squares on the data scale; K from the straight line of r^n first
    n0 = 3.0 if exponent is None else float(exponent)
    slope, intercept = np.polyfit(t, r**n0, 1)
    if not slope > 0:
        return _no_fit("the mean radius does not grow; no coarsening law to fit", exponent, len(use))
    r0_guess = max(intercept, 1e-9) ** (1.0 / n0)

    def model(time: np.ndarray, r0: float, rate: float, n: float) -> np.ndarray:
        base = np.abs(r0) ** n + rate * time
        return np.sign(base) * np.abs(base) ** (1.0 / n)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning for a singular covariance: reported as inf below
            if exponent is None:
                # fit n with r0 and K rescaled by it: r^n - r0^n = K t
                params, cov = curve_fit(model, t, r, p0=(r0_guess, slope, n0), sigma=sigma, bounds=((0, 0, 0.5), (np.inf, np.inf, 20.0)), maxfev=20000)
            else:
                params, cov = curve_fit(lambda time, r0, rate: model(time, r0, rate, n0), t, r, p0=(r0_guess, slope), sigma=sigma, bounds=((0, 0), (np.inf, np.inf)), maxfev=20000)
                params = np.append(params, n0)
                cov = np.pad(cov, ((0, 1), (0, 1)))
    except (RuntimeError, ValueError) as error:
        return _no_fit(f"the fit did not converge ({error})", exponent, len(use))
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(3, np.inf)
    residual = r - model(t, *params)
    return GrowthFit(
        ok=True,
        n=float(params[2]),
        n_error=float(errors[2]),
        rate=float(params[1]),
        rate_error=float(errors[1]),
        r0=float(abs(params[0])),
        r0_error=float(errors[0]),
        exponent_fixed=exponent is not None,
        rms_residual_nm=float(np.sqrt(np.mean(residual**2))),
        frames_used=int(len(use)),
    )
