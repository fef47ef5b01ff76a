"""temflow.analysis.threshold: the classical segmentation baseline, chunk-exact, lazy, border-safe."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage as ndi

from temflow import as_movie
from temflow.analysis.measure import label_particles
from temflow.synthetic.generator import make_movie
from temflow.analysis.threshold import threshold_particles

SMALL = dict(frames=6, size=(64, 60), pixel_size_nm=0.5, radius_nm=(2.0, 4.0), area_fraction=0.15, dose_e_per_px=400.0)


@pytest.fixture(scope="module")
def drifting():
    """Drift and a jump push black borders into the frames (the recorded area is frame 0 only)."""
    return make_movie(mechanism="none", drift_px=6.0, jumps=1, jump_px=10.0, recorded_margin_px=0, seed=4, **SMALL)


@pytest.mark.parametrize("chunks", [{"time": 4}, {"time": 2, "y": 40, "x": 33}, {"time": 5, "y": 20, "x": 17}])
@pytest.mark.parametrize("threshold", ["movie", "frame", 0.15])
def test_threshold_chunked_equals_eager(drifting, chunks, threshold):
    movie = drifting.movie.chunk(chunks)
    lazy = threshold_particles(movie, threshold=threshold)
    eager = threshold_particles(drifting.movie.compute(), threshold=threshold)
    assert lazy.chunks is not None and isinstance(eager.data, np.ndarray)
    np.testing.assert_array_equal(lazy.values, eager.values)


GIVEN = dict(particles="dark", sigma_nm=0.75, background_nm=16.0, opening_nm=1.0, min_area_nm2=2.0, max_radius_nm=12.0)


def test_threshold_is_lazy_and_keeps_coords(drifting, no_compute):
    with no_compute():
        masks = threshold_particles(drifting.movie.chunk({"time": 2, "y": 32}), **GIVEN)
    assert masks.dtype == bool and masks.dims == drifting.movie.dims and masks.shape == drifting.movie.shape
    xr.testing.assert_equal(masks.coords.to_dataset(), drifting.movie.coords.to_dataset())
    assert masks.attrs["threshold"] == "movie" and masks.attrs["sigma_nm"] == pytest.approx(0.75)
    assert masks.attrs["settings_from"] == "given" and masks.attrs["particles"] == "dark"


def test_settings_from_the_sample_compute_only_the_estimate(drifting, no_compute):
    """Left open, the contrast and lengths come from one compute of a few sampled frames."""
    with no_compute(max_computes=1):
        masks = threshold_particles(drifting.movie.chunk({"time": 2, "y": 32}))
    attrs = masks.attrs
    assert attrs["settings_from"] == "sample" and attrs["particles"] == "dark"
    # the generator's radii are 2..4 nm: the estimate is of that order, and the settings follow it
    assert 1.5 <= attrs["radius_estimate_nm"] <= 4.5
    assert attrs["sigma_nm"] == pytest.approx(max(0.5, attrs["radius_estimate_nm"] / 8), rel=1e-3)
    assert attrs["background_nm"] == pytest.approx(max(8.0, 4 * attrs["radius_estimate_nm"]), rel=1e-3)


def test_black_borders_are_never_particles(drifting):
    movie = drifting.movie.compute()
    masks = threshold_particles(movie).values
    black = movie.values == 0
    assert black.sum() > 500  # the drift really left black borders
    assert not masks[black].any()
    # no band of false particles along a black border: every detection near one is a true particle
    labels = label_particles(xr.zeros_like(movie, dtype=bool).copy(data=masks)).values
    truth = drifting.labels.values
    near_border = ndi.binary_dilation(black, structure=np.ones((1, 7, 7), bool))
    for frame in range(len(labels)):
        for label in np.unique(labels[frame][near_border[frame]]):
            if label:
                assert truth[frame][labels[frame] == label].any(), f"frame {frame}: false particle {label}"


def test_blank_frame_has_no_particles():
    truth = make_movie(mechanism="none", drift_px=0, jumps=0, blank_frames=[2], seed=1, **SMALL)
    masks = threshold_particles(truth.movie).values
    assert not masks[2].any() and masks[1].any()


def test_threshold_finds_the_particles(drifting):
    masks = threshold_particles(drifting.movie).values
    truth = drifting.labels.values > 0
    iou = (masks & truth).sum() / (masks | truth).sum()
    assert iou > 0.8


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigma_nm": -1.0}, ValueError, "sigma_nm must be a length"),
        ({"background_nm": 0.5}, ValueError, "background_nm .* must be well above sigma_nm"),
        ({"threshold": "otsu"}, ValueError, "threshold must be 'movie', 'frame' or a contrast level"),
        ({"threshold": [0.1]}, TypeError, "threshold must be 'movie', 'frame' or a float"),
        ({"sample_frames": 0}, ValueError, "sample_frames must be at least 1"),
    ],
)
def test_threshold_bad_options(drifting, kwargs, error, match):
    with pytest.raises(error, match=match):
        threshold_particles(drifting.movie, **kwargs)


def test_threshold_bad_movie():
    with pytest.raises(TypeError, match="movie must be an xarray.DataArray"):
        threshold_particles(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"movie must have dims \('time', 'y', 'x'\)"):
        threshold_particles(xr.DataArray(np.zeros((2, 8, 8)), dims=("t", "r", "c")))
    with pytest.raises(TypeError, match="movie must hold numbers"):
        threshold_particles(as_movie(np.zeros((2, 8, 8), dtype=bool)))


@pytest.mark.parametrize("chunks", [None, {"time": 2, "y": 50}])
def test_nan_borders_are_outside_like_black_ones(chunks):
    # drift correction leaves NaN (or zero) where a frame saw nothing: both are outside
    truth = make_movie(frames=6, size=128, seed=22, drift_px=20, jumps=0, recorded_margin_px=2)
    movie = truth.movie.astype("float32")
    if chunks is None:
        movie = movie.compute()
    else:
        movie = movie.chunk(chunks)
    with_zero = threshold_particles(movie).values
    with_nan = threshold_particles(movie.where(movie > 0)).values
    reference = truth.labels.values > 0
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(with_zero, reference) > 0.85
    assert iou(with_nan, reference) > iou(with_zero, reference) - 0.01
    assert (with_zero != with_nan).mean() < 0.002


@pytest.mark.parametrize("time_chunk", [16, 5])
def test_a_long_chunk_is_worked_in_bounded_tasks_and_given_back_in_its_own_chunks(monkeypatch, time_chunk):
    """Memory per task does not grow with the chunk (the readers' chunks grow with the movie)."""
    import dask
    from dask.callbacks import Callback

    from temflow.analysis import _filters

    truth = make_movie(frames=16, size=48, pixel_size_nm=0.5, radius_nm=(2.0, 4.0), seed=1)
    movie = truth.movie.chunk({"time": time_chunk})
    eager = threshold_particles(truth.movie.compute())
    monkeypatch.setattr(_filters, "_TASK_PIXELS", 3 * 48 * 48)  # three frames per task
    masks = threshold_particles(movie)
    assert masks.chunks == movie.chunks
    float_frames = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, np.ndarray) and result.dtype.kind == "f" and result.ndim == 3:
                float_frames.append(result.shape[0])

    with Sizes(), dask.config.set(scheduler="synchronous"):
        values = masks.values
    np.testing.assert_array_equal(values, eager.values)
    assert float_frames and max(float_frames) <= 3
