"""Tests for temflow.segmentation.tiles: normalisation, tile sets cut from synthetic movies, the torch dataset."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from temflow import as_movie, save_zarr
from temflow.errors import MovieFileError
from temflow.synthetic.generator import make_movie
from temflow.segmentation.tiles import TileDataset, make_tile_set, normalise, percentile_normalisation, read_tile_set_info

NORM = {"method": "percentile", "low": 200.0, "high": 600.0}


@pytest.fixture(scope="module")
def truth():
    return make_movie(frames=16, size=(40, 48), seed=4, chunks=5)


@pytest.fixture(scope="module")
def tile_set(truth, tmp_path_factory):
    store = tmp_path_factory.mktemp("tiles") / "set.zarr"
    return make_tile_set(truth.movie, store, tile_size=16, stride=12, frames=16, masks=truth.labels, blocks=4, gap_frames=1)


@pytest.mark.parametrize("chunks", [None, 3])
def test_normalise_is_lazy_and_matches_numpy(truth, chunks, no_compute):
    raw = truth.movie.compute()
    expected = (raw.values.astype(np.float32) - 200.0) / 400.0
    movie = truth.movie if chunks is None else truth.movie.chunk({"time": chunks})
    with no_compute():
        lazy = normalise(movie, NORM)
    assert isinstance(lazy.data, da.Array)
    assert lazy.dims == movie.dims and lazy.attrs == movie.attrs
    assert lazy.dtype == np.float32
    np.testing.assert_allclose(lazy.values, expected, rtol=1e-6)
    np.testing.assert_allclose(normalise(raw.values, NORM), expected, rtol=1e-6)


def test_percentile_normalisation_ignores_black_borders():
    frames = np.zeros((2, 10, 10), dtype=np.uint16)
    frames[:, :, 5:] = np.arange(1, 51, dtype=np.uint16).reshape(10, 5)
    norm = percentile_normalisation(frames, low_percentile=0, high_percentile=100)
    assert (norm["low"], norm["high"]) == (1.0, 50.0)
    with pytest.raises(ValueError, match="constant movie"):
        percentile_normalisation(np.full((2, 4, 4), 7))
    with pytest.raises(ValueError, match="percentiles"):
        percentile_normalisation(frames, low_percentile=60, high_percentile=40)
    with pytest.raises(ValueError, match="low < high"):
        normalise(frames, {"method": "percentile", "low": 3, "high": 1})


@pytest.mark.parametrize("chunks", [5, (4, 20, 48)])
def test_tiles_hold_the_movie_and_its_masks(truth, tmp_path, chunks):
    movie = truth.movie.chunk(dict(zip(("time", "y", "x"), np.atleast_1d(chunks)))) if chunks != 5 else truth.movie
    store = make_tile_set(movie, tmp_path / "t.zarr", tile_size=16, stride=12, frames=6, masks=truth.labels, blocks=3)
    info = read_tile_set_info(store)
    raw, labels = truth.movie.values, truth.labels.values
    group = zarr.open_group(str(store), mode="r")
    images, masks = group["images"][...], group["masks"][...]
    frames, origins = group["frame"][...], group["origin"][...]
    assert info["frames"] == [0, 3, 6, 9, 12, 15]  # evenly through time, ends included
    # origins every 12 px plus one flush with the far edge: y 0, 12, 24; x 0, 12, 24, 32
    # frame 0 has no drift, hence no black border: every tile of the grid is there
    assert {tuple(o) for o in origins[frames == 0]} == {(y, x) for y in (0, 12, 24) for x in (0, 12, 24, 32)}
    for k in range(len(frames)):
        y0, x0 = origins[k]
        np.testing.assert_array_equal(images[k], raw[frames[k], y0 : y0 + 16, x0 : x0 + 16])
        np.testing.assert_array_equal(masks[k], labels[frames[k], y0 : y0 + 16, x0 : x0 + 16] > 0)
    # blank (black-border) tiles are the only ones left out
    for f in info["frames"]:
        kept = {tuple(o) for o in origins[frames == f]}
        for y0 in (0, 12, 24):
            for x0 in (0, 12, 24, 32):
                blank = np.mean(raw[f, y0 : y0 + 16, x0 : x0 + 16] == 0) > 0.5
                assert ((y0, x0) in kept) != blank
    norm = info["normalisation"]
    assert norm["method"] == "percentile" and norm["low"] < norm["high"]


def test_split_has_no_time_leakage(truth, tile_set):
    info = read_tile_set_info(tile_set)
    train_frames, validation_frames = np.array(info["train_frames"]), np.array(info["validation_frames"])
    assert len(train_frames) and len(validation_frames)
    assert not set(train_frames) & set(validation_frames)
    # a guard band: no training frame next to a validation frame
    assert np.abs(train_frames[:, None] - validation_frames[None, :]).min() > info["gap_frames"]
    # validation frames come in whole blocks of consecutive sampled frames
    sampled = np.array(info["sampled_frames"])
    blocks = np.array_split(sampled, info["blocks"])
    for block in blocks:
        inside = np.isin(block, validation_frames)
        assert inside.all() or not inside.any()
    train = TileDataset(tile_set, split="train")
    validation = TileDataset(tile_set, split="validation")
    assert set(train.frames) <= set(train_frames) and set(validation.frames) <= set(validation_frames)
    assert len(train) + len(validation) == len(TileDataset(tile_set, split="all"))


def _dihedral(plane: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(plane, k) for k in range(4)]
    return turns + [t[:, ::-1] for t in turns]


def test_augmentation_is_seeded_and_consistent(tile_set):
    dataset = TileDataset(tile_set, crop_size=12, noise_jitter=0.05, seed=3)
    again = TileDataset(tile_set, crop_size=12, noise_jitter=0.05, seed=3)
    other_seed = TileDataset(tile_set, crop_size=12, noise_jitter=0.05, seed=4)
    first = dataset[5]
    assert torch.equal(first["image"], again[5]["image"]) and torch.equal(first["mask"], again[5]["mask"])
    assert not torch.equal(first["image"], other_seed[5]["image"])
    dataset.set_epoch(1)
    assert not torch.equal(first["image"], dataset[5]["image"])
    # same (seed, epoch, tile) in another process: the dataset pickles and draws the same
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[5]["image"], dataset[5]["image"])
    # the mask moves with the image: one of the 8 rotations/flips of a crop of the tile
    image, mask = dataset.read(5)
    seen = set()
    for item in range(len(dataset)):
        sample = dataset[item]
        assert sample["image"].shape == (1, 12, 12) and sample["image"].dtype == torch.float32
        plain_image, plain_mask = dataset.read(item)
        clean, got_mask = sample["clean"][0].numpy(), sample["mask"][0].numpy()
        found = False
        for y0 in range(5):
            for x0 in range(5):
                crops = _dihedral(plain_image[y0 : y0 + 12, x0 : x0 + 12])
                masks = _dihedral(plain_mask[y0 : y0 + 12, x0 : x0 + 12].astype(np.float32))
                for k, (c, m) in enumerate(zip(crops, masks)):
                    if np.corrcoef(c.ravel(), clean.ravel())[0, 1] > 0.9999 and np.array_equal(m, got_mask):
                        found = True
                        seen.add(k)
        assert found
        noise = (sample["image"] - sample["clean"]).numpy()
        assert noise.std() <= 0.05 * 1.5
    assert len(seen) >= 5  # the rotations and flips are all in use


def test_without_augmentation_tiles_are_plain(tile_set):
    dataset = TileDataset(tile_set, split="validation", augment=False)
    image, mask = dataset.read(0)
    sample = dataset[0]
    np.testing.assert_array_equal(sample["image"][0].numpy(), image)
    np.testing.assert_array_equal(sample["clean"][0].numpy(), image)
    np.testing.assert_array_equal(sample["mask"][0].numpy(), mask)
    assert len(dataset.subset("train")) == len(TileDataset(tile_set, split="train"))


def test_user_masks_from_array_tiff_and_zarr(truth, tmp_path):
    labels = truth.labels.compute()
    stack = labels.values > 0
    tif = tmp_path / "masks.tif"
    tifffile.imwrite(tif, stack.astype(np.uint8), photometric="minisblack")
    store = save_zarr(labels, tmp_path / "labels.zarr")
    kwargs = dict(tile_size=16, frames=4, blocks=2, normalisation=NORM)
    expected = zarr.open_group(str(make_tile_set(truth.movie, tmp_path / "a.zarr", masks=stack, **kwargs)))["masks"][...]
    for source, name in ((tif, "t"), (store, "z"), (labels, "d"), (da.from_array(stack, chunks=3), "k")):
        got = zarr.open_group(str(make_tile_set(truth.movie, tmp_path / f"{name}.zarr", masks=source, **kwargs)))["masks"][...]
        np.testing.assert_array_equal(got, expected)
    assert expected.any()


def test_classical_weak_labels_overlap_the_truth(tmp_path):
    truth = make_movie(frames=4, size=96, drift_px=0, jumps=0, seed=4)
    store = make_tile_set(truth.movie, tmp_path / "c.zarr", tile_size=16, frames=4, blocks=2, masks="classical")
    truth_store = make_tile_set(truth.movie, tmp_path / "g.zarr", tile_size=16, frames=4, blocks=2, masks=truth.labels)
    weak = zarr.open_group(str(store))["masks"][...]
    good = zarr.open_group(str(truth_store))["masks"][...]
    iou = np.sum(weak & good) / np.sum(weak | good)
    assert iou > 0.6
    assert read_tile_set_info(store)["masks"] == "classical"


def test_bad_inputs(truth, tmp_path):
    with pytest.raises(ValueError, match=r"masks have shape \(15, 40, 48\) but the movie has shape \(16, 40, 48\)"):
        make_tile_set(truth.movie, tmp_path / "a.zarr", tile_size=16, masks=truth.labels[:15].values)
    tif = tmp_path / "short.tif"
    tifffile.imwrite(tif, np.zeros((3, 40, 48), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"short.tif.*shape \(3, 40, 48\).*\(16, 40, 48\)"):
        make_tile_set(truth.movie, tmp_path / "b.zarr", tile_size=16, masks=tif)
    with pytest.raises(ValueError, match=r"tile_size 64 px is larger than the frames \(40 x 48 px\)"):
        make_tile_set(truth.movie, tmp_path / "c.zarr", tile_size=64)
    black = as_movie(np.zeros((8, 32, 32), np.uint16))
    with pytest.raises(ValueError, match="training set is empty"):
        make_tile_set(black, tmp_path / "d.zarr", tile_size=16, normalisation=NORM, blocks=2)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        make_tile_set(truth.movie, tmp_path / "e.zarr", tile_size=16, frames=1)
    with pytest.raises(TypeError, match="masks must be"):
        make_tile_set(truth.movie, tmp_path / "f.zarr", tile_size=16, masks=3.5)
    with pytest.raises(MovieFileError, match="masks"):
        make_tile_set(truth.movie, tmp_path / "g.zarr", tile_size=16, masks=tmp_path / "absent.tif")
    make_tile_set(truth.movie, tmp_path / "h.zarr", tile_size=16, frames=4, blocks=2)
    with pytest.raises(MovieFileError, match="already exists"):
        make_tile_set(truth.movie, tmp_path / "h.zarr", tile_size=16, frames=4, blocks=2)
    with pytest.raises(ValueError, match="crop_size must be between 1 and the tile size 16"):
        TileDataset(tmp_path / "h.zarr", crop_size=20)
    with pytest.raises(MovieFileError, match="not a temflow tile set|no such folder"):
        TileDataset(tmp_path / "nothing.zarr")
    with pytest.raises(TypeError, match="movie must be an xarray.DataArray"):
        make_tile_set(np.zeros((4, 32, 32)), tmp_path / "i.zarr", tile_size=16)


def _independent_images(n: int = 6):
    """A stack of unrelated micrographs (one frame each of different samples), as a movie."""
    frames = [make_movie(frames=1, size=32, drift_px=0, jumps=0, seed=s).movie.values[0] for s in range(n)]
    return as_movie(np.stack(frames), pixel_size_nm=0.5)


def test_independent_images_are_split_by_image(tmp_path):
    images = _independent_images()
    store = make_tile_set(images, tmp_path / "i.zarr", tile_size=16, frames=6, split="image", validation_fraction=0.34)
    info = read_tile_set_info(store)
    assert info["split"] == "image"
    # every image is used: none is lost to a guard band
    assert sorted(info["train_frames"] + info["validation_frames"]) == list(range(6))
    assert len(info["validation_frames"]) == 2
    assert set(zarr.open_group(str(store))["frame"][...].tolist()) == set(range(6))


def test_time_split_that_drops_many_frames_warns_with_the_numbers(tmp_path):
    images = _independent_images()
    with pytest.warns(UserWarning, match=r"drops 2 of 6 sampled frames .* 3 train, 1 validation; .*split='image'"):
        make_tile_set(images, tmp_path / "t.zarr", tile_size=16, frames=6, blocks=6, gap_frames=1, validation_fraction=0.1)


def test_classical_weak_labels_take_the_settings_and_record_them(tmp_path):
    truth = make_movie(frames=4, size=96, radius_nm=(1.0, 2.0), dose_e_per_px=200.0, imaging="haadf",
                       drift_px=0, jumps=0, seed=5)
    store = make_tile_set(truth.movie, tmp_path / "h.zarr", tile_size=32, frames=4, validation_fraction=0,
                          masks="classical", classical={"particles": "bright", "opening_nm": 0.5})
    info = read_tile_set_info(store)
    assert info["classical"]["particles"] == "bright" and info["classical"]["particles_reason"] == "given"
    assert info["classical"]["opening_nm"] == pytest.approx(0.5) and info["classical"]["settings_from"] == "sample"
    truth_store = make_tile_set(truth.movie, tmp_path / "g.zarr", tile_size=32, frames=4, validation_fraction=0,
                                masks=truth.labels)
    weak = zarr.open_group(str(store))["masks"][...]
    good = zarr.open_group(str(truth_store))["masks"][...]
    assert np.sum(weak & good) / np.sum(weak | good) > 0.75
    with pytest.raises(ValueError, match="classical settings are for masks='classical'"):
        make_tile_set(truth.movie, tmp_path / "x.zarr", tile_size=32, classical={"particles": "dark"})
    with pytest.raises(ValueError, match="classical: unknown setting 'sigma'"):
        make_tile_set(truth.movie, tmp_path / "y.zarr", tile_size=32, masks="classical", classical={"sigma": 1.0})
    with pytest.raises(ValueError, match="split must be 'time' or 'image'"):
        make_tile_set(truth.movie, tmp_path / "z.zarr", tile_size=32, split="frames")
