"""temflow._json: every JSON file temflow writes parses in any JSON parser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from temflow._json import dumps, finite, write_json


def _strict(text):
    def refuse(constant):
        raise ValueError(constant)

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_at_any_depth(tmp_path):
    data = {
        "fit": {"n": float("nan"), "rate": np.float32("inf"), "ok": False},
        "sizes": np.array([1.0, np.nan, -np.inf]),
        "counts": (np.int64(3), 4),
        "path": tmp_path,
    }
    path = write_json(tmp_path / "out.json", data)
    back = _strict(path.read_text())
    assert back == {"fit": {"n": None, "rate": None, "ok": False}, "sizes": [1.0, None, None], "counts": [3, 4],
                    "path": str(tmp_path)}
    assert not list(tmp_path.glob("*.tmp"))


def test_finite_values_are_kept_exactly():
    values = [0.1, 1e-300, -2.5e300, 7]
    assert _strict(dumps(values)) == values
    assert finite(np.float64(0.1)) == 0.1


def test_what_json_cannot_hold_fails_loudly():
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"x": object()})
