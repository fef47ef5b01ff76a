"""Conventions shared by every stage: dimension names, units, validation.

A movie is an ``xarray.DataArray`` with dims ``("time", "y", "x")``; ``time`` is
in seconds, ``y`` and ``x`` in nanometres, each coordinate's unit in its
``attrs["units"]``. Pixel centres sit on the coordinate values.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "AXIS", "DIMS", "FRAME_DIMS", "NANOMETRES", "SECONDS", "TIME", "X", "Y",
    "as_movie", "check_movie", "check_table", "frame_interval_s", "length_to_nm", "pixel_size_nm", "time_to_s",
]

TIME = "time"
Y = "y"
X = "x"
AXIS = "axis"
DIMS: tuple[str, str, str] = (TIME, Y, X)
FRAME_DIMS: tuple[str, str] = (Y, X)

SECONDS = "s"
NANOMETRES = "nm"

_LENGTH_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "a": 0.1,
    "å": 0.1,
    "Å": 0.1,  # U+00C5
    "Å": 0.1,  # U+212B ANGSTROM SIGN
    "angstrom": 0.1,
    "ang": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "µm": 1e3,  # U+00B5 MICRO SIGN
    "μm": 1e3,  # U+03BC GREEK MU
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
}

_TIME_TO_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "microsecond": 1e-6,
    "ns": 1e-9, "nanosecond": 1e-9, "ps": 1e-12, "picosecond": 1e-12,
    "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip  (the NGFF names too, for OME-Zarr axes)


def length_to_nm(value: float, unit: str) -> float | None:
    """Convert a length in ``unit`` to nanometres; ``None`` for unknown units.

    Examples
    --------
    >>> length_to_nm(2.5, "Å")
    0.25
    >>> length_to_nm(0.002, "µm")
    2.0
    >>> length_to_nm(1.0, "1/nm") is None
    True
    """
    key = (unit or "").strip()
    factor = _LENGTH_TO_NM.get(key, _LENGTH_TO_NM.get(key.lower()))
    if factor is None:
        return None
    return float(value) * factor


def time_to_s(value: float, unit: str) -> float | None:
    """Convert a duration in ``unit`` to seconds; ``None`` for unknown units.

    Examples
    --------
    >>> time_to_s(40, "ms")
    0.04
    """
    factor = _TIME_TO_S.get((unit or "").strip(), _TIME_TO_S.get((unit or "").strip().lower()))
    if factor is None:
        return None
    return float(value) * factor


def check_movie(movie: Any, name: str = "movie") -> xr.DataArray:
    """Validate that ``movie`` is a DataArray with dims ``("time", "y", "x")``.

    Parameters
    ----------
    movie : xarray.DataArray
        The object to check.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    xarray.DataArray
        ``movie`` itself.

    Raises
    ------
    TypeError
        If ``movie`` is not a DataArray.
    ValueError
        If its dims are not ``("time", "y", "x")``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> check_movie(xr.DataArray(np.zeros((2, 3))))
    Traceback (most recent call last):
    ...
    ValueError: movie must have dims ('time', 'y', 'x'); got ('dim_0', 'dim_1'); use movie.rename(...) or temflow.as_movie(...)
    """
    if not isinstance(movie, xr.DataArray):
        raise TypeError(
            f"{name} must be an xarray.DataArray with dims {DIMS}; got {type(movie).__name__}; "
            "open files with temflow.open_movie(...) or wrap arrays with temflow.as_movie(...)"
        )
    if tuple(movie.dims) != DIMS:
        raise ValueError(
            f"{name} must have dims {DIMS}; got {tuple(movie.dims)}; "
            f"use {name}.rename(...) or temflow.as_movie(...)"
        )
    return movie


def check_table(table: Any, needed: Iterable[str], name: str = "table") -> pd.DataFrame:
    """Validate that ``table`` is a DataFrame with the ``needed`` columns.

    Raises
    ------
    TypeError
        If it is not a DataFrame.
    ValueError
        Naming the missing columns and where such a table comes from.

    Examples
    --------
    >>> import pandas as pd
    >>> check_table(pd.DataFrame({"frame": [0]}), ["frame", "y"])
    Traceback (most recent call last):
    ...
    ValueError: table lacks the columns ['y']; it has ['frame']; make it with temflow.measure_particles (and link it with temflow.link)
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame (from temflow.measure_particles); got {type(table).__name__}")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"{name} lacks the columns {missing}; it has {list(table.columns)}; "
            "make it with temflow.measure_particles (and link it with temflow.link)"
        )
    return table


