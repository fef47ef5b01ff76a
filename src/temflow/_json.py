"""JSON that every parser reads: non-finite floats become ``null``.

Python's :mod:`json` writes ``NaN`` and ``Infinity``, which are not JSON
(``JSON.parse`` in a browser, ``jq`` and most other languages refuse them).
Every JSON file temflow writes goes through :func:`dumps`, which maps NaN and
±inf (Python or NumPy floats, inside any mapping, list or array) to ``null``
and then serialises with ``allow_nan=False``, so a missed case fails loudly
instead of writing a file others cannot read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["dumps", "finite", "write_json"]


def finite(value: Any) -> Any:
    """``value`` with NumPy types made plain and every non-finite float replaced by None.

    Examples
    --------
    >>> finite({"n": float("nan"), "k": [1.5, np.inf], "a": np.array([np.nan, 2.0]), "i": np.int64(3)})
    {'n': None, 'k': [1.5, None], 'a': [None, 2.0], 'i': 3}
    """
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, (str, int, float, bool)) and k is not None else k: finite(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, np.generic):
        return finite(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dumps(data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Serialise ``data`` as strict JSON (non-finite floats as ``null``).

    Raises
    ------
    TypeError
        If ``data`` holds something JSON cannot represent.

    Examples
    --------
    >>> dumps({"exponent": float("nan")}, indent=None)
    '{"exponent": null}'
    """
    return json.dumps(finite(data), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` to ``path`` as strict JSON, atomically (a temporary file renamed into place)."""
    from temflow._nofollow import write_file

    text = dumps(data).encode()
    # never through a symbolic link (see temflow._nofollow)
    return write_file(path, lambda file: file.write(text))
