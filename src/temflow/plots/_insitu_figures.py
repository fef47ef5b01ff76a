"""In-situ figures: sizes against the holder's temperature, the Arrhenius plot, the electron dose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from temflow.plots._figure import _new_axes

if TYPE_CHECKING:
    from temflow.analysis.arrhenius import ArrheniusFit

__all__ = ["plot_arrhenius", "plot_dose", "plot_size_vs_temperature"]


def plot_size_vs_temperature(stats: pd.DataFrame, *, axes: Sequence[Axes] | None = None) -> Figure:
    """Mean diameter and particle count against the holder's temperature, coloured by time.

    Parameters
    ----------
    stats : pandas.DataFrame
        Per-frame statistics with ``temperature_C`` (the holder log on the movie's time axis),
        ``time``, ``mean_diameter``, ``std_diameter`` and ``count``.
    axes : pair of matplotlib.axes.Axes, optional
        Where to draw; default a new figure with two panels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if axes is None:
        axes = Figure(figsize=(10.0, 4.0)).subplots(1, 2)
    size_ax, count_ax = axes
    figure: Any = size_ax.figure
    temperature = stats["temperature_C"].to_numpy(float)
    time = stats["time"].to_numpy(float)
    sem = stats["std_diameter"].to_numpy(float) / np.sqrt(np.maximum(stats["count"].to_numpy(float), 1))
    size_ax.errorbar(temperature, stats["mean_diameter"].to_numpy(float), yerr=sem, fmt="none", ecolor="0.7", lw=0.8)
    points = size_ax.scatter(temperature, stats["mean_diameter"].to_numpy(float), c=time, s=12, cmap="viridis")
    count_ax.scatter(temperature, stats["count"].to_numpy(float), c=time, s=12, cmap="viridis")
    size_ax.set_xlabel("holder temperature (\u00b0C)")
    size_ax.set_ylabel("mean diameter (nm)")
    count_ax.set_xlabel("holder temperature (\u00b0C)")
    count_ax.set_ylabel("particles (not touching the border)")
    count_ax.set_ylim(bottom=0)
    figure.colorbar(points, ax=list(axes), label="time (s)")
    return figure


def plot_arrhenius(rates: pd.DataFrame, fit: "ArrheniusFit | None" = None, *, ax: Axes | None = None) -> Figure:
    """Coarsening rate per temperature step against 1/T (log scale), with the Arrhenius line.

    Parameters
    ----------
    rates : pandas.DataFrame
        From :func:`temflow.analysis.arrhenius.coarsening_rates_per_step`.
    fit : ArrheniusFit, optional
        From :func:`temflow.analysis.arrhenius.fit_arrhenius`; drawn when ``ok``.
    ax : matplotlib.axes.Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, ax = _new_axes(ax)
    good = rates[rates["ok"].astype(bool) & (rates["rate"] > 0)] if len(rates) else rates
    inverse = 1000.0 / good["temperature_K"].to_numpy(float)
    ax.errorbar(inverse, good["rate"].to_numpy(float), yerr=good["rate_error"].to_numpy(float), fmt="o", color="k",
                label="rate per step")
    if fit is not None and fit.ok and len(good):
        line_t = np.linspace(good["temperature_K"].min(), good["temperature_K"].max(), 50)
        low, high = fit.interval_eV
        label = (f"$E_a$ = {fit.activation_energy_eV:.2f} eV [{low:.2f}, {high:.2f}] "
                 f"({100 * fit.confidence:.0f} %)")
        ax.plot(1000.0 / line_t, fit.predict(line_t), "-", color="tab:red", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("coarsening rate K (nm$^n$/s)")
    ax.legend(fontsize="small")
    return figure


def plot_dose(context: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Dose rate and cumulative electron dose per frame against time.

    Parameters
    ----------
    context : pandas.DataFrame
        ``time``, ``dose_rate_e_per_A2_s`` and ``cumulative_dose_e_per_A2`` per frame.
    ax : matplotlib.axes.Axes, optional
        Where to draw the cumulative dose (the rate goes on a twin axis).

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, ax = _new_axes(ax)
    time = context["time"].to_numpy(float)
    ax.plot(time, context["cumulative_dose_e_per_A2"].to_numpy(float), "-", color="k")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cumulative dose (e/\u00c5$^2$)", color="k")
    twin = ax.twinx()
    twin.plot(time, context["dose_rate_e_per_A2_s"].to_numpy(float), ".", ms=3, color="tab:orange")
    twin.set_ylabel("dose rate (e/\u00c5$^2$/s)", color="tab:orange")
    twin.set_ylim(bottom=0)
    return figure