def pixel_size_nm(movie: xr.DataArray) -> tuple[float, float]:
    """Pixel size ``(dy, dx)`` in nm, from the ``y``/``x`` coordinates.

    Falls back to ``attrs["pixel_size_nm"]`` and then to 1.0 for a frame
    with a single row or column.

    Examples
    --------
    >>> import numpy as np
    >>> m = as_movie(np.zeros((2, 4, 4)), pixel_size_nm=0.5, frame_interval_s=1.0)
    >>> pixel_size_nm(m)
    (0.5, 0.5)
    """
    attr = movie.attrs.get("pixel_size_nm")
    out = []
    for i, dim in enumerate(FRAME_DIMS):
        if dim in movie.coords and movie.sizes[dim] > 1:
            values = np.asarray(movie.coords[dim].values, dtype=float)
            out.append(float(abs(values[1] - values[0])))
        elif attr is not None:
            out.append(float(np.atleast_1d(attr)[min(i, np.size(attr) - 1)]))
        else:
            out.append(1.0)
    return out[0], out[1]


def frame_interval_s(movie: xr.DataArray) -> float:
    """Median time between frames in s (1.0 for a single frame)."""
    if movie.sizes[TIME] < 2:
        return float(movie.attrs.get("frame_interval_s", 1.0))
    t = np.asarray(movie.coords[TIME].values, dtype=float)
    return float(np.median(np.diff(t)))


# --- HyperSpy signals (read without importing HyperSpy; temflow.io.hyperspy writes them) ---

@dataclass
class _SignalCalibration:
    """What a signal says about its frames, in temflow's units."""

    data: Any
    pixel_size_nm: tuple[float, float] | None
    origin_nm: tuple[float, float]
    times_s: np.ndarray | None
    title: str | None
    notes: list[str] = field(default_factory=list)


def _is_signal(value: Any) -> bool:
    """True for a HyperSpy signal (or anything shaped like one)."""
    return hasattr(value, "axes_manager") and hasattr(value, "data") and not isinstance(value, np.ndarray)


def _units(axis: Any) -> str | None:
    units = getattr(axis, "units", None)
    return units if isinstance(units, str) and units.strip() else None  # traits' Undefined is not a str


def _values(axis: Any) -> np.ndarray:
    """The axis's coordinate of every index, in its own units (uniform or not)."""
    if getattr(axis, "is_uniform", True):
        return float(getattr(axis, "offset", 0.0)) + float(getattr(axis, "scale", 1.0)) * np.arange(int(axis.size))
    return np.asarray(axis.axis, dtype=float)


