"""Thresholds of the contrast: Otsu on a fixed histogram (the same counts lazily and eagerly), a
noise-based level when Otsu finds no particle class, and the faint-particle level.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

# Otsu works on a fixed histogram of the contrast (0.001 wide bins on [-1, 31]): the same
# counts from a dask reduction or from numpy, so lazy and eager thresholds are identical
_EDGES = np.linspace(-1.0, 31.0, 32001)
_CENTRES = 0.5 * (_EDGES[1:] + _EDGES[:-1])
# bright particles far above their support (a heavy metal on thin carbon) count in the top bin;
# the opposite contrast below -1 (vacuum twice as bright as the support in bright field) is no
# particle and does not enter the histogram
_TOP = np.float32(_CENTRES[-1])


def _clip_top(values: Any) -> Any:
    return da.minimum(values, _TOP) if isinstance(values, da.Array) else np.minimum(values, _TOP)


def _histogram(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    # the same counts as bins=_EDGES (numpy corrects its uniform-bin index against those very
    # edges), without sorting the values: a fifth of the time on a 1024^2 frame
    return np.histogram(_clip_top(values[np.isfinite(values)]), bins=len(_EDGES) - 1, range=(_EDGES[0], _EDGES[-1]))[0]


_MIN_SEPARATION = 0.25
_OPPOSITE_SPREADS = 4.0
_OUTLIER_SPREADS = 3.0
_NORMAL_TAIL = 0.00135  # a normal distribution's share beyond 3 standard deviations
_OUTLIER_EXCESS = 5.0
# with a population of blobs of the particles' contrast in the sampled frames, a tail 1.5 times the
# normal one is particles: measured 1.6-4.7 normal tails on real HAADF frames of small particles on
# porous or grainy supports (Cu3, Cu4, Ru2, Cu/silica, Pd/alumina), which the 5x rule left empty; the
# smoothed noise of a bare frame stays near 1x
_PRESENT_EXCESS = 1.5
_PRESENT_SIGNIFICANCE = 2.0
_FAINT_SPREADS = 5.0  # a component this many support spreads above its median is a particle (normal tail 3e-7)
# A particle class small against a broad support (noise and grain; particles on a few per cent
# of the frame) pulls Otsu's level into the support's own flank, 0.2-1.3 support spreads above
# its median: outlined there, the support's grain joined the particles, 2-14 times the true
# count on synthetic bright-field movies of 4 % area (benchmarks/bench_synthetic_counts.py). Where
# Otsu's split is taken, the outline sits at least _OUTLINE_SPREADS above the support's median,
# and an outlined component is a particle only if its peak reaches _SEED_SPREADS (hysteresis;
# the grain peaks at 1-3.5 spreads, particles at 4-7). 3.5 rather than 4: the same real
# bright-field IoU as before (msa-em, TEM-Seg) and the smaller loss on real HAADF images of
# grainy supports, whose faint particles peak near the relief (Ru4 F1 0.40 -> 0.10; PtW7 0.07 ->
# 0.43, its relief no longer outlined); docs/benchmarks.md
_OUTLINE_SPREADS = 1.5
_SEED_SPREADS = 3.5


def _support_level(counts: np.ndarray) -> tuple[float, float]:
    """The support's median contrast and its robust noise spread, from a histogram on ``_EDGES``."""
    cdf = np.cumsum(counts) / counts.sum()
    median = float(_CENTRES[min(int(np.searchsorted(cdf, 0.5)), len(_CENTRES) - 1)])
    low = float(_CENTRES[min(int(np.searchsorted(cdf, 0.1587)), len(_CENTRES) - 1)])
    # the particle-free side's spread, unless the opposite contrast (a hole's rim, thin support)
    # widens it: then the median absolute deviation, which neither tail moves much
    deviation = np.abs(_CENTRES - median)
    order = np.argsort(deviation, kind="stable")
    mad = float(deviation[order][min(int(np.searchsorted(np.cumsum(counts[order]) / counts.sum(), 0.5)), len(order) - 1)])
    return median, max(min(median - low, 1.4826 * mad), _CENTRES[1] - _CENTRES[0])


