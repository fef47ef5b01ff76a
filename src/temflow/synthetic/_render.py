"""Rendering of synthetic frames and labels from the simulated particle table, one chunk per task.

Every frame is drawn from the seed alone (texture spectrum, per-frame noise
stream), so the pixels do not depend on the chunking. Used by
:func:`temflow.synthetic.generator.make_movie`.
"""

from __future__ import annotations

import functools
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from scipy import fft as sfft
from scipy.special import erfc


@functools.lru_cache(maxsize=4)
def _texture_spectrum(seed: int, shape: tuple[int, int], correlation_px: float) -> np.ndarray:
    """Spectrum of a unit-variance amorphous-support texture on the canvas.

    Speckle a couple of pixels wide plus slow thickness variations; kept as a
    spectrum so that any sub-pixel shift of it is exact (a phase ramp).
    """
    rng = np.random.default_rng([seed, 1])
    white = rng.standard_normal(shape).astype(np.float32)
    spectrum = sfft.rfft2(white)
    ky = sfft.fftfreq(shape[0])[:, None]
    kx = sfft.rfftfreq(shape[1])[None, :]
    k2 = ky**2 + kx**2
    speckle = np.exp(-2 * (np.pi * correlation_px) ** 2 * k2)
    slow = 3.0 * np.exp(-2 * (np.pi * 12 * correlation_px) ** 2 * k2)
    spectrum *= (speckle + slow).astype(np.float32)
    spectrum[0, 0] = 0
    std = np.sqrt(np.sum(np.abs(spectrum) ** 2 * np.where(kx == 0, 1, 2)) / (shape[0] * shape[1]) ** 2)
    return (spectrum / std).astype(np.complex64)


def _particle_profile(rho: np.ndarray, radius_px: float, edge_px: float) -> np.ndarray:
    """A particle's projected thickness, 0..1: a soft-edged disk, a little more in its thick middle.

    Bright field: the fraction ``contrast`` of it is absorbed. HAADF: it adds
    ``particle_brightness`` times the support's signal.
    """
    edge = 0.5 * erfc((rho - radius_px) / (np.sqrt(2.0) * edge_px))
    thickness = np.sqrt(np.clip(1.0 - (rho / max(radius_px, 1e-6)) ** 2, 0.0, 1.0))
    return edge * (0.75 + 0.25 * thickness)