def _read_signal(signal: Any) -> _SignalCalibration:
    """The data (lazy stays lazy) and calibrations of a 2-D signal with at most one navigation axis.

    Raises
    ------
    ValueError
        If the signal is not a stack of 2-D images along at most one axis.
    """
    manager = signal.axes_manager
    navigation = list(manager.navigation_axes)
    images = list(manager.signal_axes)
    if len(images) != 2 or len(navigation) > 1:
        raise ValueError(
            f"a movie is a Signal2D with at most one navigation axis (time); got {len(navigation)} navigation and "
            f"{len(images)} signal axes ({signal!r}); select one series first, e.g. signal.inav[:, 0]"
        )
    data = signal.data
    if navigation:
        # HyperSpy's array order is (navigation..., signal...) reversed in its own natural order: use the array's
        time = navigation[0]
        if int(time.index_in_array) != 0:
            raise ValueError(f"the time axis must be the array's first axis; it is axis {time.index_in_array}")
    y_axis, x_axis = sorted(images, key=lambda a: int(a.index_in_array))
    notes: list[str] = []
    pixel: list[float] = []
    origin: list[float] = []
    for axis, dim in ((y_axis, "y"), (x_axis, "x")):
        units = _units(axis)
        values = _values(axis)
        step = float(values[1] - values[0]) if values.size > 1 else float(getattr(axis, "scale", 1.0))
        converted = length_to_nm(step, units) if units else None
        if converted is None or converted <= 0 or not getattr(axis, "is_uniform", True):
            notes.append(f"axis {dim!r} has units {units or 'none'} and scale {step:g}: not a uniform length in nm")
        else:
            pixel.append(converted)
            origin.append(float(length_to_nm(float(values[0]), units or "") or 0.0))
    times = None
    if navigation:
        units = _units(navigation[0])
        values = _values(navigation[0])
        factor = time_to_s(1.0, units) if units else None
        if factor is None:
            notes.append(f"the navigation axis has units {units or 'none'}: not a time")
        else:
            times = values * factor
    else:
        data = data[None]
        times = np.zeros(1)
    title = getattr(getattr(getattr(signal, "metadata", None), "General", None), "title", None)
    return _SignalCalibration(
        data=data,
        pixel_size_nm=(pixel[0], pixel[1]) if len(pixel) == 2 else None,
        origin_nm=(origin[0], origin[1]) if len(origin) == 2 else (0.0, 0.0),
        times_s=times,
        title=title if isinstance(title, str) and title else None,
        notes=notes,
    )


