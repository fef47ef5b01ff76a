"""Numerical kernels of drift correction, on numpy arrays of one frame or one chunk.

``temflow.drift`` lifts these onto dask graphs. The pieces:

* :func:`frame_stats` — per-frame usability (finite, not saturated, not flat) and
  the rectangle of recorded pixels inside black borders;
* :func:`frame_spectrum` — a frame's whitened, band-limited spectrum, computed
  once per frame and reused for every pairing (float32, real FFT);
* :func:`register_pair` — the shift between two spectra: a coarse correlation
  on the band's own small grid, then Newton steps on a 3x3 patch of the exact
  band-limited correlation evaluated by matrix DFT (an upsampled DFT at a few
  points), and a peak-to-sidelobe ratio as its quality;
* :func:`measure_chunk` — every pairing owned by one time chunk;
* :func:`solve_trajectory` — robust weighted least squares for the shifts from
  all pairwise measurements (a small sparse system);
* :func:`shift_frames` — moves every frame of a chunk by its shift.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, sparse
from scipy.sparse import linalg as splinalg
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
# Tukey biweight constant (95 % efficiency) and the floor on the residual scale, px
_TUKEY_C = 4.685
_MIN_SCALE_PX = 0.05
_IRLS_ITERATIONS = 4
_SMOOTHNESS = 1e-6
_FOURIER_PAD = 16
# weight of a backup pairing, used only when the main one is lost (a bad frame)
_BACKUP = 1e-3
_KEY_LAGS = (1, 2, 4, 8, 16)


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
    """Whitened, low-passed spectrum of the ``roi`` of one frame, on the band only.

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


