"""temflow.analysis.incremental_link: frame-by-frame linking equals link() on the finished table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("trackpy")

from temflow.analysis.incremental_link import link_next, start_link  # noqa: E402
from temflow.analysis.track import link  # noqa: E402


def _walks(seed: int, frames: int = 40, particles: int = 30, size_nm: float = 60.0, step_nm: float = 0.6,
           missed: float = 0.08) -> pd.DataFrame:
    """Random walkers that are born and die, missed now and then, crowded enough to make subnetworks;
    frames 10 and 11 are empty (a blank frame) and the first two frames hold nothing."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, frames // 2, particles)
    end = np.minimum(frames, start + rng.integers(5, frames, particles))
    position = rng.uniform(0, size_nm, (particles, 2))
    rows = []
    for f in range(frames):
        position += rng.normal(0, step_nm, position.shape)
        for p in range(particles):
            if f < 2 or f in (10, 11) or not start[p] <= f < end[p] or rng.random() < missed:
                continue
            rows.append((f, position[p, 0], position[p, 1], 5.0 + p % 3, p))
    table = pd.DataFrame(rows, columns=["frame", "y", "x", "equivalent_diameter", "truth"])
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in no particular order


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("memory", [0, 2])
@pytest.mark.parametrize("per_call", [1, 3])
def test_frame_by_frame_equals_the_batch_link(seed, memory, per_call):
    table = _walks(seed)
    batch = link(table, max_step_nm=2.5, memory=memory, method="trackpy")
    state = start_link(max_step_nm=2.5, memory=memory)
    parts = []
    frames = np.arange(table["frame"].max() + 1)
    for first in frames[::per_call]:  # frames arrive one at a time, or a few per refresh
        part = table[(table["frame"] >= first) & (table["frame"] < first + per_call)]
        parts.append(link_next(state, part))
    live = pd.concat(parts).loc[table.index]
    pd.testing.assert_frame_equal(live, batch)
    # and the tracks are the particles': nearly every true link between consecutive frames is kept
    here = live.set_index(["truth", "frame"])["particle"]
    after = live.assign(frame=live["frame"] - 1).set_index(["truth", "frame"])["particle"]
    pairs = pd.concat([here, after], axis=1, join="inner", keys=["now", "next"])
    assert len(pairs) > 300 and (pairs["now"] == pairs["next"]).mean() > 0.95


def test_empty_and_late_frames():
    state = start_link(max_step_nm=1.0)
    empty = link_next(state, pd.DataFrame({"frame": [], "y": [], "x": []}))
    assert empty["particle"].dtype == np.int64 and len(empty) == 0
    first = link_next(state, pd.DataFrame({"frame": [3], "y": [0.0], "x": [0.0], "area": [4.0]}))
    assert first["particle"].tolist() == [0] and "area" in first
    # a gap of two empty frames is beyond memory=1: a new track
    later = link_next(state, pd.DataFrame({"frame": [6], "y": [0.1], "x": [0.0]}))
    assert later["particle"].tolist() == [1]
    with pytest.raises(ValueError, match="frames up to 6 are linked already"):
        link_next(state, pd.DataFrame({"frame": [6], "y": [0.1], "x": [0.0]}))
    with pytest.raises(ValueError, match="NaN"):
        link_next(state, pd.DataFrame({"frame": [7], "y": [np.nan], "x": [0.0]}))


@pytest.mark.parametrize(("kwargs", "match"), [({"max_step_nm": 0.0}, "max_step_nm must be a positive"),
                                                ({"max_step_nm": 1.0, "memory": -1}, "memory must be a whole"),
                                                ({"max_step_nm": 1.0, "memory": 1.5}, "memory must be a whole")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        start_link(**kwargs)
