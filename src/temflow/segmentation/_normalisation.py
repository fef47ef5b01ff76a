"""The one intensity scaling of training and inference, and the percentiles that set it.

Re-exported by :mod:`temflow.segmentation.tiles`, whose notes describe the normalisation
recorded with a tile set and in a model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr


def _parse_normalisation(normalisation: Any) -> tuple[float, float]:
    if not isinstance(normalisation, Mapping):
        raise TypeError(
            "normalisation must be a mapping {'method': 'percentile', 'low': float, 'high': float}; "
            f"got {type(normalisation).__name__}"
        )
    if normalisation.get("method") != "percentile":
        raise ValueError(f"normalisation['method'] must be 'percentile'; got {normalisation.get('method')!r}")
    try:
        low, high = float(normalisation["low"]), float(normalisation["high"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"normalisation needs numeric 'low' and 'high'; got {dict(normalisation)!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"normalisation needs finite low < high; got low={low}, high={high}")
    return low, high


def normalise(frames: Any, normalisation: Mapping[str, Any]) -> Any:
    """Scale raw intensities to ``(frames - low) / (high - low)`` as float32.

    The one normalisation used by training and inference alike.

    Lazy: dask in, dask out; numpy in, numpy out; a DataArray keeps its dims,
    coords and attrs.

    Parameters
    ----------
    frames : numpy.ndarray, dask.array.Array or xarray.DataArray
        Raw frames, any shape.
    normalisation : mapping
        ``{"method": "percentile", "low": float, "high": float}`` in raw
        intensity units, e.g. from :func:`percentile_normalisation` or a model's
        ``card["normalisation"]``.

    Returns
    -------
    same type as ``frames``
        float32; ``low`` maps to 0 and ``high`` to 1 (values outside are kept).

    Examples
    --------
    >>> import numpy as np
    >>> normalise(np.array([100, 200, 300], dtype=np.uint16), {"method": "percentile", "low": 100, "high": 300})
    array([0. , 0.5, 1. ], dtype=float32)
    """
    low, high = _parse_normalisation(normalisation)
    scale = np.float32(1.0 / (high - low))
    offset = np.float32(low)
    if isinstance(frames, xr.DataArray):
        out = frames.copy(data=normalise(frames.data, normalisation))
        return out
    if isinstance(frames, da.Array):
        return (frames.astype(np.float32) - offset) * scale
    return (np.asarray(frames, dtype=np.float32) - offset) * scale


def percentile_normalisation(
    frames: Any, *, low_percentile: float = 0.5, high_percentile: float = 99.5
) -> dict[str, Any]:
    """Robust intensity range of ``frames``: the normalisation to record with a model.

    Computes: reads every value of ``frames`` (pass a sample of frames for a
    long movie). Pixels of exactly 0 (black borders of drift-corrected or
    blanked frames) are ignored when anything else is present.

    Parameters
    ----------
    frames : array_like, dask array or DataArray
        Raw frames.
    low_percentile, high_percentile : float
        Percentiles (0..100) mapped to 0 and 1.

    Returns
    -------
    dict
        ``{"method": "percentile", "low": float, "high": float,
        "low_percentile": float, "high_percentile": float}``.

    Raises
    ------
    ValueError
        If the percentiles are not ``0 <= low < high <= 100`` or the frames are
        constant (no range to scale).

    Examples
    --------
    >>> import numpy as np
    >>> norm = percentile_normalisation(np.arange(1, 101), low_percentile=0, high_percentile=100)
    >>> norm["low"], norm["high"]
    (1.0, 100.0)
    """
    if not 0 <= low_percentile < high_percentile <= 100:
        raise ValueError(
            f"percentiles must satisfy 0 <= low_percentile < high_percentile <= 100; got {low_percentile}, {high_percentile}"
        )
    data = frames.data if isinstance(frames, xr.DataArray) else frames
    values = np.asarray(data.compute() if isinstance(data, da.Array) else data).ravel()
    if values.size == 0:
        raise ValueError("frames are empty; cannot compute a normalisation")
    nonzero = values[values != 0]
    if nonzero.size:
        values = nonzero
    low, high = np.percentile(values.astype(np.float64), [low_percentile, high_percentile])
    if not high > low:
        raise ValueError(
            f"frames have no intensity range between the {low_percentile} and {high_percentile} percentiles "
            f"(both {low}); a constant movie cannot be normalised"
        )
    return {
        "method": "percentile",
        "low": float(low),
        "high": float(high),
        "low_percentile": float(low_percentile),
        "high_percentile": float(high_percentile),
    }