# --- both contrasts, regions, settings from the sample ---------------------------------------------

HAADF = dict(frames=6, size=96, pixel_size_nm=0.5, radius_nm=(1.0, 2.0), area_fraction=0.1, dose_e_per_px=200.0,
             mechanism="ostwald", drift_px=0, jumps=0, seed=5)


def _region_pixels(truth, margin_px: float = 6.0) -> np.ndarray:
    """Where the generator drew a large region (grown by a margin for its soft edge), per frame."""
    nt, ny, nx = truth.movie.shape
    yy, xx = np.mgrid[:ny, :nx]
    out = np.zeros((nt, ny, nx), dtype=bool)
    for t in range(nt):
        dy, dx = truth.shifts.values[t]
        for ry, rx, rr, _ in truth.parameters["regions"]:
            out[t] |= np.hypot(yy - ry - dy, xx - rx - dx) < rr + margin_px
    return out


def _without_metadata(movie: xr.DataArray) -> xr.DataArray:
    out = movie.copy()
    out.attrs = {k: v for k, v in movie.attrs.items() if k != "instrument"}
    return out


@pytest.mark.parametrize(("imaging", "expected"), [("haadf", "bright"), ("bright_field", "dark")])
def test_auto_picks_the_contrast_from_the_frames(imaging, expected):
    """Without a detector in the metadata, the blobs of the frames decide, and the reason says so."""
    truth = make_movie(imaging=imaging, **{**HAADF, "radius_nm": (1.5, 3.0), "dose_e_per_px": 400.0})
    masks = threshold_particles(_without_metadata(truth.movie.compute()))
    assert masks.attrs["particles"] == expected
    assert "from the frames" in masks.attrs["particles_reason"]


@pytest.mark.parametrize(("detector", "expected"), [("HAADF", "bright"), ("DF4", "bright"), ("BF", "dark"), ("BM-Ceta", "dark")])
def test_auto_reads_the_detector_from_the_metadata(detector, expected):
    from temflow.analysis._scale import polarity_from_metadata

    assert polarity_from_metadata({"instrument": {"detector": detector}})[0] == expected
    assert polarity_from_metadata({"instrument": {"mode": " STEM nP SA Zoom Diffraction"}})[0] is None
    assert polarity_from_metadata({"instrument": {"mode": " TEM uP SA Zoom Image"}})[0] == "dark"


@pytest.mark.parametrize("chunks", [None, {"time": 4, "y": 50, "x": 41}])
def test_haadf_movie_matches_the_truth(chunks):
    """Bright particles on a darker support, beside a dark hole and thick (bright) support."""
    truth = make_movie(imaging="haadf", regions=2, **HAADF)
    movie = truth.movie.compute() if chunks is None else truth.movie.chunk(chunks)
    masks = threshold_particles(movie).values
    assert threshold_particles(movie).attrs["particles"] == "bright"
    labels = truth.labels.values
    regions = _region_pixels(truth)
    outside = ~regions
    iou = (masks & (labels > 0) & outside).sum() / ((masks | (labels > 0)) & outside).sum()
    assert iou > 0.8
    # every true particle clear of the regions is found (its centre pixel is in the mask)
    clear = truth.particles[truth.particles["visible"]]
    found = [
        masks[int(row.frame), int(round(row.y / 0.5)), int(round(row.x / 0.5))]
        for row in clear.itertuples()
        if not regions[int(row.frame), int(round(row.y / 0.5)), int(round(row.x / 0.5))] and row.radius >= 1.0
    ]
    assert len(found) > 50 and np.mean(found) > 0.95