def _render_block(
    kind: str,
    frames: np.ndarray,
    shifts: np.ndarray,
    blank: np.ndarray,
    particles: np.ndarray,
    params: dict[str, Any],
) -> np.ndarray:
    """Render frames (``kind="movie"``) or their labels (``kind="labels"``).

    ``particles`` rows: frame, id, y_px, x_px (frame-0 pixel coords), radius_px.
    """
    ny, nx = params["shape"]
    margin = params["margin"]
    canvas = (ny + 2 * margin[0], nx + 2 * margin[1])
    out_dtype = np.uint16 if kind == "movie" else np.uint32
    out = np.zeros((len(frames), ny, nx), dtype=out_dtype)
    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    spectrum = _texture_spectrum(params["seed"], canvas, params["texture_correlation_px"]) if kind == "movie" else None
    ky = sfft.fftfreq(canvas[0]).astype(np.float32)[:, None]
    kx = sfft.rfftfreq(canvas[1]).astype(np.float32)[None, :]
    edge_px = params["edge_px"]
    for k, frame in enumerate(frames):
        dy, dx = shifts[k]
        # the recorded area spans frame-0 pixels [-margin, n + margin); outside it is black
        sy, sx = yy - dy, xx - dx
        valid = (sy >= -margin[0]) & (sy < ny + margin[0]) & (sx >= -margin[1]) & (sx < nx + margin[1])
        if blank[k]:
            valid = np.zeros_like(valid)
        here = particles[particles[:, 0] == frame]
        if kind == "labels":
            labels = np.zeros((ny, nx), dtype=np.uint32)
            for _, pid, py, px, pr in here[np.argsort(here[:, 4])]:
                cy, cx = py + dy, px + dx
                y0, y1 = max(int(cy - pr) - 1, 0), min(int(cy + pr) + 2, ny)
                x0, x1 = max(int(cx - pr) - 1, 0), min(int(cx + pr) + 2, nx)
                if y0 >= y1 or x0 >= x1:
                    continue
                rho = np.hypot(yy[y0:y1] - cy, xx[:, x0:x1] - cx)
                patch = labels[y0:y1, x0:x1]
                patch[rho <= pr] = int(pid)
            out[k] = np.where(valid, labels, 0)
            continue
        assert spectrum is not None
        phase = np.exp(-2j * np.pi * (ky * np.float32(dy) + kx * np.float32(dx))).astype(np.complex64)
        texture = sfft.irfft2(spectrum * phase, s=canvas)[margin[0] : margin[0] + ny, margin[1] : margin[1] + nx]
        intensity = 1.0 + params["texture_contrast"] * texture
        if params.get("regions"):
            support = np.ones((ny, nx), dtype=np.float32)
            for ry, rx, rr, level in params["regions"]:
                # a large region of another thickness (vacuum, a hole, thick support), soft-edged
                rho = np.hypot(yy - (ry + dy), xx - (rx + dx))
                support += np.float32(level - 1.0) * (0.5 * erfc((rho - rr) / (np.sqrt(2.0) * 2.0))).astype(np.float32)
            intensity = intensity * support
        haadf = params.get("imaging", "bright_field") == "haadf"
        for _, pid, py, px, pr in here:
            cy, cx = py + dy, px + dx
            reach = pr + 4 * edge_px + 1
            y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, ny)
            x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, nx)
            if y0 >= y1 or x0 >= x1:
                continue
            rho = np.hypot(yy[y0:y1] - cy, xx[:, x0:x1] - cx)
            profile = _particle_profile(rho, pr, edge_px)
            fringe_px = params["fringe_spacing_px"]
            if fringe_px:
                angle = (pid * 2.399963) % np.pi  # a fixed, id-dependent lattice orientation
                wave = np.cos(2 * np.pi * ((yy[y0:y1] - cy) * np.sin(angle) + (xx[:, x0:x1] - cx) * np.cos(angle)) / fringe_px)
                profile = profile * (1.0 + 0.3 * wave * (rho < pr))
            if haadf:
                # annular dark field: the particle adds signal (Z-contrast), on top of the support's
                intensity[y0:y1, x0:x1] += params["particle_brightness"] * profile
            else:
                intensity[y0:y1, x0:x1] *= 1.0 - params["contrast"] * profile
        intensity = np.where(valid, np.clip(intensity, 0, None), 0.0)
        rng = np.random.default_rng([params["seed"], 2, int(frame)])
        electrons = rng.poisson(params["dose_e_per_px"] * intensity).astype(np.float32)
        if params["read_noise_e"] > 0:
            electrons += rng.normal(0.0, params["read_noise_e"], electrons.shape).astype(np.float32)
        counts = np.rint(electrons * params["gain_counts_per_e"])
        out[k] = np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return out


def lazy_render(
    kind: str,
    shift_px: np.ndarray,
    blank: np.ndarray,
    particle_px: np.ndarray,
    params: dict[str, Any],
    time_chunks: tuple[int, ...],
) -> da.Array:
    ny, nx = params["shape"]
    name = f"temflow-synthetic-{kind}-" + tokenize(kind, shift_px, blank, particle_px, sorted(params.items()), time_chunks)
    graph: dict[Any, Any] = {}
    start = 0
    for i, n in enumerate(time_chunks):
        frames = np.arange(start, start + n)
        rows = particle_px[(particle_px[:, 0] >= start) & (particle_px[:, 0] < start + n)]
        graph[(name, i, 0, 0)] = (
            _render_block,
            kind,
            frames,
            shift_px[start : start + n],
            blank[start : start + n],
            rows,
            params,
        )
        start += n
    dtype = np.uint16 if kind == "movie" else np.uint32
    return da.Array(graph, name, chunks=(time_chunks, (ny,), (nx,)), dtype=dtype)
