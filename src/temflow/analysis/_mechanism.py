"""The coarsening verdict of :mod:`temflow.analysis.coarsening`: Ostwald ripening or migration and coalescence.

:func:`coarsening_mechanism` weighs where the tracked particles' lost volume
went (shrinking in place, or absorbed in merges) and reports the event rates and
the particles' mobility alongside, as a :class:`Verdict`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from temflow.movie import check_table

Mechanism = Literal["ostwald ripening", "migration and coalescence", "mixed", "no coarsening"]


@dataclass(frozen=True)
class Verdict:
    """Why the particles coarsen, with the numbers behind it.

    Attributes
    ----------
    mechanism : str
        "ostwald ripening", "migration and coalescence", "mixed" or "no coarsening".
    ripening_volume_nm3 : float
        Volume lost by particles dissolving in place (vanished particles' largest
        volume plus survivors' net loss), nm^3.
    coalescence_volume_nm3 : float
        Volume of the particles absorbed in merges, nm^3.
    ripening_share : float
        ``ripening / (ripening + coalescence)``; NaN when both are 0.
    merges, vanishes : int
        Number of merge and vanish events.
    merge_rate_per_s, vanish_rate_per_s : float
        Events per particle per second (per mean particle count and the duration).
    diffusion_nm2_per_s : float
        Mobility: the mean squared displacement over one frame / (4 dt), nm^2/s.
    rms_step_nm : float
        RMS displacement between consecutive frames, nm.
    reason : str
        One sentence explaining the verdict.
    """

    mechanism: Mechanism
    ripening_volume_nm3: float
    coalescence_volume_nm3: float
    ripening_share: float
    merges: int
    vanishes: int
    merge_rate_per_s: float
    vanish_rate_per_s: float
    diffusion_nm2_per_s: float
    rms_step_nm: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a plain dict."""
        return asdict(self)


_ENDS = 3  # frames in a track's running median and at each of its ends


def _volume(diameter: np.ndarray) -> np.ndarray:
    # a particle seen from above as a disk of this diameter: a sphere's volume
    return np.pi / 6.0 * np.asarray(diameter, float) ** 3


def coarsening_mechanism(
    tracks: pd.DataFrame,
    events: pd.DataFrame,
    *,
    ripening_share: float = 0.7,
    coalescence_share: float = 0.3,
) -> Verdict:
    """Decide between Ostwald ripening and migration-and-coalescence.

    The two mechanisms move particle volume differently. In ripening atoms
    leave small particles, which shrink (and vanish) in place while others
    grow; in coalescence whole particles move and are absorbed by a neighbour
    at once. So the evidence is where the lost volume goes:

    * ripening volume - the largest volume of every particle that vanished
      (all of it left atom by atom), plus the net loss of every surviving
      particle between the medians of its first and last three frames (one
      badly segmented frame is neither growth nor loss);
    * coalescence volume - the volume of every particle absorbed in a merge,
      in the frame before.

    A ripening share of at least ``ripening_share`` gives "ostwald ripening",
    at most ``coalescence_share`` "migration and coalescence", else "mixed";
    no lost volume and no events give "no coarsening". Merge and vanish rates
    and the particles' mobility (MSD) are reported alongside.

    Parameters
    ----------
    tracks : pandas.DataFrame
        From :func:`temflow.analysis.track.link` (``frame``, ``time``, ``y``, ``x``,
        ``particle``, ``equivalent_diameter``, ``touches_border``).
    events : pandas.DataFrame
        From :func:`temflow.analysis.track.find_events`.
    ripening_share, coalescence_share : float
        Decision thresholds on the ripening share of the lost volume.

    Returns
    -------
    Verdict
    """
    tracks = check_table(tracks, ("frame", "y", "x", "particle", "equivalent_diameter"), "tracks")
    events = check_table(events, ("frame", "event", "particle", "merged"), "events")
    if not 0 <= coalescence_share < ripening_share <= 1:
        raise ValueError(
            f"need 0 <= coalescence_share < ripening_share <= 1; got {coalescence_share!r} and {ripening_share!r}"
        )
    border = tracks["touches_border"].to_numpy(bool) if "touches_border" in tracks.columns else np.zeros(len(tracks), bool)
    inside = tracks[~border].sort_values(["particle", "frame"])
    volume = _volume(inside["equivalent_diameter"].to_numpy())
    inside = inside.assign(_v=volume)
    vanished = set(events.loc[events["event"] == "vanish", "particle"].astype(int))
    absorbed = {int(p) for merged in events.loc[events["event"] == "merge", "merged"] for p in merged}
    ripening = 0.0
    merged_volume = 0.0
    for pid, track in inside.groupby("particle"):
        v = track["_v"].to_numpy()
        # running median over three frames: a frame where segmentation joined two neighbours
        # (or lost half a particle) is neither growth nor loss
        smooth = pd.Series(v).rolling(_ENDS, center=True, min_periods=1).median().to_numpy()
        if int(pid) in absorbed:
            merged_volume += float(v[-1])
        elif int(pid) in vanished:
            ripening += float(smooth.max())  # dissolved: all it ever held left atom by atom
        else:
            ripening += max(float(np.median(v[:_ENDS]) - np.median(v[-_ENDS:])), 0.0)
    merges = int((events["event"] == "merge").sum())
    vanishes = int((events["event"] == "vanish").sum())
    frames = tracks["frame"].to_numpy()
    times = tracks.groupby("frame")["time"].first() if "time" in tracks.columns else pd.Series(dtype=float)
    duration = float(times.max() - times.min()) if len(times) > 1 else math.nan
    mean_count = float(tracks.groupby("frame").size().mean()) if len(tracks) else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        merge_rate = merges / (mean_count * duration) if duration and mean_count else math.nan
        vanish_rate = vanishes / (mean_count * duration) if duration and mean_count else math.nan
    diffusion, rms_step = _mobility(inside)
    total = ripening + merged_volume
    share = ripening / total if total > 0 else math.nan
    if (total <= 0 or not np.isfinite(share)) and merges == 0 and vanishes == 0:
        mechanism: Mechanism = "no coarsening"
        reason = "no particle lost volume and no merge or vanish was seen"
    elif share >= ripening_share:
        mechanism = "ostwald ripening"
        reason = f"{share:.0%} of the lost particle volume went by shrinking in place ({vanishes} vanished, {merges} merges)"
    elif share <= coalescence_share:
        mechanism = "migration and coalescence"
        reason = f"{1 - share:.0%} of the lost particle volume went into {merges} merges of moving particles"
    else:
        mechanism = "mixed"
        reason = f"shrinking carried {share:.0%} and merges {1 - share:.0%} of the lost particle volume"
    del frames
    return Verdict(
        mechanism=mechanism,
        ripening_volume_nm3=ripening,
        coalescence_volume_nm3=merged_volume,
        ripening_share=share,
        merges=merges,
        vanishes=vanishes,
        merge_rate_per_s=float(merge_rate),
        vanish_rate_per_s=float(vanish_rate),
        diffusion_nm2_per_s=diffusion,
        rms_step_nm=rms_step,
        reason=reason,
    )


def _mobility(tracks: pd.DataFrame) -> tuple[float, float]:
    """Diffusion coefficient (MSD over consecutive frames / 4 dt) and RMS step."""
    if tracks.empty:
        return math.nan, math.nan
    t = tracks.sort_values(["particle", "frame"])
    same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
    df = np.diff(t["frame"].to_numpy())
    step = (np.diff(t["y"].to_numpy()) ** 2 + np.diff(t["x"].to_numpy()) ** 2)
    ok = same & (df == 1)
    if not ok.any():
        return math.nan, math.nan
    msd = float(np.mean(step[ok]))
    if "time" in t.columns:
        dt = float(np.median(np.diff(t["time"].to_numpy())[ok]))
    else:
        dt = 1.0
    return msd / (4.0 * dt) if dt > 0 else math.nan, math.sqrt(msd)