def _split(counts: np.ndarray, present: float = 0.0) -> tuple[float, bool, float, float]:
    """Otsu's level, or +inf when the histogram has no particle class; whether Otsu's split gave it; and
    the support's median and spread (:func:`_support_level`).

    Otsu always splits; on a bare support (or a blanked frame) it splits the
    one noise mode near its median. A particle class puts the level well
    above the median: at least a quarter of the background's one-sided spread
    (median minus 16th percentile, which the dark particles in the upper tail
    do not touch). Measured: -0.05..0 on bare support, 0.5..2.2 with
    particles at 3..40 % area fraction.

    Where Otsu finds no class, a level far out in the support's tail
    (``_OUTLIER_SPREADS`` spreads above its median) is taken when that tail
    holds ``_OUTLIER_EXCESS`` times what the support's own noise puts there,
    or, when ``present`` (the sampled frames showed a population of blobs of
    the particles' contrast; its value is the pixels per independent noise
    sample of the contrast, the smoothing's footprint), ``_PRESENT_EXCESS``
    times and significantly more than chance (``_PRESENT_SIGNIFICANCE``
    Poisson standard deviations of the tail's count in independent
    samples: a small frame of noise alone reaches 1.5 times): where small
    particles sit on a rough support (porous oxides, grains) or crowd the
    frame, the contrast is symmetric about the support's level and its
    spread is the support's relief, not its noise, so the particles' share
    of the tail is small; the blobs already say they are there.
    """
    counts = np.asarray(counts).reshape(-1)
    if np.count_nonzero(counts) < 2:
        return np.inf, False, np.nan, np.nan  # nothing to separate (blank or empty frames): no particles
    median, spread = _support_level(counts)
    # the opposite contrast, far below the support's noise, is never particle: left in, a hole's
    # rim would be the class Otsu separates from the rest
    counts = np.where(_CENTRES < median - _OPPOSITE_SPREADS * spread, 0, counts)
    if np.count_nonzero(counts) < 2:
        return np.inf, False, median, spread
    level = float(threshold_otsu(hist=(counts, _CENTRES)))
    if (level - median) >= _MIN_SEPARATION * spread:
        return level, True, median, spread
    # Otsu needs a particle class of some size; a few small particles on a rough support (HAADF)
    # are outliers of the support's distribution instead: a level far out in its tail, taken
    # when that tail holds many times what the support's own noise would put there
    outlier = median + _OUTLIER_SPREADS * spread
    above = counts[_CENTRES > outlier].sum() / counts.sum()
    if present > 0:
        samples = counts.sum() / present
        needed = max(_PRESENT_EXCESS * _NORMAL_TAIL, _NORMAL_TAIL + _PRESENT_SIGNIFICANCE * np.sqrt(_NORMAL_TAIL / samples))
    else:
        needed = _OUTLIER_EXCESS * _NORMAL_TAIL
    if above >= needed:
        return outlier, False, median, spread
    return np.inf, False, median, spread


def _levels(counts: np.ndarray, present: float = 0.0) -> dict[str, np.float32]:
    """The levels of one histogram (on ``_EDGES``); all +inf where it has no particle class.

    ``"otsu"``: :func:`_split`'s level. ``"outline"``: the particles' outline, Otsu's split at
    least ``_OUTLINE_SPREADS`` support spreads above its median (the tail rule's level, already
    three spreads out, as it is). ``"faint"``: the level of faint particles, ``_FAINT_SPREADS``
    support spreads above its median, at most the outline's. ``"seed"``: the level an outlined
    particle's peak must pass, ``_SEED_SPREADS`` spreads out, for Otsu's split only (the tail
    rule's level is itself an outlier test: the outline there).
    """
    level, by_otsu, median, spread = _split(counts, present)
    if not np.isfinite(level):
        return dict.fromkeys(("otsu", "outline", "faint", "seed"), np.float32(np.inf))
    outline = max(level, median + _OUTLINE_SPREADS * spread) if by_otsu else level
    seed = max(outline, median + _SEED_SPREADS * spread) if by_otsu else outline
    faint = min(outline, median + _FAINT_SPREADS * spread)
    return {"otsu": np.float32(level), "outline": np.float32(outline), "faint": np.float32(faint),
            "seed": np.float32(seed)}


def _level_from_histogram(counts: np.ndarray, kind: str, present: float = 0.0) -> np.float32:
    """One of :func:`_levels` (``kind``), from a histogram."""
    return _levels(counts, present)[kind]


def _level(values: np.ndarray, kind: str = "otsu", present: float = 0.0) -> np.float32:
    """One of :func:`_levels` (``kind``) of ``values``' histogram."""
    return _levels(_histogram(values), present)[kind]


def _level_per_frame(block: np.ndarray, kind: str = "otsu", present: float = 0.0) -> np.ndarray:
    return np.array([_level(frame, kind, present) for frame in block], dtype=np.float32)


def _second_levels(values: np.ndarray, present: float = 0.0) -> tuple[np.float32, np.float32, np.float32]:
    """The outline, faint and seed levels of ``values``, from one histogram."""
    levels = _levels(_histogram(values), present)
    return levels["outline"], levels["faint"], levels["seed"]


