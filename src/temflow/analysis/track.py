"""Link particles through time and find what happened to them.

* :func:`link` adds a ``particle`` id to a per-frame table: the assignment
  between consecutive frames is the globally optimal one (a linear assignment
  problem on squared distances, solved by laptrack), with gap closing for
  particles missed in a few frames.
* :func:`find_events` reads the linked table for the events of coarsening:
  **merge** (coalescence: particles end next to a survivor that gains their
  volume), **vanish** (dissolution: a particle ends alone), **split** and
  **appear** (the reverse), each with its frame, time, place and ids.

No tracking library classifies track ends physically, which is the part
written here; the linking itself is laptrack's.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import pandas as pd

from temflow.movie import check_table

__all__ = ["EVENT_COLUMNS", "find_events", "link"]

_NEEDED = ("frame", "y", "x")

_DISSOLVED = 0.5  # a track ending below this share of its peak volume (3-frame median) dissolved

EVENT_COLUMNS: tuple[str, ...] = ("frame", "time", "event", "particle", "merged", "y", "x")
"""Columns of :func:`find_events`' table, in order."""


def link(
    table: pd.DataFrame,
    *,
    max_step_nm: float,
    memory: int = 1,
    gap_step_nm: float | None = None,
    method: Literal["laptrack", "trackpy"] = "laptrack",
) -> pd.DataFrame:
    """Give every particle an id that follows it from frame to frame.

    Between two consecutive frames the assignment minimises the total squared
    displacement over all particles at once, never further than
    ``max_step_nm``; a particle missed in up to ``memory`` frames is
    reconnected (gap closing). ``method="laptrack"`` solves each frame pair as
    one linear assignment problem and closes gaps in a second LAP over track
    ends and starts (Jaqaman et al. 2008); ``method="trackpy"`` splits each
    frame pair into independent subnetworks (particles within ``max_step_nm``
    of each other) and solves each exactly (Crocker-Grier as in trackpy),
    the same optimum for well-separated particles and tens of times faster
    on long movies, with gaps closed within ``max_step_nm``. trackpy is an
    optional dependency.

    Computes (pandas in, pandas out).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per particle and frame, with ``frame`` and ``y``, ``x`` in nm
        (from :func:`temflow.analysis.measure.measure_particles`); other columns are kept.
    max_step_nm : float
        Largest displacement between consecutive frames, nm. Smaller than
        half the typical spacing between particles, larger than how far one
        moves in a frame (including residual drift).
    memory : int
        Number of consecutive frames a particle may be missing and still keep
        its id; 0 disables gap closing.
    gap_step_nm : float, optional
        Largest displacement across a gap, nm; default ``max_step_nm`` times
        the square root of the frames spanned (diffusive motion). laptrack only.
    method : {"laptrack", "trackpy"}
        The solver (see above).

    Returns
    -------
    pandas.DataFrame
        ``table`` with an int64 ``particle`` column (0, 1, ...), rows in the
        original order, ``attrs`` kept.

    Raises
    ------
    TypeError
        If ``table`` is not a DataFrame.
    ValueError
        If columns are missing, ``max_step_nm`` is not positive or
        ``memory`` is negative.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"frame": [0, 0, 1, 1], "y": [0.0, 10.0, 9.5, 0.5], "x": [0.0, 0.0, 0.0, 0.0]})
    >>> link(table, max_step_nm=2.0)["particle"].tolist()
    [0, 1, 1, 0]
    """
    table = check_table(table, _NEEDED)
    if not (isinstance(max_step_nm, (int, float)) and math.isfinite(max_step_nm) and max_step_nm > 0):
        raise ValueError(f"max_step_nm must be a positive distance in nm; got {max_step_nm!r}")
    if int(memory) != memory or memory < 0:
        raise ValueError(f"memory must be a whole number of frames >= 0; got {memory!r}")
    if table[list(_NEEDED)].isna().to_numpy().any():
        raise ValueError("table has NaN in frame, y or x; drop those rows first")
    if method not in ("laptrack", "trackpy"):
        raise ValueError(f"method must be 'laptrack' or 'trackpy'; got {method!r}")
    gap = max_step_nm * math.sqrt(int(memory) + 1) if gap_step_nm is None else float(gap_step_nm)
    out = table.copy()
    if out.empty:
        out["particle"] = np.zeros(0, dtype=np.int64)
        return out
    detections = pd.DataFrame(
        {"frame": out["frame"].to_numpy(np.int64), "y": out["y"].to_numpy(float), "x": out["x"].to_numpy(float)}
    )
    detections["row"] = np.arange(len(out))
    if method == "trackpy":
        particle = _link_trackpy(detections, float(max_step_nm), int(memory))
    else:
        particle = _link_laptrack(detections, float(max_step_nm), int(memory), gap)
    # renumber by first appearance, so ids read in time order
    order = pd.DataFrame({"p": particle, "f": detections["frame"], "y": detections["y"]}).sort_values(["f", "y"])
    first = pd.unique(order["p"])
    renumber = np.empty(particle.max() + 1, dtype=np.int64)
    renumber[first] = np.arange(len(first))
    out["particle"] = renumber[particle]
    return out