def test_regions_are_not_outlined():
    """No region (hole or thick support) comes back as a particle, nor a halo along its edge."""
    truth = make_movie(imaging="haadf", regions=2, **HAADF)
    masks = threshold_particles(truth.movie.compute()).values
    labels = truth.labels.values > 0
    regions = _region_pixels(truth)
    false = masks & ~labels
    assert false[regions].mean() < 0.02
    assert false.mean() < 0.02
    # the regions really are there, larger than any particle and of both contrasts
    levels = [level for *_, level in truth.parameters["regions"]]
    assert min(levels) < 1 < max(levels) and regions.mean() > 0.2
    # and what is called a particle is never thicker than the largest true particle
    component, n = ndi.label(masks[0])
    thickness = ndi.distance_transform_edt(masks[0])
    assert ndi.maximum(thickness, component, np.arange(1, n + 1)).max() <= truth.particles["radius"].max() / 0.5 + 2


def test_bright_particles_with_the_dark_setting_find_nothing_and_say_what_was_used():
    truth = make_movie(imaging="haadf", **HAADF)
    with pytest.warns(UserWarning, match="found no particle .* particles = 'dark' \\(given\\).* try particles = 'bright'"):
        masks = threshold_particles(truth.movie.compute(), particles="dark")
    assert masks.attrs["particles"] == "dark" and masks.attrs["particles_reason"] == "given"
    assert not masks.values.any()


@pytest.mark.parametrize("settings", ["given", "sample"])
def test_masks_do_not_depend_on_the_pixel_size(settings):
    """The same frames at 0.18 and 1 nm/px, lengths scaled alike, give identical masks."""
    truth = make_movie(frames=4, size=64, pixel_size_nm=1.0, radius_nm=(2.0, 4.0), dose_e_per_px=400.0,
                       drift_px=0, jumps=0, mechanism="none", seed=3)
    frames = truth.movie.values
    # 1.5 px at 0.18 nm/px is 0.27 nm, which divides back to 1.5000000000000002 px
    lengths = dict(sigma_nm=1.5, background_nm=24.0, opening_nm=1.5, min_area_nm2=4.0, max_radius_nm=12.0)
    out = []
    for pixel in (0.18, 1.0):
        movie = as_movie(frames, pixel_size_nm=pixel)
        scaled = {k: v * pixel**2 if k.endswith("nm2") else v * pixel for k, v in lengths.items()}
        masks = threshold_particles(movie, **(scaled if settings == "given" else {}))
        out.append(masks)
    np.testing.assert_array_equal(out[0].values, out[1].values)
    assert out[0].values.any()
    assert out[0].attrs["sigma_nm"] == pytest.approx(0.18 * out[1].attrs["sigma_nm"])


def test_new_options_are_checked(drifting):
    with pytest.raises(ValueError, match="particles must be 'dark', 'bright' or 'auto'"):
        threshold_particles(drifting.movie, particles="white")
    with pytest.raises(ValueError, match="min_area_nm2 must be an area"):
        threshold_particles(drifting.movie, min_area_nm2=-1.0)
    with pytest.raises(ValueError, match="max_radius_nm must be a length > 0"):
        threshold_particles(drifting.movie, max_radius_nm=0.0)


def test_faint_particles_beside_much_brighter_ones_are_found_at_their_size():
    # HAADF: three thick particles (+300 over the support) pull Otsu's level far above four
    # thin ones (+25, eight noise standard deviations): those are particles too, at their size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    frame = np.full((96, 96), 100.0)
    bright, faint = [(20, 20), (20, 70), (70, 20)], [(70, 70), (48, 48), (80, 45), (45, 85)]
    for (y, x), radius, signal in [(c, 8, 300.0) for c in bright] + [(c, 3, 25.0) for c in faint]:
        frame[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] += signal
    frame += rng.normal(0.0, 3.0, frame.shape)
    masks = threshold_particles(as_movie(frame[None].astype(np.float32), pixel_size_nm=1.0), particles="bright")
    mask = np.asarray(masks.values[0])
    labels, n = ndi.label(mask)
    assert n == 7
    dy, dx = np.mgrid[-9:10, -9:10]
    for y, x in faint:
        # the boundary of a faint one sits at the faint level, lower on its edge than half
        # its height: about a pixel wide of the truth at 3 px radius (29 px -> ~50 px)
        assert labels[y, x] > 0
        assert 29 <= np.count_nonzero(labels == labels[y, x]) <= 2 * np.count_nonzero(dy**2 + dx**2 <= 9)
    for y, x in bright:
        # the bright ones keep their boundary at Otsu's level, not at the faint level's
        assert np.count_nonzero(labels == labels[y, x]) == pytest.approx(np.count_nonzero(dy**2 + dx**2 <= 64), rel=0.15)


