"""Figures of the analysis: particle outlines, size distributions, coarsening and its growth-law fits,
size trajectories, and the one-page summary (temflow.analysis.measure, .track, .coarsening)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.colors
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from temflow.plots._figure import _new_axes

if TYPE_CHECKING:
    from temflow.analysis.coarsening import GrowthFit

__all__ = [
    "plot_analysis_summary",
    "plot_coarsening",
    "plot_particle_outlines",
    "plot_scaled_size_distribution",
    "plot_size_distribution",
    "plot_size_trajectories",
]


def plot_particle_outlines(
    movie: xr.DataArray,
    labels: xr.DataArray,
    *,
    frames: Sequence[int] = (0, -1),
    colors: Sequence[str] = ("tab:cyan", "tab:orange"),
    ax: Axes | None = None,
) -> Figure:
    """Outlines of the particles of some frames (default first and last) over the first image.

    Parameters
    ----------
    movie : xarray.DataArray
        Frames, dims ``("time", "y", "x")``, coords in nm; the first is shown.
    labels : xarray.DataArray
        Particle labels or boolean masks of the same shape.
    frames : sequence of int
        Frames whose outlines are drawn (negative counts from the end).
    colors : sequence of str
        One colour per frame.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Computes: loads the first image and the chosen frames' labels.
    """
    from matplotlib.lines import Line2D
    from skimage.segmentation import find_boundaries

    figure, ax = _new_axes(ax, (5.5, 5.0))
    y = np.asarray(movie.coords["y"].values, float)
    x = np.asarray(movie.coords["x"].values, float)
    extent = (x[0], x[-1], y[-1], y[0])
    image = np.asarray(movie.isel(time=0).values, dtype=float)
    low, high = np.nanpercentile(image, [1, 99]) if np.isfinite(image).any() else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
    handles = []
    times = np.asarray(labels.coords["time"].values, float)
    for frame, color in zip(frames, colors):
        frame_labels = np.asarray(labels.isel(time=frame).values)
        edges = find_boundaries(frame_labels.astype(np.int64), mode="inner")
        overlay = np.zeros(edges.shape + (4,))
        overlay[edges] = matplotlib.colors.to_rgba(color)
        ax.imshow(overlay, extent=extent, interpolation="nearest")
        index = frame % len(times)
        handles.append(Line2D([], [], color=color, label=f"frame {index} (t = {times[index]:.3g} s)"))
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    ax.set_title("particle outlines over the first frame")
    return figure


def plot_size_distribution(psd: xr.DataArray, *, ax: Axes | None = None) -> Figure:
    """The particle size distribution through time as a heat map.

    Parameters
    ----------
    psd : xarray.DataArray
        From :func:`temflow.analysis.coarsening.size_distribution` (dims ``("time", "diameter")``).
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, ax = _new_axes(ax, (6.0, 4.0))
    if not np.any(np.asarray(psd.values, float) > 0):
        # nothing measured: say so rather than draw a solid block of zeros
        ax.text(0.5, 0.5, "no particles measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("equivalent diameter (nm)")
        ax.set_title("particle size distribution")
        return figure
    edges = np.asarray(psd.attrs.get("diameter_edges", psd["diameter"].values), float)
    times = np.asarray(psd["time"].values, float)
    step = np.median(np.diff(times)) if len(times) > 1 else 1.0
    time_edges = np.concatenate([times - step / 2, [times[-1] + step / 2]])
    mesh = ax.pcolormesh(time_edges, edges, np.asarray(psd.values, float).T, cmap="magma", shading="flat")
    figure.colorbar(mesh, ax=ax, label="probability density (1/nm)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("equivalent diameter (nm)")
    ax.set_title("particle size distribution")
    return figure


def plot_coarsening(
    stats: pd.DataFrame,
    *,
    fits: Sequence[GrowthFit] = (),
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Particle count and mean radius against time, with growth-law fits.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`temflow.analysis.coarsening.size_statistics`.
    fits : sequence of GrowthFit
        Fits to draw over the mean radius (e.g. ``n`` free and ``n = 3``).
    axes : pair of matplotlib.axes.Axes, optional
        Where to draw count and radius; default a new figure with two panels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if axes is None:
        axes = Figure(figsize=(10.0, 4.0)).subplots(1, 2)
    count_ax, radius_ax = axes
    figure: Any = count_ax.figure
    t = stats["time"].to_numpy(float)
    count_ax.plot(t, stats["count"].to_numpy(), "o-", ms=3, color="tab:blue")
    count_ax.set_xlabel("time (s)")
    count_ax.set_ylabel("particles (not touching the border)")
    count_ax.set_ylim(bottom=0)
    sem = 0.5 * stats["std_diameter"].to_numpy(float) / np.sqrt(np.maximum(stats["count"].to_numpy(float), 1))
    excluded = stats["excluded"].to_numpy(bool) if "excluded" in stats.columns else np.zeros(len(stats), bool)
    radius = stats["mean_radius"].to_numpy(float)
    if not np.isfinite(radius).any():
        radius_ax.text(0.5, 0.5, "no particles measured", ha="center", va="center", transform=radius_ax.transAxes)
        radius_ax.set_ylim(0, 1)
    radius_ax.errorbar(t[~excluded], radius[~excluded], yerr=sem[~excluded], fmt="o", ms=3, color="k", label="measured")
    if excluded.any():
        radius_ax.plot(t[excluded], radius[excluded], "x", color="0.6", label="left out (blank or blurred)")
    fine = np.linspace(t.min(), t.max(), 200) if len(t) else t
    for fit, color in zip(fits, ("tab:red", "tab:green", "tab:purple")):
        if not fit.ok:
            continue
        if fit.exponent_fixed:
            label = f"n = {fit.n:g} (fixed), K = {fit.rate:.3g} [{fit.rate_low:.3g}, {fit.rate_high:.3g}] nm$^n$/s"
        else:
            label = f"n = {fit.n:.2f} [{fit.n_low:.2f}, {fit.n_high:.2f}], K = {fit.rate:.3g} nm$^n$/s"
        radius_ax.plot(fine, fit.predict(fine), "-", color=color, label=label)
    radius_ax.set_xlabel("time (s)")
    radius_ax.set_ylabel("mean radius (nm)")
    if np.isfinite(radius).any():
        radius_ax.set_ylim(bottom=0)
    radius_ax.legend(fontsize="small")
    radius_ax.set_title("$\\langle r \\rangle^n - \\langle r_0 \\rangle^n = K t$")
    return figure


def plot_scaled_size_distribution(
    table: pd.DataFrame,
    *,
    frames: np.ndarray | None = None,
    include_border: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """The pooled distribution of ``r / <r>`` against LSW and a log-normal, with their KS numbers.

    Parameters
    ----------
    table : pandas.DataFrame
        Particles (``frame``, ``equivalent_diameter``; ``particle`` sets the effective sample).
    frames : array of int, optional
        Frames to pool; default all.
    include_border : bool
        Keep particles touching the border.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from temflow.analysis.coarsening import compare_size_distributions, normalised_size_distribution
    from temflow.synthetic.generator import lsw_distribution

    figure, ax = _new_axes(ax, (6.0, 4.0))
    shapes = compare_size_distributions(table, include_border=include_border, frames=frames)
    ax.set_xlabel("r / <r>")
    ax.set_ylabel("probability density")
    ax.set_title("normalised size distribution")
    if shapes.attrs["reason"]:
        ax.text(0.5, 0.5, shapes.attrs["reason"], ha="center", va="center", transform=ax.transAxes, wrap=True)
        return figure
    chosen = table if frames is None else table[table["frame"].isin(np.asarray(frames))]
    measured = normalised_size_distribution(chosen, bins=20, include_border=include_border)
    ax.bar(measured["u"], measured["density"], width=2.0 / 20, color="0.75", label=f"measured ({shapes['values'].iloc[0]} values)")
    u = np.linspace(1e-3, 2.0, 400)
    lsw, lognormal = shapes.iloc[0], shapes.iloc[1]
    from scipy.stats import lognorm

    sigma = float(lognormal["sigma"])
    ax.plot(u, lsw_distribution(u), color="tab:red", label=f"LSW (ripening): KS D = {lsw['ks_statistic']:.2f}, p = {lsw['p_value']:.2g}")
    ax.plot(
        u,
        lognorm.pdf(u, s=sigma, scale=np.exp(-0.5 * sigma**2)),
        color="tab:blue",
        label=f"log-normal (coalescence), \u03c3 = {sigma:.2f}: D = {lognormal['ks_statistic']:.2f}, p = {lognormal['p_value']:.2g}",
    )
    ax.set_xlim(0, 2)
    ax.legend(fontsize="small")
    return figure


def plot_size_trajectories(
    tracks: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    max_tracks: int = 200,
    ax: Axes | None = None,
) -> Figure:
    """Equivalent radius of every tracked particle against time, merges and vanishings marked.

    Parameters
    ----------
    tracks : pandas.DataFrame
        From :func:`temflow.analysis.track.link` (``time``, ``particle``, ``equivalent_diameter``).
    events : pandas.DataFrame, optional
        From :func:`temflow.analysis.track.find_events`: merges are marked on the
        survivor (filled circle), vanishings at the particle's last point (cross).
    max_tracks : int
        Draw at most this many tracks (the longest), to keep the figure legible.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, ax = _new_axes(ax, (6.5, 4.5))
    lengths = tracks.groupby("particle").size().sort_values(ascending=False)
    shown = set(lengths.index[: int(max_tracks)])
    radius = tracks["equivalent_diameter"] / 2.0
    for pid, track in tracks[tracks["particle"].isin(shown)].groupby("particle"):
        ax.plot(track["time"], radius[track.index], "-", lw=0.8, alpha=0.7)
    if events is not None and len(events):
        key = tracks.set_index(["frame", "particle"])
        for kind, marker, color, where in (("merge", "o", "tab:red", 0), ("vanish", "x", "k", -1)):
            chosen = events[events["event"] == kind]
            points = []
            for e in chosen.itertuples():
                frame = int(e.frame) + where
                if (frame, int(e.particle)) in key.index:
                    row = key.loc[(frame, int(e.particle))]
                    row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
                    points.append((row["time"], row["equivalent_diameter"] / 2.0))
            if points:
                px, py = zip(*points)
                ax.plot(px, py, marker, color=color, ms=5, ls="none", label=f"{kind} ({len(chosen)})")
        ax.legend(fontsize="small")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("equivalent radius (nm)")
    ax.set_title("particle size trajectories")
    return figure


def plot_analysis_summary(
    movie: xr.DataArray,
    labels: xr.DataArray,
    stats: pd.DataFrame,
    tracks: pd.DataFrame,
    events: pd.DataFrame,
    *,
    fits: Sequence[GrowthFit] = (),
    psd: xr.DataArray | None = None,
    shifts: xr.DataArray | None = None,
) -> Figure:
    """One figure for a report: outlines, PSD, count, mean radius, size trajectories, drift.

    Parameters
    ----------
    movie, labels
        As for :func:`plot_particle_outlines`.
    stats, fits
        As for :func:`plot_coarsening`.
    tracks, events
        As for :func:`plot_size_trajectories`.
    psd : xarray.DataArray, optional
        As for :func:`plot_size_distribution`; default computed from ``tracks``.
    shifts : xarray.DataArray, optional
        Drift, dims ``("time", "axis")`` in px with a ``shift_nm`` coordinate
        (as ``temflow.synthetic.generator`` and the drift stage give): its trajectory
        gets a panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from temflow.analysis.coarsening import size_distribution

    figure = Figure(figsize=(15.0, 9.0), layout="constrained")
    grid = figure.subplots(2, 3)
    plot_particle_outlines(movie, labels, ax=grid[0, 0])
    plot_size_distribution(size_distribution(tracks) if psd is None else psd, ax=grid[0, 1])
    plot_coarsening(stats, fits=fits, axes=(grid[1, 0], grid[1, 1]))
    plot_size_trajectories(tracks, events, ax=grid[0, 2])
    drift_ax = grid[1, 2]
    if shifts is not None:
        values = np.asarray(shifts.coords["shift_nm"].values if "shift_nm" in shifts.coords else shifts.values, float)
        points = drift_ax.scatter(values[:, 1], values[:, 0], c=np.asarray(shifts["time"].values, float), s=8, cmap="viridis")
        drift_ax.plot(values[:, 1], values[:, 0], "-", lw=0.5, color="0.5")
        figure.colorbar(points, ax=drift_ax, label="time (s)")
        unit = "nm" if "shift_nm" in shifts.coords else shifts.attrs.get("units", "px")
        drift_ax.set_xlabel(f"drift x ({unit})")
        drift_ax.set_ylabel(f"drift y ({unit})")
        drift_ax.set_title("drift trajectory")
        drift_ax.set_aspect("equal", adjustable="datalim")
    else:
        drift_ax.set_axis_off()
    return figure
