"""The particle contrast of the classical recipe: smoothed frames over their flat-field background."""

from __future__ import annotations

import numpy as np

from temflow.analysis._filters import _morph_disk, _normalised_gaussian


def _darkness(
    block: np.ndarray,
    recorded: np.ndarray,
    exclude: np.ndarray | None = None,
    *,
    sigma_px: float,
    background_px: float,
    exclude_px: int = 0,
    bright: bool = False,
    smooth: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Particle contrast per frame; NaN outside the recorded area.

    Dark particles (bright field): ``1 - smoothed / background``, the fraction
    of the local background absorbed. Bright particles (annular dark field):
    ``smoothed / background - 1``, the signal added, in units of the
    support's. Both are 0 on the support and linear in the intensity, so
    Otsu's level sits part-way up the particle's edge in either mode; the
    opposite contrast (holes in HAADF, thin support in bright field) is
    negative.

    Bright-field intensity is multiplicative (illumination x transmission), so
    dividing by the large-scale background (a flat field) makes the particle
    contrast independent of beam intensity and dose, frame to frame. Pixels in
    ``exclude`` (particles found by a first pass, grown by ``exclude_px``) do
    not enter the background, which would otherwise be pulled down by the
    particles and shrink them all by the same fraction of a pixel.

    ``smooth``: the smoothed frames (:func:`_smoothed` of the same frames and
    recorded area), when already computed by the first pass; ``background``: the
    background of these weights (no ``exclude``), when already computed.
    """
    frames = np.asarray(block, dtype=np.float32)
    valid = np.asarray(recorded, dtype=bool)
    weight = valid.astype(np.float32)
    clean = np.where(valid, frames, 0.0).astype(np.float32)
    if smooth is None:
        smooth = _smoothed(frames, valid, sigma_px)
    if exclude is not None:
        grown = _morph_disk(exclude, exclude_px, erode=False) if exclude_px > 0 else exclude
        weight = weight * ~grown
    # a neighbourhood without any support pixel (a field more than ~90 % covered) has no
    # background: NaN, never a particle
    if background is None or exclude is not None:
        background = _normalised_gaussian(clean, weight, background_px, box=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        if bright:
            dark = smooth / background - 1.0
        else:
            dark = 1.0 - smooth / background
    return np.where(valid & np.isfinite(dark), dark, np.nan).astype(np.float32)


def _smoothed(block: np.ndarray, recorded: np.ndarray, sigma_px: float) -> np.ndarray:
    """The frames smoothed over their recorded area, as :func:`_darkness` does it."""
    valid = np.asarray(recorded, dtype=bool)
    clean = np.where(valid, np.asarray(block, dtype=np.float32), 0.0).astype(np.float32)
    return _normalised_gaussian(clean, valid.astype(np.float32), sigma_px)
