"""Column units and parquet files that any tool reads.

Every table temflow writes is a plain parquet file (or a folder of parquet
parts, a dataset ``pandas.read_parquet`` and ``pyarrow.dataset`` read whole)
whose schema carries the units: each field's metadata has ``units``, and the
schema's ``temflow`` key holds a JSON object ``{"units": {column: unit}, ...}``.
Units follow the column names: :data:`COLUMN_UNITS` for the tables of
particles, tracks, events and statistics, and a suffix (``_nm``, ``_px``,
``_s``, ``_nm2``) elsewhere. Identifiers and counts (``frame``, ``label``,
``particle``, ``count``) have no unit; dimensionless ratios have ``"1"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["COLUMN_UNITS", "column_units", "read_table_metadata", "write_parquet"]

#: Column name -> unit of every table temflow writes (absent: no unit).
COLUMN_UNITS: dict[str, str] = {
    "time": "s",
    "area": "nm^2",
    "equivalent_diameter": "nm",
    "y": "nm",
    "x": "nm",
    "perimeter": "nm",
    "eccentricity": "1",
    "orientation": "rad",
    "mean_intensity": "movie intensity units",
    "number_density": "1/µm^2",
    "mean_diameter": "nm",
    "median_diameter": "nm",
    "std_diameter": "nm",
    "mean_radius": "nm",
    "area_fraction": "1",
    "quality": "1",
}

_SUFFIX_UNITS = (("_nm2", "nm^2"), ("_nm", "nm"), ("_px", "px"), ("_s", "s"), ("_rad", "rad"))
_KEY = b"temflow"


def column_units(columns: Any) -> dict[str, str]:
    """The unit of every column that has one.

    Parameters
    ----------
    columns : iterable of str
        Column names (a DataFrame's ``columns``).

    Returns
    -------
    dict
        Column -> unit, for the columns with a unit.

    Examples
    --------
    >>> column_units(["frame", "area", "dy_px", "time", "particle"])
    {'area': 'nm^2', 'dy_px': 'px', 'time': 's'}
    """
    out = {}
    for column in map(str, columns):
        unit = COLUMN_UNITS.get(column)
        if unit is None:
            unit = next((u for suffix, u in _SUFFIX_UNITS if column.endswith(suffix)), None)
        if unit is not None:
            out[column] = unit
    return out


def _arrow_table(table: pd.DataFrame, metadata: Mapping[str, Any] | None) -> Any:
    import pyarrow as pa

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    units = column_units(table.columns)
    fields = [
        field.with_metadata({**(field.metadata or {}), b"units": units[field.name].encode()})
        if field.name in units
        else field
        for field in arrow.schema
    ]
    extra = {"units": units, **dict(metadata or {})}
    schema = pa.schema(fields, metadata={**(arrow.schema.metadata or {}), _KEY: json.dumps(extra).encode()})
    return arrow.cast(schema)


def write_parquet(
    table: pd.DataFrame, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``table`` to one parquet file with its columns' units in the schema.

    Computes and writes (atomically: a temporary file is renamed into place).

    Parameters
    ----------
    table : pandas.DataFrame
        The table; its index is not written.
    path : str or path
        The ``.parquet`` file.
    metadata : mapping, optional
        More JSON-serialisable entries for the schema's ``temflow`` object.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> path = write_parquet(pd.DataFrame({"frame": [0], "area": [3.0]}), tempfile.mkdtemp() + "/t.parquet")
    >>> read_table_metadata(path)["units"]
    {'area': 'nm^2'}
    """
    import pyarrow.parquet as pq

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame; got {type(table).__name__}")
    from temflow._nofollow import write_file

    arrow = _arrow_table(table, metadata)
    # atomically and never through a symbolic link (see temflow._nofollow)
    return write_file(path, lambda file: pq.write_table(arrow, file))


def read_table_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``temflow`` object of a parquet file's schema (units and more); ``{}`` if none.

    Parameters
    ----------
    path : str or path
        A parquet file written by temflow.
    """
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta[_KEY])) if _KEY in meta else {}
