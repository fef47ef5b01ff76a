"""Electron dose per frame: dose rate (e/Å²/s) and cumulative dose (e/Å²) from the movie's metadata.

The beam changes what it images (radiolysis, knock-on, beam heating), so a change in an in-situ
movie can only be called thermal when the dose it came with is known. Two ways to the dose,
each needing something the file may not have; temflow refuses rather than guess:

* **camera counts** (``counts_per_electron`` given): electrons per pixel and frame = the frame's
  counts / the camera's conversion factor (counts per primary electron, from the camera's
  calibration sheet or a counting mode's 1.0), over the pixel's area at the specimen (the
  movie's calibration, in Å²), over the frame's exposure time (``exposure_s`` from the file's
  metadata, or given). The counts are the frame's median by default: on a field that is mostly
  bare support the median pixel sees the incident beam, while the mean is pulled down by
  absorbing particles (``statistic="mean"`` for a thin, uniform specimen). A dark or offset level
  the camera adds must be subtracted beforehand (``dark_counts``).
  Scanning (STEM) movies are refused: a STEM detector's counts are not camera electrons.
* **beam current** (``beam_current_A`` given, or the screen current Velox records as
  ``Optics.LastMeasuredScreenCurrent``): dose rate = current / e over the illuminated area
  (a disc of ``illuminated_diameter_nm``, which no file records: the user gives it). DM's
  ``Emission Current`` is the gun's emission, not the current on the specimen, and is never used.

The cumulative dose of frame *i* is the dose received from the start of the movie to the end of
that frame's exposure: with the beam on between frames (``beam_between_frames=True``, usual in
in-situ work) each frame adds its dose rate times the time to the next frame; with the beam
blanked between exposures, only the exposures count. Dose received before the first frame
(focusing, searching) is unknown to the file: ``initial_dose_e_per_A2`` adds it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr

from temflow.movie import FRAME_DIMS, TIME, check_movie, pixel_size_nm

__all__ = ["ELEMENTARY_CHARGE_C", "add_dose_coords", "electron_dose"]

ELEMENTARY_CHARGE_C = 1.602176634e-19
_DOSE_COORDS = ("dose_rate_e_per_A2_s", "frame_dose_e_per_A2", "cumulative_dose_e_per_A2")


def electron_dose(
    movie: xr.DataArray,
    *,
    counts_per_electron: float | None = None,
    exposure_s: float | None = None,
    dark_counts: float = 0.0,
    statistic: Literal["median", "mean"] = "median",
    beam_current_A: float | None = None,
    illuminated_diameter_nm: float | None = None,
    beam_between_frames: bool = True,
    initial_dose_e_per_A2: float = 0.0,
) -> xr.Dataset:
    """Dose rate, dose per frame and cumulative dose of every frame (see the module's description).

    Computes: with ``counts_per_electron`` it reads the movie once (one number per frame); with
    a beam current it reads nothing.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")`` in camera counts, ``y``/``x`` in nm, ``time`` in s.
    counts_per_electron : float, optional
        Camera counts per primary electron (the user's conversion factor): selects the counts
        method.
    exposure_s : float, optional
        Exposure of one frame, s; default ``movie.attrs["instrument"]["exposure_s"]``.
    dark_counts : float
        Counts the camera reads without beam (subtracted first), default 0.
    statistic : {"median", "mean"}
        How a frame's counts are summarised (counts method).
    beam_current_A : float, optional
        Beam current on the specimen, A; default: a screen current in the file's metadata.
    illuminated_diameter_nm : float, optional
        Diameter of the illuminated disc at the specimen, nm (beam-current method).
    beam_between_frames : bool
        Whether the specimen stays illuminated between exposures (default True).
    initial_dose_e_per_A2 : float
        Dose received before the first frame, e/Å².

    Returns
    -------
    xarray.Dataset
        On ``time``: ``dose_rate_e_per_A2_s`` (e/Å²/s), ``frame_dose_e_per_A2`` (e/Å² during the
        frame's exposure) and ``cumulative_dose_e_per_A2`` (e/Å² up to the end of the frame);
        ``attrs`` record the method and every number used.

    Raises
    ------
    ValueError
        When neither method has what it needs (the message says what is missing and where it
        could come from), or a number is not positive and finite.

    Examples
    --------
    >>> import numpy as np, temflow
    >>> movie = temflow.as_movie(np.full((3, 4, 4), 800.0), pixel_size_nm=0.1, frame_interval_s=0.5)
    >>> dose = electron_dose(movie, counts_per_electron=8.0, exposure_s=0.5)
    >>> dose["frame_dose_e_per_A2"].values  # 100 e per 1 Å² pixel
    array([100., 100., 100.])
    >>> dose["cumulative_dose_e_per_A2"].values
    array([100., 200., 300.])
    """
    check_movie(movie)
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean'; got {statistic!r}")
    times = np.asarray(movie[TIME].values, dtype=float)
    interval = np.diff(times)
    last = float(np.median(interval)) if interval.size else float(exposure_s or movie.attrs.get("frame_interval_s", 1.0))
    step = np.append(interval, last)
    instrument = movie.attrs.get("instrument", {}) or {}
    initial = _positive(initial_dose_e_per_A2, "initial_dose_e_per_A2", allow_zero=True)
    attrs: dict[str, Any] = {"beam_between_frames": bool(beam_between_frames), "initial_dose_e_per_A2": initial}
    if counts_per_electron is not None:
        gain = _positive(counts_per_electron, "counts_per_electron")
        mode = " ".join(str(instrument.get(k, "")) for k in ("mode", "imaging_mode")).upper()
        if "STEM" in mode or "SCANNING" in mode:
            raise ValueError(
                f"the file was recorded in scanning mode ({mode.strip()!r}): a STEM detector's counts are not "
                "electrons arriving on a camera pixel, so counts_per_electron does not apply; the dose of a scan is "
                "beam current x dwell time / pixel area, which temflow does not compute")
        exposure = _exposure(exposure_s, instrument)
        dy, dx = pixel_size_nm(movie)
        pixel_area_A2 = (dy * 10.0) * (dx * 10.0)
        counts = _frame_counts(movie, statistic) - float(dark_counts)
        frame_dose = counts / gain / pixel_area_A2
        rate = frame_dose / exposure
        attrs.update(method="camera counts", counts_per_electron=gain, exposure_s=exposure, statistic=statistic,
                     dark_counts=float(dark_counts), pixel_area_A2=pixel_area_A2)
    else:
        current, where = _beam_current(beam_current_A, movie.attrs)
        if current is None or illuminated_diameter_nm is None:
            have = ", ".join(f"{k} = {instrument[k]}" for k in ("exposure_s", "camera") if k in instrument) or "none"
            missing = []
            if current is None:
                missing.append("a beam current (beam_current_A=..., in A; the file records none)")
            if illuminated_diameter_nm is None:
                missing.append("the illuminated diameter (illuminated_diameter_nm=...)")
            raise ValueError(
                "cannot compute the electron dose: pass counts_per_electron=... (the camera's counts per "
                "electron; with the exposure time from the file or exposure_s=...) or give "
                + " and ".join(missing) + f". Dose-related metadata found in the file: {have}")
        diameter = _positive(illuminated_diameter_nm, "illuminated_diameter_nm")
        area_A2 = np.pi * (diameter * 10.0 / 2.0) ** 2
        rate = np.full(times.shape, current / ELEMENTARY_CHARGE_C / area_A2)
        exposure = _exposure(exposure_s, instrument) if (exposure_s or "exposure_s" in instrument) else last
        frame_dose = rate * exposure
        attrs.update(method="beam current", beam_current_A=current, beam_current_source=where,
                     illuminated_diameter_nm=diameter, exposure_s=exposure)
    between = rate * (step if beam_between_frames else exposure)
    # frame i: all earlier frames' share, then its own exposure
    cumulative = initial + np.concatenate([[0.0], np.cumsum(between)[:-1]]) + frame_dose
    coords = {TIME: movie[TIME]}
    out = xr.Dataset(
        {
            "dose_rate_e_per_A2_s": (TIME, np.asarray(rate, float), {"units": "e/Å²/s"}),
            "frame_dose_e_per_A2": (TIME, np.asarray(frame_dose, float), {"units": "e/Å²"}),
            "cumulative_dose_e_per_A2": (TIME, np.asarray(cumulative, float), {"units": "e/Å²"}),
        },
        coords=coords,
        attrs=attrs,
    )
    return out


def add_dose_coords(movie: xr.DataArray, dose: xr.Dataset) -> xr.DataArray:
    """Put :func:`electron_dose`'s per-frame numbers on the movie's time axis as coordinates.

    Lazy: the movie's data are not touched.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``.
    dose : xarray.Dataset
        From :func:`electron_dose` on this movie (same frames).

    Returns
    -------
    xarray.DataArray
        ``movie`` with ``dose_rate_e_per_A2_s``, ``frame_dose_e_per_A2`` and
        ``cumulative_dose_e_per_A2`` on ``time``; ``attrs["electron_dose"]`` says how they were
        obtained.

    Examples
    --------
    >>> import numpy as np, temflow
    >>> movie = temflow.as_movie(np.full((2, 4, 4), 8.0), pixel_size_nm=0.1, frame_interval_s=1.0)
    >>> dose = electron_dose(movie, counts_per_electron=8.0, exposure_s=1.0)
    >>> add_dose_coords(movie, dose)["cumulative_dose_e_per_A2"].values
    array([1., 2.])
    """
    check_movie(movie)
    if not isinstance(dose, xr.Dataset) or any(name not in dose for name in _DOSE_COORDS):
        raise TypeError("dose must be the Dataset temflow.io.dose.electron_dose(movie, ...) returns")
    if dose.sizes.get(TIME) != movie.sizes[TIME]:
        raise ValueError(f"dose has {dose.sizes.get(TIME)} frames and the movie {movie.sizes[TIME]}; "
                         "compute it from this movie")
    out = movie.assign_coords({name: (TIME, dose[name].values, dict(dose[name].attrs)) for name in _DOSE_COORDS})
    out.attrs = dict(movie.attrs)
    out.attrs["electron_dose"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dose.attrs.items()}
    return out


def _frame_counts(movie: xr.DataArray, statistic: str) -> np.ndarray:
    reduce = np.nanmedian if statistic == "median" else np.nanmean
    per_frame = xr.apply_ufunc(
        lambda block: reduce(block.reshape(*block.shape[:-2], -1).astype(np.float64), axis=-1),
        movie,
        input_core_dims=[list(FRAME_DIMS)],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"allow_rechunk": True},
    )
    return np.asarray(per_frame.values, dtype=float)


def _exposure(exposure_s: float | None, instrument: dict[str, Any]) -> float:
    if exposure_s is not None:
        return _positive(exposure_s, "exposure_s")
    value = instrument.get("exposure_s")
    if value is None:
        raise ValueError(
            "the file's metadata has no exposure time, which the counts method needs to turn counts per frame "
            "into a dose rate; pass exposure_s=... (for a camera reading continuously, the frame interval)")
    return _positive(value, "the file's exposure_s")


def _beam_current(given: float | None, attrs: dict[str, Any]) -> tuple[float | None, str]:
    if given is not None:
        return _positive(given, "beam_current_A"), "given"
    instrument = attrs.get("instrument", {}) or {}
    if instrument.get("beam_current_A"):
        return float(instrument["beam_current_A"]), "instrument.beam_current_A"
    velox = (attrs.get("metadata", {}) or {}).get("velox", {}) or {}
    optics = velox.get("Optics", {}) if isinstance(velox, dict) else {}
    value = optics.get("LastMeasuredScreenCurrent") if isinstance(optics, dict) else None
    try:
        current = float(value) if value is not None else None
    except (TypeError, ValueError):
        current = None
    if current is not None and current > 0:
        return current, "Velox Optics.LastMeasuredScreenCurrent"
    return None, ""


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}") from None
    if not np.isfinite(out) or out < 0 or (out == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number; got {value}")
    return out
