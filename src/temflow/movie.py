"""Conventions shared by every stage: dimension names, units, validation.

A movie is an ``xarray.DataArray`` with dims ``("time", "y", "x")``; ``time`` is
in seconds, ``y`` and ``x`` in nanometres, each coordinate's unit in its
``attrs["units"]``. Pixel centres sit on the coordinate values.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    "µm": 1e3,  # U+00B5 MICRO SIGN
    "μm": 1e3,  # U+03BC GREEK MU
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
}

_TIME_TO_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


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


def as_movie(
    data: Any,
    *,
    pixel_size_nm: float | Sequence[float] = 1.0,
    frame_interval_s: float | None = 1.0,
    times_s: Sequence[float] | np.ndarray | None = None,
    origin_nm: Sequence[float] = (0.0, 0.0),
    attrs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """Wrap a ``(time, y, x)`` array (numpy or dask) as a temflow movie.

    Parameters
    ----------
    data : array_like, shape (time, y, x)
        Frames; a dask array stays lazy. A 2-D image becomes one frame.
    pixel_size_nm : float or (float, float)
        Pixel size in nm, square or ``(dy, dx)``.
    frame_interval_s : float or None
        Time between frames in s. ``None`` uses the frame index as time and warns.
    times_s : sequence of float, optional
        Explicit acquisition times in s; overrides ``frame_interval_s``.
    origin_nm : (float, float)
        Physical position of the first pixel centre, nm.
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