def _faint_flat_frame(faint_signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An HAADF frame in heavy pixel noise (30 counts rms on a support of 100): three thick particles
    (spheres, radius 8 px, +300 in the middle) and four faint flat ones (radius 10 px, +``faint_signal``,
    edges 1 px soft); the truth labels (1-3 the thick ones, 4-7 the faint ones)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    frame = np.full((128, 128), 100.0)
    labels = np.zeros((128, 128), dtype=int)
    flat = np.zeros((128, 128))
    for k, (y, x) in enumerate([(22, 22), (22, 106), (106, 22)], start=1):
        d2 = ((yy - y) ** 2 + (xx - x) ** 2) / 8.0**2
        frame[d2 <= 1] += 300.0 * np.sqrt(1.0 - d2[d2 <= 1])
        labels[d2 <= 1] = k
    for k, (y, x) in enumerate([(64, 64), (104, 100), (30, 66), (68, 104)], start=4):
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= 10**2
        flat[disk] = faint_signal
        labels[disk] = k
    frame += ndi.gaussian_filter(flat, 1.0) + rng.normal(0.0, 30.0, frame.shape)
    return frame.astype(np.float32), labels


# what the defaults derive for particles of radius 8 px (the estimate takes no scale from seven)
_FAINT_SETTINGS = dict(particles="bright", sigma_nm=2.0, background_nm=32.0, opening_nm=1.0)


def _found_particles(masks: xr.DataArray, truth: np.ndarray) -> tuple[dict[int, list[int]], int]:
    """Per true particle, the areas (px) of the particles of ``label_particles`` on it; and the false ones."""
    labels = np.asarray(label_particles(masks).values[0])
    found = {}
    for k in range(1, truth.max() + 1):
        hits = set(np.unique(labels[truth == k])) - {0}
        found[k] = [int(np.count_nonzero(labels == h)) for h in sorted(hits)]
    false = set(np.unique(labels)) - set(np.unique(labels[truth > 0])) - {0}
    return found, len(false)


@pytest.mark.parametrize("chunks", [None, {"y": 50, "x": 41}])
def test_faint_particles_near_the_level_are_outlined_whole_at_their_size(chunks, monkeypatch):
    """Faint flat particles whose smoothed peak is ~7 noise spreads, under twice the faint level: detected
    by it, outlined at half their height, each one particle at its size (real HAADF: PtC3)."""
    from temflow.analysis import threshold as threshold_module

    frame, truth = _faint_flat_frame(30.0)
    movie = as_movie(frame[None], pixel_size_nm=1.0)
    masks = threshold_particles(movie if chunks is None else movie.chunk(chunks), **_FAINT_SETTINGS)
    found, false = _found_particles(masks, truth)
    assert false == 0
    for k in range(4, 8):
        # one particle each, at 0.8-1.1 of its true area (317 px)
        assert len(found[k]) == 1, (k, found[k])
        assert 0.8 * np.count_nonzero(truth == k) <= found[k][0] <= 1.1 * np.count_nonzero(truth == k), (k, found[k])
    thick = [found[k] for k in range(1, 4)]
    # outlined at the faint level (the rule off), the same particles come out as ragged slivers of their
    # tops: half their area or less, some broken in two by the neck cut; the thick ones are untouched
    monkeypatch.setattr(threshold_module, "_OUTLINE_REACH", 0.0)
    before, false = _found_particles(threshold_particles(movie, **_FAINT_SETTINGS), truth)
    assert false == 0 and [before[k] for k in range(1, 4)] == thick
    assert all(sum(before[k]) <= 0.55 * np.count_nonzero(truth == k) for k in range(4, 8))
    assert any(len(before[k]) > 1 for k in range(4, 8))


def test_no_faint_particle_no_outline_grown():
    """The same frame without the faint particles: the thick ones alone, as with the rule off."""
    frame, truth = _faint_flat_frame(0.0)
    masks = threshold_particles(as_movie(frame[None], pixel_size_nm=1.0), **_FAINT_SETTINGS)
    found, false = _found_particles(masks, truth)
    assert false == 0 and all(len(found[k]) == 1 for k in range(1, 4)) and not any(found[k] for k in range(4, 8))


def test_half_height_outline_only_where_it_closes_alone():
    """``_with_faint`` on a known contrast: a plateau of 0.3 (radius 6 px) on a skirt of 0.2 (to 8 px)."""
    from temflow.analysis._levels import _with_faint

    yy, xx = np.mgrid[:64, :64]
    distance = np.hypot(yy - 32, xx - 32)
    contrast = np.where(distance <= 6, 0.3, np.where(distance <= 8, 0.2, 0.0)).astype(np.float32)[None]
    strong = np.zeros_like(contrast, dtype=bool)
    weak = contrast > 0.25
    plateau, skirt = distance <= 6, distance <= 8
    # the plateau detects (above the faint level 0.25); its half height (0.15) outlines plateau and skirt
    assert np.array_equal(_with_faint(strong, weak, contrast, min_area_px=10, reach_px=8)[0], skirt)
    # no contrast or no reach: the faint level's outline
    assert np.array_equal(_with_faint(strong, weak, min_area_px=10)[0], plateau)
    assert np.array_equal(_with_faint(strong, weak, contrast, min_area_px=10, reach_px=0)[0], plateau)
    # a ridge above half height running out of reach: the outline does not close, the faint level's stays
    ridged = contrast.copy()
    ridged[0, 32, 32:] = np.maximum(ridged[0, 32, 32:], 0.2)
    assert np.array_equal(_with_faint(strong, ridged > 0.25, ridged, min_area_px=10, reach_px=8)[0], plateau)
    # a skirt that joins a strong particle (above Otsu's level 0.5), or another faint one: each keeps
    # its own outline
    joined = contrast.copy()
    joined[0, 30:35, 38:41] = np.maximum(joined[0, 30:35, 38:41], 0.2)
    joined[0, 30:35, 41:44] = 0.6
    out = _with_faint(joined > 0.5, joined > 0.25, joined, min_area_px=10, reach_px=8)[0]
    assert np.array_equal(out, plateau | (joined[0] > 0.5))
    pair = np.maximum(contrast, np.roll(contrast, 15, axis=2))
    out = _with_faint(strong, pair > 0.25, pair, min_area_px=10, reach_px=20)[0]
    assert np.array_equal(out, pair[0] > 0.25)
    # a peaked component (its median above twice its lowest pixel) keeps the faint level's outline
    peaked = np.where(distance <= 6, 1.5 - 0.2 * distance, np.where(distance <= 8, 0.2, 0.0)).astype(np.float32)[None]
    assert np.array_equal(_with_faint(strong, peaked > 0.25, peaked, min_area_px=10, reach_px=8)[0], plateau)


# --- the sample's scale -------------------------------------------------------------------------

@pytest.mark.parametrize("imaging", ["haadf", "bright_field"])
@pytest.mark.parametrize("pixel_nm", [0.5, 1.0])
def test_the_scale_estimate_is_the_true_particle_radius(imaging, pixel_nm):
    """The blobs' half-height radius is the generator's particle radius, at any pixel size.

    (The Laplacian-of-Gaussian scale alone reads an HAADF particle, whose signal peaks in its
    thick middle, as a smaller blob: 4.0 px for particles of 5.1 px.)
    """
    from temflow.analysis._scale import estimate_particles

    truth = make_movie(frames=3, size=64, pixel_size_nm=pixel_nm, radius_nm=(2.0, 3.0), area_fraction=0.1,
                       dose_e_per_px=400.0, mechanism="none", drift_px=0, jumps=0, seed=1, imaging=imaging)
    true_px = float(truth.particles[truth.particles["frame"] == 0]["radius"].median()) / pixel_nm
    found = estimate_particles(truth.movie.values)
    polarity = "bright" if imaging == "haadf" else "dark"
    assert found["polarity"] == polarity
    assert found["edge_radius_px"][polarity] == pytest.approx(true_px, rel=0.15)
    if imaging == "haadf":
        # the settings are derived from the particle's radius, which the attrs report in nm
        masks = threshold_particles(truth.movie.compute())
        assert masks.attrs["radius_estimate_nm"] == pytest.approx(true_px * pixel_nm, rel=0.15)
        assert masks.attrs["sigma_nm"] == pytest.approx(max(1.0, masks.attrs["radius_estimate_nm"] / pixel_nm / 4) * pixel_nm, rel=1e-3)


def test_a_large_frame_is_looked_at_where_it_was_recorded():
    """Crops of a large frame spread over it, never on its unrecorded part (vacuum, black border)."""
    from temflow.analysis._scale import _CROP, _MIN_CROPS, _crop_corners

    recorded = np.zeros((1, 3 * _CROP, 3 * _CROP), dtype=bool)
    recorded[:, :, _CROP:] = True  # the left third is not recorded
    corners = _crop_corners(recorded)
    assert len(corners) == _MIN_CROPS and len(set(corners)) == _MIN_CROPS
    assert all(x0 >= _CROP for _, _, x0 in corners)
    # a frame below twice the crop is looked at in its centre, once per frame
    assert _crop_corners(np.ones((2, 500, 400), dtype=bool)) == [(0, 58, 8), (1, 58, 8)]


def test_a_few_large_particles_set_the_scale_and_a_few_small_blobs_do_not():
    """A crop holds only a handful of 30 px particles, and noise bumps may be as strong: the large
    blobs set the scale. A handful of small blobs is no population (noise): no scale."""
    from temflow.analysis._scale import _typical_radius

    radii = [1.4, 1.4, 1.7, 38.1, 32.0, 26.9, 38.1]
    strengths = [1.0, 0.9, 0.85, 0.4, 0.35, 0.3, 0.3]
    assert 26.9 <= _typical_radius(radii, strengths) <= 38.1  # type: ignore[operator]
    assert _typical_radius([6.7, 5.7, 2.4], [1.0, 0.4, 0.3]) is None
# The fast kernels of the recipe against the plain scipy definitions they replace: the same pixels.


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("border_value", [False, True])
def test_disk_morphology_equals_scipy(radius, border_value):
    from temflow.analysis._filters import _disk, _morph_disk

    rng = np.random.default_rng(radius)
    for mask in (rng.random((2, 41, 37)) < 0.03, rng.random((2, 41, 37)) < 0.6, rng.random((23, 50)) < 0.9):
        footprint = _disk(radius) if mask.ndim == 2 else _disk(radius)[None]
        np.testing.assert_array_equal(
            _morph_disk(mask, radius, erode=False, border_value=border_value),
            ndi.binary_dilation(mask, structure=footprint, border_value=int(border_value)),
        )
        np.testing.assert_array_equal(
            _morph_disk(mask, radius, erode=True, border_value=border_value),
            ndi.binary_erosion(mask, structure=footprint, border_value=int(border_value)),
        )


@pytest.mark.parametrize("box", [False, True])
@pytest.mark.parametrize("sigma", [0.8, 1.5, 6.0, 21.0])
def test_blurs_on_transposed_frames_equal_scipy(box, sigma):
    from temflow.analysis._filters import _BOXES, _blur, _box_width

    values = np.random.default_rng(3).random((2, 45, 70)).astype(np.float32)
    if box:
        expected = values
        for axis in (1, 2):
            for _ in range(_BOXES):
                expected = ndi.uniform_filter1d(expected, _box_width(sigma), axis=axis, mode="nearest")
    else:
        expected = ndi.gaussian_filter(values, (0.0, sigma, sigma), mode="nearest", truncate=4.0)
    np.testing.assert_array_equal(_blur(values, sigma, box), expected)


@pytest.mark.parametrize("limit", [1.5, 3.0, 4.0, 6.5, 9.0])
def test_thick_components_without_a_distance_transform_everywhere(limit):
    """The bounding-box shortcut finds exactly the components whose mirrored thickness exceeds the limit."""
    from temflow.analysis._regions import _large_components

    rng = np.random.default_rng(int(limit * 10))
    yy, xx = np.mgrid[:90, :80]
    mask = np.zeros((90, 80), dtype=bool)
    mask[78:, :40] = rng.random((12, 40)) < 0.5  # ragged components, one along the bottom edge
    for cy, cx, r in ((20, 20, 7), (70, 60, 4), (0, 45, 5), (45, 79, 4), (50, 14, 9.5)):  # disks, some cut by the edge
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mask[30:34, 40:70] = True  # a thin bar

    def reference(mask: np.ndarray) -> tuple[np.ndarray, int]:
        """The definition: components whose largest mirrored distance to the background exceeds the limit."""
        labels, n = ndi.label(mask)
        pad = int(np.ceil(limit)) + 1
        thickness = ndi.distance_transform_edt(np.pad(mask, pad, mode="symmetric"))[pad:-pad, pad:-pad]
        thick = ndi.maximum(thickness, labels, index=np.arange(1, n + 1)) > limit
        return np.isin(labels, np.flatnonzero(thick) + 1), int(thick.sum())

    expected, count = reference(mask)
    assert 0 < count < ndi.label(mask)[1]  # the case is not trivial
    np.testing.assert_array_equal(_large_components(mask[None], limit, 0)[0], expected)
    # alone (no other component makes the distance transform run): a half disk cut by the
    # frame edge is as thick as the whole disk
    for edge_disk in ((yy - 0) ** 2 + (xx - 45) ** 2 <= 25, (yy - 45) ** 2 + (xx - 79) ** 2 <= 25):
        alone = edge_disk | ((yy >= 30) & (yy < 34) & (xx >= 10) & (xx < 40))
        expected, count = reference(alone)
        assert count >= (limit < 5.0)
        np.testing.assert_array_equal(_large_components(alone[None], limit, 0)[0], expected)


@pytest.mark.parametrize("seed", range(4))
def test_median_next_to_dark_pixels_only_equals_the_full_median(seed):
    """The recorded area from medians taken only next to dark pixels is the full 3 x 3 median's."""
    from temflow.analysis._recorded_area import _median3, _median3_near

    rng = np.random.default_rng(seed)
    frame = (rng.random((37, 45)) * 100 + 20).astype(np.float32)
    frame[rng.random(frame.shape) < 0.05] = 0.0  # dead pixels
    frame[:, : 3 + seed] = 0.0  # a black border
    frame[-2:, 10:20] = rng.random((2, 10)).astype(np.float32)  # read noise in a border
    level = np.float32(5.0)
    dark = ~(frame > level)
    near = _median3_near(frame, dark)
    full = _median3(frame[None])[0]
    np.testing.assert_array_equal(near > level, full > level)
    next_to_dark = ndi.binary_dilation(dark, structure=np.ones((3, 3), bool))
    np.testing.assert_array_equal(near[next_to_dark], full[next_to_dark])  # the same medians where taken
    if seed == 0:  # NaN: the filter itself
        frame[5, 5] = np.nan
        np.testing.assert_array_equal(_median3_near(frame, ~(frame > level)), _median3(frame[None])[0])


def test_frame_medians_of_counts_from_their_histogram_equal_numpys():
    from temflow.analysis._recorded_area import _frame_medians

    rng = np.random.default_rng(3)
    for shape, top, dtype in [((3, 7, 9), 5, np.uint16), ((2, 8, 8), 60000, np.uint16), ((1, 1, 1), 3, np.uint8),
                              ((4, 5, 5), 2, np.uint8), ((2, 64, 64), 4000, np.uint16), ((2, 6, 6), 200, np.uint8)]:
        counts = rng.integers(0, top, shape).astype(dtype)
        expected = np.median(counts.reshape(len(counts), -1).astype(np.float32), axis=1)
        found = _frame_medians(counts)
        assert found.dtype == np.float32 and np.array_equal(found, expected), (shape, found, expected)


def _rough_support(seed: int, particles: int, size: int = 96) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """An HAADF frame: small bright particles (+80, 2 px) on a support with relief of its own.

    The relief (grains ~6 px, 20 counts rms) widens the contrast's histogram about the
    support's level, as a porous oxide's does: the particles are a thin upper tail of it.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frame = 100.0 + 20.0 * ndi.gaussian_filter(rng.normal(size=(size, size)), 6.0, mode="wrap") / 0.047
    centres: list[tuple[float, float]] = []
    while len(centres) < particles:
        y, x = rng.uniform(8, size - 8, 2)
        if all(np.hypot(y - cy, x - cx) > 14 for cy, cx in centres):
            centres.append((float(y), float(x)))
    for y, x in centres:
        frame += 80.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
    frame += rng.normal(0.0, 3.0, frame.shape)
    return frame.astype(np.float32), centres


@pytest.mark.parametrize("chunks", [None, {"y": 50, "x": 41}])
def test_particles_on_a_rough_support_are_found_where_blobs_show_them(chunks, monkeypatch):
    """Small bright particles whose share of the contrast's tail is small (relief widens it).

    The sampled frame shows a population of bright blobs, so the tail above three support
    spreads needs only 1.5 times the normal tail, not 5 times: the particles are found (and
    nothing else); without the blobs' word the same frame came back empty (real HAADF:
    Ru2, Cu3, Cu4, Cu/silica, Pd/alumina).
    """
    from temflow.analysis import _levels

    frame, centres = _rough_support(0, particles=10)
    movie = as_movie(frame[None], pixel_size_nm=1.0)
    movie = movie if chunks is None else movie.chunk(chunks)
    masks = threshold_particles(movie)
    assert masks.attrs["particles"] == "bright" and masks.attrs["radius_estimate_nm"] is not None
    mask = np.asarray(masks.values[0])
    labels, n = ndi.label(mask)
    hit = {int(labels[int(round(y)), int(round(x))]) for y, x in centres} - {0}
    assert len(hit) >= 6 and n == len(hit)  # most particles, no false one
    # the old rule (5 normal tails whatever the blobs say) leaves this frame empty
    monkeypatch.setattr(_levels, "_PRESENT_EXCESS", _levels._OUTLIER_EXCESS)
    with pytest.warns(UserWarning, match="found no particle"):
        assert not threshold_particles(as_movie(frame[None], pixel_size_nm=1.0)).values.any()


def test_a_bare_support_stays_empty():
    """No blob population, no relaxed rule: a flat support with noise gives no particle."""
    rng = np.random.default_rng(5)
    frames = (100.0 + rng.normal(0.0, 3.0, (3, 64, 64))).astype(np.float32)
    with pytest.warns(UserWarning, match="found no particle"):
        masks = threshold_particles(as_movie(frames, pixel_size_nm=1.0), particles="bright")
    assert masks.attrs["radius_estimate_nm"] is None and not masks.values.any()


@pytest.mark.parametrize("seed", [15, 25, 32, 40])
def test_a_bare_frame_of_a_movie_with_particles_stays_empty_frame_by_frame(seed):
    """Per-frame levels judge each frame by its own histogram: the blobs of the other frames
    do not relax the rule for a bare one (with them, these noise frames came out with specks)."""
    frame, _ = _rough_support(0, particles=14, size=128)
    rng = np.random.default_rng(seed)
    bare = (100.0 + rng.normal(0.0, 3.0, frame.shape)).astype(np.float32)
    masks = threshold_particles(as_movie(np.stack([frame, bare, frame]), pixel_size_nm=1.0), threshold="frame")
    assert masks.attrs["radius_estimate_nm"] is not None  # the blobs were seen
    assert not masks.values[1].any()


# --- a support whose texture looks like particles is said, not silently outlined -----------------


def _blobs_of_contrasts(signs: tuple[int, ...], seed: int = 0, size: int = 256) -> np.ndarray:
    """Two frames of Gaussian blobs 3-5 px in radius, bright (+1) and/or dark (-1), in shot noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for _ in range(2):
        image = np.full((size, size), 1000.0)
        for sign in signs:
            for _ in range(40):
                y, x = rng.uniform(0, size, 2)
                radius = rng.uniform(3, 5)
                image += sign * 300 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (radius / 1.5) ** 2))
        frames.append(rng.poisson(image).astype(np.float32))
    return np.stack(frames)


