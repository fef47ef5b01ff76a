"""Find particles in a movie and measure them frame by frame.

Three steps, each usable on its own:

* :func:`threshold_particles` - the classical segmentation baseline (smoothing,
  flat-field background removal, one Otsu threshold, opening), so the whole
  analysis runs without a trained model. Lazy.
* :func:`label_particles` - connected components per frame. Lazy.
* :func:`measure_particles` - a tidy table of every particle in every frame
  (area, equivalent diameter, centre, shape, intensity, border flag), computed
  chunk by chunk; :func:`measure_particles_to_parquet` writes one parquet part
  per chunk for movies whose table does not fit in memory.

Particles are dark on a bright support (bright-field TEM). Pixels outside the
recorded area (black borders left by drift correction, exact zeros or NaN) are
never particles and mark the particles that touch them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.delayed import Delayed
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from temflow._movie import DIMS, TIME, X, Y, check_movie, pixel_size_nm

__all__ = ["COLUMNS", "label_particles", "measure_particles", "measure_particles_to_parquet", "read_particles", "threshold_particles"]

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


def _border_level_of(frames: np.ndarray) -> np.float32:
    """A twentieth of the median of the frames' per-frame medians (robust to blank frames)."""
    medians = np.nanmedian(np.asarray(frames, dtype=np.float32).reshape(len(frames), -1), axis=1)
    return np.float32(_BORDER_FRACTION * np.nanmedian(medians)) if len(medians) else np.float32(0.0)


def _recorded(block: np.ndarray, level: float | np.ndarray) -> np.ndarray:
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
    return recorded


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
    median = _CENTRES[min(np.searchsorted(cdf, 0.5), len(_CENTRES) - 1)]
    low = _CENTRES[min(np.searchsorted(cdf, 0.1587), len(_CENTRES) - 1)]
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
        several times the largest particle radius. Default 32 pixels.
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
    >>> from temflow.synthetic import make_movie
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
    kwargs = dict(sigma_px=sigma_px, background_px=background_px)
    data = movie.data
    nt = movie.sizes[TIME]
    sample = np.unique(np.linspace(0, nt - 1, min(int(sample_frames), nt)).round().astype(int))
    lazy = isinstance(data, da.Array)
    # the recorded mask is an input of its own; the two means reach this far
    reach = max(_gaussian_radius(sigma_px), _box_radius(background_px))

    def level_of(dark: Any) -> Any:
        if not isinstance(threshold, str):
            return np.float32(threshold)
        if threshold == "movie":
            if lazy:
                # a dask reduction, not dask.delayed: delayed would optimise (rename) the
                # darkness graph and compute it a second time
                counts, _ = da.histogram(dark[sample], bins=_EDGES)
                return counts.map_blocks(_otsu_from_histogram, drop_axis=0, dtype=np.float32)
            return _otsu(dark[sample])
        if lazy:
            whole = dark.rechunk({1: -1, 2: -1})
            return whole.map_blocks(_otsu_per_frame, drop_axis=[1, 2], dtype=np.float32)[:, None, None]
        return _otsu_per_frame(dark)[:, None, None]

    # two passes: the first finds the particles, the second leaves them out of the background
    if lazy:
        if border_value is None:
            medians = data[sample].rechunk({1: -1, 2: -1}).map_blocks(
                lambda block: np.nanmedian(block.reshape(len(block), -1).astype(np.float32), axis=1),
                drop_axis=[1, 2],
                dtype=np.float32,
            )
            border = medians.rechunk(-1).map_blocks(
                lambda m: np.float32(_BORDER_FRACTION * np.nanmedian(m)), drop_axis=0, dtype=np.float32
            )
        else:
            border = np.float32(border_value)
        recorded = _map_frames(_median_where_dark, [data, ~(data > border)], 1, np.float32) > border
        first = _map_frames(_darkness, [data, recorded], reach, np.float32, **kwargs)
        found = first > level_of(first)  # NaN (outside the recorded area) is never above
        dark = _map_frames(
            _darkness, [data, recorded, found], reach + exclude_px, np.float32, exclude_px=exclude_px, **kwargs
        )
        mask = dark > level_of(dark)
        if opening_px > 0:
            # erosion then dilation: the opening sees twice the disk radius
            mask = _map_frames(_open, [mask], 2 * opening_px, bool, radius_px=opening_px)
    else:
        frames = np.asarray(data)
        border = _border_level_of(frames[sample]) if border_value is None else np.float32(border_value)
        recorded = _recorded(frames, border)
        first = _darkness(frames, recorded, **kwargs)
        dark = _darkness(frames, recorded, first > level_of(first), exclude_px=exclude_px, **kwargs)
        mask = _open(dark > level_of(dark), opening_px)

    attrs = {
        "description": "particle masks (threshold_particles)",
        "sigma_nm": sigma_px * pixel,
        "background_nm": background_px * pixel,
        "opening_nm": opening_px * pixel,
        "threshold": threshold if isinstance(threshold, str) else float(threshold),
    }
    return xr.DataArray(mask, dims=DIMS, coords=movie.coords, attrs=attrs, name="particles")


