"""The classical segmentation baseline, for dark (bright-field) and bright (HAADF) particles.

:func:`threshold_particles` is the auto-labelling recipe of Horwath et al.
(2020) - smoothing, flat-field background removal, Otsu's threshold, opening -
so that the whole analysis runs without a trained model, and the reference the
models are compared with. Lazy, chunk-exact: every filter's halo comes from its
radius. Pixels outside the recorded area (black borders left by drift
correction: zeros plus read noise, or NaN) are never particles. The filters
(``_filters``), the particle contrast (``_contrast``), the recorded area (``_recorded_area``),
the levels (``_levels``), the regions that are not particles (``_regions``) and the settings
taken from the sample (``_sample_settings``) have modules of their own; this one assembles the
recipe.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from temflow.analysis._filters import _bounded_time_chunks, _box_radius, _box_width, _gaussian_radius, _map_frames, _open, _whole_frames
from temflow.analysis._levels import _EDGES, _clip_top, _level, _level_from_histogram, _level_per_frame, _second_levels, _seeded, _with_faint
from temflow.analysis._contrast import _darkness, _smoothed
from temflow.analysis._recorded_area import _border_level_of, _median_where_dark, _recorded, border_level
from temflow.analysis._regions import _coarse_regions, _coarse_view, _drop_thick, _keep_sizes
from temflow.analysis._sample_settings import _FROM_RADIUS, _PROFILE_BRIGHT, _PX_DECIMALS, _estimate_from_movie, _sample_settings, _to_px
from temflow.movie import DIMS, TIME, check_movie, pixel_size_nm

__all__ = ["threshold_particles"]


# a faint particle's half-height outline must close within this many typical radii of its core (real HAADF,
# PtC3, measured with the height from the maximum: 1.5 and 2 gave the same particles, 1 left 3 of them
# ragged at their faint-level outline)
_OUTLINE_REACH = 2.0
# binned frames keep particles of this radius (binned px) or more: real bright-field Au crops of 25-45 px
# particles keep their IoU at bin_px = 2 (0.967 both), Au of 3.4 px radius drops from 0.83 to 0.46
_BINNED_RADIUS_PX = 4.0


def threshold_particles(
    movie: xr.DataArray,
    *,
    particles: Literal["dark", "bright", "auto"] = "auto",
    sigma_nm: float | None = None,
    background_nm: float | None = None,
    opening_nm: float | None = None,
    min_area_nm2: float | None = None,
    max_radius_nm: float | None = None,
    threshold: float | Literal["movie", "frame"] = "movie",
    sample_frames: int = 16,
    border_value: float | None = None,
    bin_px: int = 1,
) -> xr.DataArray:
    """Segment particles, dark (bright field) or bright (HAADF/ADF), with a classical recipe.

    The auto-labelling recipe of Horwath et al. (2020, npj Comput. Mater. 6,
    108) used as the baseline against trained models: Gaussian smoothing,
    large-scale background removal, Otsu's threshold, morphological opening,
    extended to both imaging contrasts and to settings taken from the sample.

    0. The sample: with ``particles="auto"`` the contrast comes from the
       movie's metadata (``attrs`` or ``attrs["instrument"]``: an HAADF, ADF
       or DF detector means bright particles; BF or a TEM camera, dark) and
       otherwise from the frames, by scale-space blob detection (the
       scale-normalised Laplacian of Gaussian, on up to three sampled frames):
       the contrast with the stronger blobs wins (crops of up to 384 px; a
       frame twice that size or more is looked at in four crops spread over
       its recorded area). Lengths not given are derived from the typical
       particle radius ``r`` (px): for dark particles the blob radius (the
       strength-weighted median of the strong blobs; with fewer than five
       strong blobs but three of 8 px or more, the median of those: a few
       large particles fill a crop); for bright ones the blobs' half-height radius (their
       area above half their height over the support around them), since
       the HAADF signal peaks in a particle's thick middle and the blob seen
       is smaller than the particle (twice the blob radius when no edge can
       be measured). Smoothing ``r/8`` (``r/4`` for bright particles: scanned
       images carry pixel noise; at least 1 px), background window
       ``4 r`` (at least 16 px), opening ``r/8``, smallest particle a disk of
       radius ``0.3 r``, largest one of radius ``6 r``. When the frames show
       too few blobs, the fixed defaults 1.5, 32 and 2 px are used, without
       size bounds.
    1. Pixels outside the recorded area (3 x 3 median at or below
       ``border_value``, or NaN: the black borders drift correction leaves)
       are excluded everywhere: they never become particles and do not bias
       the background or the threshold.
    2. Contrast against a flat field (normalised convolutions over recorded
       pixels): ``1 - G_sigma * I / G_background * I`` for dark particles
       (the fraction absorbed), ``G_sigma * I / G_background * I - 1`` for
       bright ones (the signal added, in units of the support's), so it does
       not depend on dose or illumination. Two passes: the particles found by
       the first are left out of the second's background, which they would
       otherwise pull towards themselves, shrinking every particle.
    3. Regions are not particles. Vacuum, holes and thick support are areas
       thicker than any particle: they hold a disk larger than the largest
       particle (``max_radius_nm``). Those of the opposite contrast (a hole
       in HAADF, vacuum in bright field) are found before the first pass,
       on frames blurred until the particles vanish, as areas far from the
       frame's typical level; those of the particles' contrast (thick
       support) are the first pass's components that thick. Both are left
       out of the second pass altogether (grown by the blurs' reach), so
       their edges do not bend the background into a halo of false
       particles, and no particle is kept within the blur's reach of one.
       Area is no criterion: a raft of touching particles is large but one
       particle thick.
    4. Otsu's threshold on the contrast. By default one threshold for the
       whole movie, from up to ``sample_frames`` frames spread through it:
       the particle boundary then sits at the same contrast level in every
       frame, so sizes stay comparable through time. ``threshold="frame"``
       gives the per-frame variant; a float sets the contrast level
       directly. Otsu's split of a small particle class (a few per cent of
       the frame) from a broad support falls into the support's own flank,
       where its grain would join the particles: the outline level is at
       least 1.5 support noise spreads above the support's median, and an
       outlined component is a particle only if its peak stands 3.5
       spreads out (hysteresis; the grain peaks at 1-3.5, particles at 4 and
       more). Where Otsu finds no particle class, a level three support
       noise spreads above the support's median is taken if the tail above it
       holds five times what the support's noise alone puts there - or 1.5
       times (and beyond chance for the number of pixels) when step 0 saw a
       population of blobs of the particles' contrast and the level is the
       movie's (small particles on a rough or crowded support, whose relief
       widens the histogram: the blobs already say the particles are there;
       a per-frame level judges each frame by its own histogram). Otherwise
       (a bare support or a blanked frame) nothing is a particle. Beside
       the particles above that level, the components above a faint level
       (five support spreads) that never reach it are particles too: small
       or thin particles beside much thicker ones. One whose height is
       under twice the faint level is outlined at half its height (within
       twice the typical radius ``r``), not near its noisy top, which
       would break it into pieces.
    5. Opening with a disk of radius ``opening_nm`` removes noise specks;
       connected components smaller than ``min_area_nm2`` are dropped.

    Lazy: returns a dask-backed boolean DataArray for a dask-backed movie
    (numpy in, numpy out), and computes nothing when ``particles`` is
    ``"dark"`` or ``"bright"`` and every length is given. Otherwise it
    computes up to three sampled frames, once, to estimate the contrast and
    the scale. The filters run with a halo equal to their reach, so chunking
    in ``y``/``x`` gives the same masks as whole frames; the region and area
    steps label whole frames (a frame per task).

    All lengths are converted to pixels rounded to a micro-pixel, so the
    same frames at 0.18 or 1 nm/px with lengths scaled accordingly give
    identical masks.

    Parameters
    ----------
    movie : xarray.DataArray
        Frames, dims ``("time", "y", "x")``, coords in s and nm.
    particles : {"auto", "dark", "bright"}
        Particle contrast: ``"dark"`` on a bright support (bright-field TEM,
        BF-STEM), ``"bright"`` on a darker support (HAADF/ADF-STEM), or
        ``"auto"`` (from the metadata, else the frames); the decision and its
        reason are in the result's attrs.
    sigma_nm : float, optional
        Gaussian smoothing, nm; default from the sample (see 0).
    background_nm : float, optional
        Gaussian width of the background (flat-field) estimate, nm; several
        times the largest particle radius, and well below the distance over
        which the illumination changes. Default from the sample.
    opening_nm : float, optional
        Radius of the opening disk, nm; 0 disables it. Default from the sample.
    min_area_nm2 : float, optional
        Smallest particle area, nm^2; default from the sample. 0 keeps all.
    max_radius_nm : float, optional
        Radius of the largest particle, nm: anything thicker is a region
        (step 3). Default from the sample; ``float("inf")`` finds no regions.
    threshold : {"movie", "frame"} or float
        One Otsu threshold from sampled frames, one per frame, or a fixed
        contrast level (0..1).
    sample_frames : int
        Frames sampled (evenly spaced) for the movie-wide threshold.
    border_value : float, optional
        Pixels whose 3 x 3 median is at or below this are outside the
        recorded area; default a twentieth of the median intensity of the
        sampled frames (black borders hold zeros plus read noise).
    bin_px : int
        Segment the mean of every ``bin_px`` x ``bin_px`` block of pixels
        (``bin_px**2`` times less work, for keeping pace with an acquisition
        or frames far finer than the particles) and give every pixel of a
        block its block's answer: the masks have the movie's shape, their
        outlines the binned pixel's step. Lengths stay in nm; the settings
        decided from the sample are those of the binned frames. Default 1
        (no binning). Recorded in ``attrs["bin_px"]``; a warning when the
        typical particle is under 4 binned pixels in radius.

    Returns
    -------
    xarray.DataArray
        Boolean masks, True on particles, with the movie's dims, coords and
        chunks. ``attrs`` record what was used: ``particles`` (the contrast
        decided), ``particles_reason``, ``radius_estimate_nm`` (the typical
        particle radius of step 0, or None),
        ``sigma_nm``, ``background_nm``, ``opening_nm``, ``min_area_nm2``,
        ``max_radius_nm``, ``threshold``, ``settings_from`` (which lengths
        came from the sample) and ``support_texture`` (why the support's own
        texture may pass for particles, or ``""``).

    Warns
    -----
    UserWarning
        When step 0 finds blobs of the opposite contrast scoring like the
        particles' and with edges of their own (the pores and grains of a
        porous support): the masks will outline the support too, and the
        counts and sizes are not reliable; and when an eager call finds no
        particle in any frame.

    Raises
    ------
    TypeError
        If ``movie`` is not a DataArray or ``threshold`` is of the wrong type.
    ValueError
        For bad dims, negative lengths, an unknown ``particles`` or threshold mode.

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=2, size=48, radius_nm=(3, 5), drift_px=0, jumps=0, seed=2)
    >>> masks = threshold_particles(truth.movie)
    >>> masks.dtype.name, masks.dims, masks.attrs["particles"]
    ('bool', ('time', 'y', 'x'), 'dark')
    >>> bool(masks[0].values.any())
    True
    """
    check_movie(movie)
    if movie.dtype.kind not in "uif":
        raise TypeError(f"movie must hold numbers (uint, int or float); got dtype {movie.dtype}")
    if particles not in ("dark", "bright", "auto"):
        raise ValueError(f"particles must be 'dark', 'bright' or 'auto'; got {particles!r}")
    dy, dx = pixel_size_nm(movie)
    pixel = math.sqrt(dy * dx)
    given: dict[str, float | None] = {}
    for name, value in (("sigma_nm", sigma_nm), ("background_nm", background_nm), ("opening_nm", opening_nm)):
        if value is not None and (not math.isfinite(float(value)) or float(value) < 0):
            raise ValueError(f"{name} must be a length >= 0 in nm; got {value!r}")
        given[name] = None if value is None else _to_px(float(value), pixel)
    if min_area_nm2 is not None and (not math.isfinite(float(min_area_nm2)) or float(min_area_nm2) < 0):
        raise ValueError(f"min_area_nm2 must be an area >= 0 in nm^2; got {min_area_nm2!r}")
    given["min_area_nm2"] = None if min_area_nm2 is None else round(float(min_area_nm2) / (dy * dx), _PX_DECIMALS)
    if max_radius_nm is not None and (math.isnan(float(max_radius_nm)) or float(max_radius_nm) <= 0):
        raise ValueError(f"max_radius_nm must be a length > 0 in nm (inf: no regions); got {max_radius_nm!r}")
    given["max_radius_nm"] = None if max_radius_nm is None else _to_px(float(max_radius_nm), pixel)
    if isinstance(threshold, str):
        if threshold not in ("movie", "frame"):
            raise ValueError(f"threshold must be 'movie', 'frame' or a contrast level; got {threshold!r}")
    elif isinstance(threshold, (int, float, np.floating, np.integer)) and not isinstance(threshold, bool):
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold!r}")
    else:
        raise TypeError(f"threshold must be 'movie', 'frame' or a float; got {type(threshold).__name__}")
    if int(sample_frames) < 1:
        raise ValueError(f"sample_frames must be at least 1; got {sample_frames!r}")
    if border_value is not None and not math.isfinite(float(border_value)):
        raise ValueError(f"border_value must be a finite intensity or None; got {border_value!r}")
    if isinstance(bin_px, bool) or not isinstance(bin_px, (int, np.integer)) or bin_px < 1:
        raise ValueError(f"bin_px must be a whole number of pixels >= 1; got {bin_px!r}")
    if bin_px > 1:
        from temflow.analysis._binning import binned, unbinned

        small = threshold_particles(
            binned(movie, int(bin_px)), particles=particles, sigma_nm=sigma_nm, background_nm=background_nm,
            opening_nm=opening_nm, min_area_nm2=min_area_nm2, max_radius_nm=max_radius_nm, threshold=threshold,
            sample_frames=sample_frames, border_value=border_value,
        )
        full = unbinned(small, int(bin_px), movie)
        full.attrs["bin_px"] = int(bin_px)
        radius_nm = small.attrs["radius_estimate_nm"]
        binned_px = None if radius_nm is None else radius_nm / (bin_px * math.sqrt(math.prod(pixel_size_nm(movie))))
        if binned_px is not None and binned_px < _BINNED_RADIUS_PX:
            import warnings

            warnings.warn(
                f"threshold_particles: with bin_px = {bin_px} the typical particle is {binned_px:.1f} binned pixels in "
                f"radius (under {_BINNED_RADIUS_PX:g}): small particles are lost and the rest sized coarsely (real "
                "bright-field Au of 3.4 px radius: IoU 0.83 unbinned, 0.46 with bin_px = 2); use bin_px = 1",
                UserWarning,
                stacklevel=2,
            )
        return full
    nt = movie.sizes[TIME]
    sample = np.unique(np.linspace(0, nt - 1, min(int(sample_frames), nt)).round().astype(int))

    # step 0: the sample decides what the caller left open
    polarity: str | None = None if particles == "auto" else particles
    reason = "given" if polarity else ""
    if polarity is None:
        from temflow.analysis._scale import polarity_from_metadata

        polarity, reason = polarity_from_metadata(movie.attrs)
    estimate: dict[str, Any] | None = None
    if polarity is None or any(v is None for v in given.values()):
        estimate = _estimate_from_movie(movie, sample, border_value)
        if polarity is None:
            if estimate["polarity"] is None:
                polarity = "dark"
                reason = f"{reason}; the frames show no blob of either contrast: assumed dark (bright field)"
            else:
                polarity = estimate["polarity"]
                reason = (
                    f"{reason}; from the frames {estimate['frames']}: blob score dark {estimate['score']['dark']}, "
                    f"bright {estimate['score']['bright']}"
                )
    # the radius of the blobs of the contrast used (a given contrast may not be the one that won)
    radius_px = None if estimate is None else estimate["radius_px"][polarity]
    edge_px = None if estimate is None else estimate["edge_radius_px"][polarity]
    # an HAADF particle's signal follows its projected thickness, peaked in the middle: the
    # Laplacian of Gaussian sees a smaller blob than the particle's edge, and a support with
    # structure of its own pulls the scale of best signal-to-noise lower still. The blobs'
    # half-height radius is the particle's edge whatever its profile; without it, twice the
    # blob radius (a sphere's factor). Dark particles keep the blob radius, which the settings
    # were chosen with (both agree on flat-topped bright-field particles)
    if polarity == "bright" and radius_px is not None:
        radius_px = edge_px if edge_px is not None else radius_px * _PROFILE_BRIGHT
    # a support with blobs of its own at the particles' scale is outlined too: said, not silent
    texture = None
    if estimate is not None:
        from temflow.analysis._scale import support_texture

        texture = support_texture(estimate, polarity)
    derived = _sample_settings(radius_px, bright=polarity == "bright")
    sigma_px = given["sigma_nm"] if given["sigma_nm"] is not None else derived["sigma"]
    background_px = given["background_nm"] if given["background_nm"] is not None else derived["background"]
    opening_px = int(round(given["opening_nm"] if given["opening_nm"] is not None else derived["opening"]))
    min_area_px = given["min_area_nm2"] if given["min_area_nm2"] is not None else derived["min_area"]
    max_radius_px = given["max_radius_nm"] if given["max_radius_nm"] is not None else derived["max_radius"]
    if background_px <= 2 * sigma_px:
        raise ValueError(
            f"background_nm ({background_px * pixel:g}) must be well above sigma_nm ({sigma_px * pixel:g}); "
            "use several times the largest particle radius"
        )
    bright = polarity == "bright"
    # a population of blobs of that contrast says particles are there: a particle class need not
    # stand out of the support's histogram as far (rough or crowded supports; see _levels), only
    # beyond chance, counted in independent noise samples (the smoothing's footprint, 4 pi sigma^2).
    # The blobs were seen in the sampled frames, which the movie-wide level pools; one frame's own
    # level cannot borrow them (a bare frame of a movie with particles stays empty: 4 of 45 noise
    # frames of 128^2 came out with specks when it did)
    present = 4.0 * math.pi * sigma_px**2 if radius_px is not None and threshold == "movie" else 0.0
    exclude_px = int(math.ceil(2.0 * sigma_px - 10.0**-_PX_DECIMALS))  # the blur skirt around a particle
    faint_area_px = max(min_area_px, math.pi * (2.0 * sigma_px) ** 2)  # a faint particle outgrows the blur's own blob
    # a faint particle's half-height outline closes within twice the typical particle radius of its core
    # (see _with_faint); without a radius estimate, the radius the background window was chosen for
    typical_px = radius_px if radius_px is not None else background_px / _FROM_RADIUS["background"]
    outline_reach_px = int(math.ceil(_OUTLINE_REACH * typical_px - 10.0**-_PX_DECIMALS))
    kwargs: dict[str, Any] = dict(sigma_px=sigma_px, background_px=background_px, bright=bright)
    data: Any = movie.data
    lazy = isinstance(data, da.Array)
    # the recorded mask is an input of its own; the two means reach this far
    reach = max(_gaussian_radius(sigma_px), _box_radius(background_px))

    def level_of(contrast: Any, rows: Any = sample, kind: str = "otsu") -> Any:
        """A level of ``_levels._levels`` (the first pass: Otsu's; the second: outline, faint, seed)."""
        if not isinstance(threshold, str):
            return np.float32(threshold)
        if threshold == "movie":
            if lazy:
                # a dask reduction, not dask.delayed: delayed would optimise (rename) the
                # contrast graph and compute it a second time
                counts, _ = da.histogram(_clip_top(contrast[rows]), bins=_EDGES)
                return counts.map_blocks(_level_from_histogram, kind, present, drop_axis=0, dtype=np.float32)
            return _level(contrast[sample], kind, present)
        if lazy:
            whole = contrast.rechunk({1: -1, 2: -1})
            return whole.map_blocks(_level_per_frame, kind, present, drop_axis=[1, 2], dtype=np.float32)[:, None, None]
        return _level_per_frame(contrast, kind, present)[:, None, None]

    def levels_of(contrast: np.ndarray) -> tuple[Any, Any, Any]:
        """Eager: the second pass's outline, faint and seed levels, from one histogram (per frame or sample)."""
        if not isinstance(threshold, str):
            return np.float32(threshold), np.float32(threshold), np.float32(threshold)
        if threshold == "movie":
            return _second_levels(contrast[sample], present)
        levels = np.array([_second_levels(frame, present) for frame in contrast], dtype=np.float32).reshape(-1, 3)
        return levels[:, 0, None, None], levels[:, 1, None, None], levels[:, 2, None, None]

    # regions of the opposite contrast (vacuum, holes): seen where the particles have blurred away;
    # grown by the coarse blur (the thresholded blurred edge sits inside the region) and the fine one
    coarse_px = max(2.0 * sigma_px, max_radius_px * 2.0 / 3.0) if math.isfinite(max_radius_px) else 0.0
    region_kwargs: dict[str, Any] = dict(
        sigma_px=coarse_px, max_radius_px=max_radius_px, grow_px=exclude_px + int(math.ceil(coarse_px - 1e-6)), bright=bright
    )

    # two passes: the first finds the particles, the second leaves them out of the background;
    # support of the particles' contrast (components thicker than a particle) stays in it, so
    # that the background follows the support body and the particles on it stand out
    mask: Any  # these two: dask-backed for a dask movie, numpy otherwise
    regions: Any
    if lazy:
        time_chunks = data.chunks[0]
        data = _bounded_time_chunks(data)
        border = border_level(data, sample) if border_value is None else np.float32(border_value)

        def recorded_in(frames: da.Array) -> tuple[da.Array, da.Array]:
            """The recorded area less the regions of the opposite contrast, and those regions."""
            recorded = _map_frames(_median_where_dark, [frames, ~(frames > border)], 1, np.float32) > border
            recorded = recorded & da.isfinite(frames)  # a NaN pixel is never recorded (see _recorded)
            regions = _whole_frames(_coarse_regions, frames, recorded, **region_kwargs)
            return recorded & ~regions, regions

        def first_of(frames: da.Array, inside: da.Array) -> da.Array:
            return _map_frames(_darkness, [frames, inside], reach, np.float32, **kwargs)

        def found_of(first: da.Array, level: Any) -> da.Array:
            return _whole_frames(_drop_thick, first > level, max_radius_px=max_radius_px)

        def second_of(frames: da.Array, inside: da.Array, found: da.Array) -> da.Array:
            return _map_frames(
                _darkness, [frames, inside, found], reach + exclude_px, np.float32, exclude_px=exclude_px, **kwargs
            )

        inside, regions = recorded_in(data)
        first = first_of(data, inside)
        if threshold == "movie":
            # the levels from the sampled frames alone, a branch of their own (the contrast of
            # a frame needs no other frame): taken from the whole pass, they would hold every
            # task with a sampled frame in memory until the level is known
            sampled = data[sample]
            sampled_inside, _ = recorded_in(sampled)
            sampled_first = first_of(sampled, sampled_inside)
            every = slice(None)
            level_first = level_of(sampled_first, every)
            sampled_second = second_of(sampled, sampled_inside, found_of(sampled_first, level_first))
            level_second = level_of(sampled_second, every, "outline")
            faint_second = level_of(sampled_second, every, "faint")
            seed_second = level_of(sampled_second, every, "seed")
        else:
            level_first = level_of(first)
        found = found_of(first, level_first)  # NaN (outside the recorded area) is never above
        contrast = second_of(data, inside, found)
        strong = contrast > (level_second if threshold == "movie" else level_of(contrast, kind="outline"))
        mask = _whole_frames(
            _with_faint,
            strong,
            contrast > (faint_second if threshold == "movie" else level_of(contrast, kind="faint")),
            contrast,
            min_area_px=faint_area_px,
            reach_px=outline_reach_px,
        )
        # an outlined component whose peak never reaches the seed level is the support's grain
        seeds = contrast > (seed_second if threshold == "movie" else level_of(contrast, kind="seed"))
        mask = _whole_frames(_seeded, mask, strong, seeds)
        if opening_px > 0:
            # erosion then dilation: the opening sees twice the disk radius
            mask = _map_frames(_open, [mask], 2 * opening_px, bool, radius_px=opening_px)
    else:
        frames: Any = np.asarray(data)
        border = border_level(frames, sample) if border_value is None else np.float32(border_value)
        recorded_np = _recorded(frames, border)
        coarse_np = _coarse_view(frames, recorded_np, coarse_px) if math.isfinite(max_radius_px) else None
        regions = _coarse_regions(frames, recorded_np, coarse=coarse_np, **region_kwargs)
        inside_np = recorded_np & ~regions
        # both passes smooth the same frames over the same recorded area: once is enough
        smooth_np = _smoothed(frames, inside_np, sigma_px)
        # without regions the first pass's background has the coarse view's weights; with the same
        # box width (the default settings) it is the same blur: the same pixels, computed once
        same_blur = coarse_np is not None and _box_width(coarse_px) == _box_width(background_px) and not regions.any()
        first_pass = _darkness(frames, inside_np, smooth=smooth_np, background=coarse_np if same_blur else None, **kwargs)
        found_np = _drop_thick(first_pass > level_of(first_pass), max_radius_px)
        second_pass = _darkness(frames, inside_np, found_np, exclude_px=exclude_px, smooth=smooth_np, **kwargs)
        level_second, faint_second, seed_second = levels_of(second_pass)
        outline = second_pass > level_second
        mask = _with_faint(
            outline, second_pass > faint_second, second_pass, min_area_px=faint_area_px, reach_px=outline_reach_px
        )
        # an outlined component whose peak never reaches the seed level is the support's grain
        mask = _seeded(mask, outline, second_pass > seed_second)
        mask = _open(mask, opening_px)
    if min_area_px > 0 or math.isfinite(max_radius_px):
        mask = _whole_frames(
            _keep_sizes, mask, regions, min_area_px=min_area_px, max_radius_px=max_radius_px, reach_px=exclude_px
        )
    if lazy:
        # the movie's own time chunks again, after every step: merging boolean pieces costs 1 byte per pixel
        mask = mask.rechunk({0: time_chunks})

    area = dy * dx
    attrs = {
        "description": "particle masks (threshold_particles)",
        "particles": polarity,
        "particles_reason": reason.strip("; "),
        "radius_estimate_nm": None if radius_px is None else radius_px * pixel,
        "sigma_nm": sigma_px * pixel,
        "background_nm": background_px * pixel,
        "opening_nm": opening_px * pixel,
        "min_area_nm2": min_area_px * area,
        "max_radius_nm": max_radius_px * pixel if math.isfinite(max_radius_px) else "inf",
        "threshold": threshold if isinstance(threshold, str) else float(threshold),
        "settings_from": "sample" if radius_px is not None else ("defaults" if estimate is not None else "given"),
        "support_texture": texture or "",
        "bin_px": 1,
    }
    if texture:
        import warnings

        warnings.warn(
            f"threshold_particles: {texture}, so the masks will also outline the support and the particle counts "
            "and sizes are not reliable (precision 0.01-0.7 on real HAADF images like this). Look at the masks; give "
            "the particles' own size (sigma_nm, opening_nm, min_area_nm2, max_radius_nm) or train a model on "
            "labelled frames (temflow.train)",
            UserWarning,
            stacklevel=2,
        )
    if not lazy and not np.asarray(mask).any():
        # a lazy mask cannot know it is empty without computing; the pipeline's measure stage
        # says so then. An eager one can, and an empty mask must not pass without a word
        import warnings

        other = "bright" if polarity == "dark" else "dark"
        warnings.warn(
            f"threshold_particles found no particle in any of the {mask.shape[0]} frames with particles = "
            f"{polarity!r} ({attrs['particles_reason']}), sigma_nm = {attrs['sigma_nm']:.3g}, background_nm = "
            f"{attrs['background_nm']:.3g}, min_area_nm2 = {attrs['min_area_nm2']:.3g}; try particles = {other!r} if "
            "the particles are " + other + ", smaller opening_nm and min_area_nm2 for small particles, or a "
            "background_nm of several particle radii",
            UserWarning,
            stacklevel=2,
        )
    return xr.DataArray(mask, dims=DIMS, coords=movie.coords, attrs=attrs, name="particles")
