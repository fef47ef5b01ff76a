"""The classical segmentation baseline: dark particles on a bright support.

:func:`threshold_particles` is the auto-labelling recipe of Horwath et al.
(2020) - smoothing, flat-field background removal, Otsu's threshold, opening -
so that the whole analysis runs without a trained model, and the reference the
models are compared with. Lazy, chunk-exact: every filter's halo comes from its
radius. Pixels outside the recorded area (black borders left by drift
correction: zeros plus read noise, or NaN) are never particles.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from temflow.movie import DIMS, TIME, check_movie, pixel_size_nm

__all__ = ["threshold_particles"]

_TRUNCATE = 4.0  # Gaussian kernels are cut at 4 sigma, as scipy.ndimage does by default


def _gaussian_radius(sigma_px: float, truncate: float = _TRUNCATE) -> int:
    """Reach of scipy's truncated Gaussian kernel, pixels (dask-image's rule)."""
    return int(truncate * float(sigma_px) + 0.5) if sigma_px > 0 else 0


_BOXES = 3  # three box passes approximate a Gaussian to a few per cent (Wells 1986)


def _box_width(sigma_px: float) -> int:
    """Odd width of the box whose ``_BOXES``-fold repetition has standard deviation ``sigma_px``."""
    width = int(round(math.sqrt(12.0 * sigma_px**2 / _BOXES + 1.0)))
    return width if width % 2 else width + 1


def _box_radius(sigma_px: float) -> int:
    """Reach of the repeated box filter, pixels."""
    return _BOXES * (_box_width(sigma_px) // 2) if sigma_px > 0 else 0


def _blur(values: np.ndarray, sigma_px: float, box: bool) -> np.ndarray:
    """Per-frame Gaussian blur; ``box`` repeats a running-mean box instead (cost independent of sigma)."""
    if not box:
        return ndi.gaussian_filter(values, (0.0, sigma_px, sigma_px), mode="nearest", truncate=_TRUNCATE)
    width = _box_width(sigma_px)
    out = values
    for axis in (1, 2):
        for _ in range(_BOXES):
            out = ndi.uniform_filter1d(out, width, axis=axis, mode="nearest")
    return out


def _normalised_gaussian(values: np.ndarray, weight: np.ndarray, sigma_px: float, *, box: bool = False) -> np.ndarray:
    """Gaussian mean of ``values`` over the pixels where ``weight`` is 1.

    Normalised convolution: black borders do not drag the local mean down, so
    the background next to a border is the support's, not a dark ramp that
    Otsu would call a particle. The wide background blur uses repeated boxes
    (``box=True``) in float64, so that the running sums give the same pixels
    whatever the chunk origin.
    """
    if sigma_px <= 0:
        return values
    dtype = np.float64 if box else np.float32
    num = _blur((values * weight).astype(dtype), sigma_px, box)
    den = _blur(weight.astype(dtype), sigma_px, box)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


_BORDER_FRACTION = 0.05  # black borders read below a twentieth of the support's typical intensity


def _median3(block: np.ndarray) -> np.ndarray:
    """3 x 3 median per frame: read noise and hot pixels do not decide what is recorded."""
    return ndi.median_filter(np.asarray(block, dtype=np.float32), size=(1, 3, 3), mode="nearest")


def _median_where_dark(block: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """3 x 3 median of the frames that hold a dark pixel; +inf (recorded) elsewhere."""
    out = np.full(block.shape, np.inf, dtype=np.float32)
    for k in np.flatnonzero(np.asarray(dark).reshape(len(block), -1).any(axis=1)):
        out[k] = _median3(block[k : k + 1])[0]
    return out


def _frame_medians(block: np.ndarray) -> np.ndarray:
    return np.nanmedian(np.asarray(block).reshape(len(block), -1).astype(np.float32), axis=1)


def _fraction_of_median(medians: np.ndarray) -> np.float32:
    return np.float32(_BORDER_FRACTION * np.nanmedian(medians)) if len(medians) else np.float32(0.0)


def _border_level_of(frames: np.ndarray) -> np.float32:
    """A twentieth of the median of the frames' per-frame medians (robust to blank frames)."""
    return _fraction_of_median(_frame_medians(frames))


