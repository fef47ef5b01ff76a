"""Incremental drift: frame by frame, stopped and resumed, it gives estimate_drift's answer on the finished movie."""

from __future__ import annotations

import numpy as np
import pytest

from temflow.drift import estimate_drift
from temflow.drift.incremental import add_frame, drift_record, resume_drift, solve_drift, start_drift
from temflow.synthetic.generator import make_movie


@pytest.fixture(scope="module")
def truth():
    # a jump, and a blank frame (its main pairing fails, so the backup pairings are exercised)
    return make_movie(frames=16, size=48, seed=4, jumps=1, blank_frames=(6,), chunks=5)


@pytest.mark.parametrize("reference, key_interval", [("auto", 4), ("auto", 16), ("previous", 16), ("first", 16)])
def test_frame_by_frame_equals_batch(truth, reference, key_interval):
    frames = truth.movie.values
    batch = estimate_drift(truth.movie, reference=reference, key_interval=key_interval).compute()
    state = start_drift(frames.shape[1:], reference=reference, key_interval=key_interval)
    for k, frame in enumerate(frames):
        add_frame(state, frame)
        assert len(state["spectra"]) <= 2 * key_interval + 2  # bounded memory
        if k == 8:
            partial = solve_drift(state)
            assert partial["shift"].shape == (9, 2)
    live = solve_drift(state)
    np.testing.assert_allclose(live["shift"], batch.values, atol=1e-9)
    np.testing.assert_array_equal(live["flagged"], batch["flagged"].values)
    np.testing.assert_array_equal(live["jump"], batch["jump"].values)
    np.testing.assert_allclose(live["quality"], batch["quality"].values, rtol=1e-6)
    assert live["flagged"][6]  # the blank frame


def test_stop_and_resume_continues_exactly(truth):
    frames = truth.movie.values
    state = start_drift(frames.shape[1:], key_interval=4)
    for frame in frames[:9]:
        add_frame(state, frame)
    record = {k: v.copy() for k, v in drift_record(state).items()}
    resumed = resume_drift(record, lambda i: frames[i], frames.shape[1:], key_interval=4)
    for frame in frames[9:]:
        add_frame(resumed, frame)
        add_frame(state, frame)
    np.testing.assert_array_equal(solve_drift(resumed)["shift"], solve_drift(state)["shift"])


def test_wrong_frames_are_refused():
    state = start_drift((32, 32))
    with pytest.raises(ValueError, match=r"frame is \(16, 16\) px; the movie's frames are \(32, 32\) px"):
        add_frame(state, np.zeros((16, 16)))
    with pytest.raises(ValueError, match="no frame added yet"):
        solve_drift(state)
    with pytest.raises(ValueError, match="reference must be one of"):
        start_drift((32, 32), reference="last")  # type: ignore[arg-type]