def _check_frames_array(value: Any, name: str) -> xr.DataArray:
    if not isinstance(value, xr.DataArray):
        raise TypeError(
            f"{name} must be an xarray.DataArray with dims {DIMS}; got {type(value).__name__}; "
            "wrap arrays with temflow.as_movie(...) or keep the coords of the movie"
        )
    return check_movie(value, name)


def _label_block(block: np.ndarray, structure: np.ndarray) -> np.ndarray:
    out = np.zeros(block.shape, dtype=np.int32)
    for k, frame in enumerate(block):
        ndi.label(frame, structure=structure, output=out[k])
    return out


def label_particles(masks: xr.DataArray, *, connectivity: Literal[1, 2] = 1) -> xr.DataArray:
    """Number the connected particles of every frame (1, 2, ... per frame; 0 = background).

    Each task labels whole frames: the spatial axes are rechunked to one chunk
    per frame, so a particle that straddled a ``y``/``x`` chunk boundary is one
    particle. This beats dask-image's chunk-wise ``label`` with its merge pass
    here: that pass builds an all-to-all graph of the chunk faces and numbers
    across the whole array (time included), whereas measuring needs every
    particle's pixels in one task anyway, and one 4096 x 4096 frame of int32
    labels is only 64 MiB.

    Lazy: returns a dask-backed DataArray for a dask-backed input (numpy in,
    numpy out), chunked by the input's time chunks and whole frames.

    Parameters
    ----------
    masks : xarray.DataArray of bool
        True on particles, dims ``("time", "y", "x")`` (from
        :func:`threshold_particles`, a model, or your own).
    connectivity : {1, 2}
        1: pixels that share an edge connect (particles touching only at a
        corner stay apart); 2: corners connect too.

    Returns
    -------
    xarray.DataArray
        int32 labels, the masks' dims, coords and attrs (plus ``connectivity``).

    Raises
    ------
    TypeError
        If ``masks`` is not a boolean DataArray.
    ValueError
        For bad dims or connectivity.

    Examples
    --------
    >>> import numpy as np
    >>> from temflow import as_movie
    >>> masks = as_movie(np.array([[[1, 1, 0, 1], [0, 0, 0, 1]]], dtype=bool))
    >>> label_particles(masks).values[0].tolist()
    [[1, 1, 0, 2], [0, 0, 0, 2]]
    """
    masks = _check_frames_array(masks, "masks")
    if masks.dtype != bool:
        raise TypeError(
            f"masks must be boolean (True on particles); got dtype {masks.dtype}; "
            "threshold probabilities first (probabilities > 0.5), or pass integer labels "
            "straight to measure_particles"
        )
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (edges) or 2 (edges and corners); got {connectivity!r}")
    structure = ndi.generate_binary_structure(2, connectivity)
    data = masks.data
    if isinstance(data, da.Array):
        whole = data.rechunk({1: -1, 2: -1})
        labels = whole.map_blocks(_label_block, structure, dtype=np.int32, meta=np.array((), np.int32))
    else:
        labels = _label_block(np.asarray(data), structure)
    attrs = dict(masks.attrs)
    attrs.update(description="particle labels per frame (label_particles)", connectivity=int(connectivity))
    return xr.DataArray(labels, dims=DIMS, coords=masks.coords, attrs=attrs, name="labels")


COLUMNS: tuple[str, ...] = (
    "frame",
    "time",
    "label",
    "area",
    "equivalent_diameter",
    "y",
    "x",
    "perimeter",
    "eccentricity",
    "orientation",
    "mean_intensity",
    "touches_border",
)
"""Columns of :func:`measure_particles`' table, in order."""