def _link_trackpy(detections: pd.DataFrame, max_step_nm: float, memory: int) -> np.ndarray:
    try:
        import trackpy
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ValueError("method='trackpy' needs trackpy installed (pip install trackpy); or use method='laptrack'") from error
    trackpy.quiet()
    with warnings.catch_warnings():
        # trackpy's own pandas calls (sort_values(inplace=...)) warn under pandas 3; not the user's to act on
        warnings.filterwarnings("ignore", message="The inplace keyword")
        linked = trackpy.link(
            detections[["frame", "y", "x", "row"]],
            search_range=max_step_nm,
            memory=memory,
            pos_columns=["y", "x"],
            t_column="frame",
        )
    particle = np.empty(len(detections), dtype=np.int64)
    particle[linked["row"].to_numpy()] = linked["particle"].to_numpy()
    return particle


def _link_laptrack(detections: pd.DataFrame, max_step_nm: float, memory: int, gap: float) -> np.ndarray:
    from laptrack import LapTrack

    # a pydantic model: mypy sees every field as required, the rest have defaults
    tracker = LapTrack(  # type: ignore[call-arg]
        metric="sqeuclidean",
        cutoff=float(max_step_nm) ** 2,
        gap_closing_metric="sqeuclidean",
        gap_closing_cutoff=float(gap) ** 2 if memory > 0 else False,
        gap_closing_max_frame_count=int(memory) + 1,
        splitting_cutoff=False,
        merging_cutoff=False,
    )
    tracks, _, _ = tracker.predict_dataframe(detections, ["y", "x"], frame_col="frame", only_coordinate_cols=False)
    particle = np.empty(len(detections), dtype=np.int64)
    particle[tracks["row"].to_numpy()] = tracks["track_id"].to_numpy()
    return particle


def _radius(table: pd.DataFrame) -> np.ndarray:
    if "equivalent_diameter" in table.columns:
        return table["equivalent_diameter"].to_numpy(float) / 2.0
    if "radius" in table.columns:
        return table["radius"].to_numpy(float)
    return np.sqrt(table["area"].to_numpy(float) / np.pi)