def as_movie(
    data: Any,
    *,
    pixel_size_nm: float | Sequence[float] | Literal["auto"] = "auto",
    frame_interval_s: float | None | Literal["auto"] = "auto",
    times_s: Sequence[float] | np.ndarray | None = None,
    origin_nm: Sequence[float] | Literal["auto"] = "auto",
    attrs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """Wrap a ``(time, y, x)`` array (numpy or dask) or a HyperSpy signal as a temflow movie.

    Parameters
    ----------
    data : array_like, shape (time, y, x), or a HyperSpy Signal2D
        Frames; a dask array stays lazy. A 2-D image becomes one frame. A
        HyperSpy ``Signal2D`` (a stack along at most one navigation axis)
        keeps its backing (a lazy signal stays lazy: nothing is computed)
        and its axes' calibrations: the signal axes' scales and offsets in
        any length unit (nm, µm, Å, m) become ``y``/``x`` in nm, the
        navigation axis (s, ms, ...; uniform or not) becomes ``time`` in s,
        and the title the name. An axis without a usable unit is treated as
        with an array (1 nm per pixel, the frame index as time) with a warning.
    pixel_size_nm : float, (float, float) or "auto"
        Pixel size in nm, square or ``(dy, dx)``; "auto": the signal's
        calibration, 1.0 for an array.
    frame_interval_s : float, None or "auto"
        Time between frames in s. ``None`` uses the frame index as time and
        warns; "auto": the signal's time axis, 1.0 for an array.
    times_s : sequence of float, optional
        Explicit acquisition times in s; overrides ``frame_interval_s``.
    origin_nm : (float, float) or "auto"
        Physical position of the first pixel centre, nm; "auto": the signal's
        offsets, ``(0, 0)`` for an array.
    attrs : mapping, optional
        Metadata to attach (instrument, source...).
    name : str, optional
        Name of the DataArray.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "y", "x")`` with coordinates in s and nm.

    Examples
    --------
    >>> import numpy as np
    >>> m = as_movie(np.zeros((3, 2, 2)), pixel_size_nm=0.25, frame_interval_s=0.1)
    >>> m.dims, m.time.values.tolist(), m.x.attrs["units"]
    (('time', 'y', 'x'), [0.0, 0.1, 0.2], 'nm')
    """
    if _is_signal(data):
        signal = _read_signal(data)
        warn = [n for n in signal.notes if pixel_size_nm == "auto" and n.startswith("axis ")]
        if frame_interval_s == "auto" and times_s is None:
            warn += [n for n in signal.notes if n.startswith("the navigation axis")]
        if warn:
            warnings.warn(
                "the HyperSpy signal's calibration is incomplete (" + "; ".join(warn) + "); using 1 nm per pixel "
                "and the frame index as time where it lacks one. Pass pixel_size_nm=... or frame_interval_s=... "
                "(or set the axes' scale and units in HyperSpy) to give the real values.",
                UserWarning,
                stacklevel=2,
            )
        if pixel_size_nm == "auto" and signal.pixel_size_nm is not None:
            pixel_size_nm = signal.pixel_size_nm
        if origin_nm == "auto" and signal.pixel_size_nm is not None:
            origin_nm = signal.origin_nm
        if times_s is None and frame_interval_s == "auto" and signal.times_s is not None:
            times_s = signal.times_s
        merged = {"format": "hyperspy", "pixel_calibrated": signal.pixel_size_nm is not None or pixel_size_nm != "auto",
                  "time_calibrated": signal.times_s is not None or frame_interval_s != "auto" or times_s is not None}
        data = signal.data
        attrs = {**merged, **dict(attrs or {})}
        name = name if name is not None else signal.title
    if pixel_size_nm == "auto":
        pixel_size_nm = 1.0
    if frame_interval_s == "auto":
        frame_interval_s = 1.0
    if origin_nm == "auto":
        origin_nm = (0.0, 0.0)
    if getattr(data, "ndim", None) is None:
        data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"movie data must be 3-D (time, y, x); got shape {tuple(data.shape)}")
    sizes = np.broadcast_to(np.asarray(pixel_size_nm, dtype=float), (2,))
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"pixel_size_nm must be positive; got {pixel_size_nm!r}")
    nt, ny, nx = data.shape
    if times_s is not None:
        t = np.asarray(times_s, dtype=float)
        if t.shape != (nt,):
            raise ValueError(f"times_s must have one value per frame ({nt}); got shape {t.shape}")
        interval = float(np.median(np.diff(t))) if nt > 1 else (frame_interval_s or 1.0)
    elif frame_interval_s is None:
        warnings.warn(
            "the movie has no time calibration; using the frame index as time in s. "
            "Pass frame_interval_s=... to set the real time between frames.",
            UserWarning,
            stacklevel=3,
        )
        t = np.arange(nt, dtype=float)
        interval = 1.0
    else:
        if not np.isfinite(frame_interval_s) or frame_interval_s <= 0:
            raise ValueError(f"frame_interval_s must be positive; got {frame_interval_s!r}")
        t = np.arange(nt, dtype=float) * float(frame_interval_s)
        interval = float(frame_interval_s)
    y = float(origin_nm[0]) + np.arange(ny, dtype=float) * sizes[0]
    x = float(origin_nm[1]) + np.arange(nx, dtype=float) * sizes[1]
    all_attrs = dict(attrs or {})
    all_attrs["pixel_size_nm"] = [float(sizes[0]), float(sizes[1])]
    all_attrs["frame_interval_s"] = interval
    return xr.DataArray(
        data,
        dims=DIMS,
        coords={
            TIME: (TIME, t, {"units": SECONDS, "long_name": "time"}),
            Y: (Y, y, {"units": NANOMETRES, "long_name": "y"}),
            X: (X, x, {"units": NANOMETRES, "long_name": "x"}),
        },
        attrs=all_attrs,
        name=name,
    )
