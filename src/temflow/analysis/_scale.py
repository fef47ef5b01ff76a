"""What the sample looks like: particle polarity and size, from a few frames.

Used by :func:`temflow.analysis.threshold.threshold_particles` when
``particles="auto"`` or a length is left to the sample. Scale-space blob
detection (Lindeberg 1998): the scale-normalised Laplacian of Gaussian
``-sigma^2 * LoG`` of a disk of radius ``r`` peaks at ``sigma = r / sqrt(2)``,
at its centre, whatever the pixel size; its sign says whether the blob is
brighter or darker than its surroundings. Edges of large regions (vacuum,
holes, thick support) give responses of both signs in equal measure and keep
growing with the scale, so they do not tip the balance between the two
polarities and are not blobs of any scale below the largest tried. The
scale of a blob is not yet the particle's radius: an HAADF particle peaks in
its thick middle and the support's own structure favours small scales, so
the radius is measured at each strong blob's half height as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

Polarity = Literal["dark", "bright"]

_CROP = 384  # px: the estimate looks at a central crop this large (cost independent of the frame size)
_MIN_SIGMA = 1.0
_SCALES_PER_OCTAVE = 4
_PEAK_SNR = 5.0
_P30_OF_ABS_NORMAL = 0.3853  # 30th percentile of |z| for a standard normal z
_DECISIVE = 1.5  # one contrast's blobs must score this many times the other's to decide alone...
_EVIDENCE = 20.0  # ...and the blobs of both together this much (a few faint blobs in heavy noise do not)  # a blob's response must stand this many noise standard deviations above zero

# detector and mode words that fix the contrast (Velox, TIA, DigitalMicrograph, JEOL names)
_BRIGHT_WORDS = {"HAADF", "ADF", "MAADF", "LAADF", "DF", "DF2", "DF4", "DFS", "DARKFIELD", "HAADF1", "ADF1"}
_DARK_WORDS = {"BF", "BRIGHTFIELD", "CETA", "ONEVIEW", "K2", "K3", "ORIUS", "ULTRASCAN", "FALCON", "METRO", "RIO"}
_METADATA_KEYS = ("detector", "signal", "camera", "mode", "imaging_mode", "operation_mode", "acquisition")


def polarity_from_metadata(attrs: Mapping[str, Any]) -> tuple[Polarity | None, str]:
    """The particles' contrast that the file's detector or mode implies, if any.

    HAADF, ADF and DF detectors see particles bright (heavy atoms scatter to
    high angles); BF detectors and TEM cameras see them dark (they remove
    electrons from the beam). A STEM mode alone says nothing (BF or ADF).

    Returns
    -------
    (polarity or None, reason)
    """
    sources: list[tuple[str, str]] = []
    instrument = attrs.get("instrument")
    for where in (attrs, instrument if isinstance(instrument, Mapping) else {}):
        for key, value in where.items():
            if isinstance(value, str) and any(word in str(key).lower() for word in _METADATA_KEYS):
                sources.append((str(key), value))
    for key, value in sources:
        words = set(re.split(r"[^A-Z0-9]+", value.upper().replace("DARK FIELD", "DARKFIELD").replace("BRIGHT FIELD", "BRIGHTFIELD")))
        if words & _BRIGHT_WORDS:
            return "bright", f"the file's {key} is {value!r} (annular dark field: particles bright)"
        if words & _DARK_WORDS:
            return "dark", f"the file's {key} is {value!r} (bright field: particles dark)"
    for key, value in sources:
        words = set(re.split(r"[^A-Z0-9]+", value.upper()))
        if "TEM" in words and not words & {"STEM", "SCANNING"}:
            return "dark", f"the file's {key} is {value!r} (TEM imaging on a camera: particles dark)"
    return None, "the file names no detector or mode that fixes the contrast"


_MIN_CROPS = 4  # a frame much larger than a crop is looked at in this many crops spread over it


def _crop_corners(recorded: np.ndarray) -> list[tuple[int, int, int]]:
    """(frame, y0, x0) of the crops looked at: one per frame, at least ``_MIN_CROPS`` in all.

    A central crop of a large frame (2048^2) holds only a few particles of 20 px when they
    are sparse, too few to be a population: the crops are spread over the frame instead,
    the frames taking turns, so that the cost stays that of ``_MIN_CROPS`` crops at most.
    Of the candidate places those most recorded are taken (a corner of vacuum or of black
    border shows nothing but noise).
    """
    n_frames, ny, nx = recorded.shape
    cy, cx = max((ny - _CROP) // 2, 0), max((nx - _CROP) // 2, 0)
    if ny < 2 * _CROP and nx < 2 * _CROP:
        return [(k, cy, cx) for k in range(n_frames)]
    count = max(n_frames, _MIN_CROPS)
    side = int(math.ceil(math.sqrt(count))) + 1
    ys = np.linspace(0, max(ny - _CROP, 0), side).round().astype(int)
    xs = np.linspace(0, max(nx - _CROP, 0), side).round().astype(int)
    corners = []
    for k in range(n_frames):
        spots = [(int(y), int(x)) for y in ys for x in xs]
        filled = [float(recorded[k, y : y + _CROP, x : x + _CROP].mean()) for y, x in spots]
        order = np.argsort(-np.asarray(filled), kind="stable")
        corners.append([(k, *spots[j]) for j in order])
    # the frames take turns, each giving its next most recorded place
    return [corners[i % n_frames][i // n_frames] for i in range(count)]


def _frames_for_estimate(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crops (see ``_crop_corners``), normalised by their median, NaN (outside the recorded area) set to the median; and where finite."""
    corners = _crop_corners(np.isfinite(frames))
    crop = np.stack([np.asarray(frames[k, y0 : y0 + _CROP, x0 : x0 + _CROP], dtype=np.float64) for k, y0, x0 in corners])
    out = np.empty_like(crop)
    for k, frame in enumerate(crop):
        finite = np.isfinite(frame)
        level = float(np.median(frame[finite])) if finite.any() else 0.0
        scale = level if level > 0 else (float(np.std(frame[finite])) if finite.any() else 1.0) or 1.0
        out[k] = np.where(finite, frame, level) / scale
    return out, np.isfinite(crop)


