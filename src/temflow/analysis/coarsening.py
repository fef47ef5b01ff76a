"""Coarsening: size statistics through time, growth laws, and why the particles grow.

* :func:`size_statistics` - per frame: count, number density, mean/median/std
  diameter, mean radius, area fraction.
* :func:`size_distribution` - the particle size distribution (PSD) per frame,
  and :func:`normalised_size_distribution` - the pooled PSD of ``u = r / <r>``
  against the Lifshitz-Slyozov-Wagner shape.
* :func:`mark_excluded_frames` - frames left out of the statistics: blank,
  unregistered, or motion-blurred next to a stage jump (the count dips).
* :func:`fit_growth_law` - ``<r>^n - <r0>^n = K t`` with ``n`` free or fixed
  (``n = 3``: LSW, diffusion-limited ripening), with bootstrap intervals, or
  "undetermined" with the reason; :func:`compare_growth_laws` sets ``n = 2, 3,
  4`` and free side by side (AIC/BIC).
* :func:`compare_size_distributions` - the normalised PSD against LSW
  (ripening) and a log-normal (coalescence), Kolmogorov-Smirnov.
* :func:`coarsening_mechanism` - "ostwald ripening", "migration and
  coalescence", "mixed" or "insufficient evidence", with the numbers behind it.

All take the tables of :func:`temflow.analysis.measure.measure_particles` and
:func:`temflow.analysis.track.link` / :func:`temflow.analysis.track.find_events`; all compute
eagerly (the tables are small).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from temflow.analysis._growth_comparison import compare_growth_laws
from temflow.analysis._growth_law import GrowthFit, fit_growth_law
from temflow.analysis._mechanism import Verdict, coarsening_mechanism
from temflow.analysis._size_shapes import compare_size_distributions
from temflow.movie import check_table
from temflow.synthetic.generator import lsw_distribution

__all__ = [
    "Verdict",
    "GrowthFit",
    "coarsening_mechanism",
    "compare_growth_laws",
    "compare_size_distributions",
    "fit_growth_law",
    "mark_excluded_frames",
    "normalised_size_distribution",
    "size_distribution",
    "size_statistics",
    "sized_particles",
]

_SIZE_COLUMNS = ("frame", "equivalent_diameter")


def _frames(table: pd.DataFrame, times_s: Any, field_area_nm2: Any) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and recorded area (nm^2) of every frame, empty frames included."""
    times = times_s if times_s is not None else table.attrs.get("times_s")
    if times is None:
        if table.empty:
            raise ValueError("an empty table carries no frames; pass times_s=... (one time per frame)")
        last = int(table["frame"].max())
        first = table.groupby("frame")["time"].first() if "time" in table.columns else None
        times = np.arange(last + 1, dtype=float)
        if first is not None and len(first) > 1:
            f = first.index.to_numpy()
            dt = float(np.median(np.diff(first.to_numpy()) / np.diff(f)))
            times = first.iloc[0] + (times - f[0]) * dt
    times = np.asarray(times, dtype=float)
    area = field_area_nm2 if field_area_nm2 is not None else table.attrs.get("field_area_nm2")
    if area is None:
        area = np.full(times.shape, np.nan)
    area = np.broadcast_to(np.asarray(area, dtype=float), times.shape)
    if len(table) and int(table["frame"].max()) >= len(times):
        raise ValueError(f"table has frames up to {int(table['frame'].max())} but times_s has only {len(times)} values")
    return times, area


def sized_particles(
    table: pd.DataFrame,
    *,
    include_border: bool = False,
    min_relative_diameter: float = 0.0,
) -> pd.DataFrame:
    """The rows :func:`size_statistics` averages: border particles and the small tail left out as it does.

    Pass them to :func:`fit_growth_law` (``particles=``) for intervals by a
    bootstrap over particles.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`temflow.analysis.measure.measure_particles` or
        :func:`temflow.analysis.track.link`.
    include_border, min_relative_diameter
        As for :func:`size_statistics`.

    Returns
    -------
    pandas.DataFrame
        The rows kept, columns and ``attrs`` unchanged.
    """
    table = check_table(table, _SIZE_COLUMNS, "table")
    if not 0 <= min_relative_diameter < 1:
        raise ValueError(f"min_relative_diameter must be in [0, 1); got {min_relative_diameter!r}")
    border = table["touches_border"].to_numpy(bool) if "touches_border" in table.columns else np.zeros(len(table), bool)
    counted = table if include_border else table[~border]
    if min_relative_diameter > 0 and len(counted):
        median = counted.groupby("frame")["equivalent_diameter"].transform("median")
        counted = counted[counted["equivalent_diameter"] >= min_relative_diameter * median]
    return counted