def border_level(data: Any, sample: np.ndarray) -> Any:
    """Intensity at or below which a pixel's 3 x 3 median is outside the recorded area.

    A twentieth of the typical intensity of the frames at indices ``sample``
    (the median of their medians, so blank frames do not lower it). A dask
    scalar for a dask movie (nothing computed), a numpy scalar otherwise.
    """
    if not isinstance(data, da.Array):
        return _border_level_of(np.asarray(data)[sample])
    medians = data[sample].rechunk({1: -1, 2: -1}).map_blocks(_frame_medians, drop_axis=[1, 2], dtype=np.float32)
    return medians.rechunk(-1).map_blocks(_fraction_of_median, drop_axis=0, dtype=np.float32)


def _recorded(block: np.ndarray, level: Any) -> np.ndarray:
    """Pixels inside the recorded area: the 3 x 3 median is above ``level`` (NaN is outside).

    Bright-field particles absorb well under 95 % of the beam, so a twentieth of
    the support's intensity separates black borders (zeros plus read noise)
    from anything recorded, particles included.
    """
    block = np.asarray(block, dtype=np.float32)
    # the median filter is the costly part: only frames with dark pixels need it
    dark = ~(block > level)
    recorded = np.ones(block.shape, dtype=bool)
    for k in np.flatnonzero(dark.reshape(len(block), -1).any(axis=1)):
        recorded[k] = _median3(block[k : k + 1])[0] > (level[k] if np.ndim(level) == 3 else level)
    # a NaN pixel is never recorded, whatever the median of its neighbourhood says: one
    # let into the filters below would spread NaN over the whole background window
    return recorded & np.isfinite(block)