def find_events(
    tracks: pd.DataFrame,
    *,
    contact_nm: float = 2.0,
    volume_fraction: float = 0.5,
    frames: int | None = None,
    persist_frames: int = 3,
) -> pd.DataFrame:
    """Find merges, vanishings, splits and appearances in linked tracks, without flicker.

    A track that ends (its last frame is ``f - 1``, before the movie's last
    frame, and it does not touch the border, where it may simply have left the
    field of view) is

    * absorbed in a **merge** when a particle of frame ``f`` reaches it
      (centre distance below the sum of their radii plus ``contact_nm`` plus
      twice the ending particle's own RMS step between frames: a mobile
      particle may travel before it touches, a ripening one does not) and
      has gained at least ``volume_fraction`` of its volume since ``f - 1``
      (volume ~ equivalent radius cubed); several tracks absorbed by the
      same particle in the same frame make one event; a track whose last
      volume is under half its peak (3-frame median) shrank before it went,
      which is dissolution, not coalescence: a vanish even beside a neighbour;
    * otherwise a **vanish** (dissolved: its atoms left for other particles).

    A track that starts in frame ``f > 0`` away from the border is a **split**
    from a particle of frame ``f - 1`` that reached it and lost at least
    ``volume_fraction`` of its volume, else an **appear**.

    Volumes before and after are medians over up to ``persist_frames`` frames
    on each side, so one badly segmented frame does not make or hide a gain.
    Then only events that persist are kept (``persist_frames`` = k):

    * a merge and a split of the same particles within k frames of each other
      are one particle that segmentation joined and cut apart (touching
      neighbours): neither is reported;
    * a merge's product, a split's parent and offspring, and an appeared
      particle must be detected in at least k frames; a vanished particle must have been
      seen for k frames and not come back within k frames (a particle the
      linker lost and found again is no event);
    * events in the movie's last k - 1 frames cannot be confirmed and are left out.

    ``persist_frames=1`` reports every raw event.

    Computes (pandas in, pandas out).

    Parameters
    ----------
    tracks : pandas.DataFrame
        Output of :func:`link`: ``frame``, ``y``, ``x`` (nm), ``particle`` and
        a size (``equivalent_diameter`` or ``area``); ``time`` and
        ``touches_border`` are used when present.
    contact_nm : float
        Slack on "touching", nm: a few pixels (segmentation blur); the
        particles' own motion is added per track.
    volume_fraction : float
        Share of the absorbed (or split-off) particle's volume the survivor
        must gain (or lose), 0..1.
    frames : int, optional
        Number of frames in the movie; default the last frame in ``tracks`` + 1.
    persist_frames : int
        k above: frames an event's outcome must last to be reported, >= 1.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`EVENT_COLUMNS`: ``frame`` (first frame showing the
        outcome), ``time`` (s), ``event`` ("merge", "vanish", "split",
        "appear"), ``particle`` (the survivor of a merge, the parent of a
        split, the particle that vanished or appeared), ``merged`` (tuple of
        the absorbed ids of a merge, the new ids of a split, else empty),
        ``y``, ``x`` (nm, where it happened). Sorted by frame.

    Raises
    ------
    TypeError, ValueError
        For a table that is not linked or lacks columns, or bad options.

    Examples
    --------
    >>> import pandas as pd
    >>> tracks = pd.DataFrame({
    ...     "frame": [0, 0, 1, 2, 0, 1],
    ...     "y": [0.0, 5.0, 2.0, 2.0, 40.0, 40.0], "x": [0.0] * 6,
    ...     "equivalent_diameter": [6.0, 6.0, 7.6, 7.6, 4.0, 4.0],
    ...     "particle": [0, 1, 0, 0, 2, 2]})
    >>> ev = find_events(tracks, frames=3, persist_frames=1)
    >>> ev[["frame", "event", "particle", "merged"]].values.tolist()
    [[1, 'merge', 0, (1,)], [2, 'vanish', 2, ()]]
    """
    tracks = check_table(tracks, _NEEDED + ("particle",), "tracks")
    if not any(c in tracks.columns for c in ("equivalent_diameter", "area", "radius")):
        raise ValueError("tracks needs a size column: equivalent_diameter (nm), area (nm^2) or radius (nm)")
    if not (math.isfinite(contact_nm) and contact_nm >= 0):
        raise ValueError(f"contact_nm must be a distance >= 0 in nm; got {contact_nm!r}")
    if not 0 <= volume_fraction <= 1:
        raise ValueError(f"volume_fraction must be in [0, 1]; got {volume_fraction!r}")
    if not (isinstance(persist_frames, (int, np.integer)) and persist_frames >= 1):
        raise ValueError(f"persist_frames must be a whole number of frames >= 1; got {persist_frames!r}")
    empty = pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(EVENT_COLUMNS, ("int64", "float64", "object", "int64", "object", "float64", "float64"))})
    if tracks.empty:
        return empty
    frame = tracks["frame"].to_numpy(np.int64)
    last_frame = int(frame.max()) if frames is None else int(frames) - 1
    t = tracks.copy()
    t["_r"] = _radius(tracks)
    t["_v"] = t["_r"] ** 3
    border = t["touches_border"].to_numpy(bool) if "touches_border" in t.columns else np.zeros(len(t), bool)
    t["_border"] = border
    t["_reach"] = _mobility_reach(t)
    times = _frame_times(t)
    by_frame = {f: g for f, g in t.groupby("frame")}
    # (frame, particle) -> volume, for "how much did the neighbour gain": the median over
    # persist_frames frames on the side of the event, so one badly segmented frame is not a gain
    volume = _side_volumes(t, int(persist_frames))
    ends = t.loc[t.groupby("particle")["frame"].idxmax()]
    peak = {int(p): float(v) for p, v in t.sort_values("frame").groupby("particle")["_v"].agg(lambda v: v.rolling(3, min_periods=1).median().max()).items()}
    starts = t.loc[t.groupby("particle")["frame"].idxmin()]
    rows: list[tuple] = []
    merges: dict[tuple[int, int], list[int]] = {}
    for _, end in ends.iterrows():
        f = int(end["frame"]) + 1
        if f > last_frame or end["_border"]:
            continue
        # a particle that dissolved to under half its largest volume before it went is a vanish,
        # even beside a neighbour: coalescence takes a particle whole, ripening shrinks it first
        dissolved = end["_v"] < _DISSOLVED * peak.get(int(end["particle"]), 0.0)
        partner = None if dissolved else _partner(end, by_frame.get(f), volume, f - 1, contact_nm, volume_fraction, gain=True)
        if partner is None:
            rows.append((f, times.get(f, np.nan), "vanish", int(end["particle"]), (), float(end["y"]), float(end["x"])))
        else:
            merges.setdefault((f, partner), []).append(int(end["particle"]))
    first_frame = starts.set_index("particle")["frame"].to_dict()
    continued = set()
    for (f, survivor), absorbed in merges.items():
        if first_frame.get(survivor) == f and len(absorbed) == 1:
            # one track ends and a new one starts where it was: a link the tracker missed
            # (a fast step beyond max_step_nm), not a merge of two particles
            continued.add((f, survivor))
            continue
        where = by_frame[f][by_frame[f]["particle"] == survivor].iloc[0]
        rows.append((f, times.get(f, np.nan), "merge", survivor, tuple(sorted(absorbed)), float(where["y"]), float(where["x"])))
    splits: dict[tuple[int, int], list[int]] = {}
    # a merge product linked to none of its parents starts a new track: not an appearance
    products = set(merges) | continued
    for _, start in starts.iterrows():
        f = int(start["frame"])
        if f == 0 or start["_border"] or (f, int(start["particle"])) in products:
            continue
        parent = _partner(start, by_frame.get(f - 1), volume, f, contact_nm, volume_fraction, gain=False)
        if parent is None:
            rows.append((f, times.get(f, np.nan), "appear", int(start["particle"]), (), float(start["y"]), float(start["x"])))
        else:
            splits.setdefault((f, parent), []).append(int(start["particle"]))
    for (f, parent), born in splits.items():
        where = by_frame[f - 1][by_frame[f - 1]["particle"] == parent].iloc[0]
        rows.append((f, times.get(f, np.nan), "split", parent, tuple(sorted(born)), float(where["y"]), float(where["x"])))
    if int(persist_frames) > 1:
        rows = _persistent(rows, t, int(persist_frames), last_frame, contact_nm)
    if not rows:
        return empty
    events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    events = events.astype({"frame": np.int64, "particle": np.int64, "time": float})
    return events.sort_values(["frame", "event", "particle"], ignore_index=True)


