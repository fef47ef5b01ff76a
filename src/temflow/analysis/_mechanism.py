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

Mechanism = Literal["ostwald ripening", "migration and coalescence", "mixed", "no coarsening", "insufficient evidence"]


@dataclass(frozen=True)
class Verdict:
    """Why the particles coarsen, with the numbers behind it, or "insufficient evidence".

    Attributes
    ----------
    mechanism : str
        "ostwald ripening", "migration and coalescence", "mixed", "no coarsening"
        or "insufficient evidence".
    ripening_volume_nm3 : float
        Volume lost by particles dissolving in place (vanished particles' largest
        volume plus survivors' significant net loss), nm^3.
    coalescence_volume_nm3 : float
        Volume of the particles absorbed in merges, nm^3.
    ripening_share : float
        ``ripening / (ripening + coalescence)``; NaN when both are 0.
    ripening_share_low, ripening_share_high : float
        Its 95 % interval, from a bootstrap over particles.
    merges, vanishes : int
        Number of merge and vanish events (Poisson uncertainty ``sqrt``).
    shrinking, growing : int
        Surviving particles that lost (gained) volume beyond their measurement scatter.
    appears, splits : int
        The reverse events: in coarsening they are segmentation flicker, so
        they are subtracted from vanishes and merges before either counts as evidence.
    merge_rate_per_s, vanish_rate_per_s : float
        Events per particle per second (per mean particle count and the duration).
    diffusion_nm2_per_s : float
        Mobility: the mean squared displacement over one frame / (4 dt), nm^2/s.
    rms_step_nm : float
        RMS displacement between consecutive frames, nm.
    reason : str
        One sentence explaining the verdict, with its evidence.
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
    ripening_share_low: float = math.nan
    ripening_share_high: float = math.nan
    shrinking: int = 0
    growing: int = 0
    appears: int = 0
    splits: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a plain dict."""
        return asdict(self)


_ENDS = 3  # frames in a track's running median and at each of its ends
_SIGNIFICANT = 3.0  # a survivor's loss counts when above this many standard errors of its end medians
_COARSENS = 2.0  # the mean volume must rise by this many standard errors for any mechanism to be named


def _volume(diameter: np.ndarray) -> np.ndarray:
    # a particle seen from above as a disk of this diameter: a sphere's volume
    return np.pi / 6.0 * np.asarray(diameter, float) ** 3


