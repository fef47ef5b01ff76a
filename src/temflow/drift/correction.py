"""Drift correction: estimate every frame's shift, move the frames back, crop to what all frames see.

The estimate is a blockwise dask graph: each frame's band-limited spectrum is
computed once, in the task of its time chunk, and every pairing of that frame
uses it. Pairings across chunk boundaries need the spectra of a few frames of
another chunk (key frames, the frame just before a chunk); those frames get a
task of their own, whose small output (one band-limited spectrum) is all that
crosses a chunk boundary. The pairwise shifts (a few numbers per frame) meet in
one task that solves for the trajectory by robust least squares. No
``map_overlap``: a chunk never pulls in its neighbours' pixels. A chain of
empty tasks through the chunks keeps the scheduler working along the movie, so
memory holds a few chunks and the spectra of the last key frames, whatever the
movie's length. Correcting is a second pass (the crop needs every shift): one
task per time chunk, each frame moved alone.

Pixel-level precision costs: one real FFT per frame, a correlation on a grid a
quarter of the frame's size per pairing (one or two per frame), and a few
3 x (band) matrix products; measured 1.2-1.7x the time of one forward plus one
inverse FFT per frame (``benchmarks/bench_drift.py``).

Registration: each frame (or its ``roi``) is apodised by a Tukey window,
pixels inside black borders count as the mean, and the real FFT (float32,
``scipy.fft``) is kept only on a band of frequencies: a Gaussian low-pass of
``sigma_px`` against shot noise and a high-pass (0.07 cycles/px) that leaves
out the large, changing particles so that the static support texture decides.
Pairs are cross-correlated on a small coarse grid (the peak, found anywhere in
the frame, so jumps of a quarter of the field of view are followed), then the
exact band-limited correlation, divided by the overlap of the two static
windows at that lag (which would otherwise pull the peak towards zero by
~0.3 % of the shift), is maximised by Newton steps on 3x3 patches evaluated by
matrix DFT down to ``1 / upsample`` px. Quality is the peak-to-sidelobe ratio
(PSR, about 5 for unrelated frames).

Sign convention (as ``temflow.synthetic.generator``): ``shift[t] = (dy, dx)`` px is the
displacement of frame ``t``'s content relative to frame 0; what is at pixel
``r`` in frame 0 is at ``r + shift[t]`` in frame ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from temflow.drift import _registration as reg
from temflow.drift import _resample
from temflow.drift import _trajectory
from temflow.drift._graph import estimate_graph
from temflow.movie import AXIS, TIME, X, Y, check_movie, pixel_size_nm

__all__ = ["estimate_drift", "apply_drift", "crop_valid", "correct_drift"]

Reference = Literal["auto", "first", "previous"]
Method = Literal["fourier", "spline", "integer"]
_REFERENCES = ("auto", "first", "previous")
_METHODS = ("fourier", "spline", "integer")
_MIN_SIZE_PX = 16



def _default_workers(fft_workers: int | None) -> int:
    if fft_workers is not None:
        if int(fft_workers) < 1:
            raise ValueError(f"fft_workers must be a positive number of threads; got {fft_workers!r}")
        return int(fft_workers)
    # dask already runs one task per core: one FFT thread each, so they do not fight.
    # The eager path uses one thread too: the transforms are a few ms each, and
    # splitting them across threads costs more than it saves on a busy machine
    # (measured: 2 threads made the numpy path 4x slower under load)
    return 1


def _parse_roi(roi: Sequence[int] | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    ny, nx = shape
    if roi is None:
        if min(ny, nx) < _MIN_SIZE_PX:
            raise ValueError(
                f"frames must be at least {_MIN_SIZE_PX} x {_MIN_SIZE_PX} px to register; got {ny} x {nx} px"
            )
        return 0, ny, 0, nx
    try:
        y0, y1, x0, x1 = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise TypeError(f"roi must be (y_start, y_stop, x_start, x_stop) in pixels; got {roi!r}") from None
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
        raise ValueError(
            f"roi (y_start, y_stop, x_start, x_stop) = {(y0, y1, x0, x1)} px does not fit in frames of "
            f"{ny} x {nx} px (y, x); give a box inside the frame or roi=None for the whole frame"
        )
    if min(y1 - y0, x1 - x0) < _MIN_SIZE_PX:
        raise ValueError(f"roi must be at least {_MIN_SIZE_PX} px on each side; got {(y0, y1, x0, x1)}")
    return y0, y1, x0, x1


def _check_options(reference: str, upsample: float, sigma_px: float, key_interval: int, min_quality: float, black_border: float) -> None:
    if reference not in _REFERENCES:
        raise ValueError(f"reference must be one of {_REFERENCES}; got {reference!r}")
    if not np.isfinite(upsample) or upsample < 1:
        raise ValueError(f"upsample must be >= 1 (final precision 1/upsample px); got {upsample!r}")
    if not np.isfinite(sigma_px) or not 0.25 <= sigma_px <= 10:
        raise ValueError(f"sigma_px must be between 0.25 and 10 px; got {sigma_px!r}")
    if int(key_interval) < 2:
        raise ValueError(f"key_interval must be at least 2 frames; got {key_interval!r}")
    if not np.isfinite(min_quality) or min_quality <= 0:
        raise ValueError(f"min_quality must be a positive peak-to-sidelobe ratio; got {min_quality!r}")
    if not 0 <= black_border < 1:
        raise ValueError(f"black_border must be in [0, 1) (0 disables border detection); got {black_border!r}")


def estimate_drift(
    movie: xr.DataArray,
    *,
    reference: Reference = "auto",
    upsample: float = 50,
    roi: Sequence[int] | None = None,
    sigma_px: float = 1.25,
    key_interval: int = 16,
    min_quality: float = 8.0,
    black_border: float = 0.1,
    fft_workers: int | None = None,
) -> xr.DataArray:
    """Estimate the drift of every frame relative to frame 0.

    Lazy: for a dask-backed movie, returns a DataArray backed by a dask graph
    (one task per time chunk, one per frame shared across chunks, one solve);
    a numpy-backed movie gives a numpy-backed result.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``; chunks along ``y``/``x`` are merged (each
        task needs whole frames).
    reference : {"auto", "first", "previous"}
        Which frames are registered to which. ``"first"``: every frame against
        frame 0 (no accumulation, but fails once the drift leaves frame 0's
        field of view or the scene has changed). ``"previous"``: every frame
        against the one before, summed (a random walk: the error grows as the
        square root of the number of frames). ``"auto"`` (default): key frames
        every ``key_interval`` frames registered to frame 0 and to the keys 1,
        2, 4, 8 and 16 keys before (Fiji's multi-lag idea, on key frames);
        every other frame to its nearest key (with a backup link to the key on
        its other side); all combined by robust least squares. Chosen by
        measurement on ``temflow.synthetic.generator`` movies with coarsening particles
        and jumps (``benchmarks/bench_drift.py``): as accurate as ``"first"``
        while frame 0 is in view, it keeps going when it is not, and its
        error does not grow with movie length like ``"previous"``'s; a pure
        key chain without the links to frame 0 was 15-25 % worse (scene
        changes bias each link slightly, and a chain adds the biases up).
    upsample : float
        Final precision of the peak search, 1/``upsample`` px.
    roi : (int, int, int, int), optional
        ``(y_start, y_stop, x_start, x_stop)`` in pixels: register on this box
        only (for instance a region with static support texture). Default:
        the whole frame.
    sigma_px : float
        Width in px of the Gaussian low-pass applied before correlating.
    key_interval : int
        Frames between key frames (``reference="auto"``).
    min_quality : float
        Smallest peak-to-sidelobe ratio for a pairing to count. A frame with no
        pairing above it (blank, saturated, NaN) is flagged; its shift is
        interpolated and it does not bend the trajectory after it.
    black_border : float
        Edge rows/columns whose pixels are mostly darker than this fraction
        of the frame's mean are black borders (outside the recorded area);
        they are left out of the registration and of the crop. 0 disables.
    fft_workers : int, optional
        Threads per FFT (and BLAS) call. Default 1: dask runs one task per
        core, so more threads per task would only fight them; for a numpy
        movie, chunk it with dask to use several cores.

    Returns
    -------
    xarray.DataArray
        ``"shift"``, float64 px, dims ``("time", "axis")``, ``axis = ["y", "x"]``.
        Coordinates: ``shift_nm`` (time, axis), ``quality`` (time; the best PSR
        of the frame's accepted pairings), ``flagged`` (time; bool), ``jump``
        (time; bool, a sudden step in the trajectory arrives at this frame),
        ``valid_start_px``/``valid_stop_px`` (time, axis; the recorded
        rectangle of the raw frame, inside black borders).

    Raises
    ------
    ValueError
        If ``movie`` lacks the dims ``("time", "y", "x")``, has no frames,
        frames smaller than 16 px or than ``roi``, or an option is out of range.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=6, size=64, seed=2, jumps=0)
    >>> shifts = estimate_drift(truth.movie)
    >>> shifts.dims, shifts.axis.values.tolist()
    (('time', 'axis'), ['y', 'x'])
    >>> bool(abs(shifts - truth.shifts).max() < 0.5)
    True
    """
    check_movie(movie)
    _check_options(reference, upsample, sigma_px, key_interval, min_quality, black_border)
    frames, ny, nx = (int(v) for v in movie.shape)
    if frames < 1:
        raise ValueError("movie has no frames; estimate_drift needs at least one")
    box = _parse_roi(roi, (ny, nx))
    lazy = isinstance(movie.data, da.Array)
    settings = reg.Settings(
        roi=box,
        sigma_px=float(sigma_px),
        upsample=float(upsample),
        black_border=float(black_border),
        workers=_default_workers(fft_workers),
        min_quality=float(min_quality),
    )
    plan = _trajectory.pair_plan(reference, frames, int(key_interval))
    if lazy:
        fields = estimate_graph(movie.data, plan, settings, float(min_quality))
    else:
        result = reg.measure_chunk(np.asarray(movie.data), 0, plan, {}, settings)
        fields = _trajectory.solve_trajectory([result], frames, float(min_quality))
    return _shift_array(movie, fields, reference)


def _shift_array(movie: xr.DataArray, fields: dict[str, Any], reference: str) -> xr.DataArray:
    size_nm = np.asarray(pixel_size_nm(movie))
    time = movie.coords[TIME] if TIME in movie.coords else np.arange(movie.sizes[TIME])
    return xr.DataArray(
        fields["shift"],
        dims=(TIME, AXIS),
        coords={
            TIME: time,
            AXIS: [Y, X],
            "shift_nm": ((TIME, AXIS), fields["shift"] * size_nm, {"units": "nm"}),
            "quality": (TIME, fields["quality"], {"long_name": "peak-to-sidelobe ratio of the best accepted pairing"}),
            "flagged": (TIME, fields["flagged"], {"long_name": "no usable registration: shift interpolated"}),
            "jump": (TIME, fields["jump"], {"long_name": "sudden stage jump arrives at this frame"}),
            "valid_start_px": ((TIME, AXIS), fields["valid_start"], {"units": "px"}),
            "valid_stop_px": ((TIME, AXIS), fields["valid_stop"], {"units": "px"}),
        },
        attrs={
            "units": "px",
            "long_name": "displacement of the frame's content relative to frame 0",
            "reference": reference,
            "pixel_size_nm": [float(v) for v in size_nm],
        },
        name="shift",
    )


def _check_shifts(shifts: Any, movie: xr.DataArray) -> xr.DataArray:
    if not isinstance(shifts, xr.DataArray):
        raise TypeError(f"shifts must be an xarray.DataArray from estimate_drift; got {type(shifts).__name__}")
    if tuple(shifts.dims) != (TIME, AXIS) or shifts.sizes[AXIS] != 2:
        raise ValueError(
            f"shifts must have dims ('time', 'axis') with axis = ['y', 'x']; got dims {tuple(shifts.dims)} "
            f"and shape {shifts.shape}; use temflow.estimate_drift(movie)"
        )
    if AXIS in shifts.coords and [str(v) for v in shifts.coords[AXIS].values] != [Y, X]:
        raise ValueError(f"shifts' axis must be ['y', 'x']; got {shifts.coords[AXIS].values.tolist()}")
    if shifts.sizes[TIME] != movie.sizes[TIME]:
        raise ValueError(
            f"shifts has {shifts.sizes[TIME]} frames but the movie has {movie.sizes[TIME]}; "
            "estimate the drift of this movie (or select the same frames from both)"
        )
    return shifts


def _bounds(shifts: xr.DataArray, shape: tuple[int, int]) -> tuple[Any, Any]:
    """Recorded rectangles of the raw frames, from the shifts' coords (whole frames if absent)."""
    if "valid_start_px" in shifts.coords and "valid_stop_px" in shifts.coords:
        return shifts.coords["valid_start_px"].data, shifts.coords["valid_stop_px"].data
    frames = shifts.sizes[TIME]
    return np.zeros((frames, 2), np.int64), np.tile(np.array(shape, np.int64), (frames, 1))


def apply_drift(
    movie: xr.DataArray,
    shifts: xr.DataArray,
    *,
    method: Method = "fourier",
    fft_workers: int | None = None,
) -> xr.DataArray:
    """Move every frame back by its shift, into frame 0's frame of reference.

    Lazy: a dask-backed movie gives a dask-backed result, one task per time
    chunk (``shifts`` may be lazy too); numpy in, numpy out.

    Output pixel ``r`` of frame ``t`` is the raw frame at ``r + shift[t]``, so
    the ``y``/``x`` coordinates are frame 0's: a physical position is the same
    place in every frame. The integer part of the shift moves pixels; pixels
    from outside the recorded area (beyond the frame, inside black borders)
    repeat the nearest recorded ones and are removed by :func:`crop_valid`.

    Parameters
    ----------
    movie : xarray.DataArray
        Raw frames, dims ``("time", "y", "x")``; the result has whole frames
        per chunk (chunks along ``y``/``x`` are merged), the same time chunks.
    shifts : xarray.DataArray
        From :func:`estimate_drift` (or any ``("time", "axis")`` array in px
        with the same convention).
    method : {"fourier", "spline", "integer"}
        Sub-pixel part: a Fourier phase ramp on a frame padded by a smooth
        periodic continuation (exact for band-limited images, no blur),
        a cubic spline (``scipy.ndimage.shift``, slower, slightly blurring), or
        none (shifts rounded to whole pixels, data untouched).
    fft_workers : int, optional
        Threads per FFT; default as in :func:`estimate_drift`.

    Returns
    -------
    xarray.DataArray
        Same dims, coords, attrs and dtype (integer data is rounded and
        clipped to its range); coords ``drift_y_px``/``drift_x_px`` (time)
        hold the shifts applied and ``attrs["drift_method"]`` the method.

    Raises
    ------
    ValueError
        If ``shifts`` does not match the movie or ``method`` is unknown.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=4, size=48, seed=1)
    >>> fixed = apply_drift(truth.movie, truth.shifts)
    >>> fixed.shape == truth.movie.shape, fixed.dtype.name
    (True, 'uint16')
    """
    check_movie(movie)
    shifts = _check_shifts(shifts, movie)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    frames, ny, nx = (int(v) for v in movie.shape)
    start, stop = _bounds(shifts, (ny, nx))
    values = shifts.data
    lazy = isinstance(movie.data, da.Array)
    workers = _default_workers(fft_workers)
    if lazy:
        data = movie.data.rechunk({1: -1, 2: -1})
        tchunks = data.chunks[0]
        pieces = [da.asarray(a).astype(d).rechunk((tchunks, 2)) for a, d in ((values, np.float64), (start, np.int64), (stop, np.int64))]
        moved = da.blockwise(
            _resample.shift_frames, "tyx",
            data, "tyx",
            pieces[0], "ta",
            pieces[1], "ta",
            pieces[2], "ta",
            method=method, workers=workers,
            dtype=data.dtype, concatenate=True,
            name="drift-apply-" + tokenize(data.name, pieces[0].name, pieces[1].name, method),
        )
    else:
        moved = _resample.shift_frames(
            np.asarray(movie.data), np.asarray(values, float), np.asarray(start), np.asarray(stop), method, workers
        )
    out = movie.copy(data=moved)
    out = out.assign_coords(
        drift_y_px=(TIME, values[:, 0], {"units": "px"}),
        drift_x_px=(TIME, values[:, 1], {"units": "px"}),
    )
    out.attrs["drift_method"] = method
    return out


def crop_valid(movie: xr.DataArray, shifts: xr.DataArray) -> xr.DataArray:
    """Crop a drift-corrected movie to the largest rectangle every frame covers.

    Lazy over the movie: a slice of it, nothing computed. The rectangle comes
    from the shifts and from the black borders of the raw frames (the
    ``valid_start_px``/``valid_stop_px`` coords of :func:`estimate_drift`):
    output pixel ``r`` of frame ``t`` is kept only if every raw pixel it is
    interpolated from was recorded. Flagged frames do not shrink the crop.

    Parameters
    ----------
    movie : xarray.DataArray
        The output of :func:`apply_drift` (frame 0's frame of reference).
    shifts : xarray.DataArray
        The shifts used, with concrete values: the crop's size depends on
        them, so compute a lazy estimate first (``shifts = shifts.compute()``,
        one pass over the movie) and pass the same to :func:`apply_drift`.

    Returns
    -------
    xarray.DataArray
        The cropped movie; its ``y``/``x`` coords are the kept part of frame
        0's; ``attrs["drift_crop_px"] = [y_start, y_stop, x_start, x_stop]``.

    Raises
    ------
    ValueError
        If ``shifts`` is dask-backed, does not match the movie, or no pixel is
        seen by every frame.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=4, size=48, seed=1, jumps=0)
    >>> fixed = crop_valid(apply_drift(truth.movie, truth.shifts), truth.shifts)
    >>> fixed.sizes["y"] < 48 and fixed.attrs["drift_crop_px"][1] <= 48
    True
    """
    check_movie(movie)
    shifts = _check_shifts(shifts, movie)
    lazy = [name for name, v in [("shifts", shifts.variable), *shifts.coords.items()] if isinstance(getattr(v, "data", None), da.Array)]
    if lazy:
        raise ValueError(
            "crop_valid needs the values of the shifts (the crop's size depends on them) but they are lazy "
            f"(dask-backed: {', '.join(map(str, lazy))}); compute them once with shifts = shifts.compute() "
            "and pass the same shifts to apply_drift and crop_valid"
        )
    ny, nx = movie.sizes[Y], movie.sizes[X]
    start, stop = _bounds(shifts, (ny, nx))
    use = ~np.asarray(shifts.coords["flagged"].values, bool) if "flagged" in shifts.coords else np.ones(shifts.sizes[TIME], bool)
    if not use.any():
        use = np.ones_like(use)
    y0, y1, x0, x1 = _resample.valid_crop(np.asarray(shifts.values, float), np.asarray(start), np.asarray(stop), (ny, nx), use)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(
            "no pixel is seen by every frame: the drift is larger than the field of view; "
            "correct a shorter stretch of the movie or select frames with movie.isel(time=...)"
        )
    out = movie.isel({Y: slice(y0, y1), X: slice(x0, x1)})
    out.attrs = dict(movie.attrs, drift_crop_px=[y0, y1, x0, x1])
    return out


def correct_drift(
    movie: xr.DataArray,
    *,
    reference: Reference = "auto",
    upsample: float = 50,
    roi: Sequence[int] | None = None,
    sigma_px: float = 1.25,
    key_interval: int = 16,
    min_quality: float = 8.0,
    black_border: float = 0.1,
    method: Method = "fourier",
    fft_workers: int | None = None,
) -> xr.DataArray:
    """Estimate the drift, move every frame back and crop to what all frames see.

    Computes the shifts (one pass over the movie; the crop's size depends on
    them), then returns the corrected movie lazily (dask in, dask out): writing
    it is a second pass, one chunk at a time.

    Parameters are those of :func:`estimate_drift` and :func:`apply_drift`.

    Returns
    -------
    xarray.DataArray
        The corrected, cropped movie. The shifts travel with it as coords along
        ``time``: ``drift_y_px``, ``drift_x_px`` (px, content displacement of the
        raw frame relative to frame 0), ``drift_quality`` and ``drift_flagged``;
        ``attrs["drift_crop_px"]`` is the crop in raw frame-0 pixels and
        ``attrs["drift_method"]`` the method. Use :func:`estimate_drift` then
        :func:`apply_drift` and :func:`crop_valid` to keep the full shift array.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=6, size=64, seed=2, jumps=0)
    >>> fixed = correct_drift(truth.movie)
    >>> fixed.dims, bool(fixed.sizes["x"] < 64), "drift_x_px" in fixed.coords
    (('time', 'y', 'x'), True, True)
    """
    shifts = estimate_drift(
        movie,
        reference=reference,
        upsample=upsample,
        roi=roi,
        sigma_px=sigma_px,
        key_interval=key_interval,
        min_quality=min_quality,
        black_border=black_border,
        fft_workers=fft_workers,
    )
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    shifts = shifts.compute()
    moved = apply_drift(movie, shifts, method=method, fft_workers=fft_workers)
    out = crop_valid(moved, shifts)
    return out.assign_coords(
        drift_quality=(TIME, shifts.coords["quality"].values),
        drift_flagged=(TIME, shifts.coords["flagged"].values),
    )