def size_statistics(
    table: pd.DataFrame,
    *,
    include_border: bool = False,
    min_relative_diameter: float = 0.0,
    times_s: np.ndarray | None = None,
    field_area_nm2: float | np.ndarray | None = None,
) -> pd.DataFrame:
    """Count, density and size of the particles of every frame.

    Particles touching the border have an unknown size: they are left out of
    the size statistics and the count unless ``include_border``; the number
    density counts them as half a particle (on average half of such a particle
    lies in the field), and the area fraction counts their visible pixels.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`temflow.analysis.measure.measure_particles` (``frame``, ``time``,
        ``area``, ``equivalent_diameter``, ``touches_border``).
    include_border : bool
        Keep particles touching the border in the count and size statistics.
    min_relative_diameter : float
        Leave particles smaller than this fraction of their frame's median
        diameter out of the diameter statistics (not the count). A fixed
        detection limit (the minimum area) cuts the size distribution ever
        less as the particles grow, which bends the growth law (``n`` too
        high); a cut relative to the median scales with the distribution, so
        a self-similar distribution keeps a mean proportional to the true one
        and the fitted exponent is unbiased. 0.5 sits above the detection
        limit for most of a ripening movie.
    times_s : array, optional
        Time of every frame, s; default ``table.attrs["times_s"]``.
    field_area_nm2 : float or array, optional
        Recorded area of every frame, nm^2; default ``table.attrs["field_area_nm2"]``
        (density and area fraction are NaN without it).

    Returns
    -------
    pandas.DataFrame
        One row per frame (frames without particles included, count 0):
        ``frame``, ``time`` (s), ``count``, ``number_density`` (per µm^2),
        ``mean_diameter``, ``median_diameter``, ``std_diameter`` (nm),
        ``mean_radius`` (nm), ``area_fraction``.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"frame": [0, 0, 2], "time": [0.0, 0.0, 2.0], "area": [3.14, 12.6, 12.6],
    ...                       "equivalent_diameter": [2.0, 4.0, 4.0], "touches_border": [False] * 3})
    >>> stats = size_statistics(table, times_s=[0.0, 1.0, 2.0], field_area_nm2=1e4)
    >>> stats[["frame", "count", "mean_diameter"]].values.tolist()
    [[0.0, 2.0, 3.0], [1.0, 0.0, nan], [2.0, 1.0, 4.0]]
    """
    table = check_table(table, _SIZE_COLUMNS, "table")
    times, area = _frames(table, times_s, field_area_nm2)
    border = table["touches_border"].to_numpy(bool) if "touches_border" in table.columns else np.zeros(len(table), bool)
    counted = table if include_border else table[~border]
    sized = sized_particles(table, include_border=include_border, min_relative_diameter=min_relative_diameter)
    frames = np.arange(len(times))
    groups = sized.groupby("frame")["equivalent_diameter"]
    stats = pd.DataFrame({"frame": frames, "time": times})
    stats["count"] = counted.groupby("frame").size().reindex(frames, fill_value=0).to_numpy()
    weight = np.where(border, 0.5, 1.0)
    effective = pd.Series(weight).groupby(table["frame"].to_numpy()).sum().reindex(frames, fill_value=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["number_density"] = effective.to_numpy() / (area * 1e-6)
    stats["mean_diameter"] = groups.mean().reindex(frames).to_numpy()
    stats["median_diameter"] = groups.median().reindex(frames).to_numpy()
    stats["std_diameter"] = groups.std(ddof=1).reindex(frames).to_numpy()
    stats["mean_radius"] = stats["mean_diameter"] / 2.0
    if "area" in table.columns:
        covered = table.groupby("frame")["area"].sum().reindex(frames, fill_value=0.0).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            stats["area_fraction"] = covered / area
    else:
        stats["area_fraction"] = np.nan
    return stats


def size_distribution(
    table: pd.DataFrame,
    *,
    bins: int | np.ndarray = 20,
    include_border: bool = False,
    times_s: np.ndarray | None = None,
) -> xr.DataArray:
    """The particle size distribution of every frame: probability density of the diameter.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`temflow.analysis.measure.measure_particles`.
    bins : int or array
        Number of diameter bins spanning all frames, or the bin edges in nm.
    include_border : bool
        Keep particles touching the border.
    times_s : array, optional
        Time of every frame, s; default ``table.attrs["times_s"]``.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "diameter")``: density per nm (each frame with
        particles integrates to 1; empty frames are 0); coordinate
        ``diameter`` (bin centres, nm), ``diameter_edges`` in ``attrs``, and
        ``count`` per frame as a coordinate.
    """
    table = check_table(table, _SIZE_COLUMNS, "table")
    times, _ = _frames(table, times_s, None)
    if not include_border and "touches_border" in table.columns:
        table = table[~table["touches_border"].to_numpy(bool)]
    d = table["equivalent_diameter"].to_numpy(float)
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be a positive number of bins or an array of edges; got {bins!r}")
        hi = float(d.max()) if d.size else 1.0
        edges = np.linspace(0.0, hi * 1.0001, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins must be increasing bin edges in nm (at least two)")
    density = np.zeros((len(times), len(edges) - 1))
    counts = np.zeros(len(times), dtype=np.int64)
    for f, group in table.groupby("frame"):
        hist, _ = np.histogram(group["equivalent_diameter"].to_numpy(float), bins=edges)
        counts[int(f)] = len(group)
        if hist.sum():
            density[int(f)] = hist / (hist.sum() * np.diff(edges))
    centres = 0.5 * (edges[1:] + edges[:-1])
    return xr.DataArray(
        density,
        dims=("time", "diameter"),
        coords={
            "time": ("time", times, {"units": "s"}),
            "diameter": ("diameter", centres, {"units": "nm"}),
            "count": ("time", counts),
        },
        attrs={"units": "1/nm", "diameter_edges": edges.tolist(), "description": "particle size distribution"},
        name="psd",
    )


def normalised_size_distribution(
    table: pd.DataFrame,
    *,
    bins: int = 15,
    include_border: bool = False,
    frames: slice | None = None,
) -> pd.DataFrame:
    """Pooled distribution of ``u = r / <r>`` (each frame scaled by its own mean) against LSW.

    Self-similar ripening collapses every frame onto one shape; LSW's ``h(u)``
    is the diffusion-limited one (zero beyond ``u = 1.5``).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`temflow.analysis.measure.measure_particles`.
    bins : int
        Number of bins on ``0 <= u < 2``.
    include_border : bool
        Keep particles touching the border.
    frames : slice, optional
        Frames to pool; default all.

    Returns
    -------
    pandas.DataFrame
        ``u`` (bin centres), ``density`` (measured, integrates to 1), ``lsw``
        (``h(u)``) and ``attrs["l1_distance"]``: the integral of
        ``|density - lsw|`` (0 identical, 2 disjoint) and ``attrs["count"]``.
    """
    table = check_table(table, _SIZE_COLUMNS, "table")
    if not include_border and "touches_border" in table.columns:
        table = table[~table["touches_border"].to_numpy(bool)]
    if frames is not None:
        frame_ids = np.arange(int(table["frame"].max()) + 1 if len(table) else 0)[frames]
        table = table[table["frame"].isin(frame_ids)]
    d = table["equivalent_diameter"].to_numpy(float)
    mean = table.groupby("frame")["equivalent_diameter"].transform("mean").to_numpy(float)
    u = d / mean if d.size else d
    edges = np.linspace(0.0, 2.0, int(bins) + 1)
    hist, _ = np.histogram(u, bins=edges)
    width = np.diff(edges)
    density = hist / (hist.sum() * width) if hist.sum() else np.zeros(len(hist))
    centres = 0.5 * (edges[1:] + edges[:-1])
    # the LSW curve averaged over each bin, so a histogram of LSW draws matches it
    fine = np.linspace(0.0, 2.0, 40 * int(bins) + 1)
    lsw = np.add.reduceat(lsw_distribution(0.5 * (fine[1:] + fine[:-1])) * np.diff(fine), np.arange(0, 40 * int(bins), 40)) / width
    out = pd.DataFrame({"u": centres, "density": density, "lsw": lsw})
    out.attrs = {"l1_distance": float(np.sum(np.abs(density - lsw) * width)) if hist.sum() else math.nan, "count": int(hist.sum())}
    return out




def mark_excluded_frames(
    stats: pd.DataFrame,
    *,
    flagged: np.ndarray | None = None,
    jump_frames: np.ndarray | None = None,
    dip_fraction: float = 0.15,
    jump_window: int = 2,
    outlier_sigma: float = 6.0,
    neighbours: int = 3,
) -> pd.DataFrame:
    """Flag the frames the statistics and fits must leave out, and say why.

    * frames the drift stage could not register (``flagged``: blank, saturated);
    * frames without particles between frames with particles (beam blanked);
    * frames whose count dips by ``dip_fraction`` or more below the median of
      their ``neighbours`` on each side within ``jump_window`` frames of a stage
      jump (motion blur during the jump smears small particles away: dips of
      17-42 % are typical);
    * anywhere, a dip of ``dip_fraction`` or more that is also more than
      ``outlier_sigma`` robust standard deviations of the count's
      frame-to-frame scatter (a blurred or defocused frame with no jump recorded).

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`size_statistics` (``frame``, ``count``).
    flagged : array of bool, optional
        One per frame: the drift stage found no usable registration.
    jump_frames : array of int, optional
        Frames at which the stage jumped (the first frame after the jump).
    dip_fraction : float
        Relative drop of the count below its neighbours' median that marks a frame.
    jump_window : int
        Frames on each side of a jump where a dip is blamed on the jump.
    outlier_sigma : float
        Away from jumps, a dip must also be this many robust standard deviations.
    neighbours : int
        Frames on each side whose median count is the reference.

    Returns
    -------
    pandas.DataFrame
        ``stats`` with ``excluded`` (bool) and ``exclusion`` (the reason, "" if kept).

    Examples
    --------
    >>> import pandas as pd
    >>> stats = pd.DataFrame({"frame": range(8), "count": [50, 51, 49, 30, 50, 0, 50, 49]})
    >>> marked = mark_excluded_frames(stats, jump_frames=[3])
    >>> marked["excluded"].tolist()
    [False, False, False, True, False, True, False, False]
    """
    stats = check_table(stats, ("frame", "count"), "stats")
    if not 0 < dip_fraction < 1:
        raise ValueError(f"dip_fraction must be between 0 and 1 (0.15 for a 15 % dip); got {dip_fraction!r}")
    count = stats["count"].to_numpy(float)
    frames = len(count)
    reasons = np.full(frames, "", dtype=object)
    if flagged is not None:
        flagged = np.asarray(flagged, bool)
        if flagged.shape != (frames,):
            raise ValueError(f"flagged must have one value per frame ({frames}); got shape {flagged.shape}")
        reasons[flagged] = "no usable drift registration (blank or saturated frame)"
    reference = np.full(frames, np.nan)
    for i in range(frames):
        before, after = count[max(0, i - neighbours) : i], count[i + 1 : i + 1 + neighbours]
        # a frame is judged against neighbours on both sides: at the movie's ends a low count
        # may be where the coarsening has got to
        if before.size and after.size:
            reference[i] = np.median(np.r_[before, after])
    with np.errstate(invalid="ignore", divide="ignore"):
        dip = 1.0 - count / reference
    deviation = count - reference
    finite = np.isfinite(deviation)
    scatter = 1.4826 * float(np.median(np.abs(deviation[finite]))) if finite.any() else 0.0
    scatter = max(scatter, 1.0)
    near_jump = np.zeros(frames, bool)
    for f in np.asarray(jump_frames if jump_frames is not None else [], dtype=np.int64):
        near_jump[max(0, int(f) - jump_window) : int(f) + jump_window + 1] = True
    for i in range(frames):
        if reasons[i]:
            continue
        if count[i] == 0 and reference[i] > 0:
            reasons[i] = "no particles between frames with particles (blank frame)"
        elif dip[i] >= dip_fraction and near_jump[i]:
            reasons[i] = f"count dips {dip[i]:.0%} next to a stage jump (motion blur)"
        elif dip[i] >= dip_fraction and -deviation[i] > outlier_sigma * scatter:
            reasons[i] = f"count dips {dip[i]:.0%}, {-deviation[i] / scatter:.0f} standard deviations (blurred frame)"
    out = stats.copy()
    out["excluded"] = reasons != ""
    out["exclusion"] = reasons.astype(str)
    return out