def test_blobs_of_both_contrasts_alike_are_said_to_be_the_supports_texture():
    # a porous support in HAADF: grains as bright and pores as dark as the particles, of their size
    movie = as_movie(_blobs_of_contrasts((1, -1)), pixel_size_nm=1.0)
    with pytest.warns(UserWarning, match="support's own texture .* not reliable"):
        masks = threshold_particles(movie)
    assert "opposite contrast" in masks.attrs["support_texture"]
    # the same particles on a plain support: nothing to say
    plain = threshold_particles(as_movie(_blobs_of_contrasts((1,)), pixel_size_nm=1.0))
    assert plain.attrs["support_texture"] == ""
    assert plain.attrs["particles"] == "bright"


def test_support_texture_needs_alike_scores_and_edges_of_both_contrasts():
    from temflow.analysis._scale import support_texture

    found = {"score": {"bright": 110.0, "dark": 100.0}, "edge_radius_px": {"bright": 3.0, "dark": 2.5}}
    assert "opposite contrast (dark)" in support_texture(found, "bright")
    assert support_texture({**found, "score": {"bright": 200.0, "dark": 100.0}}, "bright") is None  # decisive
    assert support_texture({**found, "edge_radius_px": {"bright": 3.0, "dark": None}}, "bright") is None
    assert support_texture({**found, "score": {"bright": 110.0, "dark": 0.0}}, "bright") is None