def _side_volumes(t: pd.DataFrame, k: int) -> dict[tuple[int, int, str], float]:
    """``(frame, particle, "before")``: median volume over the k frames up to ``frame``;
    ``"after"``: over the k frames from ``frame`` on (that particle's own frames)."""
    out: dict[tuple[int, int, str], float] = {}
    for pid, track in t.sort_values("frame").groupby("particle"):
        f = track["frame"].to_numpy()
        v = pd.Series(track["_v"].to_numpy())
        before = v.rolling(k, min_periods=1).median().to_numpy()
        after = v[::-1].rolling(k, min_periods=1).median().to_numpy()[::-1]
        for frame, b, a in zip(f, before, after):
            out[(int(frame), int(pid), "before")] = float(b)
            out[(int(frame), int(pid), "after")] = float(a)
    return out


def _persistent(rows: list[tuple], t: pd.DataFrame, k: int, last_frame: int, contact_nm: float) -> list[tuple]:
    """The events whose outcome lasts ``k`` frames (see :func:`find_events`)."""
    first = t.groupby("particle")["frame"].min().to_dict()
    last = t.groupby("particle")["frame"].max().to_dict()

    seen = t.groupby("particle").size().to_dict()

    def lives(pid: int) -> int:
        # frames it was actually detected in (a gap-closed track spans more)
        return int(seen[pid])

    def transient(pid: int) -> bool:
        # born inside the movie and gone within k frames: a segmentation artefact
        # (a track seen from frame 0 on may have lived long before)
        return int(first[pid]) > 0 and lives(pid) < k

    def involved(row: tuple) -> set[int]:
        return {int(row[3]), *(int(p) for p in row[4])}

    drop: set[int] = set()
    # a merge and a split of the same particles within k frames: one particle joined and cut apart
    # (or cut apart and joined); paired one to one in time order, so flicker just before a
    # lasting merge does not cancel that merge too
    order = sorted(range(len(rows)), key=lambda i: int(rows[i][0]))
    for j in order:
        b = rows[j]
        if b[2] not in ("merge", "split") or j in drop:
            continue
        for i in order:
            a = rows[i]
            if i == j or i in drop or a[2] not in ("merge", "split") or a[2] == b[2]:
                continue
            if 0 <= int(b[0]) - int(a[0]) < k and (i, j) != (j, i) and involved(a) & involved(b) and int(a[0]) <= int(b[0]):
                if int(a[0]) == int(b[0]) and i > j:
                    continue
                drop.update((i, j))
                break
    # a particle lost and found again at the same place within k frames: one particle, no event
    refound: set[int] = set()
    for i, a in enumerate(rows):
        if a[2] != "vanish":
            continue
        for j, b in enumerate(rows):
            if b[2] == "appear" and 0 <= int(b[0]) - int(a[0]) < k and math.hypot(b[5] - a[5], b[6] - a[6]) <= 2 * contact_nm + 2.0:
                drop.update((i, j))
                refound.add(int(b[3]))
    kept = []
    for i, row in enumerate(rows):
        if i in drop:
            continue
        f, kind, pid, others = int(row[0]), row[2], int(row[3]), tuple(int(p) for p in row[4])
        if f + k - 1 > last_frame:
            continue  # its outcome cannot be seen for k frames
        if kind == "merge":
            ok = last[pid] >= f + k - 1 and not any(transient(p) for p in others)
        elif kind == "split":
            ok = last[pid] >= f + k - 1 and all(lives(p) >= k for p in others)
        elif kind == "appear":
            ok = lives(pid) >= k
        else:  # vanish: a track that continues one lost and found again has lived longer than it shows
            ok = not transient(pid) or pid in refound
        if ok:
            kept.append(row)
    return kept


