"""Synthetic in-situ heating movies with known ground truth.

A bright-field movie of supported metal nanoparticles: dark particles with soft
edges on an amorphous-support texture, coarsening by Ostwald ripening, by
migration and coalescence, or both, while the stage drifts smoothly and
sometimes jumps. Every later stage of temflow is tested against what this
generator knows: the true shift of every frame, the label image of every frame,
every particle's centre and radius, and every merge and vanish event.

The particle physics (a small table) is simulated eagerly; the pixels are
rendered lazily, one time chunk per dask task, from the seed, so a movie of any
length can be written to zarr without ever being held in memory, and the
pixels do not depend on the chunking.

Conventions
-----------
* ``shifts[t] = (dy, dx)`` in pixels is the displacement of the image content
  in frame ``t`` relative to frame 0: what sits at pixel ``r`` in frame 0 sits
  at ``r + shifts[t]`` in frame ``t``. ``shifts[0] = (0, 0)``.
* Particle centres ``y``/``x`` in the particle table are in nm in the frame of
  reference of frame 0 (the drift-corrected frame), with the movie's
  coordinates (pixel ``i`` has centre ``i * pixel_size_nm``). ``y_frame`` and
  ``x_frame`` give the centre in the raw, drifting frame.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize
from scipy import fft as sfft
from scipy.spatial import cKDTree
from scipy.special import erfc

from temflow._movie import AXIS, DIMS, TIME, X, Y, as_movie

__all__ = ["SyntheticMovie", "make_movie", "lsw_distribution", "save_truth"]

Mechanism = Literal["ostwald", "coalescence", "mixed", "none"]
_MECHANISMS = ("ostwald", "coalescence", "mixed", "none")
_SUBSTEPS = 8


@dataclass(frozen=True)
class SyntheticMovie:
    """A synthetic movie and everything that is true about it.

    Attributes
    ----------
    movie : xarray.DataArray
        uint16 frames, dims ``("time", "y", "x")``, lazy (dask), coords in s and nm.
    labels : xarray.DataArray
        uint32 particle ids per pixel (0 = background), same dims, coords and
        chunks as ``movie``, lazy. Ids match ``particles["particle"]``.
    shifts : xarray.DataArray
        True content displacement of each frame relative to frame 0, pixels,
        dims ``("time", "axis")`` with ``axis = ["y", "x"]``; coordinate
        ``shift_nm`` holds the same in nm.
    particles : pandas.DataFrame
        One row per particle and frame it exists in: ``particle``, ``frame``,
        ``time`` (s), ``y``, ``x`` (nm, frame-0 reference), ``y_frame``,
        ``x_frame`` (nm, raw frame), ``radius`` (nm), ``visible`` (centre in the
        recorded field of view), ``touches_border`` (disk crosses the frame
        edge or a black border).
    events : pandas.DataFrame
        ``frame`` (first frame showing the outcome), ``time`` (s), ``event``
        (``"merge"`` or ``"vanish"``), ``particle`` (the surviving id for a
        merge, the vanished id otherwise), ``merged`` (tuple of absorbed ids).
    parameters : dict
        The generator's arguments as used, including derived defaults.
    """

    movie: xr.DataArray
    labels: xr.DataArray
    shifts: xr.DataArray
    particles: pd.DataFrame
    events: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)


def lsw_distribution(u: np.ndarray) -> np.ndarray:
    """The Lifshitz-Slyozov-Wagner size distribution ``h(u)``, ``u = r / <r>``.

    Normalised to unit area on ``0 <= u < 1.5``; zero outside.

    Examples
    --------
    >>> import numpy as np
    >>> u = np.linspace(0, 1.5, 3001)
    >>> round(float(np.trapezoid(lsw_distribution(u), u)), 3)
    1.0
    """
    u = np.asarray(u, dtype=float)
    out = np.zeros_like(u)
    ok = (u > 0) & (u < 1.5)
    v = u[ok]
    out[ok] = (
        (4.0 / 9.0)
        * v**2
        * (3.0 / (3.0 + v)) ** (7.0 / 3.0)
        * (1.5 / (1.5 - v)) ** (11.0 / 3.0)
        * np.exp(-v / (1.5 - v))
    )
    return out


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in np.broadcast_to(np.asarray(size), (2,)))
    if min(shape) < 8:
        raise ValueError(f"size must be at least 8 pixels per side; got {size!r}")
    return shape  # type: ignore[return-value]


def _drift_trajectory(
    frames: int,
    rng: np.random.Generator,
    drift_px: float,
    jumps: int,
    jump_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth drift (a random low-frequency path) plus sudden jumps, pixels."""
    t = np.linspace(0.0, 1.0, frames)
    path = np.zeros((frames, 2))
    for axis in range(2):
        # a few random Fourier modes plus a linear trend: a slowly wandering stage
        trend = rng.uniform(-1, 1) * t
        modes = sum(
            rng.normal() / k * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 5)
        )
        path[:, axis] = trend + modes - modes[0] if frames > 1 else 0.0
    peak = np.abs(path).max()
    if peak > 0:
        path *= drift_px / peak
    jump_frames = np.array([], dtype=int)
    if jumps > 0 and frames > 2:
        jump_frames = np.sort(rng.choice(np.arange(1, frames), size=min(jumps, frames - 1), replace=False))
        for f in jump_frames:
            angle = rng.uniform(0, 2 * np.pi)
            magnitude = rng.uniform(0.5, 1.0) * jump_px
            path[f:] += magnitude * np.array([np.sin(angle), np.cos(angle)])
    path -= path[0]
    return path, jump_frames


