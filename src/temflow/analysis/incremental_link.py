"""Linking frame by frame as a movie is recorded, with the same tracks as :func:`link` on the finished table.

:func:`temflow.analysis.link` with ``method="trackpy"`` runs the Crocker-Grier algorithm, which
is online by construction: frame ``f`` is linked against the particles of frame ``f - 1`` and
those remembered from up to ``memory`` frames before, and no later frame changes a link already
made. :func:`start_link` and :func:`link_next` drive trackpy's own ``Linker`` one frame at a time
(the object ``trackpy.link`` drives over the whole table), so the cost of a new frame depends on
the particles in it and in the remembered frames, not on the length of the movie, and once the
last frame is in, the ids equal those of :func:`link` (``tests/analysis/test_incremental_link.py``).
Ids are given in order of first appearance (by ``y`` within a frame), as :func:`link` renumbers them.

``method="laptrack"`` is not incremental: its gap closing is one assignment problem over the
track ends and starts of the whole movie, so a later frame can change an earlier link; link the
finished table with :func:`link` instead.

trackpy numbers its points and tracks with counters shared by the whole process; ids here do
not depend on them, but two linkings interleaved in one process may break equal-distance ties
in another order than a lone one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from temflow.movie import check_table

__all__ = ["link_next", "start_link"]

_NEEDED = ("frame", "y", "x")


def start_link(*, max_step_nm: float, memory: int = 1) -> dict[str, Any]:
    """A new, empty incremental linking (options as for :func:`temflow.analysis.link` with trackpy).

    Parameters
    ----------
    max_step_nm : float
        Largest displacement between consecutive frames, nm.
    memory : int
        Frames a particle may be missing and still keep its id; 0 disables gap closing.

    Returns
    -------
    dict
        The state :func:`link_next` grows (holds trackpy's linker; not saved to disk: on a
        restart, link the saved table again frame by frame).

    Raises
    ------
    ValueError
        If ``max_step_nm`` is not a positive distance, ``memory`` is negative, or trackpy is
        not installed.

    Examples
    --------
    >>> import pandas as pd
    >>> state = start_link(max_step_nm=2.0)
    >>> link_next(state, pd.DataFrame({"frame": [0, 0], "y": [0.0, 10.0], "x": [0.0, 0.0]}))["particle"].tolist()
    [0, 1]
    >>> link_next(state, pd.DataFrame({"frame": [1, 1], "y": [9.5, 0.5], "x": [0.0, 0.0]}))["particle"].tolist()
    [1, 0]
    """
    if isinstance(max_step_nm, bool) or not (isinstance(max_step_nm, (int, float)) and math.isfinite(max_step_nm)
                                             and max_step_nm > 0):
        raise ValueError(f"max_step_nm must be a positive distance in nm; got {max_step_nm!r}")
    if isinstance(memory, bool) or int(memory) != memory or memory < 0:
        raise ValueError(f"memory must be a whole number of frames >= 0; got {memory!r}")
    try:
        import trackpy  # noqa: F401 - checked here, used in link_next
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ValueError("incremental linking needs trackpy installed (pip install trackpy)") from error
    return {"linker": None, "last_frame": None, "next_id": 0, "max_step_nm": float(max_step_nm),
            "memory": int(memory)}


def link_next(state: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """Link the particles of the next frame(s) against the tracks so far.

    Computes (pandas in, pandas out).

    Parameters
    ----------
    state : dict
        From :func:`start_link`; updated in place.
    table : pandas.DataFrame
        Rows of one or more new frames (``frame``, ``y``, ``x`` in nm; other columns kept), all
        later than every frame linked before. A frame with no particle needs no row: frames
        skipped between two calls are linked as empty, as :func:`temflow.analysis.link` does.

    Returns
    -------
    pandas.DataFrame
        ``table`` with an int64 ``particle`` column, rows in the original order.

    Raises
    ------
    TypeError, ValueError
        If ``table`` is not a DataFrame, lacks columns, has NaN positions, or holds a frame
        not later than the last one linked.
    """
    from trackpy.linking.linking import Linker

    table = check_table(table, _NEEDED)
    if table[list(_NEEDED)].isna().to_numpy().any():
        raise ValueError("table has NaN in frame, y or x; drop those rows first")
    out = table.copy()
    particle = np.full(len(out), -1, dtype=np.int64)
    frames = out["frame"].to_numpy(np.int64)
    last = state["last_frame"]
    if len(out) and last is not None and frames.min() <= last:
        raise ValueError(f"table holds frame {int(frames.min())}, but frames up to {last} are linked already; "
                         "give each frame once, in order (start_link() starts afresh)")
    positions = out[["y", "x"]].to_numpy(float)
    for frame in np.unique(frames):
        rows = np.flatnonzero(frames == frame)
        coords = positions[rows]
        linker = state["linker"]
        if linker is None:
            linker = state["linker"] = Linker(state["max_step_nm"], memory=state["memory"])
            linker.init_level(coords, int(frame))
        else:
            # trackpy.link counts memory in frames, empty ones included
            for empty in range(state["last_frame"] + 1, int(frame)):
                linker.next_level(np.empty((0, 2)), empty)
            linker.next_level(coords, int(frame))
        state["last_frame"] = int(frame)
        tracks = [point.track for point in linker.hash.points]
        # new tracks get the next ids in order of y (stable: ties keep the table's order), as link renumbers
        for i in sorted((i for i, track in enumerate(tracks) if not hasattr(track, "temflow_id")),
                        key=lambda i: coords[i, 0]):
            tracks[i].temflow_id = state["next_id"]
            state["next_id"] += 1
        particle[rows] = [track.temflow_id for track in tracks]
    out["particle"] = particle
    return out