def _mobility_reach(t: pd.DataFrame, steps: int = 5) -> np.ndarray:
    """Twice each particle's RMS step over its last ``steps`` frame-to-frame moves, nm.

    Tracks too short to say use the median over all tracks.
    """
    order = t.sort_values(["particle", "frame"])
    pid = order["particle"].to_numpy()
    same = np.r_[False, pid[1:] == pid[:-1]] & np.r_[False, np.diff(order["frame"].to_numpy()) == 1]
    step2 = np.r_[0.0, np.diff(order["y"].to_numpy()) ** 2 + np.diff(order["x"].to_numpy()) ** 2]
    moves = pd.DataFrame({"particle": pid, "step2": np.where(same, step2, np.nan)}, index=order.index)
    recent = moves.groupby("particle")["step2"].transform(lambda s: s.rolling(steps, min_periods=1).mean())
    overall = float(np.nanmedian(moves["step2"])) if np.isfinite(moves["step2"]).any() else 0.0
    reach = 2.0 * np.sqrt(recent.fillna(overall).to_numpy())
    return pd.Series(reach, index=order.index).reindex(t.index).to_numpy()


def _frame_times(t: pd.DataFrame) -> dict[int, float]:
    times = t.attrs.get("times_s")
    if times is not None:
        return {i: float(v) for i, v in enumerate(times)}
    if "time" in t.columns:
        first = t.groupby("frame")["time"].first()
        out = {int(f): float(v) for f, v in first.items()}
        # frames without particles: extrapolate from the frame interval
        frames = np.array(sorted(out))
        if len(frames) > 1:
            dt = np.median(np.diff([out[f] for f in frames]) / np.diff(frames))
            for f in range(int(frames.max()) + 2):
                out.setdefault(f, out[int(frames[0])] + (f - frames[0]) * dt)
        return out
    return {}