def coarsening_mechanism(
    tracks: pd.DataFrame,
    events: pd.DataFrame,
    *,
    ripening_share: float = 0.7,
    coalescence_share: float = 0.3,
    min_events: int = 5,
    min_frames: int = 10,
    confidence: float = 0.95,
    resamples: int = 500,
    rng: np.random.Generator | int | None = 0,
) -> Verdict:
    """Decide between Ostwald ripening and migration-and-coalescence, or say the data cannot.

    The two mechanisms move particle volume differently. In ripening atoms
    leave small particles, which shrink (and vanish) in place while others
    grow; in coalescence whole particles move and are absorbed by a neighbour
    at once. So the evidence is where the lost volume goes:

    * ripening volume - the largest volume of every particle that vanished
      (all of it left atom by atom), plus the net loss of every surviving
      particle between the medians of its first and last three frames, when
      that loss exceeds three standard errors of those medians (the track's
      own frame-to-frame scatter): segmentation noise is not shrinkage;
    * coalescence volume - the volume of every particle absorbed in a merge,
      in the frame before.

    Every particle contributes to one side, so a bootstrap over particles gives
    the ripening share's ``confidence`` interval. The verdict is "ostwald
    ripening" when the whole interval is at or above ``ripening_share`` and at
    least ``min_events`` vanishes or shrinking particles carry it, "migration
    and coalescence" when the interval is at or below ``coalescence_share``
    with at least ``min_events`` merges (appearances are subtracted from
    vanishes and splits from merges first, and the excess must exceed two
    Poisson standard deviations: coarsening has no reverse events, so as many
    of them as of the forward ones means segmentation flicker), "mixed" when it lies between them with
    ``min_events`` of each, "no coarsening" when nothing was lost and nothing
    happened, each only over at least ``min_frames`` frames, and otherwise
    "insufficient evidence" with the numbers. Every verdict of a mechanism also
    needs the particles to coarsen: their mean volume (per distinct particle)
    must rise from the first to the last quarter of the frames by more than
    two standard errors, or particles must be removed (vanishes and merges in
    significant excess of appearances and splits) without the mean volume
    falling by two standard errors; a population that does not coarsen gives
    "insufficient evidence" whatever its events. Merge and vanish rates and the
    particles' mobility (MSD) are reported alongside.

    Parameters
    ----------
    tracks : pandas.DataFrame
        From :func:`temflow.analysis.track.link` (``frame``, ``time``, ``y``, ``x``,
        ``particle``, ``equivalent_diameter``, ``touches_border``).
    events : pandas.DataFrame
        From :func:`temflow.analysis.track.find_events`.
    ripening_share, coalescence_share : float
        Decision thresholds on the ripening share of the lost volume.
    min_events : int
        Events (or shrinking particles) a verdict needs behind it.
    min_frames : int
        Frames with particles any verdict needs.
    confidence : float
        Coverage of the share's interval.
    resamples : int
        Bootstrap resamples.
    rng : numpy.random.Generator, int or None
        Seed of the bootstrap.

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
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence!r}")
    border = tracks["touches_border"].to_numpy(bool) if "touches_border" in tracks.columns else np.zeros(len(tracks), bool)
    inside = tracks[~border].sort_values(["particle", "frame"])
    volume = _volume(inside["equivalent_diameter"].to_numpy())
    inside = inside.assign(_v=volume)
    vanished = set(events.loc[events["event"] == "vanish", "particle"].astype(int))
    absorbed = {int(p) for merged in events.loc[events["event"] == "merge", "merged"] for p in merged}
    lost_ripening: list[float] = []
    lost_merging: list[float] = []
    shrinking = 0
    growing = 0
    for pid, track in inside.groupby("particle"):
        v = track["_v"].to_numpy()
        # running median over three frames: a frame where segmentation joined two neighbours
        # (or lost half a particle) is neither growth nor loss
        smooth = pd.Series(v).rolling(_ENDS, center=True, min_periods=1).median().to_numpy()
        if int(pid) in absorbed:
            lost_merging.append(float(v[-1]))
            lost_ripening.append(0.0)
        elif int(pid) in vanished:
            lost_ripening.append(float(smooth.max()))  # dissolved: all it ever held left atom by atom
            lost_merging.append(0.0)
        else:
            loss = float(np.median(v[:_ENDS]) - np.median(v[-_ENDS:]))
            scatter = 1.4826 * float(np.median(np.abs(v - smooth))) if len(v) >= _ENDS else math.inf
            # the standard error of a median of three, both ends
            error = 1.25 * scatter * math.sqrt(2.0 / _ENDS)
            significant = len(v) >= 2 * _ENDS and loss > _SIGNIFICANT * max(error, 1e-12)
            shrinking += int(significant)
            growing += int(len(v) >= 2 * _ENDS and -loss > _SIGNIFICANT * max(error, 1e-12))
            lost_ripening.append(loss if significant else 0.0)
            lost_merging.append(0.0)
    ripening = float(np.sum(lost_ripening))
    merged_volume = float(np.sum(lost_merging))
    merges = int((events["event"] == "merge").sum())
    vanishes = int((events["event"] == "vanish").sum())
    appears = int((events["event"] == "appear").sum())
    splits = int((events["event"] == "split").sum())
    times = tracks.groupby("frame")["time"].first() if "time" in tracks.columns else pd.Series(dtype=float)
    frames = int(tracks["frame"].nunique()) if len(tracks) else 0
    duration = float(times.max() - times.min()) if len(times) > 1 else math.nan
    mean_count = float(tracks.groupby("frame").size().mean()) if len(tracks) else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        merge_rate = merges / (mean_count * duration) if duration and mean_count else math.nan
        vanish_rate = vanishes / (mean_count * duration) if duration and mean_count else math.nan
    diffusion, rms_step = _mobility(inside)
    total = ripening + merged_volume
    share = ripening / total if total > 0 else math.nan
    low, high = _share_interval(np.asarray(lost_ripening), np.asarray(lost_merging), confidence, resamples, rng)
    counts = (
        f"{vanishes} vanished against {appears} appeared, {shrinking} shrinking and {growing} growing, "
        f"{merges} merges against {splits} splits"
    )
    interval = f"{share:.0%} ({confidence:.0%} interval {low:.0%}-{high:.0%})"
    # appearances and splits do not happen in coarsening: as many of them as of vanishes and
    # merges means the events are segmentation flicker. Evidence is the excess, beyond two
    # Poisson standard deviations of the sum.
    dissolving = _excess(vanishes + shrinking, appears)
    merging = _excess(merges, splits)
    growth, growth_error = _mean_volume_change(inside)
    # coarsening removes particles (vanishes, merges beyond their reverse) and raises the mean
    # volume; either, without the mean volume falling, is enough
    removing = _excess(vanishes + merges, appears + splits) > 0
    coarsens = growth > _COARSENS * growth_error or (removing and growth > -_COARSENS * growth_error)
    mechanism: Mechanism
    if total <= 0 and merges == 0 and vanishes == 0:
        if frames >= min_frames:
            mechanism = "no coarsening"
            reason = f"no particle lost volume beyond its measurement scatter and no merge or vanish was seen in {frames} frames"
        else:
            mechanism = "insufficient evidence"
            reason = f"nothing was lost and nothing happened, but {frames} frames are too few to say there is no coarsening (at least {min_frames})"
    elif frames < min_frames:
        mechanism = "insufficient evidence"
        reason = f"only {frames} frames with particles; a verdict needs at least {min_frames} ({counts})"
    elif coarsens and low >= ripening_share and dissolving >= min_events:
        mechanism = "ostwald ripening"
        reason = f"shrinking in place carried {interval} of the lost particle volume ({counts})"
    elif coarsens and high <= coalescence_share and merging >= min_events:
        mechanism = "migration and coalescence"
        reason = f"merges of moving particles carried {1 - share:.0%} of the lost particle volume (ripening share {interval}; {counts})"
    elif coarsens and coalescence_share < low and high < ripening_share and merging >= min_events and dissolving >= min_events:
        mechanism = "mixed"
        reason = f"shrinking carried {interval} of the lost particle volume and merges the rest ({counts})"
    elif not coarsens:
        mechanism = "insufficient evidence"
        change = (
            f"changed by {growth:+.0%} ± {growth_error:.0%}" if np.isfinite(growth) and np.isfinite(growth_error)
            else "could not be measured (too few particles)"
        )
        reason = (
            f"the particles do not coarsen measurably: their mean volume {change} "
            f"from the first to the last quarter of the movie and the events ({counts}) remove no more particles "
            "than they add back, so they are no evidence of a mechanism"
        )
    else:
        mechanism = "insufficient evidence"
        decided = low >= ripening_share or high <= coalescence_share or (coalescence_share < low and high < ripening_share)
        if decided:
            reason = (
                f"the ripening share of the lost volume is {interval}, but too few events back it beyond their "
                f"reverse (flicker): {counts}; a verdict needs an excess of {min_events}"
            )
        else:
            reason = f"the ripening share of the lost volume is {interval}, an interval that spans the thresholds ({counts})"
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
        ripening_share_low=low,
        ripening_share_high=high,
        shrinking=shrinking,
        growing=growing,
        appears=appears,
        splits=splits,
    )


def _mean_volume_change(inside: pd.DataFrame) -> tuple[float, float]:
    """Relative change of the mean particle volume, first to last quarter of the frames, and its standard error.

    Coarsening, by either mechanism, conserves volume and removes particles:
    the mean volume per particle must rise. The error counts distinct
    particles, not rows (the same particle in many frames is one sample).
    """
    frames = np.unique(inside["frame"].to_numpy()) if len(inside) else np.zeros(0, int)
    if frames.size < 2:
        return math.nan, math.nan
    quarter = max(frames.size // 4, 1)
    first = inside[inside["frame"].isin(frames[:quarter])]
    last = inside[inside["frame"].isin(frames[-quarter:])]

    def mean_and_error(rows: pd.DataFrame) -> tuple[float, float]:
        per_particle = rows.groupby("particle")["_v"].mean()
        if len(per_particle) < 2:
            return float(per_particle.mean()) if len(per_particle) else math.nan, math.inf
        return float(per_particle.mean()), float(per_particle.std(ddof=1) / math.sqrt(len(per_particle)))

    m0, e0 = mean_and_error(first)
    m1, e1 = mean_and_error(last)
    if not (np.isfinite(m0) and m0 > 0 and np.isfinite(m1)):
        return math.nan, math.nan
    change = m1 / m0 - 1.0
    error = math.hypot(e1 / m0, m1 * e0 / m0**2)
    return change, error


def _excess(forward: int, reverse: int) -> int:
    """Events beyond their reverse, when significant (two Poisson standard deviations), else 0."""
    net = forward - reverse
    return net if net > 2.0 * math.sqrt(forward + reverse) else 0


def _share_interval(
    ripening: np.ndarray, merging: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator | int | None
) -> tuple[float, float]:
    """Interval of the ripening share from resampling particles (each holds its lost volume on one side)."""
    if ripening.size == 0 or (ripening.sum() + merging.sum()) <= 0:
        return math.nan, math.nan
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    weights = generator.multinomial(ripening.size, np.full(ripening.size, 1.0 / ripening.size), size=int(resamples))
    r, m = weights @ ripening, weights @ merging
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = r / (r + m)
    shares = shares[np.isfinite(shares)]
    if shares.size < 10:
        return math.nan, math.nan
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(shares, [tail, 100.0 - tail])
    return float(lo), float(hi)


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
