"""The HyperSpy bridge, outwards: a movie as a HyperSpy ``Signal2D``.

Inwards, :func:`temflow.as_movie` takes a HyperSpy signal directly (lazily,
with its axes' scales and units). HyperSpy is optional: it is imported only
when :func:`to_hyperspy` is called.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from temflow._json import finite
from temflow.movie import DIMS, TIME, check_movie

__all__ = ["to_hyperspy"]


def to_hyperspy(movie: xr.DataArray) -> Any:
    """A HyperSpy ``Signal2D`` of the movie, with its time and length axes.

    Lazy: a dask-backed movie gives a ``LazySignal2D`` over the same dask
    array (nothing is computed); an in-memory movie gives a ``Signal2D``.
    The navigation axis is ``time`` in s (non-uniform when the frame times
    are irregular); the signal axes ``y`` and ``x`` are in nm with the
    movie's origin as offset. The movie's name becomes the title and its
    attrs go to ``original_metadata.temflow``.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``.

    Returns
    -------
    hyperspy.signals.Signal2D or hyperspy.signals.LazySignal2D

    Raises
    ------
    ImportError
        If HyperSpy is not installed.
    TypeError, ValueError
        If ``movie`` is not a movie.
    """
    check_movie(movie)
    try:
        import hyperspy.api as hs
    except ImportError:
        raise ImportError("to_hyperspy needs HyperSpy; install it with `pip install hyperspy`") from None
    axes: list[dict[str, Any]] = []
    for dim in DIMS:
        values = np.asarray(movie[dim].values, dtype=float) if dim in movie.coords else np.arange(movie.sizes[dim], dtype=float)
        units = movie[dim].attrs.get("units", "s" if dim == TIME else "nm") if dim in movie.coords else "px"
        axis: dict[str, Any] = {"name": dim, "units": units, "navigate": dim == TIME}
        steps = np.diff(values)
        if values.size > 2 and not np.allclose(steps, steps[0], rtol=1e-9, atol=0.0):
            axis["axis"] = values  # irregular frame times: a non-uniform axis
        else:
            axis.update(size=int(values.size), offset=float(values[0]), scale=float(steps[0]) if values.size > 1 else 1.0)
        axes.append(axis)
    signal = hs.signals.Signal2D(
        movie.data,
        axes=axes,
        metadata={"General": {"title": str(movie.name or "")}},
        original_metadata={"temflow": finite(dict(movie.attrs))},
    )
    return signal.as_lazy() if isinstance(movie.data, da.Array) else signal