_PROPERTIES = ("label", "area", "centroid", "perimeter", "eccentricity", "orientation")


def _empty_table() -> pd.DataFrame:
    dtypes = {"frame": np.int64, "label": np.int64, "touches_border": bool}
    return pd.DataFrame({c: np.zeros(0, dtype=dtypes.get(c, np.float64)) for c in COLUMNS})


def _measure_block(
    labels: np.ndarray,
    image: np.ndarray | None,
    first_frame: int,
    *,
    times: np.ndarray,
    y_nm: np.ndarray,
    x_nm: np.ndarray,
    min_area_px: float,
    border_value: float | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measure the particles of a block of whole frames.

    Returns the particle rows and one row per frame (frame, time, recorded area
    in pixels), so that frames without particles are not lost.
    """
    from skimage.measure import regionprops_table

    ny, nx = labels.shape[1:]
    tables = []
    recorded_px = np.full(len(labels), float(ny * nx))
    recorded = None
    if image is not None:
        image = np.asarray(image, dtype=np.float32)
        level = (
            np.array([_border_level_of(frame[None]) for frame in image])[:, None, None]
            if border_value is None
            else np.float32(border_value)
        )
        recorded = _recorded(image, level)
    for k in range(len(labels)):
        frame_labels = np.asarray(labels[k])
        if recorded is not None:
            recorded_px[k] = float(recorded[k].sum())
        if not frame_labels.any():
            continue
        props = regionprops_table(
            frame_labels,
            intensity_image=None if image is None else np.asarray(image[k], dtype=np.float32),
            properties=_PROPERTIES + (() if image is None else ("intensity_mean",)),
        )
        table = pd.DataFrame(props)
        keep = table["area"].to_numpy() >= min_area_px
        table = table[keep]
        if table.empty:
            continue
        # a particle touches the border when a pixel of it is on the frame edge
        # or next to an unrecorded (black) pixel
        edge = np.zeros((ny, nx), dtype=bool)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        if recorded is not None and not recorded[k].all():
            edge |= ndi.binary_dilation(~recorded[k], structure=np.ones((3, 3), bool))
        touching = np.unique(frame_labels[edge])
        table["touches_border"] = np.isin(table["label"].to_numpy(), touching)
        table["frame"] = first_frame + k
        table["mean_intensity"] = table.pop("intensity_mean") if image is not None else np.nan
        tables.append(table)
    frames = pd.DataFrame(
        {
            "frame": np.arange(first_frame, first_frame + len(labels), dtype=np.int64),
            "time": np.asarray(times, float),
            "recorded_px": recorded_px,
        }
    )
    if not tables:
        return _empty_table(), frames
    table = pd.concat(tables, ignore_index=True)
    pixel_y, pixel_x = abs(y_nm[1] - y_nm[0]) if ny > 1 else 1.0, abs(x_nm[1] - x_nm[0]) if nx > 1 else 1.0
    area_nm2 = table["area"].to_numpy(float) * pixel_y * pixel_x
    out = pd.DataFrame(
        {
            "frame": table["frame"].to_numpy(np.int64),
            "time": times[table["frame"].to_numpy() - first_frame],
            "label": table["label"].to_numpy(np.int64),
            "area": area_nm2,
            "equivalent_diameter": 2.0 * np.sqrt(area_nm2 / np.pi),
            # coordinates may have any origin and sign: read them at the sub-pixel centroid
            "y": np.interp(table["centroid-0"].to_numpy(float), np.arange(ny), y_nm),
            "x": np.interp(table["centroid-1"].to_numpy(float), np.arange(nx), x_nm),
            # skimage's perimeter is in pixels; the geometric-mean pixel is exact for square pixels
            "perimeter": table["perimeter"].to_numpy(float) * math.sqrt(pixel_y * pixel_x),
            "eccentricity": table["eccentricity"].to_numpy(float),
            "orientation": table["orientation"].to_numpy(float),
            "mean_intensity": table["mean_intensity"].to_numpy(float),
            "touches_border": table["touches_border"].to_numpy(bool),
        }
    )
    return out, frames


def _prepare(
    labels: xr.DataArray, movie: xr.DataArray | None, min_area_nm2: float | None, border_value: float | None
) -> tuple[Any, Any, dict[str, Any], float]:
    labels = _check_frames_array(labels, "labels")
    if labels.dtype == bool:
        raise TypeError("labels must be integer particle labels, not boolean masks; use measure_particles(label_particles(masks))")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer particle labels (0 = background); got dtype {labels.dtype}")
    if movie is not None:
        movie = _check_frames_array(movie, "movie")
        if movie.shape != labels.shape:
            raise ValueError(f"movie must have the labels' shape {labels.shape}; got {movie.shape}")
    dy, dx = pixel_size_nm(labels)
    if min_area_nm2 is None:
        min_area_px = 4.0
    else:
        if not math.isfinite(float(min_area_nm2)) or min_area_nm2 < 0:
            raise ValueError(f"min_area_nm2 must be an area >= 0 in nm^2; got {min_area_nm2!r}")
        min_area_px = float(min_area_nm2) / (dy * dx)
    ny, nx = labels.sizes[Y], labels.sizes[X]
    y_nm = np.asarray(labels.coords[Y].values, float) if Y in labels.coords else np.arange(ny) * dy
    x_nm = np.asarray(labels.coords[X].values, float) if X in labels.coords else np.arange(nx) * dx
    times = np.asarray(labels.coords[TIME].values, float) if TIME in labels.coords else np.arange(labels.sizes[TIME], dtype=float)
    options = dict(y_nm=y_nm, x_nm=x_nm, min_area_px=min_area_px, border_value=None if border_value is None else float(border_value))
    return labels, movie, options | {"times": times}, dy * dx


def _blocks(labels: xr.DataArray, movie: xr.DataArray | None) -> list[tuple[Any, Any, int, slice]]:
    """(label block, image block, first frame, time slice) per time chunk of whole frames."""
    data = labels.data
    if isinstance(data, da.Array):
        data = data.rechunk({1: -1, 2: -1})
        time_chunks = data.chunks[0]
        lab_blocks = data.to_delayed().ravel()
        if movie is not None:
            img = movie.data if isinstance(movie.data, da.Array) else da.from_array(np.asarray(movie.data))
            img_blocks = img.rechunk((time_chunks, -1, -1)).to_delayed().ravel()
        else:
            img_blocks = [None] * len(lab_blocks)
    else:
        time_chunks = (labels.sizes[TIME],)
        lab_blocks = [np.asarray(data)]
        img_blocks = [None if movie is None else np.asarray(movie.data)]
    out = []
    start = 0
    for lab, img, n in zip(lab_blocks, img_blocks, time_chunks):
        out.append((lab, img, start, slice(start, start + n)))
        start += n
    return out


def _finish(table: pd.DataFrame, frames: pd.DataFrame, pixel_area_nm2: float) -> pd.DataFrame:
    table = table.sort_values(["frame", "label"], ignore_index=True)
    frames = frames.sort_values("frame")
    table.attrs = {
        "times_s": [float(t) for t in frames["time"]],
        "field_area_nm2": [float(a) * pixel_area_nm2 for a in frames["recorded_px"]],
    }
    return table


def measure_particles(
    labels: xr.DataArray,
    movie: xr.DataArray | None = None,
    *,
    min_area_nm2: float | None = None,
    border_value: float | None = None,
) -> pd.DataFrame:
    """Measure every particle in every frame: a tidy table, one row per particle and frame.

    Computes: each time chunk (whole frames) is measured in its own task with
    :func:`skimage.measure.regionprops_table` and the parts are concatenated.
    For tables too big for memory use :func:`measure_particles_to_parquet`.

    Parameters
    ----------
    labels : xarray.DataArray of int
        Particle labels per frame (0 = background), dims ``("time", "y", "x")``,
        coords in s and nm (from :func:`label_particles` or a label image).
    movie : xarray.DataArray, optional
        The raw frames, same shape: gives ``mean_intensity`` and finds black
        borders (3 x 3 median at or below ``border_value``); without it
        ``mean_intensity`` is NaN and only the frame edge counts as border.
    min_area_nm2 : float, optional
        Smaller particles are dropped as noise, nm^2; default 4 pixels.
    border_value : float, optional
        Movie values at or below this (3 x 3 median) are outside the recorded
        area; default a twentieth of each frame's median intensity.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`: ``frame``, ``time`` (s), ``label``, ``area``
        (nm^2), ``equivalent_diameter`` (nm, of the disk of equal area), ``y``,
        ``x`` (nm, centroid in the movie's coordinates), ``perimeter`` (nm),
        ``eccentricity`` (0 for a disk), ``orientation`` (rad, between the
        ``y`` axis and the major axis), ``mean_intensity`` (movie units),
        ``touches_border`` (a pixel on the frame edge or next to a black
        border: its size is not known; coarsening statistics drop it by
        default). ``attrs["times_s"]`` and ``attrs["field_area_nm2"]`` (the
        recorded area of every frame, nm^2) keep frames without particles.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer DataArray (boolean masks: label them first).
    ValueError
        For bad dims, a movie of another shape, or a negative minimum area.

    Examples
    --------
    >>> from temflow.synthetic import make_movie
    >>> truth = make_movie(frames=2, size=48, radius_nm=(3, 5), drift_px=0, jumps=0, seed=2)
    >>> table = measure_particles(truth.labels, truth.movie)
    >>> list(table.columns) == list(COLUMNS), len(table) > 0
    (True, True)
    """
    labels, movie, options, pixel_area = _prepare(labels, movie, min_area_nm2, border_value)
    times = options["times"]
    parts = []
    for lab, img, start, span in _blocks(labels, movie):
        kw = options | {"times": times[span]}
        if isinstance(lab, Delayed):
            parts.append(dask.delayed(_measure_block, nout=2)(lab, img, start, **kw))
        else:
            parts.append(_measure_block(lab, img, start, **kw))
    (parts,) = dask.compute(parts)
    tables = [t for t, _ in parts if len(t)]
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    frames = pd.concat([f for _, f in parts], ignore_index=True)
    return _finish(table, frames, pixel_area)


def _write_block(labels, image, start, path: Path, index: int, **kw: Any) -> int:
    table, frames = _measure_block(labels, image, start, **kw)
    table.to_parquet(path / "particles" / f"part-{index:05d}.parquet", index=False)
    frames.to_parquet(path / "frames" / f"part-{index:05d}.parquet", index=False)
    return len(table)


def measure_particles_to_parquet(
    labels: xr.DataArray,
    path: str | os.PathLike[str],
    movie: xr.DataArray | None = None,
    *,
    min_area_nm2: float | None = None,
    border_value: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Measure like :func:`measure_particles`, writing one parquet part per time chunk.

    Computes and writes: each task measures one time chunk and writes its rows
    to ``path/particles/part-NNNNN.parquet`` (and its frames' recorded areas to
    ``path/frames/``), returning only a row count, so memory stays flat however
    long the movie. Read the result with :func:`read_particles`.

    Parameters
    ----------
    labels, movie, min_area_nm2, border_value
        As for :func:`measure_particles`.
    path : str or path
        Directory to create.
    overwrite : bool
        Replace the parts of an existing directory.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``path`` exists and is not empty and ``overwrite`` is False; as
        :func:`measure_particles` otherwise.
    """
    labels, movie, options, pixel_area = _prepare(labels, movie, min_area_nm2, border_value)
    root = Path(path)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(f"path {str(root)!r} exists and is not empty; pass overwrite=True or choose a new directory")
    for sub in ("particles", "frames"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob("part-*.parquet"):
            old.unlink()
    times = options["times"]
    tasks = []
    for i, (lab, img, start, span) in enumerate(_blocks(labels, movie)):
        kw = options | {"times": times[span]}
        write = dask.delayed(_write_block) if isinstance(lab, Delayed) else _write_block
        tasks.append(write(lab, img, start, root, i, **kw))
    dask.compute(tasks)
    (root / "pixel_area_nm2").write_text(repr(pixel_area))
    return root


def read_particles(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a table written by :func:`measure_particles_to_parquet`.

    Returns the same table (and ``attrs``) as :func:`measure_particles`.

    Raises
    ------
    ValueError
        If ``path`` is not such a directory.
    """
    root = Path(path)
    parts = sorted((root / "particles").glob("part-*.parquet"))
    frame_parts = sorted((root / "frames").glob("part-*.parquet"))
    if not parts or not (root / "pixel_area_nm2").exists():
        raise ValueError(f"{str(root)!r} holds no particle table; write one with measure_particles_to_parquet(...)")
    tables = [t for t in (pd.read_parquet(p) for p in parts) if len(t)]
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    frames = pd.concat([pd.read_parquet(p) for p in frame_parts], ignore_index=True).sort_values("frame")
    pixel_area = float((root / "pixel_area_nm2").read_text())
    return _finish(table, frames, pixel_area)
