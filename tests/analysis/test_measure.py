"""temflow.analysis.measure: labelling and measurement, against synthetic ground truth."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset
import pandas as pd
import pytest

from temflow import as_movie
from temflow.analysis.measure import (
    COLUMNS,
    label_particles,
    measure_particles,
    measure_particles_to_parquet,
    read_particles,
    threshold_particles,
)
from temflow.synthetic.generator import make_movie
from truth_matching import MIN_AREA_NM2, case, observable

SMALL = dict(frames=6, size=(64, 60), pixel_size_nm=0.5, radius_nm=(2.0, 4.0), area_fraction=0.15, dose_e_per_px=400.0)


@pytest.fixture(scope="module")
def drifting():
    """Drift and a jump push black borders into the frames (the recorded area is frame 0 only)."""
    return make_movie(mechanism="none", drift_px=6.0, jumps=1, jump_px=10.0, recorded_margin_px=0, seed=4, **SMALL)


# --- label_particles ----------------------------------------------------------------------------


def test_particle_across_chunk_boundaries_is_one_particle(no_compute):
    frame = np.zeros((40, 40), dtype=bool)
    yy, xx = np.mgrid[:40, :40]
    frame[(yy - 20) ** 2 + (xx - 20) ** 2 < 64] = True  # one disk over four chunks
    frame[2:5, 30:38] = True
    masks = as_movie(np.stack([frame, frame[::-1]]), pixel_size_nm=0.5).chunk({"time": 1, "y": 20, "x": 20})
    with no_compute():
        labels = label_particles(masks)
    assert labels.dtype == np.int32 and labels.dims == masks.dims
    values = labels.values
    assert [len(np.unique(v)) - 1 for v in values] == [2, 2]
    np.testing.assert_array_equal(values, label_particles(masks.compute()).values)


def _disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize(
    ("name", "particles", "expected"),
    [
        # two particles whose masks touch: cut along the neck
        ("touching", [((20, 14), 8), ((20, 28), 6)], 2),
        # already merged, the neck as wide as the smaller particle: one
        ("merged", [((20, 16), 8), ((20, 24), 7)], 1),
        # a small particle on a large one's rim (r < R / 2): not cut
        ("satellite", [((20, 16), 10), ((20, 28), 3)], 1),
        # a long convex particle (a rod, drawn as a row of disks): never cut
        ("rod", [((20, x), 5) for x in range(8, 34, 2)], 1),
        ("apart", [((10, 10), 5), ((30, 30), 5)], 2),
    ],
)
def test_touching_particles_are_cut_apart_convex_ones_never(name, particles, expected):
    frame = np.zeros((40, 42), dtype=bool)
    for centre, radius in particles:
        frame |= _disk(frame.shape, centre, radius)
    masks = as_movie(np.stack([frame, frame]), pixel_size_nm=0.5)
    labels = label_particles(masks).values
    assert labels[0].max() == expected == len(np.unique(labels[0])) - 1  # numbered 1..N
    np.testing.assert_array_equal(labels[0] > 0, frame)  # cutting moves no pixel in or out
    assert label_particles(masks, split_touching=False).values[0].max() == (2 if name == "apart" else 1)
    if name == "touching":
        # the cut is at the neck: each part holds its own disk's centre
        left, right = labels[0][20, 14], labels[0][20, 28]
        assert left != right and (labels[0] == left).sum() > (labels[0] == right).sum()
        # lazy and chunked gives the same labels
        lazy = label_particles(masks.chunk({"time": 1, "y": 20, "x": 21}))
        np.testing.assert_array_equal(lazy.values, labels)


def test_connectivity():
    masks = as_movie(np.array([[[1, 0], [0, 1]]], dtype=bool))
    assert label_particles(masks).values.max() == 2
    assert label_particles(masks, connectivity=2).values.max() == 1
    with pytest.raises(ValueError, match="connectivity must be 1"):
        label_particles(masks, connectivity=3)


def test_label_rejects_non_boolean():
    with pytest.raises(TypeError, match="masks must be boolean"):
        label_particles(as_movie(np.zeros((1, 4, 4), dtype=np.float32)))
    with pytest.raises(TypeError, match="masks must be an xarray.DataArray"):
        label_particles(np.zeros((1, 4, 4), dtype=bool))


# --- measure_particles --------------------------------------------------------------------------


def test_measure_known_disk_in_physical_units():
    yy, xx = np.mgrid[:64, :64]
    frame = np.zeros((64, 64), dtype=np.int32)
    frame[(yy - 30.0) ** 2 + (xx - 20.0) ** 2 <= 10.0**2] = 7
    frame[0:4, 50:56] = 3  # on the frame edge
    image = np.where(frame > 0, 100.0, 1000.0)
    labels = as_movie(np.stack([frame, frame]), pixel_size_nm=0.25, frame_interval_s=0.5, origin_nm=(100.0, -5.0))
    movie = labels.copy(data=np.stack([image, image]))
    table = measure_particles(labels, movie)
    assert list(table.columns) == list(COLUMNS)
    disk = table[table["label"] == 7].iloc[1]
    assert disk["frame"] == 1 and disk["time"] == 0.5
    assert disk["area"] == pytest.approx(np.pi * 2.5**2, rel=0.02)
    assert disk["equivalent_diameter"] == pytest.approx(5.0, rel=0.01)
    assert (disk["y"], disk["x"]) == pytest.approx((100.0 + 30 * 0.25, -5.0 + 20 * 0.25))
    assert disk["perimeter"] == pytest.approx(2 * np.pi * 2.5, rel=0.05)
    assert disk["eccentricity"] < 0.1 and disk["mean_intensity"] == 100.0
    assert not disk["touches_border"] and table[table["label"] == 3]["touches_border"].all()
    assert table.attrs["times_s"] == [0.0, 0.5]
    assert table.attrs["field_area_nm2"] == pytest.approx([64 * 64 * 0.0625] * 2)


def test_black_border_flags_touching_particles(drifting):
    table = measure_particles(drifting.labels, drifting.movie)
    truth = drifting.particles
    merged = table.merge(truth, left_on=["frame", "label"], right_on=["frame", "particle"], suffixes=("", "_true"))
    assert len(merged) == len(table)
    # a true disk that crosses a black border or the frame edge (centre outside included) is flagged
    crosses = merged["touches_border_true"] | ~merged["visible"]
    assert (merged["touches_border"] | ~crosses).all()
    assert merged["touches_border"].sum() > 0
    assert table.attrs["field_area_nm2"][0] > table.attrs["field_area_nm2"][-1]  # black borders shrink the field


@pytest.mark.parametrize("chunks", [{"time": 1}, {"time": 4, "y": 30, "x": 25}])
def test_measure_chunked_equals_eager_and_parquet(drifting, chunks, tmp_path):
    labels = drifting.labels.chunk(chunks)
    movie = drifting.movie.chunk(chunks)
    table = measure_particles(labels, movie, min_area_nm2=2.0)
    eager = measure_particles(drifting.labels.compute(), drifting.movie.compute(), min_area_nm2=2.0)
    pd.testing.assert_frame_equal(table, eager)
    assert table.attrs == eager.attrs
    path = measure_particles_to_parquet(labels, tmp_path / "parts", movie, min_area_nm2=2.0)
    assert len(list(path.glob("part-*.parquet"))) == len(labels.chunks[0])
    back = read_particles(path)
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs == table.attrs
    # the folder is a parquet dataset any reader takes whole, units in its schema
    plain = pd.read_parquet(path).sort_values(["frame", "label"], ignore_index=True)
    pd.testing.assert_frame_equal(plain, table, check_like=False)
    schema = pyarrow.dataset.dataset(path).schema
    assert schema.field("area").metadata[b"units"] == b"nm^2"
    assert schema.field("time").metadata[b"units"] == b"s"
    assert schema.field("frame").metadata is None
    units = json.loads(schema.metadata[b"temflow"])["units"]
    assert units["equivalent_diameter"] == "nm" and units["orientation"] == "rad"
    with pytest.raises(ValueError, match="exists and is not empty"):
        measure_particles_to_parquet(labels, path, movie)


def test_min_area_drops_small_particles():
    frame = np.zeros((20, 20), dtype=np.int32)
    frame[2:4, 2:4] = 1  # 4 px = 1 nm^2
    frame[10:16, 10:16] = 2  # 36 px = 9 nm^2
    labels = as_movie(frame[None], pixel_size_nm=0.5)
    assert measure_particles(labels, min_area_nm2=2.0)["label"].tolist() == [2]
    assert measure_particles(labels, min_area_nm2=0.0)["label"].tolist() == [1, 2]


def test_empty_movie_gives_empty_table(tmp_path):
    labels = as_movie(np.zeros((3, 16, 16), dtype=np.int32), pixel_size_nm=0.5).chunk({"time": 2})
    table = measure_particles(labels)
    assert table.empty and list(table.columns) == list(COLUMNS)
    assert table.attrs["times_s"] == [0.0, 1.0, 2.0]
    back = read_particles(measure_particles_to_parquet(labels, tmp_path / "empty"))
    assert back.empty and back.attrs == table.attrs
    assert pd.read_parquet(tmp_path / "empty").empty


def test_reads_the_old_layout_and_overwrites_it(tmp_path):
    labels = as_movie(np.zeros((2, 16, 16), dtype=np.int32), pixel_size_nm=0.5)
    labels[:, 4:8, 4:8] = 1
    table = measure_particles(labels)
    old = tmp_path / "old"
    (old / "particles").mkdir(parents=True)
    (old / "frames").mkdir()
    table.to_parquet(old / "particles" / "part-00000.parquet", index=False)
    pd.DataFrame({"frame": [0, 1], "time": [0.0, 1.0], "recorded_px": [256.0, 256.0]}).to_parquet(
        old / "frames" / "part-00000.parquet", index=False)
    (old / "pixel_area_nm2").write_text("0.25")
    back = read_particles(old)
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs == table.attrs
    measure_particles_to_parquet(labels, old, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["part-00000.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(old), table)


def test_measure_bad_input(drifting):
    masks = threshold_particles(drifting.movie)
    with pytest.raises(TypeError, match=r"labels must be integer particle labels, not boolean masks; use measure_particles\(label_particles"):
        measure_particles(masks)
    with pytest.raises(TypeError, match="labels must be integer particle labels"):
        measure_particles(drifting.movie.astype(np.float32))
    with pytest.raises(ValueError, match="movie must have the labels' shape"):
        measure_particles(drifting.labels, drifting.movie[:2])
    with pytest.raises(ValueError, match="min_area_nm2 must be an area"):
        measure_particles(drifting.labels, min_area_nm2=-1.0)
    with pytest.raises(ValueError, match="holds no particle table"):
        read_particles("/nonexistent/particles")


# --- accuracy against the ground truth ----------------------------------------------------------


def _ratios(table: pd.DataFrame, particles: pd.DataFrame) -> tuple[float, float]:
    """Mean over frames of measured / true count and measured / true mean diameter."""
    truth = observable(particles, MIN_AREA_NM2)
    frames = np.arange(int(particles["frame"].max()) + 1)
    sized = table[~table["touches_border"]]
    count = sized.groupby("frame").size().reindex(frames, fill_value=0).to_numpy()
    true_count = truth.groupby("frame").size().reindex(frames, fill_value=0).to_numpy()
    diameter = sized.groupby("frame")["equivalent_diameter"].mean().reindex(frames).to_numpy()
    true_diameter = 2 * truth.groupby("frame")["radius"].mean().reindex(frames).to_numpy()
    return float(np.mean(count / true_count)), float(np.nanmean(diameter / true_diameter))


@pytest.mark.parametrize(
    ("mechanism", "source", "count_tolerance"),
    [
        ("ostwald", "true_labels", 0.02),
        ("coalescence", "true_labels", 0.02),
        # ripening keeps neighbours 1-1.5 nm apart for many frames and the blurred threshold mask
        # joins them: 0.976 / 0.985 of the truth as plain components, 1.000 / 0.998 once cut apart.
        # A particle's peak must stand 3.5 support spreads out (the support's grain peaks at 1-3.5):
        # a few particles in their last frames of dissolution, under 1 nm across and blurred, fall
        # below it, 0.984 of the truth (none missed after the first dozen frames)
        ("coalescence", "threshold", 0.02),
        ("ostwald", "threshold", 0.02),
    ],
)
def test_count_and_diameter_match_truth(mechanism, source, count_tolerance):
    result = case(mechanism)
    count, diameter = _ratios(result[source]["table"], result["truth"].particles)
    assert count == pytest.approx(1.0, abs=count_tolerance)
    assert diameter == pytest.approx(1.0, abs=0.03)


def _awkward_label_images() -> list[np.ndarray]:
    """Touching particles of other labels, particles cut by the frame edge, lines, 8-connected blobs."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(5)
    touching = np.zeros((40, 52), dtype=np.int32)
    touching[5:20, 3:17], touching[5:20, 17:30], touching[0:8, 40:52] = 1, 2, 3  # 1 and 2 share an edge
    return [
        touching,
        ndi.label(rng.random((48, 64)) < 0.55)[0],  # ragged shapes of every size
        ndi.label(rng.random((40, 40)) < 0.3, structure=np.ones((3, 3)))[0],  # 8-connected labels
        np.pad(np.ones((7, 1), np.int32), 2),  # a vertical line
        np.pad(np.ones((1, 6), np.int32) * 4, 3),  # a horizontal line, label 4 alone
        np.array([[1, 1], [1, 2]], np.int32),
        np.zeros((8, 9), np.int32),
    ]


