"""Compare measured particles, tracks and events with synthetic ground truth, ignoring ids (trackpy's assert_traj_equal idea)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def observable(particles, min_area_nm2):
    """Truth rows a measurement can see: centre in the field, not touching the border, big enough."""
    p = particles
    return p[p["visible"] & ~p["touches_border"] & (np.pi * p["radius"] ** 2 >= min_area_nm2)]


def match_rows(truth, measured, max_distance_nm):
    """Pairs (truth index, measured index) per frame, by optimal assignment on centre distance."""
    pairs = []
    for f, t in truth.groupby("frame"):
        m = measured[measured["frame"] == f]
        if m.empty:
            continue
        d = np.hypot(t["y"].to_numpy()[:, None] - m["y"].to_numpy()[None], t["x"].to_numpy()[:, None] - m["x"].to_numpy()[None])
        cost = np.where(d <= max_distance_nm, d, 1e9)
        i, j = linear_sum_assignment(cost)
        ok = cost[i, j] < 1e9
        pairs += list(zip(t.index[i[ok]], m.index[j[ok]]))
    return pairs


def link_recovery(particles, tracks, min_area_nm2, max_distance_nm):
    """Share of true links (same particle, consecutive frames, both observable) that kept one id."""
    truth = observable(particles, min_area_nm2)
    pairs = dict(match_rows(truth, tracks, max_distance_nm))
    t = truth.assign(found=[tracks.at[pairs[i], "particle"] if i in pairs else -1 for i in truth.index])
    t = t.sort_values(["particle", "frame"])
    same = (t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]) & (np.diff(t["frame"].to_numpy()) == 1)
    a, b = t["found"].to_numpy()[:-1][same], t["found"].to_numpy()[1:][same]
    return float(np.mean((a == b) & (a >= 0))), int(same.sum())


def observable_events(particles, events, min_area_nm2):
    """Truth merges and vanishes a measurement could see, with where they happened."""
    seen = observable(particles, min_area_nm2)
    key = set(zip(seen["particle"], seen["frame"]))
    rows = []
    for _, e in events.iterrows():
        f, pid = int(e["frame"]), int(e["particle"])
        if e["event"] == "merge":
            # the product is seen and at least one absorbed particle was seen the frame before
            if (pid, f) in key and any((int(q), f - 1) in key for q in e["merged"]) and (pid, f - 1) in key:
                r = seen[(seen["particle"] == pid) & (seen["frame"] == f)].iloc[0]
                rows.append(("merge", f, r["y"], r["x"]))
        else:
            # a shrinking particle leaves the measurement when it drops below the minimum area
            mine = seen[seen["particle"] == pid]
            if len(mine) and not particles[(particles["particle"] == pid)]["touches_border"].any():
                last = mine.loc[mine["frame"].idxmax()]
                rows.append(("vanish", int(last["frame"]) + 1, last["y"], last["x"]))
    return pd.DataFrame(rows, columns=["event", "frame", "y", "x"])


def event_recovery(truth_events, found, max_distance_nm, tolerance_frames=1):
    """Share of true events found with the same kind, within the frame tolerance and the distance."""
    used = set()
    hits = 0
    for _, e in truth_events.iterrows():
        cand = found[(found["event"] == e["event"]) & ((found["frame"] - e["frame"]).abs() <= tolerance_frames)]
        d = np.hypot(cand["y"] - e["y"], cand["x"] - e["x"])
        for i in d[d <= max_distance_nm].sort_values().index:
            if i not in used:
                used.add(i)
                hits += 1
                break
    return hits / max(len(truth_events), 1), len(truth_events)


# --- shared synthetic cases (computed once per test session) --------------------------------

MIN_AREA_NM2 = 5.0  # about r = 1.26 nm = 2.5 px: below it the threshold baseline cannot see a particle
MAX_STEP_NM = {"ostwald": 3.0, "coalescence": 6.0, "mixed": 6.0}  # ~2x the largest RMS step per frame
CONTACT_NM = 2.0
COMMON = dict(pixel_size_nm=0.5, drift_px=0, jumps=0, area_fraction=0.12, dose_e_per_px=400.0)


@functools.lru_cache(maxsize=None)

def case(mechanism: str) -> dict:
    """A drift-free movie, its truth, and the whole analysis on true labels and on threshold masks.

    Ripening: 384 x 384 px of 0.5 nm (192 nm field), ~126 particles of 1.5-5 nm radius whose mean
    radius doubles over 40 frames (LSW). Coalescence: 256 x 256 px, ~50 particles of 2-5 nm
    random-walking (D = 2 nm^2/s for the smallest) and merging on contact. 400 e/px per frame
    (16 e/A^2, a modest in-situ dose).
    """
    from temflow.analysis.measure import label_particles, measure_particles, threshold_particles
    from temflow.synthetic.generator import make_movie
    from temflow.analysis.track import find_events, link

    if mechanism == "ostwald":
        r0 = 5.0 / 1.5
        truth = make_movie(frames=40, size=384, mechanism="ostwald", radius_nm=(1.5, 5.0),
                           ripening_rate_nm3_per_s=(2.0**3 - 1.0) * r0**3 / 39.0, seed=0, **COMMON)
    else:
        truth = make_movie(frames=40, size=256, mechanism=mechanism, radius_nm=(2.0, 5.0),
                           diffusion_nm2_per_s=2.0, seed=0, **COMMON)
    movie = truth.movie.compute()
    out = {"truth": truth, "movie": movie}
    # the analysis downstream is what these cases test: the recipe's settings are pinned (its
    # former fixed defaults, 1.5 / 32 / 2 px at 0.5 nm/px), not taken from the sample
    masks = threshold_particles(truth.movie, particles="dark", sigma_nm=0.75, background_nm=16.0, opening_nm=1.0,
                                min_area_nm2=0.0, max_radius_nm=float("inf"))
    for name, labels in (("true_labels", truth.labels), ("threshold", label_particles(masks))):
        table = measure_particles(labels, truth.movie, min_area_nm2=MIN_AREA_NM2)
        tracks = link(table, max_step_nm=MAX_STEP_NM[mechanism], memory=1)
        out[name] = {"table": table, "tracks": tracks, "events": find_events(tracks, contact_nm=CONTACT_NM)}
    return out
