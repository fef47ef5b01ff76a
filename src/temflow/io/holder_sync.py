"""A holder log on a movie's time axis: clock offset, interpolation, coordinates.

The holder's software and the camera's computer keep their own clocks, and their logs start
at different moments. temflow describes the relation by one number, ``offset_s``: the log's
time (s since the log's start) at the movie's time zero, so that a frame at movie time ``t``
was recorded at log time ``t + offset_s``. The user gives it (from the two computers' clocks:
``offset_s = movie start - log start``, in s, when both are synchronised to the same time
server), or :func:`estimate_clock_offset` finds it from a recorded event.

**Finding the offset from an event** (a temperature step, a gas pulse): a step in the holder's
quantity changes the image within a frame or two (thermal drift and defocus jump, contrast
and particle sizes change). Both records are put on a common grid whose step is the movie's
frame interval (the log averaged into each grid cell), differentiated, turned into the
absolute rate of change and normalised (zero mean, unit variance); the offset is the lag that
maximises their cross-correlation, refined to a fraction of a frame by a parabola through the
peak. The answer is good to about one frame interval when the event is sharp on both sides;
a log without a step (constant temperature) or a movie signal that does not respond gives a
flat correlation and an error, never a silent number. Several steps make the match more
certain, and ``max_offset_s`` keeps it from pairing the wrong steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from temflow.movie import TIME, check_movie, check_table

__all__ = ["add_holder_coords", "estimate_clock_offset"]


def add_holder_coords(
    movie: xr.DataArray,
    log: pd.DataFrame,
    *,
    offset_s: float,
    quantities: Sequence[str] | None = None,
) -> xr.DataArray:
    """Put a holder log's quantities on the movie's time axis as coordinates.

    Lazy: the movie's data are not touched (the coordinates are small numpy arrays).

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, ``time`` in s.
    log : pandas.DataFrame
        From :func:`temflow.io.holder_logs.read_holder_log`: ``time_s`` and quantity columns.
    offset_s : float
        The log's time (s) at the movie's time zero (see the module's description);
        :func:`estimate_clock_offset` finds it from a recorded event.
    quantities : sequence of str, optional
        The log's columns to add; default: every column of ``log`` except ``time_s``.

    Returns
    -------
    xarray.DataArray
        ``movie`` with one extra coordinate on ``time`` per quantity (``temperature_C``,
        ``heater_power_W``, ``pressure_mbar``...), linearly interpolated at the frame times, NaN
        for frames outside the log's span; ``attrs["holder_log"]`` records the file, vendor,
        offset and the log's start.

    Warns
    -----
    UserWarning
        When frames fall outside the log's time span (their values are NaN).

    Examples
    --------
    >>> import numpy as np, pandas as pd, temflow
    >>> movie = temflow.as_movie(np.zeros((4, 2, 2)), pixel_size_nm=1.0, frame_interval_s=1.0)
    >>> log = pd.DataFrame({"time_s": [0.0, 10.0], "temperature_C": [100.0, 200.0]})
    >>> add_holder_coords(movie, log, offset_s=5.0)["temperature_C"].values
    array([150., 160., 170., 180.])
    """
    check_movie(movie)
    check_table(log, ["time_s"], "log")
    offset = _finite(offset_s, "offset_s")
    names = [c for c in log.columns if c != "time_s"] if quantities is None else list(quantities)
    missing = [n for n in names if n not in log.columns]
    if missing:
        raise ValueError(f"quantities {missing} are not columns of the log; it has {[c for c in log.columns if c != 'time_s']}")
    if not names:
        raise ValueError("the log has no quantity column besides time_s; read it with columns={...}")
    log_t = log["time_s"].to_numpy(float)
    if log_t.size < 2 or not np.all(np.diff(log_t) >= 0):
        raise ValueError("log['time_s'] must hold at least two times in increasing order; sort the log by time_s")
    frame_t = np.asarray(movie[TIME].values, dtype=float) + offset
    outside = (frame_t < log_t[0]) | (frame_t > log_t[-1])
    if outside.any():
        warnings.warn(
            f"{int(outside.sum())} of {frame_t.size} frames fall outside the holder log's span "
            f"({log_t[0]:.3g} to {log_t[-1]:.3g} s of log time with offset_s = {offset:.6g}); their "
            f"{', '.join(names)} are NaN. Check offset_s, or that the log covers the whole movie",
            UserWarning, stacklevel=2)
    coords = {}
    for name in names:
        values = log[name].to_numpy(float)
        good = np.isfinite(values)
        interp = np.interp(frame_t, log_t[good], values[good]) if good.sum() >= 1 else np.full(frame_t.shape, np.nan)
        interp[outside] = np.nan
        coords[name] = (TIME, interp, {"units": _unit_of(name), "source": "holder log"})
    out = movie.assign_coords(coords)
    out.attrs = dict(movie.attrs)
    out.attrs["holder_log"] = {
        "path": log.attrs.get("path"),
        "vendor": log.attrs.get("vendor"),
        "start": log.attrs.get("start"),
        "offset_s": offset,
        "quantities": names,
    }
    return out


def estimate_clock_offset(
    frame_signal: xr.DataArray,
    log: pd.DataFrame,
    *,
    quantity: str = "temperature_C",
    max_offset_s: float | None = None,
) -> float:
    """Find the clock offset between a movie and a holder log from a recorded event.

    Cross-correlates the absolute rate of change of a per-frame signal (mean brightness, mean
    particle size, image sharpness) with that of a log quantity (see the module's
    description). Reads the signal's values (a small 1-D array).

    Parameters
    ----------
    frame_signal : xarray.DataArray
        One value per frame, dim ``time`` (s), e.g. ``movie.mean(("y", "x")).compute()``.
    log : pandas.DataFrame
        From :func:`temflow.io.holder_logs.read_holder_log`.
    quantity : str
        The log column whose changes the movie shows (default ``temperature_C``).
    max_offset_s : float, optional
        Largest offset (either sign) considered, in s; default: any offset at which the movie and
        the log overlap by at least half the movie.

    Returns
    -------
    float
        ``offset_s``: the log's time at the movie's time zero, for :func:`add_holder_coords`.

    Raises
    ------
    ValueError
        If the signal or the log has no event to match (flat), or the arguments are malformed.

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> t = np.arange(60.0)
    >>> brightness = xr.DataArray(np.where(t < 20.5, 1.0, 1.3), dims="time", coords={"time": t})
    >>> log = pd.DataFrame({"time_s": np.arange(0, 200, 0.25)})
    >>> log["temperature_C"] = np.where(log["time_s"] < 95.0, 300.0, 500.0)
    >>> round(estimate_clock_offset(brightness, log), 1)  # the step: log 95 s, between frames 20 and 21
    74.5
    """
    check_table(log, ["time_s", quantity], "log")
    if not isinstance(frame_signal, xr.DataArray) or frame_signal.dims != (TIME,):
        raise TypeError("frame_signal must be a DataArray with the single dim 'time' (one value per frame), "
                        "e.g. movie.mean(('y', 'x')).compute()")
    t_movie = np.asarray(frame_signal[TIME].values, dtype=float)
    signal = np.asarray(frame_signal.values, dtype=float)
    if t_movie.size < 4:
        raise ValueError(f"frame_signal needs at least 4 frames to find an event; got {t_movie.size}")
    step = float(np.median(np.diff(t_movie)))
    if not step > 0:
        raise ValueError("frame_signal's times must increase")
    log_t = log["time_s"].to_numpy(float)
    log_v = log[quantity].to_numpy(float)
    good = np.isfinite(log_t) & np.isfinite(log_v)
    log_t, log_v = log_t[good], log_v[good]
    if log_t.size < 4:
        raise ValueError(f"the log has fewer than 4 finite {quantity} records")
    # both on one grid of the frame interval: the log averaged into each cell, the movie interpolated
    edges = np.arange(log_t[0], log_t[-1] + step, step)
    which = np.digitize(log_t, edges) - 1
    sums = np.bincount(which, log_v, minlength=edges.size)
    counts = np.bincount(which, minlength=edges.size)
    log_grid = pd.Series(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)).interpolate(
        limit_direction="both").to_numpy()
    movie_grid_t = np.arange(t_movie[0], t_movie[-1] + step / 2, step)
    movie_grid = np.interp(movie_grid_t, t_movie, pd.Series(signal).interpolate(limit_direction="both").to_numpy())
    a = _rate(movie_grid, "frame_signal")
    b = _rate(log_grid, f"log[{quantity!r}]")
    # lag k: movie grid cell i matches log grid cell i + k
    n_a, n_b = a.size, b.size
    min_overlap = max(2, n_a // 2)
    lags = np.arange(-(n_a - min_overlap), n_b - min_overlap + 1)
    if max_offset_s is not None:
        limit = _finite(max_offset_s, "max_offset_s")
        lags = lags[np.abs(edges[0] + lags * step + step / 2 - movie_grid_t[0]) <= abs(limit)]
        if lags.size == 0:
            raise ValueError(f"no offset within max_offset_s = {limit} s lets the movie overlap the log")
    scores = np.array([_score(a, b, int(k), min_overlap) for k in lags])
    if not np.isfinite(scores).any():
        raise ValueError("the movie and the log do not overlap at any offset considered")
    best = int(np.nanargmax(scores))
    shift = float(lags[best])
    if 0 < best < scores.size - 1 and np.isfinite(scores[best - 1]) and np.isfinite(scores[best + 1]):
        left, mid, right = scores[best - 1], scores[best], scores[best + 1]
        curvature = left - 2 * mid + right
        if curvature < 0:
            shift += 0.5 * (left - right) / curvature
    # cell i of the movie grid is time movie_grid_t[0] + i*step; cell j of the log grid is the mean over
    # [edges[j], edges[j] + step), centred at edges[j] + step/2
    return float(edges[0] + step / 2 + shift * step - movie_grid_t[0])


def _rate(values: np.ndarray, name: str) -> np.ndarray:
    rate = np.abs(np.gradient(values))
    spread = rate.std()
    if not np.isfinite(spread) or spread <= 1e-12 * max(1.0, float(np.abs(values).max())):
        raise ValueError(f"{name} does not change: there is no event (a step or a ramp) to line the clocks up "
                         "with; give offset_s from the two computers' clocks instead")
    return (rate - rate.mean()) / spread


def _score(a: np.ndarray, b: np.ndarray, lag: int, min_overlap: int) -> float:
    i0, i1 = max(0, -lag), min(a.size, b.size - lag)
    if i1 - i0 < min_overlap:
        return float("nan")
    x, y = a[i0:i1], b[i0 + lag: i1 + lag]
    return float(np.mean(x * y))


def _finite(value: float, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of seconds; got {type(value).__name__}") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite; got {value}")
    return out


def _unit_of(name: str) -> str:
    for unit in ("C", "W", "mbar", "A", "V", "ohm"):
        if f"_{unit}" in name:
            return {"C": "degC"}.get(unit, unit)
    return ""