def _strongest_apart(strength: np.ndarray, y: np.ndarray, x: np.ndarray, radius: np.ndarray) -> list[int]:
    """Indices of the blobs that no stronger blob covers (noise and texture peaks on a particle)."""
    from scipy.spatial import cKDTree

    order = np.argsort(-strength)
    points = np.column_stack([y, x]).astype(float)
    tree = cKDTree(points) if len(points) else None
    covered = np.zeros(len(points), dtype=bool)
    kept = []
    for i in order:
        if covered[i]:
            continue
        kept.append(int(i))
        assert tree is not None
        covered[tree.query_ball_point(points[i], radius[i])] = True
    return kept


_MIN_BLOBS = 5
_STRONG = 0.5  # blobs weaker than this fraction of the strong ones (90th percentile) do not set the scale


_FEW_BLOBS = 3
_LARGE_PX = 8.0


def _typical_radius(radii: list[float], strengths: list[float]) -> float | None:
    """Strength-weighted median radius of the strong blobs: texture and noise bumps are many but faint.

    Fewer than ``_MIN_BLOBS`` strong blobs, but ``_FEW_BLOBS`` or more blobs of a radius
    of ``_LARGE_PX`` or more: a few large particles fill the crop (a 512^2 crop holds a
    handful of 30 px particles), and a few noise bumps may be as strong as they are; the
    median of the large blobs weighted by strength then. Small particles, in a crop of the
    same size, would be many: a few small blobs are no population.
    """
    if not radii:
        return None
    values, weights = np.asarray(radii), np.asarray(strengths)
    strong = weights >= _STRONG * np.percentile(weights, 90)
    if np.count_nonzero(strong) >= _MIN_BLOBS:
        return _weighted_median(values[strong].tolist(), weights[strong].tolist())
    large = values >= _LARGE_PX
    if np.count_nonzero(large) >= _FEW_BLOBS:
        return _weighted_median(values[large].tolist(), weights[large].tolist())
    return None  # too few to be a population of particles: no scale rather than a noise bump's


def support_texture(found: Mapping[str, Any], polarity: str) -> str | None:
    """Why the frames' texture may pass for particles, or None.

    Where the blobs of both contrasts score alike (neither reaches ``_DECISIVE``
    times the other) and both have a measurable edge, the support has blobs of
    its own - the pores and grains of a porous oxide in HAADF, a rough film -
    and a threshold at the particles' scale outlines them too: on the real
    HAADF images of ``benchmarks/bench_real_segmentation.py`` every porous-oxide
    image (precision 0.01-0.05) and the Pt/W-carbon images (precision 0.4-0.7)
    meet this, the images of particles on smooth or grainy supports
    (precision 0.7-1.0) do not.

    Parameters
    ----------
    found
        The result of :func:`estimate_particles`.
    polarity
        The particles' contrast used, ``"dark"`` or ``"bright"``.

    Returns
    -------
    str or None
        A sentence with the scores and the edge radii (px), or None.
    """
    other = "dark" if polarity == "bright" else "bright"
    score, rival = float(found["score"][polarity]), float(found["score"][other])
    edge, rival_edge = found["edge_radius_px"][polarity], found["edge_radius_px"][other]
    if score <= 0 or rival <= 0 or edge is None or rival_edge is None:
        return None
    if max(score, rival) >= _DECISIVE * min(score, rival):
        return None
    return (
        f"blobs of the opposite contrast ({other}) score like the particles' ({rival:.3g} against {score:.3g}) "
        f"and have edges of their own (radius {rival_edge:.2g} px against {edge:.2g} px): the support's own "
        "texture (pores, grains) looks like particles at this scale"
    )


