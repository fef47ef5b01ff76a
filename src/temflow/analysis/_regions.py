"""Regions that are not particles: vacuum and holes of the opposite contrast, support bodies
thicker than any particle, and the size bounds on what is kept.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from temflow.analysis._filters import _morph_disk, _normalised_gaussian, _window

def _may_be_thick(frame: np.ndarray, max_thickness_px: float) -> bool:
    """False when no pixel of ``frame`` is farther than ``max_thickness_px`` from the background.

    Such a pixel has every pixel within that distance in the mask (mirrored at the frame
    edges), so also the square of half-width ``max_thickness_px / sqrt(2)`` around it: a mask
    that the erosion by that square leaves empty has none. Two running windows, a fraction of the
    cost of the bounding boxes :func:`_thick_labels` takes next.
    """
    half = int(math.floor(max_thickness_px / math.sqrt(2.0)))
    while half > 0 and half * math.sqrt(2.0) > max_thickness_px:  # float rounding: the square inside the disk
        half -= 1
    if half <= 0:
        return bool(np.any(frame))
    mirrored = np.pad(np.asarray(frame, dtype=bool), half, mode="symmetric")
    eroded = _window(_window(mirrored, half, 0, erode=True, border_value=False), half, 1, erode=True, border_value=False)
    return bool(eroded[half:-half, half:-half].any())


def _thick_labels(frame: np.ndarray, labels: np.ndarray, count: int, max_thickness_px: float) -> np.ndarray:
    """Which of the ``count`` components of ``labels`` hold a disk of radius above ``max_thickness_px``.

    Thickness is the distance to the nearest background pixel, with the mask
    mirrored at the frame edges (a region cut by the edge counts at its full
    thickness). Returns a boolean array indexed by label (0, the background,
    is False).

    The distance transform is the costly part, and most frames have no
    component that could be thick: one that touches neither edge across an
    axis and spans ``h`` pixels along it has a background pixel within
    ``(h + 1) // 2`` of each of its pixels along that axis (the first pixel
    outside it up or down a column is background, or it would belong to it),
    so it is thinner than ``max_thickness_px`` when that bound is. The
    transform runs only for the components that escape the bound on both
    axes, each in its bounding box widened by the limit (and a pixel) on
    every side of the mirrored frame: a background pixel within the limit of
    one of its pixels lies in that box, and one farther away makes it thick
    either way, so the answer is the same as with the transform over the
    whole frame.
    """
    thick = np.zeros(count + 1, dtype=bool)
    if count == 0 or not math.isfinite(max_thickness_px) or not _may_be_thick(frame, max_thickness_px):
        return thick
    boxes = ndi.find_objects(labels)
    bounds = np.array([(b[0].start, b[0].stop, b[1].start, b[1].stop) if b is not None else (0, 0, 0, 0) for b in boxes])
    ny, nx = frame.shape
    y0, y1, x0, x1 = bounds.T
    thin_y = (y0 > 0) & (y1 < ny) & ((y1 - y0 + 1) // 2 <= max_thickness_px)
    thin_x = (x0 > 0) & (x1 < nx) & ((x1 - x0 + 1) // 2 <= max_thickness_px)
    present = np.array([b is not None for b in boxes])
    candidates = np.flatnonzero(present & ~thin_y & ~thin_x)
    if candidates.size == 0:
        return thick
    pad = int(math.ceil(max_thickness_px)) + 1
    mirrored = np.pad(frame, pad, mode="symmetric")
    for index in candidates:
        top, bottom, left, right = (int(v) for v in bounds[index])
        # the box widened by pad on every side, in the mirrored frame's coordinates (in range:
        # the mirrored frame is pad wider than the frame on every side)
        near = mirrored[top : bottom + 2 * pad, left : right + 2 * pad]
        if near.all():  # no background within the limit of any of its pixels
            thick[index + 1] = True
            continue
        thickness = ndi.distance_transform_edt(near)[pad : pad + bottom - top, pad : pad + right - left]
        # a label with any pixel above the limit: its largest thickness is above it
        thick[index + 1] = bool(np.any((labels[top:bottom, left:right] == index + 1) & (thickness > max_thickness_px)))
    return thick


def _large_components(mask: np.ndarray, max_radius_px: float, grow_px: int) -> np.ndarray:
    """Per frame: the components that are regions, not particles, grown by ``grow_px``.

    A region is thicker than any particle: it holds a disk larger than the
    largest particle (radius ``max_radius_px``; three times the typical
    radius by default). Thickness is measured with the mask mirrored
    at the frame edges, so a region cut by the edge counts at its full
    thickness. Area is no criterion: a raft of touching particles is large
    but only one particle thick.
    """
    out = np.zeros(mask.shape, dtype=bool)
    if not math.isfinite(max_radius_px):
        return out
    for k, frame in enumerate(np.asarray(mask, dtype=bool)):
        labels, n = ndi.label(frame)
        thick = _thick_labels(frame, labels, n, max_radius_px)
        if thick.any():
            out[k] = thick[labels]
    if grow_px > 0 and out.any():
        out = _morph_disk(out, grow_px, erode=False)
    return out


_REGION_MADS = 4.0  # a region's level is this many robust deviations from the frame's typical level...
_REGION_STEP = 0.15  # ...and at least this fraction of it


def _coarse_view(block: np.ndarray, recorded: np.ndarray, sigma_px: float) -> np.ndarray:
    """The frames' box-blurred mean over their recorded area at ``sigma_px``: what :func:`_coarse_regions` tests.

    The same pixels as :func:`temflow.analysis._contrast._darkness`'s background of a pass whose
    weights are ``recorded`` and whose blur has the same box width, which may reuse it.
    """
    frames = np.asarray(block, dtype=np.float32)
    valid = np.asarray(recorded, dtype=bool)
    return _normalised_gaussian(np.where(valid, frames, 0.0).astype(np.float32), valid.astype(np.float32), sigma_px, box=True)


def _coarse_regions(
    block: np.ndarray,
    recorded: np.ndarray,
    *,
    sigma_px: float,
    max_radius_px: float,
    grow_px: int,
    bright: bool,
    coarse: np.ndarray | None = None,
) -> np.ndarray:
    """Per frame: areas of the opposite contrast to the particles' (holes, vacuum, thin support).

    Seen at a scale where the particles have blurred away (``sigma_px``,
    twice their typical radius): pixels more than ``_REGION_MADS`` robust
    deviations (and ``_REGION_STEP``) on the side opposite to the particles
    (darker than the frame's median level for bright particles, brighter for
    dark ones), in components thicker than any particle
    (:func:`_large_components`). The level is the frame's own, not a local
    background: a background window follows a large region inside it and
    would see only its rim. Regions on the particles' side (thick support)
    are found by the first pass instead, where a dense cluster of particles
    still shows its gaps.

    ``coarse``: :func:`_coarse_view` of the same frames and recorded area, when already computed.
    """
    out = np.zeros(block.shape, dtype=bool)
    if not math.isfinite(max_radius_px):
        return out
    valid = np.asarray(recorded, dtype=bool)
    if coarse is None:
        coarse = _coarse_view(block, valid, sigma_px)
    for k in range(len(coarse)):
        values = coarse[k][valid[k] & np.isfinite(coarse[k])]
        if values.size < 16:
            continue
        median = float(np.median(values))
        deviation = max(_REGION_MADS * 1.4826 * float(np.median(np.abs(values - median))), _REGION_STEP * abs(median))
        with np.errstate(invalid="ignore"):
            opposite = coarse[k] < median - deviation if bright else coarse[k] > median + deviation
        out[k] = _large_components(opposite[None], max_radius_px, 0)[0]
    if grow_px > 0 and out.any():
        out = _morph_disk(out, grow_px, erode=False)
    return out


def _keep_sizes(
    mask: np.ndarray, regions: np.ndarray, min_area_px: float, max_radius_px: float, reach_px: int
) -> np.ndarray:
    """Per frame: the components that are particles.

    Dropped: components smaller than ``min_area_px``; thicker than the
    largest particle (support of the particles' contrast: :func:`_large_components`);
    within ``reach_px`` of a region of the opposite contrast (``regions``:
    fragments along the soft edge of a hole or of vacuum).
    """
    out = np.zeros(mask.shape, dtype=bool)
    regions = np.asarray(regions, dtype=bool)
    for k, frame in enumerate(np.asarray(mask, dtype=bool)):
        labels, n = ndi.label(frame)
        if n == 0:
            continue
        area = np.bincount(labels.ravel(), minlength=n + 1)
        keep = (area >= min_area_px) & ~_thick_labels(frame, labels, n, max_radius_px)
        if regions[k].any():
            near = _morph_disk(regions[k], max(reach_px, 1), erode=False)
            keep[np.unique(labels[near])] = False
        keep[0] = False
        out[k] = keep[labels]
    return out


def _drop_thick(mask: np.ndarray, max_radius_px: float) -> np.ndarray:
    """``mask`` without its components thicker than the largest particle."""
    return np.asarray(mask, dtype=bool) & ~_large_components(mask, max_radius_px, 0)