def _darkness(
    block: np.ndarray,
    recorded: np.ndarray,
    exclude: np.ndarray | None = None,
    *,
    sigma_px: float,
    background_px: float,
    exclude_px: int = 0,
) -> np.ndarray:
    """``1 - smoothed / background`` per frame; NaN outside the recorded area.

    Bright-field intensity is multiplicative (illumination x transmission), so
    dividing by the large-scale background (a flat field) makes the particle
    contrast independent of beam intensity and dose, frame to frame. Pixels in
    ``exclude`` (particles found by a first pass, grown by ``exclude_px``) do
    not enter the background, which would otherwise be pulled down by the
    particles and shrink them all by the same fraction of a pixel.
    """
    frames = np.asarray(block, dtype=np.float32)
    valid = np.asarray(recorded, dtype=bool)
    weight = valid.astype(np.float32)
    clean = np.where(valid, frames, 0.0).astype(np.float32)
    smooth = _normalised_gaussian(clean, weight, sigma_px)
    if exclude is not None:
        grown = ndi.binary_dilation(exclude, structure=_disk(exclude_px)[None]) if exclude_px > 0 else exclude
        weight = weight * ~grown
    # a neighbourhood without any support pixel (a field more than ~90 % covered) has no
    # background: NaN, never a particle
    background = _normalised_gaussian(clean, weight, background_px, box=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dark = 1.0 - smooth / background
    return np.where(valid & np.isfinite(dark), dark, np.nan).astype(np.float32)


def _map_frames(func, arrays: list[da.Array], reach_px: int, dtype: type, **kwargs) -> da.Array:
    """Apply a per-frame filter to dask movies with a halo of ``reach_px`` pixels.

    A spatial axis whose chunks are narrower than the halo is rechunked to
    whole frames first (explicitly, rather than dask's silent rechunk), and an
    axis in one chunk needs no halo. ``boundary="none"`` leaves the true frame
    edges to the filter itself, so every chunking gives the same pixels as a
    whole frame.
    """
    data = arrays[0]
    depth = {0: 0}
    for axis in (1, 2):
        if len(data.chunks[axis]) == 1 or min(data.chunks[axis]) <= reach_px:
            data = data.rechunk({axis: -1})
            depth[axis] = 0
        else:
            depth[axis] = reach_px
    arrays = [data] + [a.rechunk(data.chunks) for a in arrays[1:]]
    return da.map_overlap(func, *arrays, depth=depth, boundary="none", dtype=dtype, meta=np.array((), dtype), **kwargs)


# Pixels per task. The recipe's temporaries (float64 box sums, two float32 darkness
# passes, masks, the halo copies) come to ~56 bytes per pixel, 28 times the uint16
# input: a task of the readers' default chunk (32-64 MiB of frames, up to 2048 frames of
# 128^2) needed 1.8 GB, and the chunk grows with the movie up to that size. Tasks of
# 2^21 pixels (128 frames of 128^2, 2 of 1024^2) need ~120 MB, whatever the length.
_TASK_PIXELS = 2**21


def _bounded_time_chunks(data: da.Array) -> da.Array:
    """``data`` rechunked along time so that no task holds more than ``_TASK_PIXELS`` pixels.

    Whole frames count (``_map_frames`` may merge the spatial chunks); a frame
    larger than the budget is one frame per task.
    """
    per = max(1, _TASK_PIXELS // max(int(data.shape[1]) * int(data.shape[2]), 1))
    return data if max(data.chunks[0], default=0) <= per else data.rechunk({0: per})


def _disk(radius_px: int) -> np.ndarray:
    r = int(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= r * r + 0.5  # noqa: PLR2004 (half a pixel: a round digital disk)


def _open(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary opening per frame with a disk; removes specks smaller than the disk."""
    if radius_px <= 0:
        return mask
    footprint = _disk(radius_px)[None]
    # border_value=1 in the erosion: particles cut by the frame edge keep their edge
    eroded = ndi.binary_erosion(mask, structure=footprint, border_value=1)
    return ndi.binary_dilation(eroded, structure=footprint) & mask


# Otsu works on a fixed histogram of the darkness (0.001 wide bins on [-1, 1]): the same
# counts from a dask reduction or from numpy, so lazy and eager thresholds are identical
_EDGES = np.linspace(-1.0, 1.0, 2001)
_CENTRES = 0.5 * (_EDGES[1:] + _EDGES[:-1])


def _histogram(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return np.histogram(values[np.isfinite(values)], bins=_EDGES)[0]


_MIN_SEPARATION = 0.25


def _otsu_from_histogram(counts: np.ndarray) -> np.float32:
    """Otsu's level, or +inf when the histogram has no particle class.

    Otsu always splits; on a bare support (or a blanked frame) it splits the
    one noise mode near its median. A particle class puts the level well
    above the median: at least a quarter of the background's one-sided spread
    (median minus 16th percentile, which the dark particles in the upper tail
    do not touch). Measured: -0.05..0 on bare support, 0.5..2.2 with
    particles at 3..40 % area fraction.
    """
    counts = np.asarray(counts).reshape(-1)
    if np.count_nonzero(counts) < 2:
        return np.float32(np.inf)  # nothing to separate (blank or empty frames): no particles
    level = float(threshold_otsu(hist=(counts, _CENTRES)))
    cdf = np.cumsum(counts) / counts.sum()
    median = float(_CENTRES[min(int(np.searchsorted(cdf, 0.5)), len(_CENTRES) - 1)])
    low = float(_CENTRES[min(int(np.searchsorted(cdf, 0.1587)), len(_CENTRES) - 1)])
    spread = max(median - low, _CENTRES[1] - _CENTRES[0])
    if (level - median) < _MIN_SEPARATION * spread:
        return np.float32(np.inf)
    return np.float32(level)


def _otsu(values: np.ndarray) -> np.float32:
    return _otsu_from_histogram(_histogram(values))


def _otsu_per_frame(block: np.ndarray) -> np.ndarray:
    return np.array([_otsu(frame) for frame in block], dtype=np.float32)


def threshold_particles(
    movie: xr.DataArray,
    *,
    sigma_nm: float | None = None,
    background_nm: float | None = None,
    opening_nm: float | None = None,
    threshold: float | Literal["movie", "frame"] = "movie",
    sample_frames: int = 16,
    border_value: float | None = None,
) -> xr.DataArray:
    """Segment dark particles on a bright support with a classical recipe.

    The auto-labelling recipe of Horwath et al. (2020, npj Comput. Mater. 6,
    108) used as the baseline against trained models: Gaussian smoothing,
    large-scale background removal, Otsu's threshold, morphological opening.

    1. Pixels outside the recorded area (3 x 3 median at or below
       ``border_value``, or NaN: the black borders drift correction leaves)
       are excluded everywhere: they never become particles and do not bias
       the background or the threshold.
    2. Darkness ``1 - G_sigma * I / G_background * I`` (normalised
       convolutions over recorded pixels): the flat field is divided out, so
       the particle contrast does not depend on dose or illumination. Two
       passes: the particles found by the first are left out of the second's
       background, which they would otherwise darken (by about the area
       fraction times the contrast), shrinking every particle.
    3. Otsu's threshold on the darkness. By default one threshold for the
       whole movie, from up to ``sample_frames`` frames spread through it:
       the particle boundary then sits at the same contrast level in every
       frame, so sizes stay comparable through time (a per-frame Otsu moves
       the boundary as the area fraction changes, which fakes a growth law,
       and finds "particles" in a blanked frame). ``threshold="frame"`` gives
       the per-frame variant; a float sets the darkness level directly.
       When the histogram has no particle class (Otsu's level sits in the
       middle of the noise, as on a bare support or a blanked frame), nothing
       is a particle.
    4. Opening with a disk of radius ``opening_nm`` removes noise specks.

    No edge (Sobel) step: on smoothed bright-field images the darkness level
    already sits mid-edge, and a gradient magnitude would turn every particle
    into a ring that needs filling again.

    Lazy: returns a dask-backed boolean DataArray for a dask-backed movie
    (numpy in, numpy out). Each chunk is processed with a halo equal to the
    reach of the filters (Gaussian radius from sigma and truncation, as
    dask-image does, plus the opening), so chunking in ``y``/``x`` gives the
    same masks as whole frames.

    Parameters
    ----------
    movie : xarray.DataArray
        Bright-field frames, dims ``("time", "y", "x")``, coords in s and nm.
    sigma_nm : float, optional
        Gaussian smoothing, nm; default 1.5 pixels (enough to average out
        the amorphous support's speckle, which is 1-2 pixels wide).
    background_nm : float, optional
        Gaussian width of the background (flat-field) estimate, nm; should be
        several times the largest particle radius, and well below the
        distance over which the illumination changes: a window as wide as
        the frame cannot follow a ramp across it (the darkness then slopes
        across the frame, Otsu finds no particle class and nothing is
        called). Default 32 pixels.
    opening_nm : float, optional
        Radius of the opening disk, nm; default 2 pixels. 0 disables it.
        Particles narrower than the disk are removed.
    threshold : {"movie", "frame"} or float
        One Otsu threshold from sampled frames, one per frame, or a fixed
        darkness level (0..1, fraction of the local background absorbed).
    sample_frames : int
        Frames sampled (evenly spaced) for the movie-wide threshold.
    border_value : float, optional
        Pixels whose 3 x 3 median is at or below this are outside the
        recorded area; default a twentieth of the median intensity of the
        sampled frames (black borders hold zeros plus read noise).

    Returns
    -------
    xarray.DataArray
        Boolean masks, True on particles, with the movie's dims, coords and
        chunks; ``attrs`` record the parameters used.

    Raises
    ------
    TypeError
        If ``movie`` is not a DataArray or ``threshold`` is of the wrong type.
    ValueError
        For bad dims, non-positive lengths, or an unknown threshold mode.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=2, size=48, radius_nm=(3, 5), drift_px=0, jumps=0, seed=2)
    >>> masks = threshold_particles(truth.movie)
    >>> masks.dtype.name, masks.dims
    ('bool', ('time', 'y', 'x'))
    >>> bool(masks[0].values.any())
    True
    """
    check_movie(movie)
    if movie.dtype.kind not in "uif":
        raise TypeError(f"movie must hold numbers (uint, int or float); got dtype {movie.dtype}")
    dy, dx = pixel_size_nm(movie)
    pixel = math.sqrt(dy * dx)
    lengths = {}
    for name, value, default_px in (
        ("sigma_nm", sigma_nm, 1.5),
        ("background_nm", background_nm, 32.0),
        ("opening_nm", opening_nm, 2.0),
    ):
        value_nm = default_px * pixel if value is None else float(value)
        if not math.isfinite(value_nm) or value_nm < 0:
            raise ValueError(f"{name} must be a length >= 0 in nm; got {value!r}")
        lengths[name] = value_nm / pixel
    if lengths["background_nm"] <= 2 * lengths["sigma_nm"]:
        raise ValueError(
            f"background_nm ({background_nm!r}) must be well above sigma_nm ({sigma_nm!r}); "
            "use several times the largest particle radius"
        )
    if isinstance(threshold, str):
        if threshold not in ("movie", "frame"):
            raise ValueError(f"threshold must be 'movie', 'frame' or a darkness level; got {threshold!r}")
    elif isinstance(threshold, (int, float, np.floating, np.integer)) and not isinstance(threshold, bool):
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold!r}")
    else:
        raise TypeError(f"threshold must be 'movie', 'frame' or a float; got {type(threshold).__name__}")
    if int(sample_frames) < 1:
        raise ValueError(f"sample_frames must be at least 1; got {sample_frames!r}")

    sigma_px, background_px = lengths["sigma_nm"], lengths["background_nm"]
    opening_px = int(round(lengths["opening_nm"]))
    exclude_px = int(math.ceil(2.0 * sigma_px))  # the blur skirt around a particle
    if border_value is not None and not math.isfinite(float(border_value)):
        raise ValueError(f"border_value must be a finite intensity or None; got {border_value!r}")
    kwargs: dict[str, Any] = dict(sigma_px=sigma_px, background_px=background_px)
    data: Any = movie.data
    nt = movie.sizes[TIME]
    sample = np.unique(np.linspace(0, nt - 1, min(int(sample_frames), nt)).round().astype(int))
    lazy = isinstance(data, da.Array)
    # the recorded mask is an input of its own; the two means reach this far
    reach = max(_gaussian_radius(sigma_px), _box_radius(background_px))

    def level_of(dark: Any, rows: Any = sample) -> Any:
        if not isinstance(threshold, str):
            return np.float32(threshold)
        if threshold == "movie":
            if lazy:
                # a dask reduction, not dask.delayed: delayed would optimise (rename) the
                # darkness graph and compute it a second time
                counts, _ = da.histogram(dark[rows], bins=_EDGES)
                return counts.map_blocks(_otsu_from_histogram, drop_axis=0, dtype=np.float32)
            return _otsu(dark[sample])
        if lazy:
            whole = dark.rechunk({1: -1, 2: -1})
            return whole.map_blocks(_otsu_per_frame, drop_axis=[1, 2], dtype=np.float32)[:, None, None]
        return _otsu_per_frame(dark)[:, None, None]

    # two passes: the first finds the particles, the second leaves them out of the background
    if lazy:
        time_chunks = data.chunks[0]
        data = _bounded_time_chunks(data)
        border = border_level(data, sample) if border_value is None else np.float32(border_value)

        def recorded_in(frames: da.Array) -> da.Array:
            inside = _map_frames(_median_where_dark, [frames, ~(frames > border)], 1, np.float32) > border
            return inside & da.isfinite(frames)  # a NaN pixel is never recorded (see _recorded)

        def first_of(frames: da.Array, inside: da.Array) -> da.Array:
            return _map_frames(_darkness, [frames, inside], reach, np.float32, **kwargs)

        def second_of(frames: da.Array, inside: da.Array, found: da.Array) -> da.Array:
            return _map_frames(
                _darkness, [frames, inside, found], reach + exclude_px, np.float32, exclude_px=exclude_px, **kwargs
            )

        recorded = recorded_in(data)
        first = first_of(data, recorded)
        if threshold == "movie":
            # the levels from the sampled frames alone, a branch of their own (the darkness of
            # a frame needs no other frame): taken from the whole pass, they would hold every
            # task with a sampled frame in memory until the level is known
            sampled = data[sample]
            sampled_inside = recorded_in(sampled)
            sampled_first = first_of(sampled, sampled_inside)
            every = slice(None)
            level_first = level_of(sampled_first, every)
            level_second = level_of(second_of(sampled, sampled_inside, sampled_first > level_first), every)
        else:
            level_first = level_of(first)
        found = first > level_first  # NaN (outside the recorded area) is never above
        dark = second_of(data, recorded, found)
        mask = dark > (level_second if threshold == "movie" else level_of(dark))
        if opening_px > 0:
            # erosion then dilation: the opening sees twice the disk radius
            mask = _map_frames(_open, [mask], 2 * opening_px, bool, radius_px=opening_px)
        # the movie's own time chunks again: merging boolean pieces costs 1 byte per pixel
        mask = mask.rechunk({0: time_chunks})
    else:
        frames: Any = np.asarray(data)
        border = border_level(frames, sample) if border_value is None else np.float32(border_value)
        inside = _recorded(frames, border)
        first_pass = _darkness(frames, inside, **kwargs)
        second_pass = _darkness(frames, inside, first_pass > level_of(first_pass), exclude_px=exclude_px, **kwargs)
        mask = _open(second_pass > level_of(second_pass), opening_px)

    attrs = {
        "description": "particle masks (threshold_particles)",
        "sigma_nm": sigma_px * pixel,
        "background_nm": background_px * pixel,
        "opening_nm": opening_px * pixel,
        "threshold": threshold if isinstance(threshold, str) else float(threshold),
    }
    return xr.DataArray(mask, dims=DIMS, coords=movie.coords, attrs=attrs, name="particles")