def _seeded(mask: np.ndarray, outline: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Per frame: ``mask`` less the components of ``outline`` that hold no ``seed`` pixel (hysteresis)."""
    mask = np.asarray(mask, dtype=bool)
    outline = np.asarray(outline, dtype=bool)
    seed = np.asarray(seed, dtype=bool)
    out = mask.copy()
    for k, frame in enumerate(outline):
        labels, n = ndi.label(frame)
        if n == 0:
            continue
        kept = np.zeros(n + 1, dtype=bool)
        kept[labels[seed[k] & frame]] = True
        kept[0] = True
        out[k] &= kept[labels]
    return out


def _with_faint(
    strong: np.ndarray,
    weak: np.ndarray,
    contrast: np.ndarray | None = None,
    *,
    min_area_px: float = 0.0,
    reach_px: int = 0,
) -> np.ndarray:
    """Per frame: ``strong``, and the components of ``weak`` that hold no ``strong`` pixel.

    Otsu's level sits between the classes' means: a few large bright particles
    (the HAADF signal grows with thickness) pull it above the small faint ones,
    which would stay support. Those are the components above the faint level
    (``_FAINT_SPREADS`` noise spreads of the support) that never reach Otsu's;
    a particle that does keeps its boundary at Otsu's level. A faint
    component smaller than ``min_area_px`` (the smoothing's own blob: noise
    and support grain shaped by the blur) is left out. A faint particle's
    boundary sits at the faint level, lower on its edge than half its height:
    about a pixel wide of the truth for a 3 px particle.

    Detection and outline are separate decisions: the faint level detects,
    but a particle whose height in ``contrast`` is less than twice the level
    would be outlined near its top, where the pixel noise the smoothing
    leaves draws a ragged sliver that the neck cut of ``label_particles``
    breaks into several particles (real HAADF, PtC3: 15-20 px particles 5-7
    support spreads high; 14 of its 18 false detections were such pieces).
    Such a component is outlined at half its height instead: its height is
    the median of its pixels (above the faint level) over the support, whose
    contrast is 0 by construction, and the outline the pixels above half of
    it connected to the component, within ``reach_px`` of its box. Where that
    outline does not close within the reach (support relief), or joins
    another component of ``weak``, the component keeps its faint-level
    outline. A component higher than twice the level keeps it too (half its
    height would lie inside it), and so does every component with
    ``contrast`` None or ``reach_px`` 0.
    """
    strong = np.asarray(strong, dtype=bool)
    out = strong.copy()
    for k, frame in enumerate(np.asarray(weak, dtype=bool)):
        labels, n = ndi.label(frame)
        if n == 0:
            continue
        reached = np.bincount(labels.ravel(), minlength=n + 1) < min_area_px
        reached[np.unique(labels[strong[k]])] = True
        reached[0] = True
        out[k] |= ~reached[labels]
        if contrast is not None and reach_px > 0:
            _outline_at_half_height(out[k], frame, labels, ~reached, np.asarray(contrast[k]), int(reach_px))
    return out


def _outline_at_half_height(
    out: np.ndarray, weak: np.ndarray, labels: np.ndarray, faint: np.ndarray, contrast: np.ndarray, reach_px: int
) -> None:
    """Grows ``out`` (one frame, in place) to the half-height outline of the faint components (see ``_with_faint``).

    ``labels``: the components of ``weak``; ``faint``: per label, whether the component is a faint particle.
    """
    if not faint.any():
        return
    # each component's pixels sorted by contrast, component by component: its lowest pixel, its
    # median and its box from its own pixels only (scipy's per-label statistics sort the whole frame)
    where = np.flatnonzero(weak)  # a boolean frame: a quarter of the memory the labels would take to scan
    which = labels.ravel()[where]
    where = where[faint[which]]
    which = which[faint[which]]
    values = contrast.ravel()[where]
    order = np.lexsort((values, which))
    where, which, values = where[order], which[order], values[order]
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    sizes = np.diff(np.r_[starts, len(which)])
    # the particle's height: the median of its pixels above the faint level. Their maximum is the
    # highest noise excursion on its top, which lifts the outline inside the particle (flat 10 px
    # particles at 7 smoothed-noise spreads: 0.67-0.82 of their area with it, 0.83-0.92 with the median)
    half = values[starts + sizes // 2] / 2.0
    # only the components whose half height lies below their own lowest pixel (the faint level):
    # for the others, half height would shrink the outline inside the faint level's
    lowered = half < values[starts]
    if not lowered.any():
        return
    ny, nx = labels.shape
    rows, cols = np.divmod(where, nx)
    top, bottom = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts)
    left, right = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts)
    for k in np.flatnonzero(lowered):
        y0, y1 = max(int(top[k]) - reach_px, 0), min(int(bottom[k]) + 1 + reach_px, ny)
        x0, x1 = max(int(left[k]) - reach_px, 0), min(int(right[k]) + 1 + reach_px, nx)
        window = labels[y0:y1, x0:x1]
        seed = window == which[starts[k]]
        grown, _ = ndi.label(contrast[y0:y1, x0:x1] > half[k])  # NaN (outside the recorded area) is never above
        region = np.isin(grown, np.unique(grown[seed]))
        # the window's sides that are not the frame's: an outline reaching one has not closed
        edge = np.zeros(region.shape, dtype=bool)
        edge[0, :], edge[-1, :] = y0 > 0, y1 < ny
        edge[:, 0] |= x0 > 0
        edge[:, -1] |= x1 < nx
        # open at the reach (support relief), or into another particle (another component of the weak
        # mask; a strong particle is one too, Otsu's level being above the faint one): the faint-level
        # outline stays
        if (region & edge).any() or (region & (window > 0) & ~seed).any():
            continue
        out[y0:y1, x0:x1] |= region
