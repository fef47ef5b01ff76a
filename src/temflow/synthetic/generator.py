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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from temflow._json import write_json
from temflow.movie import AXIS, DIMS, TIME, X, Y, as_movie
from temflow.synthetic._render import lazy_render
from temflow.synthetic._simulation import drift_trajectory, lsw_distribution, simulate

__all__ = ["SyntheticMovie", "make_movie", "lsw_distribution", "save_truth"]

Mechanism = Literal["ostwald", "coalescence", "mixed", "none"]
Imaging = Literal["bright_field", "haadf"]
_IMAGING = ("bright_field", "haadf")
# support levels of the large regions, relative to the support, by imaging mode: first a hole
# (vacuum: bright in bright field, dark in HAADF), then thick support (the opposite), and so on
_REGION_LEVELS = {"bright_field": (1.7, 0.55), "haadf": (0.2, 1.8)}
_MECHANISMS = ("ostwald", "coalescence", "mixed", "none")


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


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in np.broadcast_to(np.asarray(size), (2,)))
    if min(shape) < 8:
        raise ValueError(f"size must be at least 8 pixels per side; got {size!r}")
    return shape  # type: ignore[return-value]


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
    imaging: Imaging = "bright_field",
    particle_brightness: float = 2.0,
    regions: int = 0,
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
    imaging : {"bright_field", "haadf"}
        Bright-field TEM (particles absorb ``contrast`` of the beam: dark on a
        bright support) or HAADF/ADF-STEM (particles add ``particle_brightness``
        times the support's signal: bright on a darker support). The movie's
        ``attrs["instrument"]["detector"]`` says which ("BF" or "HAADF").
    particle_brightness : float
        HAADF only: the signal a particle's thick middle adds, in units of the
        support's signal (heavy metal on light support: several times).
    regions : int
        Large regions of another support thickness, soft-edged disks of a
        quarter to a third of the frame, drifting with the sample: the first
        a hole (vacuum: darker in HAADF, brighter in bright field), the second
        thick support (the opposite), alternating. Particles are drawn on top
        of them and stay in the truth; the regions themselves are no particles.
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
    if imaging not in _IMAGING:
        raise ValueError(f"imaging must be one of {_IMAGING}; got {imaging!r}")
    if not np.isfinite(particle_brightness) or particle_brightness <= 0:
        raise ValueError(f"particle_brightness must be positive; got {particle_brightness!r}")
    if int(regions) < 0:
        raise ValueError(f"regions must be a count >= 0; got {regions!r}")
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
        shift_px, jump_frames = drift_trajectory(frames, rng, drift_px, jumps, jump_px)
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

    particles, events = simulate(
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
    events.insert(1, "time", times[events["frame"].to_numpy()] if len(events) else np.zeros(0))

    fringe_px = 0.0
    if fringe_spacing_nm and fringe_spacing_nm / pixel_size_nm >= 2.5:
        fringe_px = float(fringe_spacing_nm / pixel_size_nm)
    # the regions draw from a stream of their own: a movie without regions is unchanged
    region_rng = np.random.default_rng([seed, 3])
    region_table = tuple(
        (
            float(region_rng.uniform(0, shape[0])),
            float(region_rng.uniform(0, shape[1])),
            float(region_rng.uniform(0.25, 0.34) * min(shape)),
            float(_REGION_LEVELS[imaging][k % 2]),
        )
        for k in range(int(regions))
    )
    params: dict[str, Any] = {
        "imaging": imaging,
        "particle_brightness": float(particle_brightness),
        "regions": region_table,
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
    movie_data = lazy_render("movie", shift_px, blank, particle_px, params, time_chunks)
    label_data = lazy_render("labels", shift_px, blank, particle_px, params, time_chunks)
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
            "detector": "HAADF" if imaging == "haadf" else "BF",
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
        **{k: v for k, v in params.items() if k not in ("shape", "margin", "seed", "regions")},
        regions=[list(r) for r in region_table],
    )
    return SyntheticMovie(
        movie=movie, labels=labels, shifts=shifts, particles=particles, events=events, parameters=parameters
    )


def save_truth(
    truth: SyntheticMovie,
    store: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
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
    resume : bool
        Finish an interrupted write (as :func:`temflow.save_zarr`): chunks of the
        movie and labels already written are kept.
    progress : bool
        Show progress bars.

    Returns
    -------
    pathlib.Path
        The movie's store.
    """
    from temflow.io.store import save_zarr

    path = save_zarr(truth.movie, store, overwrite=overwrite, resume=resume, progress=progress)
    folder = Path(path).with_suffix(".truth")
    folder.mkdir(parents=True, exist_ok=True)
    save_zarr(truth.labels, folder / "labels.zarr", overwrite=overwrite, resume=resume, progress=progress)
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
    write_json(folder / "parameters.json", params)
    return Path(path)
