"""Numerical kernels of drift correction, on numpy arrays of one frame or one chunk.

``temflow.drift.correction`` lifts these onto dask graphs. The pieces:

* :func:`frame_stats` — per-frame usability (finite, not saturated, not flat) and
  the rectangle of recorded pixels inside black borders;
* :func:`frame_spectrum` — a frame's band-passed spectrum on a band of frequencies, computed
  once per frame and reused for every pairing (float32, real FFT);
* :func:`register_pair` — the shift between two spectra: a coarse correlation
  on the band's own small grid, then Newton steps on a 3x3 patch of the exact
  band-limited correlation evaluated by matrix DFT (an upsampled DFT at a few
  points), and a peak-to-sidelobe ratio as its quality;
* :func:`measure_chunk` — every pairing owned by one time chunk.

Which frames are paired and how the pairs become a trajectory is in
``temflow.drift._trajectory``; moving the frames in ``temflow.drift._resample``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.signal.windows import tukey
from threadpoolctl import threadpool_limits

# H(k) = exp(-2 pi^2 sigma^2 k^2) falls to 1 % at k = 0.483 / sigma: the band
# keeps every frequency the low-pass has not already suppressed to 1 %
_BAND_REACH = math.sqrt(math.log(100.0) / (2.0 * math.pi**2))
# high-pass scale in cycles per pixel, and the reach of the coarse peak search
_HIGHPASS_PER_PX = 0.07
_COARSE_REACH = 0.25
_TUKEY_ALPHA = 0.25
# half-width (in coarse-grid samples) of the correlation peak left out of the sidelobe statistics
_PEAK_EXCLUSION = 4
# a frame is saturated when this fraction of its pixels sits at its maximum value
_SATURATED_FRACTION = 0.5


@dataclass(frozen=True)
class Band:
    """Geometry and filter of the band-limited spectrum of ``shape`` frames.

    The band ``(2 my, mx + 1)`` holds every frequency the low-pass keeps above
    1 %; the coarse sub-band ``(2 cy, cx + 1)`` (frequencies up to 1/4 cycle
    per pixel) is enough to find the correlation peak to within a pixel on a
    grid a quarter of the frame's size.
    """

    shape: tuple[int, int]
    my: int
    mx: int
    cy: int
    cx: int
    filt: np.ndarray  # (2 my, mx + 1) float32 band-pass, zero on the band's last row and column
    window: np.ndarray  # shape, float32 Tukey apodisation
    ky: np.ndarray  # (2 my,) frequency in cycles per pixel
    kx: np.ndarray  # (mx + 1,) frequency in cycles per pixel
    kx_weight: np.ndarray  # (mx + 1,) 1 for kx = 0, 2 otherwise (Hermitian half)
    overlap_y: np.ndarray  # (2 ny - 1,) autocorrelation of the y window at lags -(ny - 1)..ny - 1, peak 1
    overlap_x: np.ndarray  # (2 nx - 1,) same along x

    def overlap(self, lags_y: np.ndarray, lags_x: np.ndarray) -> np.ndarray:
        """How much the two windows overlap at these (sub-pixel) lags, 1 at zero lag."""
        ny, nx = self.shape
        ey = np.interp(lags_y, np.arange(-ny + 1, ny), self.overlap_y)
        ex = np.interp(lags_x, np.arange(-nx + 1, nx), self.overlap_x)
        return np.outer(ey, ex)

    @property
    def coarse_shape(self) -> tuple[int, int]:
        return 2 * self.cy, 2 * self.cx

    @property
    def coarse_step(self) -> tuple[float, float]:
        return self.shape[0] / (2 * self.cy), self.shape[1] / (2 * self.cx)

    def coarse(self, cross: np.ndarray) -> np.ndarray:
        """The coarse sub-band of a band-sized array."""
        if self.cy == self.my:
            return cross[:, : self.cx + 1]
        return np.concatenate([cross[: self.cy, : self.cx + 1], cross[2 * self.my - self.cy :, : self.cx + 1]])


def _half_width(n: int, reach: float) -> int:
    return min(n // 2, sfft.next_fast_len(2 * max(4, math.ceil(reach * n))) // 2)


@functools.lru_cache(maxsize=8)
def band(shape: tuple[int, int], sigma_px: float) -> Band:
    """The band of frequencies kept for registration of ``shape`` frames."""
    ny, nx = shape
    reach = min(0.5, _BAND_REACH / sigma_px)
    my, mx = _half_width(ny, reach), _half_width(nx, reach)
    cy, cx = min(my, _half_width(ny, _COARSE_REACH)), min(mx, _half_width(nx, _COARSE_REACH))
    ky = np.concatenate([np.arange(my), np.arange(-my, 0)]) / ny
    kx = np.arange(mx + 1) / nx
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    lowpass = np.exp(-2.0 * np.pi**2 * sigma_px**2 * k2)
    # the support texture (speckle of a few pixels) is static; the particles, large
    # and changing shape, live at low frequencies: leave those out
    highpass = 1.0 - np.exp(-k2 / (2.0 * _HIGHPASS_PER_PX**2))
    filt = (lowpass * highpass).astype(np.float32)
    filt[my, :] = 0.0
    filt[:, mx] = 0.0
    wy, wx = tukey(ny, _TUKEY_ALPHA), tukey(nx, _TUKEY_ALPHA)
    window = np.outer(wy, wx).astype(np.float32)
    weight = np.full(mx + 1, 2.0)
    weight[0] = 1.0
    overlap_y = np.correlate(wy, wy, mode="full")
    overlap_x = np.correlate(wx, wx, mode="full")
    return Band(
        (ny, nx), my, mx, cy, cx, filt, window, ky, kx, weight, overlap_y / overlap_y.max(), overlap_x / overlap_x.max()
    )


def frame_stats(frame: np.ndarray, black_border: float) -> tuple[bool, np.ndarray, np.ndarray]:
    """Usability and recorded rectangle of one frame.

    Returns ``(usable, start, stop)``: ``start``/``stop`` (int, (y, x)) bound the
    rows and columns inside black borders; a row or column at the edge is a
    black border when most of its pixels are darker than ``black_border`` times
    the frame's mean. ``usable`` is False for frames that are mostly non-finite,
    saturated or flat.
    """
    ny, nx = frame.shape
    f = frame
    if np.issubdtype(f.dtype, np.floating):
        finite = np.isfinite(f)
        if finite.mean() < 0.5:
            return False, np.zeros(2, np.int64), np.array([ny, nx], np.int64)
        if not finite.all():
            f = np.where(finite, f, 0)
    top, bottom = f.max(), f.min()
    usable = bool(bottom < top) and np.count_nonzero(f == top) < _SATURATED_FRACTION * f.size
    start, stop = np.zeros(2, np.int64), np.array([ny, nx], np.int64)
    if black_border > 0:
        level = float(f[::4, ::4].mean(dtype=np.float64))
        dark = f <= black_border * level
        for axis, (n, count) in enumerate(((ny, np.count_nonzero(dark, axis=1)), (nx, np.count_nonzero(dark, axis=0)))):
            bright = np.flatnonzero(count <= 0.5 * (f.size // n))
            if bright.size == 0:
                return False, start, stop
            start[axis], stop[axis] = bright[0], bright[-1] + 1
    return bool(usable), start, stop


def frame_spectrum(
    frame: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    roi: tuple[int, int, int, int],
    bnd: Band,
    workers: int,
) -> np.ndarray:
    """Band-passed spectrum of the ``roi`` of one frame, on the band only.

    Plain (not whitened) cross-correlation with this band-pass was measured
    more accurate on the synthetic movies than phase correlation: at 50 e/px
    most frequencies in the band are noise-dominated, and whitening gives them
    the same weight as the texture's strong ones.

    Pixels outside the recorded rectangle (and non-finite ones) count as the mean,
    so black borders add no edge of their own; the frame is apodised by a Tukey
    window so that the frame edge, which does not move with the content, does
    not pull the correlation peak towards zero.
    """
    y0, y1, x0, x1 = roi
    g = np.array(frame[y0:y1, x0:x1], dtype=np.float32)
    ry0, rx0 = max(int(start[0]) - y0, 0), max(int(start[1]) - x0, 0)
    ry1, rx1 = min(int(stop[0]) - y0, y1 - y0), min(int(stop[1]) - x0, x1 - x0)
    inside = g[ry0:ry1, rx0:rx1]
    total = float(inside.sum(dtype=np.float64))
    if np.isfinite(total):
        g -= np.float32(total / max(inside.size, 1))
    else:
        finite = np.isfinite(inside)
        g -= np.float32(inside[finite].mean()) if finite.any() else np.float32(0)
        g[~np.isfinite(g)] = 0.0
    g[:ry0] = 0.0
    g[ry1:] = 0.0
    g[:, :rx0] = 0.0
    g[:, rx1:] = 0.0
    g *= bnd.window
    my, mx = bnd.my, bnd.mx
    half = sfft.rfft(g, axis=1, workers=workers)[:, : mx + 1]
    full = sfft.fft(half, axis=0, workers=workers, overwrite_x=True)
    out = np.empty((2 * my, mx + 1), dtype=np.complex64)
    out[:my] = full[:my]
    out[my:] = full[full.shape[0] - my :]
    out *= bnd.filt
    return out


def _patch(cross: np.ndarray, centre: np.ndarray, h: float, bnd: Band) -> np.ndarray:
    """The band-limited correlation at the 3x3 points ``centre + (-h, 0, h)``, px.

    Divided by the overlap of the two (static) apodisation windows at that
    lag: the product of a shifted scene with a window that does not move
    weighs the correlation towards zero lag by a fraction of a percent of the
    shift, which this removes.
    """
    offsets = np.array([-h, 0.0, h])
    lag_y, lag_x = centre[0] + offsets, centre[1] + offsets
    ey = np.exp(2j * np.pi * np.outer(lag_y, bnd.ky)).astype(np.complex64)
    ex = (np.exp(2j * np.pi * np.outer(lag_x, bnd.kx)) * bnd.kx_weight).astype(np.complex64)
    return ((ey @ cross) @ ex.T).real / bnd.overlap(lag_y, lag_x)


def _newton(patch: np.ndarray, h: float) -> np.ndarray:
    """Step to the vertex of the quadratic through a 3x3 patch, clamped to the patch."""
    gy = (patch[2, 1] - patch[0, 1]) / (2 * h)
    gx = (patch[1, 2] - patch[1, 0]) / (2 * h)
    hyy = (patch[2, 1] - 2 * patch[1, 1] + patch[0, 1]) / h**2
    hxx = (patch[1, 2] - 2 * patch[1, 1] + patch[1, 0]) / h**2
    hxy = (patch[2, 2] - patch[2, 0] - patch[0, 2] + patch[0, 0]) / (4 * h**2)
    det = hyy * hxx - hxy**2
    if hyy < 0 and hxx < 0 and det > 0:
        step = -np.array([hxx * gy - hxy * gx, hyy * gx - hxy * gy]) / det
    else:
        # not concave here: move to the best sample
        iy, ix = np.unravel_index(int(np.argmax(patch)), patch.shape)
        step = np.array([(iy - 1) * h, (ix - 1) * h])
    return np.clip(step, -h, h)


def register_pair(
    a: np.ndarray, b: np.ndarray, bnd: Band, upsample: float, workers: int
) -> tuple[float, float, float]:
    """Shift ``(dy, dx)`` px of frame ``a``'s content relative to frame ``b``, and the PSR.

    ``a`` and ``b`` are :func:`frame_spectrum` outputs. The peak-to-sidelobe
    ratio is the peak's height above the mean of the rest of the coarse
    correlation, in units of its standard deviation (about 5 for pure noise).
    """
    cross = a * np.conj(b)
    if not np.any(cross):
        return 0.0, 0.0, 0.0
    coarse = sfft.irfft2(bnd.coarse(cross), s=bnd.coarse_shape, workers=workers)
    ny2, nx2 = coarse.shape
    flat = int(np.argmax(coarse))
    qy, qx = divmod(flat, nx2)
    peak = float(coarse[qy, qx])
    rows = np.arange(qy - _PEAK_EXCLUSION, qy + _PEAK_EXCLUSION + 1) % ny2
    cols = np.arange(qx - _PEAK_EXCLUSION, qx + _PEAK_EXCLUSION + 1) % nx2
    near = coarse[np.ix_(rows, cols)]
    count = coarse.size - near.size
    flat_coarse, flat_near = coarse.ravel(), near.ravel()
    total = float(flat_coarse.sum(dtype=np.float64)) - float(flat_near.sum(dtype=np.float64))
    squares = float(np.dot(flat_coarse, flat_coarse)) - float(np.dot(flat_near, flat_near))
    mean = total / count
    std = math.sqrt(max(squares / count - mean**2, 1e-30))
    psr = (peak - mean) / std
    # parabola through the coarse neighbours, then the shift in px, wrapped
    frac = []
    for c_minus, c_plus in (
        (coarse[(qy - 1) % ny2, qx], coarse[(qy + 1) % ny2, qx]),
        (coarse[qy, (qx - 1) % nx2], coarse[qy, (qx + 1) % nx2]),
    ):
        denom = c_minus - 2 * peak + c_plus
        frac.append(0.5 * (c_minus - c_plus) / denom if denom < 0 else 0.0)
    step_y, step_x = bnd.coarse_step
    ny, nx = bnd.shape
    centre = np.array([(qy + np.clip(frac[0], -0.5, 0.5)) * step_y, (qx + np.clip(frac[1], -0.5, 0.5)) * step_x])
    centre = (centre + np.array([ny, nx]) / 2) % np.array([ny, nx]) - np.array([ny, nx]) / 2
    h = 0.5 * max(step_y, step_x)
    final = 1.0 / upsample
    while True:
        centre = centre + _newton(_patch(cross, centre, h, bnd), h)
        if h <= final:
            break
        h = max(final, h / 5.0)
    return float(centre[0]), float(centre[1]), float(psr)


@dataclass(frozen=True)
class Settings:
    """Everything a kernel task needs, hashable and picklable."""

    roi: tuple[int, int, int, int]
    sigma_px: float
    upsample: float
    black_border: float
    workers: int
    min_quality: float


def spectrum_of(frame: np.ndarray, settings: Settings) -> tuple[np.ndarray | None, bool, np.ndarray, np.ndarray]:
    """Stats and spectrum (None for an unusable frame) of one frame."""
    usable, start, stop = frame_stats(frame, settings.black_border)
    if not usable:
        return None, usable, start, stop
    y0, y1, x0, x1 = settings.roi
    bnd = band((y1 - y0, x1 - x0), settings.sigma_px)
    return frame_spectrum(frame, start, stop, settings.roi, bnd, settings.workers), usable, start, stop


def shared_spectrum(block: np.ndarray, index: int, settings: Settings) -> tuple[np.ndarray | None, bool, np.ndarray, np.ndarray]:
    """:func:`spectrum_of` for frame ``index`` of a chunk (a frame other chunks pair with)."""
    with threadpool_limits(limits=settings.workers, user_api="blas"):
        return spectrum_of(np.asarray(block[index]), settings)


def measure_chunk(
    block: np.ndarray,
    start: int,
    pairs: np.ndarray,
    shared: Mapping[int, tuple[np.ndarray | None, bool, np.ndarray, np.ndarray]],
    settings: Settings,
) -> dict[str, np.ndarray]:
    """Register every pair ``(i, j)`` owned by the chunk of frames ``start + arange(len(block))``.

    Spectra of frames outside the chunk (and of this chunk's frames that other
    chunks also need) come in ``shared``; the others are computed here, each
    once, and dropped after their last pairing.
    """
    n = block.shape[0]
    y0, y1, x0, x1 = settings.roi
    bnd = band((y1 - y0, x1 - x0), settings.sigma_px)
    usable = np.zeros(n, bool)
    starts = np.zeros((n, 2), np.int64)
    stops = np.zeros((n, 2), np.int64)
    cache: dict[int, np.ndarray | None] = {}
    uses: dict[int, int] = {}
    for f in pairs[:, :2].ravel().tolist():
        uses[int(f)] = uses.get(int(f), 0) + 1
    results = np.zeros((len(pairs), 3))
    # a pair is measured as soon as the last of its frames in this chunk is ready;
    # a backup pair (prior < 1) only after its frame's main pairs, and only if
    # they all failed: it costs nothing while the main pairs hold
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    backup = pairs[:, 2] < 1
    local_j = (j >= start) & (j < start + n)
    ready = np.where(local_j, np.maximum(i, j), i)
    main_ready = np.full(n, -1, np.int64)
    np.maximum.at(main_ready, i[~backup] - start, ready[~backup])
    ready = np.where(backup, np.maximum(ready, main_ready[i - start]), ready)
    order = np.lexsort((backup, ready))
    first = np.searchsorted(ready[order], start + np.arange(n + 1))
    held = np.zeros(n, bool)  # frame has a main pair above min_quality
    with threadpool_limits(limits=settings.workers, user_api="blas"):
        for k in range(n):
            frame = start + k
            if frame in shared:
                _, usable[k], starts[k], stops[k] = shared[frame]
            elif frame in uses:
                cache[frame], usable[k], starts[k], stops[k] = spectrum_of(np.asarray(block[k]), settings)
            else:
                usable[k], starts[k], stops[k] = frame_stats(np.asarray(block[k]), settings.black_border)
            for p in order[first[k] : first[k + 1]]:
                spectra = []
                for f in (int(i[p]), int(j[p])):
                    spectra.append(shared[f][0] if f in shared else cache[f])
                    uses[f] -= 1
                    if uses[f] == 0:
                        cache.pop(f, None)
                if backup[p] and held[i[p] - start]:
                    continue
                if spectra[0] is not None and spectra[1] is not None:
                    results[p] = register_pair(spectra[0], spectra[1], bnd, settings.upsample, settings.workers)
                    held[i[p] - start] |= not backup[p] and results[p, 2] >= settings.min_quality
    return {
        "pairs": pairs,
        "measured": results,
        "frames": start + np.arange(n),
        "usable": usable,
        "start": starts,
        "stop": stops,
    }