def _initial_radii(
    n: int, radius_nm: tuple[float, float], mechanism: str, rng: np.random.Generator
) -> np.ndarray:
    lo, hi = radius_nm
    if mechanism in ("ostwald", "mixed"):
        # start from the self-similar LSW shape so the mean radius follows
        # <r>^3 - <r0>^3 = K t from the first frame, not after a transient
        u = np.linspace(1e-3, 1.5 - 1e-6, 4000)
        cdf = np.cumsum(lsw_distribution(u))
        cdf /= cdf[-1]
        mean = hi / 1.5
        radii = np.empty(0)
        while radii.size < n:
            draw = mean * np.interp(rng.uniform(size=2 * n), cdf, u)
            radii = np.concatenate([radii, draw[draw >= lo]])
        return radii[:n]
    centre = np.sqrt(lo * hi)
    sigma = max(np.log(hi / lo) / 4.0, 1e-3)
    return np.clip(centre * np.exp(rng.normal(0.0, sigma, n)), lo, hi)


def _place(
    radii: np.ndarray, lo: np.ndarray, hi: np.ndarray, gap_nm: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential placement without overlap, largest first."""
    order = np.argsort(-radii)
    kept_pos: list[np.ndarray] = []
    kept_r: list[float] = []
    for i in order:
        r = radii[i]
        for _ in range(200):
            p = rng.uniform(lo, hi)
            if not kept_pos:
                break
            d = np.hypot(*(np.asarray(kept_pos) - p).T)
            if np.all(d > np.asarray(kept_r) + r + gap_nm):
                break
        else:
            continue
        kept_pos.append(p)
        kept_r.append(r)
    return np.asarray(kept_pos).reshape(-1, 2), np.asarray(kept_r)


def _simulate(
    *,
    frames: int,
    frame_interval_s: float,
    mechanism: str,
    radius_nm: tuple[float, float],
    n_particles: int,
    area_lo: np.ndarray,
    area_hi: np.ndarray,
    ripening_rate_nm3_per_s: float,
    diffusion_nm2_per_s: float,
    min_radius_nm: float,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    radii0 = _initial_radii(n_particles, radius_nm, mechanism, rng)
    pos, r = _place(radii0, area_lo, area_hi, gap_nm=1.0, rng=rng)
    ids = np.arange(1, len(r) + 1)
    ripening = mechanism in ("ostwald", "mixed")
    moving = mechanism in ("coalescence", "mixed")
    # dr/dt = (k / r) (1 / <r> - 1 / r) conserves volume and gives
    # <r>^3 - <r0>^3 = (4/9) k t  (Lifshitz-Slyozov-Wagner)
    k_lsw = 9.0 / 4.0 * ripening_rate_nm3_per_s
    dt = frame_interval_s / _SUBSTEPS
    rows: list[np.ndarray] = []
    events: list[tuple[int, str, int, tuple[int, ...]]] = []
    for frame in range(frames):
        if frame > 0:
            for _ in range(_SUBSTEPS):
                if ripening and len(r) > 1:
                    volume = np.sum(r**3)
                    mean_r = r.mean()
                    r = r + dt * k_lsw / r * (1.0 / mean_r - 1.0 / r)
                    gone = ~(r > min_radius_nm) | ~np.isfinite(r)
                    if gone.any():
                        for pid in ids[gone]:
                            events.append((frame, "vanish", int(pid), ()))
                        ids, pos, r = ids[~gone], pos[~gone], r[~gone]
                    if len(r):
                        # the dissolved atoms (and the Euler step's error) join the survivors:
                        # ripening moves volume, it never creates or destroys it
                        r = r * np.cbrt(volume / np.sum(r**3))
                if moving and len(r):
                    # Stokes-Einstein-like mobility: small particles wander more
                    step = np.sqrt(2.0 * diffusion_nm2_per_s * dt) * (radius_nm[0] / r) ** 1.5
                    pos = pos + rng.normal(size=pos.shape) * step[:, None]
                    pos = np.where(pos < area_lo, 2 * area_lo - pos, pos)
                    pos = np.where(pos > area_hi, 2 * area_hi - pos, pos)
                ids, pos, r = _merge_touching(ids, pos, r, frame, events)
        rows.append(
            np.column_stack([ids, np.full(len(ids), frame), pos, r]) if len(ids) else np.empty((0, 5))
        )
    table = np.concatenate(rows) if rows else np.empty((0, 5))
    particles = pd.DataFrame(
        {
            "particle": table[:, 0].astype(np.int64),
            "frame": table[:, 1].astype(np.int64),
            "y": table[:, 2],
            "x": table[:, 3],
            "radius": table[:, 4],
        }
    )
    event_table = pd.DataFrame(events, columns=["frame", "event", "particle", "merged"])
    event_table = event_table.astype({"frame": np.int64, "particle": np.int64})
    return particles, event_table


def _merge_touching(
    ids: np.ndarray,
    pos: np.ndarray,
    r: np.ndarray,
    frame: int,
    events: list[tuple[int, str, int, tuple[int, ...]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge every pair of touching particles, volume conserved, larger id kept."""
    while len(r) > 1:
        tree = cKDTree(pos)
        pairs = tree.query_pairs(2.0 * r.max(), output_type="ndarray")
        if len(pairs) == 0:
            break
        d = np.hypot(*(pos[pairs[:, 0]] - pos[pairs[:, 1]]).T)
        touching = pairs[d < r[pairs[:, 0]] + r[pairs[:, 1]]]
        if len(touching) == 0:
            break
        # merge the most overlapping pair first; repeat until nothing touches
        overlap = r[touching[:, 0]] + r[touching[:, 1]] - d[d < r[pairs[:, 0]] + r[pairs[:, 1]]]
        i, j = touching[np.argmax(overlap)]
        keep, lose = (i, j) if r[i] >= r[j] else (j, i)
        v_keep, v_lose = r[keep] ** 3, r[lose] ** 3
        pos[keep] = (pos[keep] * v_keep + pos[lose] * v_lose) / (v_keep + v_lose)
        r[keep] = np.cbrt(v_keep + v_lose)
        if events and events[-1][0] == frame and events[-1][1] == "merge" and events[-1][2] == ids[keep]:
            events[-1] = (frame, "merge", int(ids[keep]), events[-1][3] + (int(ids[lose]),))
        else:
            events.append((frame, "merge", int(ids[keep]), (int(ids[lose]),)))
        alive = np.arange(len(r)) != lose
        ids, pos, r = ids[alive], pos[alive], r[alive]
    return ids, pos, r


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
    """Darkness of a particle: a soft-edged disk, a little darker in its thick middle."""
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
        for _, pid, py, px, pr in here:
            cy, cx = py + dy, px + dx
            reach = pr + 4 * edge_px + 1
            y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, ny)
            x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, nx)
            if y0 >= y1 or x0 >= x1:
                continue
            rho = np.hypot(yy[y0:y1] - cy, xx[:, x0:x1] - cx)
            darkness = params["contrast"] * _particle_profile(rho, pr, edge_px)
            fringe_px = params["fringe_spacing_px"]
            if fringe_px:
                angle = (pid * 2.399963) % np.pi  # a fixed, id-dependent lattice orientation
                wave = np.cos(2 * np.pi * ((yy[y0:y1] - cy) * np.sin(angle) + (xx[:, x0:x1] - cx) * np.cos(angle)) / fringe_px)
                darkness = darkness * (1.0 + 0.3 * wave * (rho < pr))
            intensity[y0:y1, x0:x1] *= 1.0 - darkness
        intensity = np.where(valid, np.clip(intensity, 0, None), 0.0)
        rng = np.random.default_rng([params["seed"], 2, int(frame)])
        electrons = rng.poisson(params["dose_e_per_px"] * intensity).astype(np.float32)
        if params["read_noise_e"] > 0:
            electrons += rng.normal(0.0, params["read_noise_e"], electrons.shape).astype(np.float32)
        counts = np.rint(electrons * params["gain_counts_per_e"])
        out[k] = np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return out


