"""Drift estimated frame by frame as a movie is recorded, with the same answer as :func:`estimate_drift`.

:func:`estimate_drift` plans its pairings by frame index only
(:func:`temflow.drift._trajectory.pair_plan`), measures each pairing from the two frames'
band-limited spectra alone, and solves one small least-squares problem. All three work
frame by frame: when frame ``n - 1`` arrives, the plan for ``n`` frames contains the plan for
``n - 1`` frames plus the pairings of the new frame (for ``reference="auto"``: a non-key frame
meets its key before, and, once it arrives, the key after it). Every pairing whose two frames
are there is measured once, and the trajectory is solved again with the batch solver. A backup
pairing counts only when the frame's main pairings all fail, exactly as in the batch kernel, so
once the last frame is in, the shifts are the ones :func:`estimate_drift` gives on the finished
movie (same kernels, same numbers; ``tests/drift/test_incremental.py``).

Memory stays bounded: only the spectra of frames a future frame can pair with are kept
(frame 0, the last 16 key frames, the frames since the last key frame). The state is a plain
dict; :func:`drift_record` gives its arrays to save, and :func:`resume_drift` rebuilds it from
them, recomputing only the spectra still needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from temflow.drift import _registration as reg
from temflow.drift import _trajectory
from temflow.drift.correction import Reference, _check_options, _default_workers, _parse_roi

__all__ = ["add_frame", "drift_record", "resume_drift", "solve_drift", "start_drift"]


def start_drift(
    frame_shape: tuple[int, int],
    *,
    reference: Reference = "auto",
    upsample: float = 50,
    roi: Sequence[int] | None = None,
    sigma_px: float = 1.25,
    key_interval: int = 16,
    min_quality: float = 8.0,
    black_border: float = 0.1,
) -> dict[str, Any]:
    """A new, empty incremental drift estimate (options as for :func:`estimate_drift`).

    Returns
    -------
    dict
        The state :func:`add_frame` grows and :func:`solve_drift` reads.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> from temflow.drift import estimate_drift
    >>> truth = make_movie(frames=5, size=48, seed=2, jumps=0)
    >>> state = start_drift((48, 48))
    >>> for frame in truth.movie.values:
    ...     add_frame(state, frame)
    >>> batch = estimate_drift(truth.movie.compute())
    >>> bool(np.allclose(solve_drift(state)["shift"], batch.values, atol=1e-9))
    True
    """
    _check_options(reference, upsample, sigma_px, key_interval, min_quality, black_border)
    settings = reg.Settings(roi=_parse_roi(roi, tuple(frame_shape)), sigma_px=float(sigma_px),  # type: ignore[arg-type]
                            upsample=float(upsample), black_border=float(black_border),
                            workers=_default_workers(None), min_quality=float(min_quality))
    return {
        "settings": settings,
        "reference": reference,
        "key_interval": int(key_interval),
        "frame_shape": tuple(int(v) for v in frame_shape),
        "usable": [],
        "start": [],
        "stop": [],
        "measured": {},  # (i, j) -> (dy, dx, psr)
        "spectra": {},  # frame -> band-limited spectrum (None: unusable frame)
    }


def add_frame(state: dict[str, Any], frame: np.ndarray) -> None:
    """Measure the pairings the new frame completes (it becomes frame ``n``)."""
    frame = np.asarray(frame)
    if frame.shape != state["frame_shape"]:
        raise ValueError(f"frame is {frame.shape} px; the movie's frames are {state['frame_shape']} px")
    settings = state["settings"]
    index = len(state["usable"])
    with threadpool_limits(limits=settings.workers, user_api="blas"):
        spectrum, usable, start, stop = reg.spectrum_of(frame, settings)
    state["usable"].append(bool(usable))
    state["start"].append(np.asarray(start, np.int64))
    state["stop"].append(np.asarray(stop, np.int64))
    state["spectra"][index] = spectrum
    _measure_available(state)
    _forget(state)


def solve_drift(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """Shifts of every frame so far (px), as :func:`estimate_drift`'s fields.

    Returns
    -------
    dict
        ``shift`` (frames, 2) px as (dy, dx), ``quality``, ``flagged``, ``jump``, ``valid_start``,
        ``valid_stop``: the batch solver's output for the frames seen.
    """
    frames = len(state["usable"])
    if frames == 0:
        raise ValueError("no frame added yet")
    plan = _trajectory.pair_plan(state["reference"], frames, state["key_interval"])
    measured = np.zeros((len(plan), 3))
    held = _held(state, plan)
    for row, (i, j, prior) in enumerate(plan):
        if prior < 1 and held[int(i)]:
            continue  # the batch kernel never measures a backup while a main pairing holds
        measured[row] = state["measured"].get((int(i), int(j)), (0.0, 0.0, 0.0))
    result = {
        "pairs": plan,
        "measured": measured,
        "frames": np.arange(frames),
        "usable": np.asarray(state["usable"], bool),
        "start": np.asarray(state["start"], np.int64).reshape(frames, 2),
        "stop": np.asarray(state["stop"], np.int64).reshape(frames, 2),
    }
    return _trajectory.solve_trajectory([result], frames, state["settings"].min_quality)


def drift_record(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The state's arrays, to save (``numpy.savez``) and give to :func:`resume_drift`."""
    pairs = sorted(state["measured"])
    return {
        "pairs": np.asarray(pairs, np.int64).reshape(-1, 2),
        "measured": np.asarray([state["measured"][p] for p in pairs], float).reshape(-1, 3),
        "usable": np.asarray(state["usable"], bool),
        "start": np.asarray(state["start"], np.int64).reshape(-1, 2),
        "stop": np.asarray(state["stop"], np.int64).reshape(-1, 2),
    }