@pytest.mark.parametrize("index", range(7))
def test_whole_frame_properties_equal_skimage_regionprops(index):
    """The bincount measurement gives regionprops_table's numbers (to rounding), region by region."""
    from skimage.measure import regionprops_table

    from temflow.analysis.measure import _region_props

    labels = _awkward_label_images()[index]
    image = np.random.default_rng(index).random(labels.shape).astype(np.float32) * 1000
    properties = ("label", "area", "centroid", "perimeter", "eccentricity", "orientation", "intensity_mean")
    expected = regionprops_table(labels, intensity_image=image, properties=properties)
    got = _region_props(labels, image)
    assert sorted(got) == sorted(expected)
    np.testing.assert_array_equal(got["label"], expected["label"])
    for name in ("area", "centroid-0", "centroid-1", "perimeter", "eccentricity"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)
    # skimage's float32 mean against a float64 sum
    np.testing.assert_allclose(got["intensity_mean"], expected["intensity_mean"], rtol=1e-5)
    # an axis is an axis: a shape exactly along x is +-pi/2 with the sign of a rounding error
    turn = np.abs(got["orientation"] - expected["orientation"])
    np.testing.assert_allclose(np.minimum(turn, np.abs(turn - np.pi)), 0.0, atol=1e-9)


def _split_blob_by_blob(labels, count, structure):
    """The cut done one blob at a time in its own padded box: the reference the packed canvas must equal."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    connectivity = int(structure.sum() > 5) + 1
    total = count
    for blob, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or min(box[0].stop - box[0].start, box[1].stop - box[1].start) < 4:
            continue
        inside = np.pad(labels[box] == blob, 1)
        depth = ndi.distance_transform_edt(inside)
        cores, n = ndi.label(depth >= 0.5 * depth.max(), structure=structure)
        if n < 2:
            continue
        parts = watershed(-depth, cores, mask=inside, connectivity=connectivity)[1:-1, 1:-1]
        inside = inside[1:-1, 1:-1]
        renumber = np.r_[0, blob, np.arange(total + 1, total + n)].astype(np.int32)
        total += n - 1
        labels[box][inside] = renumber[parts[inside]]
    return total


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_cuts_on_the_packed_canvas_equal_blob_by_blob(seed, connectivity):
    # random overlapping disks of many sizes (pairs, chains, wide boxes, edge cut): every blob
    # must be cut as if it were alone, the new numbers given in the same order
    from scipy import ndimage as ndi

    from temflow.analysis._touching import split_touching

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:300, :1400]  # wider than the canvas rows
    mask = np.zeros(yy.shape, dtype=bool)
    for cy, cx, r in zip(rng.uniform(-5, 305, 220), rng.uniform(-5, 1405, 220), rng.uniform(1.5, 14, 220)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mask[100:110, 10:1390] = True  # one blob wider than a canvas row
    structure = ndi.generate_binary_structure(2, connectivity)
    labels, count = ndi.label(mask, structure=structure)
    expected = labels.copy()
    expected_total = _split_blob_by_blob(expected, count, structure)
    found = labels.copy()
    assert split_touching(found, count, structure) == expected_total > count
    np.testing.assert_array_equal(found, expected)