def _partner(
    row: pd.Series,
    others: pd.DataFrame | None,
    volume: dict[tuple[int, int, str], float],
    other_reference_frame: int,
    contact_nm: float,
    volume_fraction: float,
    *,
    gain: bool,
) -> int | None:
    """The particle that absorbed (``gain``) or released (not ``gain``) ``row``.

    ``others`` are the candidates (frame ``f`` for an end at ``f - 1``; frame
    ``f - 1`` for a start at ``f``). A candidate must reach ``row`` and its
    volume must change by at least ``volume_fraction`` of ``row``'s between
    frames ``f - 1`` and ``f``; the closest such candidate wins.
    """
    if others is None or others.empty:
        return None
    d = np.hypot(others["y"].to_numpy() - row["y"], others["x"].to_numpy() - row["x"])
    near = d < others["_r"].to_numpy() + row["_r"] + contact_nm + row["_reach"]
    near &= others["particle"].to_numpy() != row["particle"]
    best = None
    for i in np.flatnonzero(near)[np.argsort(d[near])]:
        pid = int(others["particle"].iloc[i])
        before: float | None
        after: float | None
        if gain:
            before = volume.get((other_reference_frame, pid, "before"))
            after = volume.get((other_reference_frame + 1, pid, "after"))
        else:
            before = volume.get((other_reference_frame - 1, pid, "before"))
            after = volume.get((other_reference_frame, pid, "after"))
        if before is None or after is None:
            # no size on the other side (appeared, or missed that frame): contact alone decides
            best = pid
            break
        change = (after - before) if gain else (before - after)
        if change >= volume_fraction * row["_v"]:
            best = pid
            break
    return best