def _weighted_median(values: list[float], weights: list[float]) -> float:
    """The value below which half the total weight lies: strong blobs count more than faint ones."""
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(values)[order][int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))])


_EDGE_SMOOTH_PX = 1.0
_EDGE_REACH = 3.0  # the support level around a blob of radius r is read at 2 r .. 3 r
_EDGE_SUPPORT_PERCENTILE = 20.0
_EDGE_BLOBS = 200  # the strongest blobs of a crop whose edge is measured
_EDGE_MIN_SCALE = 2  # blobs of the two finest scales (radius below 2 px) are not measured: see below


def _edge_radius(smooth: np.ndarray, inside: np.ndarray, y: int, x: int, blob_px: float, sign: float) -> float | None:
    """Equivalent radius (px) of the blob at ``(y, x)``: its area above half its height.

    The Laplacian of Gaussian peaks at ``sigma = r / sqrt(2)`` for a flat disk,
    but at a smaller scale for a particle whose signal peaks in its middle (an
    HAADF sphere's projected thickness), and the scale of best signal-to-noise
    ratio is smaller still where the support has structure of its own. The
    half-height contour is where a threshold puts the particle's edge, for any
    profile: the support level is read on a ring of 2 .. 3 blob radii (its
    lower 20 % for bright blobs, upper for dark: neighbours lie on the ring's
    other side), the height at the centre.
    """
    reach = int(math.ceil(_EDGE_REACH * blob_px)) + 1
    y0, y1 = max(y - reach, 0), min(y + reach + 1, smooth.shape[0])
    x0, x1 = max(x - reach, 0), min(x + reach + 1, smooth.shape[1])
    window = sign * smooth[y0:y1, x0:x1]
    valid = inside[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    rho = np.hypot(yy - y, xx - x)
    ring = valid & (rho >= 2.0 * blob_px) & (rho <= _EDGE_REACH * blob_px)
    if np.count_nonzero(ring) < 8:  # noqa: PLR2004 (too little of the ring recorded)
        return None
    support = float(np.percentile(window[ring], _EDGE_SUPPORT_PERCENTILE))
    peak = float(window[y - y0, x - x0])
    if not peak > support:
        return None
    above, _ = ndi.label(valid & (window > 0.5 * (peak + support)))
    own = above == above[y - y0, x - x0]
    if own[0].any() or own[-1].any() or own[:, 0].any() or own[:, -1].any():
        return None  # runs out of the window: joined to a neighbour or to a region, no edge of its own
    return float(math.sqrt(np.count_nonzero(own) / math.pi))


def estimate_particles(frames: np.ndarray, *, recorded: np.ndarray | None = None) -> dict[str, Any]:
    """Polarity and typical radius of the blobs in a few frames.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(n, y, x)`` intensities; NaN or ``recorded == False`` outside the
        recorded area.
    recorded : numpy.ndarray, optional
        Boolean, True inside the recorded area.

    Returns
    -------
    dict
        ``polarity`` (``"dark"``/``"bright"`` or None when neither has blobs),
        ``radius_px`` ``{"dark": r, "bright": r}`` (the blobs' radius, px,
        weighted median by strength; None without blobs),
        ``edge_radius_px`` ``{"dark": r, "bright": r}`` (the blobs'
        half-height radius, px, the particle's edge whatever its profile;
        None when fewer than five blobs of 2 px or more have a measurable
        edge),
        ``blobs`` ``{"dark": n, "bright": n}``, ``score`` ``{"dark": s,
        "bright": s}`` (sum of the blobs' signal-to-noise ratios), ``skew``
        (of the intensity histogram, from its 5th, 50th and 95th percentiles;
        decides when the scores are within a factor ``_DECISIVE`` or sum to
        less than ``_EVIDENCE``), ``frames``.
    """
    data = np.asarray(frames, dtype=np.float64)
    if recorded is not None:
        data = np.where(recorded, data, np.nan)
    crops, finite = _frames_for_estimate(data)
    side = min(crops.shape[1:])
    max_sigma = max(_MIN_SIGMA * 2, side / 10.0)
    n_scales = int(math.floor(_SCALES_PER_OCTAVE * math.log2(max_sigma / _MIN_SIGMA))) + 1
    sigmas = _MIN_SIGMA * 2.0 ** (np.arange(n_scales) / _SCALES_PER_OCTAVE)
    radii: dict[str, list[float]] = {"bright": [], "dark": []}
    weights: dict[str, list[float]] = {"bright": [], "dark": []}
    edges: dict[str, list[float]] = {"bright": [], "dark": []}
    edge_weights: dict[str, list[float]] = {"bright": [], "dark": []}
    score = {"bright": 0.0, "dark": 0.0}
    for crop, inside in zip(crops, finite):
        if inside.sum() < 64:
            continue
        # (scale, y, x) stack of -sigma^2 LoG: bright blobs positive, dark negative
        stack = np.stack([-(s**2) * ndi.gaussian_laplace(crop, s, mode="nearest") for s in sigmas])
        # the noise of each scale's response, over the recorded pixels (the flat filling
        # outside would make it look noiseless)
        values = stack[:, inside]
        # the 30th percentile of the absolute deviation, not the median: at the particles' own
        # scale the particles cover much of the frame and would make themselves the "noise"
        deviation = np.abs(values - np.median(values, axis=1, keepdims=True))
        spread = np.percentile(deviation, 30, axis=1) / _P30_OF_ABS_NORMAL
        # a blob's kernel must not reach the unrecorded area (the step to the filling is no blob)
        clear = ndi.distance_transform_edt(inside) if not inside.all() else np.full(inside.shape, np.inf)
        near_outside = clear[None] <= 2.0 * sigmas[:, None, None]
        snr = stack / np.maximum(spread, 1e-12)[:, None, None]
        smooth = ndi.gaussian_filter(crop, _EDGE_SMOOTH_PX, mode="nearest")
        for name, sign in (("bright", 1.0), ("dark", -1.0)):
            signed = sign * snr
            peaks = (signed == ndi.maximum_filter(signed, size=(3, 3, 3), mode="nearest")) & (signed > _PEAK_SNR)
            peaks[-1] = False  # still growing at the largest scale: an edge or a region, not a blob
            peaks[:, :2, :] = peaks[:, -2:, :] = peaks[:, :, :2] = peaks[:, :, -2:] = False
            peaks &= ~near_outside
            k, y, x = np.nonzero(peaks)
            strength = sign * stack[k, y, x]  # scale-normalised: comparable across scales
            kept = _strongest_apart(strength, y, x, sigmas[k] * math.sqrt(2.0))
            for index in kept:
                radii[name].append(float(sigmas[k[index]] * math.sqrt(2.0)))
                weights[name].append(float(strength[index]))
                score[name] += float(signed[k[index], y[index], x[index]] - _PEAK_SNR)
            # strongest first; not those of the finest scale, which pixel noise and JPEG blocks
            # reach too (a particle that small has no edge to measure either)
            for index in [i for i in kept if k[i] >= _EDGE_MIN_SCALE][:_EDGE_BLOBS]:
                edge = _edge_radius(smooth, inside, int(y[index]), int(x[index]), float(sigmas[k[index]] * math.sqrt(2.0)), sign)
                if edge is not None:
                    edges[name].append(edge)
                    edge_weights[name].append(float(strength[index]))
    polarity: Polarity | None = None
    # the histogram of the whole recorded frames, not of the crops: where the blobs of both
    # contrasts score alike (a rough support), the crops' few particles barely tip it
    # (PtW1: skew -0.05 on four crops, +0.30 on the frame); every pixel up to 1024^2
    step = max(1, int(math.ceil(max(data.shape[1:]) / 1024)))
    sampled = data[:, ::step, ::step]
    finite_values = sampled[np.isfinite(sampled)]
    p5, p50, p95 = np.percentile(finite_values, [5, 50, 95]) if finite_values.size else (0.0, 0.0, 0.0)
    # the particles are the minority: the tail of the histogram is on their side
    skew = float((p95 + p5 - 2 * p50) / (p95 - p5)) if p95 > p5 else 0.0
    if score["bright"] > 0 or score["dark"] > 0:
        decisive = max(score.values()) >= _DECISIVE * min(score.values()) and sum(score.values()) >= _EVIDENCE
        if decisive or skew == 0:
            polarity = "bright" if score["bright"] > score["dark"] else "dark"
        else:
            # close or weak scores (the gaps between touching particles are blobs of the
            # opposite contrast; heavy noise leaves few blobs): the histogram's tail decides
            polarity = "bright" if skew > 0 else "dark"
    radius = {name: _typical_radius(radii[name], weights[name]) for name in radii}
    # every measured edge counts (weighted by strength): the measurement already skips what has
    # no edge of its own, and the strongest blobs are few where particles are large and sparse
    edge_radius = {
        name: _weighted_median(edges[name], edge_weights[name]) if len(edges[name]) >= _MIN_BLOBS else None for name in radii
    }
    return {
        "polarity": polarity,
        "radius_px": radius,
        "edge_radius_px": edge_radius,
        "blobs": {name: len(values) for name, values in radii.items()},
        "score": {name: round(value, 1) for name, value in score.items()},
        "skew": round(skew, 3),
        "frames": int(len(crops)),
    }
