"""Moving frames by their shifts, and the crop that every moved frame covers."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from threadpoolctl import threadpool_limits

# rows/columns of smooth periodic continuation around a frame before a Fourier shift
_FOURIER_PAD = 16


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
