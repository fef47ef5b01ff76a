"""The synthetic generator is the ground truth for every other test: test it against itself
only where the physics says so (labels vs rendered pixels, volume conservation, the LSW law)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from temflow.synthetic.generator import lsw_distribution, make_movie


@pytest.mark.parametrize("chunks", [1, 3, (5, 20, 33), {"time": 4, "x": 17}])
def test_chunking_does_not_change_pixels(chunks):
    reference = make_movie(frames=9, size=48, seed=3)
    other = make_movie(frames=9, size=48, seed=3, chunks=chunks)
    np.testing.assert_array_equal(reference.movie.values, other.movie.values)
    np.testing.assert_array_equal(reference.labels.values, other.labels.values)


def test_same_seed_same_movie_other_seed_other_movie():
    a = make_movie(frames=3, size=40, seed=11).movie.values
    b = make_movie(frames=3, size=40, seed=11).movie.values
    c = make_movie(frames=3, size=40, seed=12).movie.values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_building_the_movie_computes_nothing(no_compute):
    with no_compute():
        truth = make_movie(frames=2000, size=512, seed=0)
        assert truth.movie.nbytes > 1e9  # a GB-scale movie is only a graph
        _ = (truth.movie.astype("float32") * 2).mean("time")


def test_metadata_and_coordinates():
    truth = make_movie(frames=5, size=(40, 56), pixel_size_nm=0.25, frame_interval_s=0.5, seed=1)
    movie = truth.movie
    assert movie.dims == ("time", "y", "x")
    assert movie.dtype == np.uint16
    assert movie.shape == (5, 40, 56)
    np.testing.assert_allclose(movie.time.values, [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(np.diff(movie.x.values), 0.25)
    assert movie.x.attrs["units"] == "nm" and movie.time.attrs["units"] == "s"
    assert movie.attrs["pixel_size_nm"] == [0.25, 0.25]
    assert truth.shifts.dims == ("time", "axis")
    np.testing.assert_allclose(truth.shifts.shift_nm.values, truth.shifts.values * 0.25)


def test_labels_match_rendered_particles():
    truth = make_movie(frames=3, size=96, mechanism="none", drift_px=0, jumps=0, dose_e_per_px=5000, seed=4)
    frame = truth.movie.values[0].astype(float)
    labels = truth.labels.values[0]
    assert labels.max() > 0
    background = np.median(frame[labels == 0])
    # inside every labelled disk the frame is darker than the bare support by about the contrast
    for pid in np.unique(labels[labels > 0]):
        inside = ndimage.binary_erosion(labels == pid, iterations=1)
        if inside.sum() < 5:
            continue
        assert frame[inside].mean() < 0.75 * background
    # and the disks cover the pixels that are clearly dark
    dark = ndimage.gaussian_filter(frame, 1) < 0.8 * background
    assert (labels[dark] > 0).mean() > 0.9
    # the table says where the particles are
    rows = truth.particles[truth.particles.frame == 0]
    for row in rows[rows.visible & ~rows.touches_border].itertuples():
        iy, ix = int(round(row.y_frame / 0.5)), int(round(row.x_frame / 0.5))
        assert labels[iy, ix] == row.particle


def test_drift_moves_the_content_by_the_true_shift():
    truth = make_movie(
        frames=4, size=128, mechanism="none", drift_px=6, jumps=1, jump_px=10, dose_e_per_px=5000, seed=5
    )
    frames = truth.movie.values.astype(float)
    inner = (slice(32, -32), slice(32, -32))

    def misfit(t, shift):
        # frame 0 moved by `shift` (a smooth spline shift) against frame t, away from the borders
        return np.sqrt(np.mean((ndimage.shift(frames[0], shift, order=5) - frames[t])[inner] ** 2))

    for t in range(1, 4):
        true = truth.shifts.values[t]
        best = misfit(t, true)
        for nudge in ([0.25, 0], [-0.25, 0], [0, 0.25], [0, -0.25]):
            assert best < misfit(t, true + np.array(nudge))
    # and the label disks follow their particles' tabulated centres
    labels = truth.labels.values[3]
    rows = truth.particles[(truth.particles.frame == 3) & truth.particles.visible & ~truth.particles.touches_border]
    for row in rows.itertuples():
        assert labels[int(round(row.y_frame / 0.5)), int(round(row.x_frame / 0.5))] == row.particle


def test_black_borders_appear_where_the_field_of_view_leaves_the_recorded_area():
    margin = 2
    truth = make_movie(frames=6, size=64, mechanism="none", drift_px=12, jumps=0, recorded_margin_px=margin, seed=2)
    last = truth.movie.values[-1].astype(float)
    checked = 0
    for axis, d in enumerate(truth.shifts.values[-1]):
        width = int(np.floor(abs(d) - margin)) - 1  # whole black rows/columns
        if width < 1:
            continue
        strip = slice(None, width) if d > 0 else slice(-width, None)
        inside = slice(width + 2, -width - 2)
        index = (strip, slice(None)) if axis == 0 else (slice(None), strip)
        index_inside = (inside, slice(None)) if axis == 0 else (slice(None), inside)
        assert last[index].mean() < 10 < last[index_inside].mean()
        checked += 1
    assert checked >= 1
    assert truth.movie.values[0].mean() > 100


def test_blank_frames_are_dark():
    truth = make_movie(frames=5, size=32, blank_frames=[2], seed=0)
    frames = truth.movie.values
    assert frames[2].mean() < 0.05 * frames[1].mean()
    assert truth.labels.values[2].max() == 0


def test_ostwald_ripening_shows_in_the_truth():
    truth = make_movie(frames=60, size=256, mechanism="ostwald", drift_px=0, jumps=0, seed=7)
    table = truth.particles
    counts = table.groupby("frame").size()
    mean_r = table.groupby("frame").radius.mean()
    assert counts.iloc[-1] < counts.iloc[0]
    assert mean_r.iloc[-1] > 1.2 * mean_r.iloc[0]
    assert (truth.events.event == "vanish").sum() >= counts.iloc[0] - counts.iloc[-1] - (truth.events.event == "merge").sum()
    # LSW: <r>^3 grows linearly in time. Only the table is simulated here (nothing is
    # rendered), so a wide field with ~1700 particles is cheap and the law stands out
    many = make_movie(frames=60, size=2048, mechanism="ostwald", radius_nm=(2, 6), drift_px=0, jumps=0, seed=7)
    mean_r = many.particles.groupby("frame").radius.mean()
    t = mean_r.index.to_numpy(float)
    linearity = {n: np.corrcoef(t, mean_r.to_numpy() ** n)[0, 1] for n in (1, 2, 3, 4, 5)}
    assert max(linearity, key=linearity.get) == 3
    assert linearity[3] > 0.995
    # volume is conserved by ripening
    volume = table.groupby("frame").radius.apply(lambda r: np.sum(r**3))
    np.testing.assert_allclose(volume.to_numpy(), volume.iloc[0], rtol=1e-6)


def test_coalescence_merges_conserve_volume_and_are_recorded():
    truth = make_movie(frames=40, size=128, mechanism="coalescence", area_fraction=0.2, drift_px=0, jumps=0, seed=3)
    events = truth.events
    assert (events.event == "merge").sum() >= 1
    assert (events.event == "vanish").sum() == 0
    table = truth.particles
    volume = table.groupby("frame").radius.apply(lambda r: np.sum(r**3))
    np.testing.assert_allclose(volume.to_numpy(), volume.iloc[0], rtol=1e-6)
    for event in events.itertuples():
        before = table[(table.frame == event.frame - 1) & table.particle.isin((event.particle,) + tuple(event.merged))]
        after = table[(table.frame == event.frame) & (table.particle == event.particle)]
        assert len(before) == 1 + len(event.merged)
        np.testing.assert_allclose(after.radius.iloc[0] ** 3, np.sum(before.radius**3), rtol=0.05)
        for absorbed in event.merged:
            assert table[(table.particle == absorbed) & (table.frame >= event.frame)].empty


def test_lsw_distribution_has_unit_mean():
    u = np.linspace(0, 1.5, 20001)
    h = lsw_distribution(u)
    np.testing.assert_allclose(np.trapezoid(u * h, u), 1.0, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frames": 0}, "frames"),
        ({"size": 4}, "size"),
        ({"mechanism": "sintering"}, "mechanism"),
        ({"radius_nm": (5, 2)}, "radius_nm"),
        ({"pixel_size_nm": -1}, "pixel_size_nm"),
        ({"blank_frames": [99]}, "blank_frames"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_movie(**kwargs)


def test_haadf_mode_has_bright_particles_and_regions_of_both_brightnesses():
    common = dict(frames=2, size=96, radius_nm=(1.5, 3.0), drift_px=0, jumps=0, seed=5, dose_e_per_px=400.0)
    haadf = make_movie(imaging="haadf", regions=2, **common)
    frames = haadf.movie.values.astype(float)
    labels = haadf.labels.values > 0
    assert haadf.movie.attrs["instrument"]["detector"] == "HAADF"
    yy, xx = np.mgrid[:96, :96]
    (y0, x0, r0, hole), (y1, x1, r1, thick) = haadf.parameters["regions"]
    in_hole = (np.hypot(yy - y0, xx - x0) < r0 - 3)[None] & ~labels
    in_thick = (np.hypot(yy - y1, xx - x1) < r1 - 3)[None] & ~labels & ~in_hole
    support = ~labels & (np.hypot(yy - y0, xx - x0) > r0 + 3)[None] & (np.hypot(yy - y1, xx - x1) > r1 + 3)[None]
    level = np.median(frames[support])
    # particles add signal; the hole is darker than the support, the thick support brighter
    assert np.median(frames[labels & support.any(axis=0)[None]]) > 1.8 * level
    assert hole < 1 < thick
    assert np.median(frames[in_hole]) < 0.4 * level and np.median(frames[in_thick]) > 1.5 * level
    # the truth does not change with the imaging mode: same particles, same labels
    bright_field = make_movie(**common)
    np.testing.assert_array_equal(bright_field.labels.values, haadf.labels.values)
    assert bright_field.movie.attrs["instrument"]["detector"] == "BF"
    with pytest.raises(ValueError, match="imaging must be one of"):
        make_movie(imaging="sem")
    with pytest.raises(ValueError, match="regions must be a count"):
        make_movie(regions=-1)