def pair_plan(reference: str, frames: int, key_interval: int) -> np.ndarray:
    """The pairings ``(i, j, prior weight)`` of a reference strategy, by frame index only.

    Frame indices alone decide the plan, so the answer does not depend on the
    chunking. ``"first"``: every frame against frame 0. ``"previous"``: every
    frame against the one before, with a backup link to the one before that so
    a single bad frame does not cut the chain. ``"auto"``: key frames every
    ``key_interval`` frames are registered to frame 0 and to the key frames 1,
    2, 4, 8 and 16 keys before; every other frame to its nearest key frame,
    with a backup link to the key on its other side. The direct links to
    frame 0 stop the small biases of scene changes (ripening particles) from
    adding up along the key chain while frame 0 is in view; the key chain
    carries on once it is not.
    """
    rows: list[tuple[int, int, float]] = []
    if reference == "first":
        rows = [(t, 0, 1.0) for t in range(1, frames)]
    elif reference == "previous":
        rows = [(t, t - 1, 1.0) for t in range(1, frames)]
        rows += [(t, t - 2, _BACKUP) for t in range(2, frames)]
    else:
        k = key_interval
        for t in range(1, frames):
            if t % k == 0:
                partners = {t - lag * k for lag in _KEY_LAGS if t - lag * k >= 0} | {0}
                rows += [(t, p, 1.0) for p in sorted(partners, reverse=True)]
            else:
                before, after = (t // k) * k, (t // k) * k + k
                near, far = (before, after) if t - before <= after - t or after >= frames else (after, before)
                rows.append((t, near, 1.0))
                if far < frames:
                    rows.append((t, far, _BACKUP))
    if not rows:
        return np.zeros((0, 3))
    return np.asarray(rows, dtype=float)


def _factor_solve(frames: int, i: np.ndarray, j: np.ndarray, d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares for ``s[i] - s[j] = d`` with ``s[0] = 0`` and a faint smoothness prior."""
    e = len(i)
    rows = np.concatenate([np.arange(e), np.arange(e)])
    a = sparse.csr_matrix((np.concatenate([np.ones(e), -np.ones(e)]), (rows, np.concatenate([i, j]))), shape=(e, frames))
    diff = sparse.diags([-np.ones(frames - 1), np.ones(frames - 1)], [0, 1], shape=(frames - 1, frames))
    scale = float(np.mean(w[w > 0])) if np.any(w > 0) else 1.0
    normal = (a.T @ sparse.diags(w) @ a + _SMOOTHNESS * scale * (diff.T @ diff)).tocsc()[1:, 1:]
    rhs = (a.T @ (w[:, None] * d))[1:]
    solve = splinalg.factorized(normal)
    out = np.zeros((frames, 2))
    out[1:, 0] = solve(np.ascontiguousarray(rhs[:, 0]))
    out[1:, 1] = solve(np.ascontiguousarray(rhs[:, 1]))
    return out


def solve_trajectory(
    results: Sequence[Mapping[str, np.ndarray]], frames: int, min_quality: float
) -> dict[str, np.ndarray]:
    """Shifts of every frame from all pairwise measurements (a small sparse problem).

    Pairs whose PSR is below ``min_quality`` or that touch an unusable frame
    are dropped; the rest are weighted by ``prior * (PSR / min_quality)^2`` and
    refined by iteratively reweighted least squares (Tukey's biweight on the
    residuals), so a wrong peak in one pairing does not bend the trajectory.
    Frames left without any pairing are flagged and interpolated.
    """
    usable = np.zeros(frames, bool)
    start = np.zeros((frames, 2), np.int64)
    stop = np.zeros((frames, 2), np.int64)
    plans, measured = [], []
    for r in results:
        usable[r["frames"]] = r["usable"]
        start[r["frames"]] = r["start"]
        stop[r["frames"]] = r["stop"]
        plans.append(r["pairs"])
        measured.append(r["measured"])
    plan = np.concatenate(plans) if plans else np.zeros((0, 3))
    meas = np.concatenate(measured) if measured else np.zeros((0, 3))
    i, j, prior = plan[:, 0].astype(np.int64), plan[:, 1].astype(np.int64), plan[:, 2]
    d, psr = meas[:, :2], meas[:, 2]
    ok = (psr >= min_quality) & usable[i] & usable[j]
    base = np.where(ok, prior * (psr / min_quality) ** 2, 0.0)
    weight = base.copy()
    shifts = np.zeros((frames, 2))
    if frames > 1 and np.any(weight > 0):
        for _ in range(_IRLS_ITERATIONS):
            shifts = _factor_solve(frames, i, j, d, weight)
            residual = np.hypot(*(d - (shifts[i] - shifts[j])).T)
            scale = max(_MIN_SCALE_PX, 1.4826 * float(np.median(residual[base > 0])))
            u = residual / (_TUKEY_C * scale)
            weight = base * np.where(u < 1, (1 - u**2) ** 2, 0.0)
        shifts = _factor_solve(frames, i, j, d, weight) if np.any(weight > 0) else shifts
    kept = weight > 0
    quality = np.zeros(frames)
    np.maximum.at(quality, i[kept], psr[kept])
    np.maximum.at(quality, j[kept], psr[kept])
    flagged = ~usable | (quality == 0)
    if frames == 1:
        flagged = ~usable
        quality[:] = np.inf if usable[0] else 0.0
    step = np.r_[0.0, np.hypot(*np.diff(shifts, axis=0).T)] if frames > 1 else np.zeros(1)
    good = ~flagged
    steady = step[1:][good[1:] & good[:-1]] if frames > 1 else np.zeros(0)
    threshold = max(1.0, float(np.median(steady)) + 10 * 1.4826 * float(np.median(np.abs(steady - np.median(steady))))) if steady.size else np.inf
    jump = (step > threshold) & good
    return {
        "shift": shifts,
        "quality": quality.astype(np.float32),
        "flagged": flagged,
        "jump": jump,
        "valid_start": start,
        "valid_stop": stop,
    }


def shift_frames(
    block: np.ndarray,
    shifts: np.ndarray,
    valid_start: np.ndarray,
    valid_stop: np.ndarray,
    method: str,
    workers: int,
) -> np.ndarray:
    """Move every frame's content back by its shift: ``out[t](r) = block[t](r + shift[t])``.

    The integer part is an index shift in which pixels outside the recorded
    rectangle are replaced by the nearest recorded ones (no black edge to ring
    or smear); the fractional part is a Fourier phase ramp on a frame padded by
    a smooth periodic continuation (``"fourier"``), a cubic spline
    (``"spline"``), or nothing (``"integer"``, rounding the shift). Integer
    dtypes are rounded and clipped back to their range.
    """
    out = np.empty(block.shape, dtype=block.dtype)
    n, ny, nx = block.shape
    with threadpool_limits(limits=workers, user_api="blas"):
        for k in range(n):
            s = np.asarray(shifts[k], dtype=float)
            whole = np.rint(s).astype(np.int64)
            frac = s - whole if method != "integer" else np.zeros(2)
            lo, hi = np.asarray(valid_start[k]), np.asarray(valid_stop[k])
            if np.any(hi <= lo):
                lo, hi = np.zeros(2, np.int64), np.array([ny, nx])
            rows = np.clip(np.arange(ny) + whole[0], lo[0], hi[0] - 1)
            cols = np.clip(np.arange(nx) + whole[1], lo[1], hi[1] - 1)
            frame = np.asarray(block[k])[np.ix_(rows, cols)]
            if method == "integer" or not np.any(frac):
                out[k] = frame
                continue
            frame = frame.astype(np.float32)
            if method == "spline":
                moved = ndimage.shift(frame, -frac, order=3, mode="nearest")
            else:
                moved = _fourier_shift(frame, frac, workers)
            out[k] = _cast(moved, block.dtype)
    return out


def _fourier_shift(frame: np.ndarray, frac: np.ndarray, workers: int) -> np.ndarray:
    ny, nx = frame.shape
    py, px = sfft.next_fast_len(ny + 2 * _FOURIER_PAD, real=True), sfft.next_fast_len(nx + 2 * _FOURIER_PAD, real=True)
    padded = np.empty((py, px), np.float32)
    padded[:ny, :nx] = frame
    # periodic continuation that blends the last row into the first (and column):
    # no jump where the FFT wraps around, so no ringing into the frame
    alpha = (np.arange(1, py - ny + 1, dtype=np.float32) / (py - ny + 1))[:, None]
    padded[ny:, :nx] = (1 - alpha) * frame[-1] + alpha * frame[0]
    beta = np.arange(1, px - nx + 1, dtype=np.float32) / (px - nx + 1)
    padded[:, nx:] = (1 - beta) * padded[:, nx - 1 : nx] + beta * padded[:, :1]
    spectrum = sfft.rfft2(padded, workers=workers, overwrite_x=True)
    ramp_y = np.exp(2j * np.pi * sfft.fftfreq(py) * frac[0]).astype(np.complex64)
    ramp_x = np.exp(2j * np.pi * sfft.rfftfreq(px) * frac[1]).astype(np.complex64)
    spectrum *= ramp_y[:, None]
    spectrum *= ramp_x[None, :]
    return sfft.irfft2(spectrum, s=(py, px), workers=workers, overwrite_x=True)[:ny, :nx]


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def valid_crop(
    shifts: np.ndarray, valid_start: np.ndarray, valid_stop: np.ndarray, shape: tuple[int, int], use: np.ndarray
) -> tuple[int, int, int, int]:
    """Largest rectangle ``(y0, y1, x0, x1)`` (frame-0 px) every used frame covers after shifting.

    Output pixel ``r`` of frame ``t`` comes from raw position ``r + shift[t]``;
    both raw pixels it is interpolated between must lie in the recorded
    rectangle ``[valid_start, valid_stop)``.
    """
    tol = 1e-3
    s = np.asarray(shifts, dtype=float)[use]
    lo = np.ceil(np.asarray(valid_start, float)[use] - s - tol).astype(np.int64)
    hi = np.floor(np.asarray(valid_stop, float)[use] - 1 - s + tol).astype(np.int64) + 1
    y0 = max(0, int(lo[:, 0].max(initial=0)))
    x0 = max(0, int(lo[:, 1].max(initial=0)))
    y1 = min(shape[0], int(hi[:, 0].min(initial=shape[0])))
    x1 = min(shape[1], int(hi[:, 1].min(initial=shape[1])))
    return y0, y1, x0, x1