def _lazy_render(
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


def _time_chunks(frames: int, chunks: Any, frame_bytes: int) -> tuple[tuple[int, ...], Any]:
    """Frames per rendering task, and the final chunking to apply after."""
    if chunks is None or chunks == "auto":
        per = max(1, min(frames, (64 * 2**20) // max(frame_bytes, 1)))
        return tuple(da.core.normalize_chunks((per,), (frames,))[0]), None
    if isinstance(chunks, int):
        return tuple(da.core.normalize_chunks((chunks,), (frames,))[0]), None
    if isinstance(chunks, Mapping):
        t = chunks.get(TIME, -1)
        spatial = {d: chunks[d] for d in (Y, X) if d in chunks}
        tc = da.core.normalize_chunks((t,), (frames,))[0]
        return tuple(tc), ({d: chunks.get(d, -1) for d in DIMS} if spatial else None)
    if isinstance(chunks, Sequence) and len(chunks) == 3:
        tc = da.core.normalize_chunks((chunks[0],), (frames,))[0]
        return tuple(tc), dict(zip(DIMS, chunks))
    raise TypeError(
        f"chunks must be an int (frames per chunk), a (time, y, x) tuple or a mapping of dim -> size; got {chunks!r}"
    )


def make_movie(
    *,
    frames: int = 16,
    size: int | tuple[int, int] = 256,
    pixel_size_nm: float = 0.5,
    frame_interval_s: float = 1.0,
    mechanism: Mechanism = "ostwald",
    radius_nm: tuple[float, float] = (2.0, 8.0),
    n_particles: int | None = None,
    area_fraction: float = 0.08,
    ripening_rate_nm3_per_s: float | None = None,
    diffusion_nm2_per_s: float | None = None,
    min_radius_nm: float = 0.6,
    drift_px: float | None = None,
    jumps: int | None = None,
    jump_px: float | None = None,
    recorded_margin_px: int | None = None,
    blank_frames: Sequence[int] = (),
    dose_e_per_px: float = 50.0,
    read_noise_e: float = 0.5,
    gain_counts_per_e: float = 8.0,
    contrast: float = 0.4,
    texture_contrast: float = 0.08,
    texture_correlation_px: float = 1.5,
    edge_px: float = 0.6,
    fringe_spacing_nm: float | None = None,
    chunks: int | tuple[Any, Any, Any] | Mapping[str, int] | None = None,
    seed: int = 0,
) -> SyntheticMovie:
    """Make a synthetic in-situ heating movie and its ground truth.

    Lazy: the pixels and labels are dask arrays rendered chunk by chunk from
    ``seed``; only the particle table (small) is simulated on the spot.

    Parameters
    ----------
    frames : int
        Number of frames.
    size : int or (int, int)
        Frame size in pixels, square or ``(ny, nx)``.
    pixel_size_nm : float
        Pixel size in nm.
    frame_interval_s : float
        Time between frames in s.
    mechanism : {"ostwald", "coalescence", "mixed", "none"}
        How the particles coarsen: Ostwald ripening (small particles shrink
        and vanish, large ones grow, ``<r>^3 - <r0>^3 = K t``), migration and
        coalescence (particles random-walk and merge on contact), both, or
        neither (static particles, e.g. to test drift correction). Particles
        that touch always merge.
    radius_nm : (float, float)
        Range of initial particle radii, nm.
    n_particles : int, optional
        Number of particles in the recorded area at the start; by default
        enough to cover ``area_fraction`` of it.
    area_fraction : float
        Fraction of the area covered by particles at the start, when
        ``n_particles`` is not given.
    ripening_rate_nm3_per_s : float, optional
        ``K`` in ``<r>^3 - <r0>^3 = K t``; default: the mean radius grows by
        about half over the movie.
    diffusion_nm2_per_s : float, optional
        Diffusion coefficient of a particle of the smallest initial radius, nm^2/s
        (larger particles are slower, as ``r^-3``); default: a small particle
        wanders about the mean spacing over the movie.
    min_radius_nm : float
        A particle shrinking below this radius has dissolved ("vanish").
    drift_px : float, optional
        Largest excursion of the smooth stage drift, pixels; default 5 % of the
        frame width. 0 for no drift.
    jumps : int, optional
        Number of sudden stage jumps; default 2 for movies of 8 frames or more.
    jump_px : float, optional
        Largest jump, pixels; default 1/8 of the frame width.
    recorded_margin_px : int, optional
        The recorded area extends this far beyond frame 0 on every side; frames
        that drift further show black borders. Default: half the largest shift.
    blank_frames : sequence of int
        Frames recorded with the beam blanked (black apart from read noise).
    dose_e_per_px : float
        Electrons per pixel per frame on the bare support (Poisson noise).
    read_noise_e : float
        Camera read noise, electrons RMS (Gaussian).
    gain_counts_per_e : float
        Camera counts per electron.
    contrast : float
        Fraction of the intensity a particle absorbs (0..1).
    texture_contrast : float
        RMS contrast of the amorphous support texture.
    texture_correlation_px : float
        Grain size of the support texture, pixels.
    edge_px : float
        Width of the particles' soft edge, pixels.
    fringe_spacing_nm : float, optional
        Lattice-fringe spacing inside the particles (0.235 nm for Au(111)); only
        drawn when it spans at least 2.5 pixels.
    chunks : int, tuple or mapping, optional
        Frames per chunk, or chunk sizes per dim; default about 64 MiB per chunk.
    seed : int
        Random seed: same seed, same movie, whatever the chunking.

    Returns
    -------
    SyntheticMovie
        ``movie``, ``labels``, ``shifts``, ``particles``, ``events``, ``parameters``.

    Raises
    ------
    ValueError
        For impossible values (no frames, negative sizes, unknown mechanism).

    Examples
    --------
    >>> truth = make_movie(frames=4, size=48, seed=1)
    >>> truth.movie.dims, truth.movie.dtype.name, truth.movie.shape
    (('time', 'y', 'x'), 'uint16', (4, 48, 48))
    >>> float(truth.shifts[0, 0])
    0.0
    """
    if mechanism not in _MECHANISMS:
        raise ValueError(f"mechanism must be one of {_MECHANISMS}; got {mechanism!r}")
    if int(frames) < 1:
        raise ValueError(f"frames must be at least 1; got {frames!r}")
    frames = int(frames)
    shape = _parse_size(size)
    for name, value in (
        ("pixel_size_nm", pixel_size_nm),
        ("frame_interval_s", frame_interval_s),
        ("dose_e_per_px", dose_e_per_px),
        ("gain_counts_per_e", gain_counts_per_e),
    ):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be positive; got {value!r}")
    lo, hi = (float(v) for v in radius_nm)
    if not 0 < lo <= hi:
        raise ValueError(f"radius_nm must be (smallest, largest) with 0 < smallest <= largest; got {radius_nm!r}")
    if not 0 <= contrast < 1:
        raise ValueError(f"contrast must be in [0, 1); got {contrast!r}")
    bad_blank = [f for f in blank_frames if not 0 <= int(f) < frames]
    if bad_blank:
        raise ValueError(f"blank_frames must be frame indices in [0, {frames}); got {bad_blank}")

    rng = np.random.default_rng([seed, 0])
    drift_px = 0.05 * shape[1] if drift_px is None else float(drift_px)
    jumps = (2 if frames >= 8 else 0) if jumps is None else int(jumps)
    jump_px = shape[1] / 8.0 if jump_px is None else float(jump_px)
    if drift_px == 0 and jumps == 0:
        shift_px, jump_frames = np.zeros((frames, 2)), np.array([], dtype=int)
    else:
        shift_px, jump_frames = _drift_trajectory(frames, rng, drift_px, jumps, jump_px)
    if recorded_margin_px is None:
        recorded_margin_px = int(np.ceil(0.5 * np.abs(shift_px).max())) if frames > 1 else 0
    margin = (int(recorded_margin_px), int(recorded_margin_px))

    area_lo = -np.array(margin, dtype=float) * pixel_size_nm
    area_hi = (np.array(shape, dtype=float) + np.array(margin)) * pixel_size_nm - pixel_size_nm
    area = float(np.prod(area_hi - area_lo))
    mean_area = np.pi * ((lo + hi) / 2 if mechanism in ("coalescence", "none") else hi / 1.5) ** 2
    if n_particles is None:
        n_particles = max(1, int(round(area_fraction * area / mean_area)))
    duration = max(frames - 1, 1) * frame_interval_s
    r0_mean = hi / 1.5 if mechanism in ("ostwald", "mixed") else np.sqrt(lo * hi)
    if ripening_rate_nm3_per_s is None:
        ripening_rate_nm3_per_s = (1.5**3 - 1.0) * r0_mean**3 / duration
    if diffusion_nm2_per_s is None:
        spacing = np.sqrt(area / max(n_particles, 1))
        diffusion_nm2_per_s = spacing**2 / (4.0 * duration)

    particles, events = _simulate(
        frames=frames,
        frame_interval_s=frame_interval_s,
        mechanism=mechanism,
        radius_nm=(lo, hi),
        n_particles=int(n_particles),
        area_lo=area_lo,
        area_hi=area_hi,
        ripening_rate_nm3_per_s=float(ripening_rate_nm3_per_s),
        diffusion_nm2_per_s=float(diffusion_nm2_per_s),
        min_radius_nm=float(min_radius_nm),
        rng=rng,
    )
    times = np.arange(frames) * float(frame_interval_s)
    particles.insert(2, "time", times[particles["frame"].to_numpy()])
    shift_of_row = shift_px[particles["frame"].to_numpy()]
    particles["y_frame"] = particles["y"] + shift_of_row[:, 0] * pixel_size_nm
    particles["x_frame"] = particles["x"] + shift_of_row[:, 1] * pixel_size_nm
    blank = np.zeros(frames, dtype=bool)
    blank[list(int(f) for f in blank_frames)] = True
    # visible: the centre is inside the frame and inside the recorded area
    cy = particles["y_frame"].to_numpy() / pixel_size_nm
    cx = particles["x_frame"].to_numpy() / pixel_size_nm
    r_px = particles["radius"].to_numpy() / pixel_size_nm
    sy, sx = particles["y"].to_numpy() / pixel_size_nm, particles["x"].to_numpy() / pixel_size_nm
    # the frame-0 pixel range that is both in this frame and in the recorded area
    y_lo = np.maximum(-margin[0], -shift_of_row[:, 0])
    y_hi = np.minimum(shape[0] + margin[0], shape[0] - shift_of_row[:, 0]) - 1
    x_lo = np.maximum(-margin[1], -shift_of_row[:, 1])
    x_hi = np.minimum(shape[1] + margin[1], shape[1] - shift_of_row[:, 1]) - 1
    not_blank = ~blank[particles["frame"].to_numpy()]
    particles["visible"] = (sy >= y_lo) & (sy <= y_hi) & (sx >= x_lo) & (sx <= x_hi) & not_blank
    particles["touches_border"] = particles["visible"] & (
        (sy - r_px < y_lo) | (sy + r_px > y_hi) | (sx - r_px < x_lo) | (sx + r_px > x_hi)
    )
    del cy, cx
    events.insert(1, "time", times[events["frame"].to_numpy()] if len(events) else np.zeros(0))

    fringe_px = 0.0
    if fringe_spacing_nm and fringe_spacing_nm / pixel_size_nm >= 2.5:
        fringe_px = float(fringe_spacing_nm / pixel_size_nm)
    params: dict[str, Any] = {
        "shape": shape,
        "margin": margin,
        "seed": int(seed),
        "texture_correlation_px": float(texture_correlation_px),
        "texture_contrast": float(texture_contrast),
        "contrast": float(contrast),
        "edge_px": float(edge_px),
        "fringe_spacing_px": fringe_px,
        "dose_e_per_px": float(dose_e_per_px),
        "read_noise_e": float(read_noise_e),
        "gain_counts_per_e": float(gain_counts_per_e),
    }
    particle_px = np.column_stack(
        [
            particles["frame"].to_numpy(float),
            particles["particle"].to_numpy(float),
            particles["y"].to_numpy() / pixel_size_nm,
            particles["x"].to_numpy() / pixel_size_nm,
            r_px,
        ]
    )
    time_chunks, final_chunks = _time_chunks(frames, chunks, shape[0] * shape[1] * 2)
    movie_data = _lazy_render("movie", shift_px, blank, particle_px, params, time_chunks)
    label_data = _lazy_render("labels", shift_px, blank, particle_px, params, time_chunks)
    if final_chunks is not None:
        movie_data = movie_data.rechunk(tuple(final_chunks[d] for d in DIMS))
        label_data = label_data.rechunk(tuple(final_chunks[d] for d in DIMS))

    attrs = {
        "source": "temflow.synthetic.make_movie",
        "format": "synthetic",
        "instrument": {
            "voltage_kV": 300.0,
            "dose_e_per_px": float(dose_e_per_px),
            "exposure_s": float(frame_interval_s),
            "camera": "synthetic",
        },
        "mechanism": mechanism,
        "seed": int(seed),
    }
    movie = as_movie(
        movie_data, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s, attrs=attrs, name="intensity"
    )
    movie.attrs["units"] = "counts"
    labels = movie.copy(data=label_data)
    labels.name = "labels"
    labels.attrs = {"source": "temflow.synthetic.make_movie", "description": "true particle ids per pixel"}
    shifts = xr.DataArray(
        shift_px,
        dims=(TIME, AXIS),
        coords={
            TIME: movie.coords[TIME],
            AXIS: [Y, X],
            "shift_nm": ((TIME, AXIS), shift_px * pixel_size_nm, {"units": "nm"}),
        },
        attrs={"units": "px", "jump_frames": [int(f) for f in jump_frames]},
        name="shift",
    )
    parameters = dict(
        frames=frames,
        size=shape,
        pixel_size_nm=float(pixel_size_nm),
        frame_interval_s=float(frame_interval_s),
        mechanism=mechanism,
        radius_nm=(lo, hi),
        n_particles=int(n_particles),
        ripening_rate_nm3_per_s=float(ripening_rate_nm3_per_s),
        diffusion_nm2_per_s=float(diffusion_nm2_per_s),
        min_radius_nm=float(min_radius_nm),
        drift_px=float(drift_px),
        jumps=int(jumps),
        jump_px=float(jump_px),
        jump_frames=[int(f) for f in jump_frames],
        recorded_margin_px=int(recorded_margin_px),
        blank_frames=[int(f) for f in blank_frames],
        seed=int(seed),
        **{k: v for k, v in params.items() if k not in ("shape", "margin", "seed")},
    )
    return SyntheticMovie(
        movie=movie, labels=labels, shifts=shifts, particles=particles, events=events, parameters=parameters
    )


def save_truth(
    truth: SyntheticMovie, store: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a synthetic movie to a zarr store and its ground truth beside it.

    Computes: renders and writes every frame (chunk by chunk). The movie goes
    to ``store``; the ground truth to the folder ``store`` with suffix
    ``.truth``: ``labels.zarr``, ``particles.parquet``, ``events.parquet``,
    ``shifts.parquet`` (frame, time, dy, dx in px) and ``parameters.json``.

    Parameters
    ----------
    truth : SyntheticMovie
        From :func:`make_movie`.
    store : str or path
        The movie's zarr store.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    pathlib.Path
        The movie's store.
    """
    from temflow.store import save_zarr

    path = save_zarr(truth.movie, store, overwrite=overwrite)
    folder = Path(path).with_suffix(".truth")
    folder.mkdir(parents=True, exist_ok=True)
    save_zarr(truth.labels, folder / "labels.zarr", overwrite=overwrite)
    truth.particles.to_parquet(folder / "particles.parquet", index=False)
    events = truth.events.copy()
    events["merged"] = events["merged"].map(list)
    events.to_parquet(folder / "events.parquet", index=False)
    shifts = pd.DataFrame(
        {
            "frame": np.arange(truth.shifts.sizes[TIME]),
            "time": truth.shifts[TIME].values,
            "dy": truth.shifts.sel(axis=Y).values,
            "dx": truth.shifts.sel(axis=X).values,
        }
    )
    shifts.to_parquet(folder / "shifts.parquet", index=False)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in truth.parameters.items()}
    (folder / "parameters.json").write_text(json.dumps(params, indent=2))
    return Path(path)