@pytest.mark.parametrize("seed", range(4))
def test_thick_components_found_in_their_boxes_equal_the_whole_frame_transform(seed):
    # a component is thicker than the limit when a pixel is farther than it from the background
    # (the mask mirrored at the frame edges): the test in each box, and the erosion that skips
    # it, must give what the transform of the whole mirrored frame gives
    from scipy import ndimage as ndi

    from temflow.analysis._regions import _may_be_thick, _thick_labels

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:240, :260]
    mask = np.zeros(yy.shape, dtype=bool)
    for cy, cx, r in zip(rng.uniform(-20, 260, 40), rng.uniform(-20, 280, 40), rng.uniform(2, 30, 40)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mask[60:64, :] = True  # a thin band across the frame, joining some of them
    labels, count = ndi.label(mask)
    for limit in (3.0, 7.5, 12.0, 20.0, 45.0):
        pad = int(np.ceil(limit)) + 1
        depth = ndi.distance_transform_edt(np.pad(mask, pad, mode="symmetric"))[pad:-pad, pad:-pad]
        expected = np.zeros(count + 1, dtype=bool)
        expected[np.unique(labels[depth > limit])] = True
        expected[0] = False
        np.testing.assert_array_equal(_thick_labels(mask, labels, count, limit), expected)
        assert _may_be_thick(mask, limit) or not expected.any()
    assert not _may_be_thick(np.zeros((50, 50), bool), 3.0)
    assert _may_be_thick(np.ones((50, 50), bool), 30.0)  # the whole frame, mirrored: as thick as it gets


def test_binned_masks_cover_the_movie_chunk_exact_and_keep_large_particles():
    # particles 12-20 px in radius: on 2 x 2 blocks they are still 6-10 px, found and sized as at full resolution
    truth = make_movie(frames=4, size=150, pixel_size_nm=0.5, radius_nm=(6.0, 10.0), seed=3, chunks=(2, 64, 64))
    full = threshold_particles(truth.movie.compute())
    binned = threshold_particles(truth.movie.compute(), bin_px=2)
    assert binned.shape == truth.movie.shape and binned.attrs["bin_px"] == 2 and full.attrs["bin_px"] == 1
    values = binned.values
    # every 2 x 2 block (and the last, odd row and column with their block) holds one answer
    assert np.array_equal(values[:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)[:, :150, :150], values)
    # lazy, in chunks that cut blocks and frames, gives the same pixels
    np.testing.assert_array_equal(threshold_particles(truth.movie, bin_px=2).values, values)
    # against the generator's truth: as many particles, and as much of their area, as at full resolution
    found = [sum(ndi.label(frame)[1] for frame in m.values) for m in (full, binned)]
    present = sum(len(np.unique(frame)) - 1 for frame in truth.labels.values)
    assert abs(found[1] - present) <= max(1, abs(found[0] - present))
    true_iou = [(m.values & (truth.labels.values > 0)).sum() / (m.values | (truth.labels.values > 0)).sum()
                for m in (full, binned)]
    assert true_iou[1] > 0.85 and true_iou[1] > true_iou[0] - 0.03
    with pytest.raises(ValueError, match="bin_px must be a whole number"):
        threshold_particles(truth.movie, bin_px=0)


@pytest.mark.parametrize(("seed", "radius_nm", "area_fraction"), [(0, (2.0, 6.0), 0.04), (2, (1.0, 4.0), 0.04), (0, (2.0, 6.0), 0.08)])
def test_sparse_particles_on_a_grainy_support_are_counted_not_the_grain(seed, radius_nm, area_fraction):
    # particles on a few per cent of the frame: Otsu's level falls into the support's own flank, where
    # its grain (peaks of 1-3.5 support spreads) was outlined as particles, 5-14 times the true count;
    # the outline floor and the seed level bring the count within a quarter of the truth (the
    # grain's highest peaks still pass) and the area to the particles' own
    truth = make_movie(frames=8, size=192, seed=seed, radius_nm=radius_nm, area_fraction=area_fraction, chunks=4)
    masks = threshold_particles(truth.movie)
    values, labels = masks.values, truth.labels.values
    found = sum(ndi.label(frame)[1] for frame in values)
    present = sum(len(np.unique(frame)) - 1 for frame in labels)
    assert 0.85 * present <= found <= 1.3 * present
    iou = (values & (labels > 0)).sum() / (values | (labels > 0)).sum()
    assert iou > 0.75
    # chunked and eager alike
    np.testing.assert_array_equal(threshold_particles(truth.movie.compute()).values, values)


def test_binning_particles_too_small_for_it_is_said():
    # 1-2 nm particles at 0.5 nm/px: 2-4 px, 1-2 binned px; the masks would lose most of them silently
    truth = make_movie(frames=3, size=128, pixel_size_nm=0.5, radius_nm=(1.0, 2.0), seed=4)
    with pytest.warns(UserWarning, match=r"with bin_px = 2 the typical particle is .* binned pixels in radius"):
        threshold_particles(truth.movie.compute(), bin_px=2)