def resume_drift(
    record: Mapping[str, np.ndarray],
    read_frame: Callable[[int], np.ndarray],
    frame_shape: tuple[int, int],
    **options: Any,
) -> dict[str, Any]:
    """Rebuild a state from :func:`drift_record`'s arrays; ``read_frame(i)`` gives frame ``i`` back.

    Only the spectra a future frame can pair with are recomputed. ``options`` are
    :func:`start_drift`'s and must be the ones the record was made with.
    """
    state = start_drift(frame_shape, **options)
    state["usable"] = [bool(v) for v in record["usable"]]
    state["start"] = [np.asarray(v, np.int64) for v in record["start"]]
    state["stop"] = [np.asarray(v, np.int64) for v in record["stop"]]
    state["measured"] = {(int(i), int(j)): tuple(float(v) for v in m)
                         for (i, j), m in zip(record["pairs"], record["measured"])}
    settings = state["settings"]
    with threadpool_limits(limits=settings.workers, user_api="blas"):
        for index in sorted(_still_needed(state)):
            state["spectra"][index] = reg.spectrum_of(np.asarray(read_frame(index)), settings)[0]
    return state


def _held(state: dict[str, Any], plan: np.ndarray) -> np.ndarray:
    """Frames with a main pairing above the quality threshold (their backups are not used)."""
    held = np.zeros(len(state["usable"]), bool)
    threshold = state["settings"].min_quality
    for i, j, prior in plan:
        if prior >= 1:
            psr = state["measured"].get((int(i), int(j)), (0.0, 0.0, 0.0))[2]
            held[int(i)] |= psr >= threshold
    return held


def _measure_available(state: dict[str, Any]) -> None:
    frames = len(state["usable"])
    plan = _trajectory.pair_plan(state["reference"], frames, state["key_interval"])
    settings = state["settings"]
    bnd = reg.band((settings.roi[1] - settings.roi[0], settings.roi[3] - settings.roi[2]), settings.sigma_px)
    # main pairings first, so that a backup is measured only for a frame whose main ones failed
    with threadpool_limits(limits=settings.workers, user_api="blas"):
        for backups in (False, True):
            held = _held(state, plan) if backups else None
            for i_f, j_f, prior in plan:
                i, j = int(i_f), int(j_f)
                if (prior < 1) != backups or (i, j) in state["measured"]:
                    continue
                if held is not None and held[i]:
                    continue
                if i not in state["spectra"] or j not in state["spectra"]:
                    continue  # a backup whose frame is gone: its main pairing held when it was dropped
                a, b = state["spectra"][i], state["spectra"][j]
                state["measured"][(i, j)] = (
                    reg.register_pair(a, b, bnd, settings.upsample, settings.workers)
                    if a is not None and b is not None else (0.0, 0.0, 0.0))


def _still_needed(state: dict[str, Any]) -> set[int]:
    """Frames whose spectrum a pairing not yet measured, now or with any future frame, can use."""
    frames = len(state["usable"])
    if frames == 0:
        return set()
    reference, k = state["reference"], state["key_interval"]
    if reference == "first":
        return {0}
    if reference == "previous":
        return {frames - 1, frames - 2} - {-1}
    last_key = ((frames - 1) // k) * k
    keys = {last_key - lag * k for lag in range(0, 17)} | {0}
    keep = {key for key in keys if key >= 0}
    keep |= set(range(last_key, frames))
    # frames before the last key whose pairing with it is still to come (cannot happen: measured on arrival)
    return keep


def _forget(state: dict[str, Any]) -> None:
    needed = _still_needed(state)
    for index in [i for i in state["spectra"] if i not in needed]:
        del state["spectra"][index]
