"""OME-Zarr interplay: labels in the NGFF labels group, images written by other tools."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

import temflow
from ome_validation import assert_every_store_valid, assert_valid_ome_zarr
from temflow.errors import MovieFileError
from temflow.io import label_names, open_labels, save_labels
from temflow.synthetic.generator import make_movie, save_truth


@pytest.fixture
def stored(tmp_path):
    truth = make_movie(frames=5, size=40, pixel_size_nm=0.4, frame_interval_s=0.25, seed=3, chunks=2)
    return truth, temflow.save_zarr(truth.movie, tmp_path / "movie.zarr")


def test_masks_and_labels_go_to_the_ngff_labels_group(stored):
    truth, path = stored
    masks = truth.labels > 0
    save_labels(masks, path)
    save_labels(truth.labels, path, name="particles")
    assert label_names(path) == ["masks", "particles"]
    assert_valid_ome_zarr(path)  # ome-zarr-models checks the labels' dtype, levels and metadata
    meta = json.loads((path / "labels" / "masks" / "zarr.json").read_text())["attributes"]["ome"]
    assert meta["image-label"]["source"]["image"] == "../../"
    assert [a["name"] for a in meta["multiscales"][0]["axes"]] == ["time", "y", "x"]
    assert json.loads((path / "labels" / "masks" / "0" / "zarr.json").read_text())["data_type"] == "uint8"
    back = open_labels(path)
    assert back.dtype == bool and back.dims == ("time", "y", "x")
    np.testing.assert_array_equal(back.values, masks.values)
    xr.testing.assert_identical(back.coords.to_dataset(), truth.movie.coords.to_dataset())
    particles = open_labels(path, name="particles")
    np.testing.assert_array_equal(particles.values, truth.labels.values)
    # the movie itself is untouched and still opens
    np.testing.assert_array_equal(temflow.open_zarr(path).values, truth.movie.values)


def test_labels_overwrite_and_resume(stored):
    truth, path = stored
    save_labels(truth.labels > 0, path)
    with pytest.raises(MovieFileError, match="already exists"):
        save_labels(truth.labels > 0, path)
    save_labels(truth.labels > 0, path, resume=True)
    save_labels(truth.labels > 5, path, overwrite=True)
    np.testing.assert_array_equal(open_labels(path).values, (truth.labels > 5).values)
    assert label_names(path) == ["masks"]


def test_bad_labels_are_refused(stored, tmp_path):
    truth, path = stored
    with pytest.raises(ValueError, match=r"shape \(4, 40, 40\) but the movie .* has shape \(5, 40, 40\)"):
        save_labels(truth.labels[:4] > 0, path)
    with pytest.raises(TypeError, match="boolean masks or integer labels; got dtype float32.*temflow.segment"):
        save_labels(truth.labels.astype("float32"), path)
    with pytest.raises(ValueError, match="plain folder name"):
        save_labels(truth.labels > 0, path, name="../x")
    with pytest.raises(MovieFileError, match="not a complete temflow movie store"):
        save_labels(truth.labels > 0, tmp_path / "nothing.zarr")
    with pytest.raises(MovieFileError, match="no labels image named 'masks'"):
        open_labels(path)


def test_every_store_of_save_truth_validates(tmp_path):
    truth = make_movie(frames=4, size=32, seed=1)
    save_truth(truth, tmp_path / "raw.zarr")
    assert assert_every_store_valid(tmp_path) == 2  # the movie and the true labels


def _write_ngff_05(path, data, *, axes, scale):
    """An OME-Zarr 0.5 image written by ome-zarr-models, as other tools write it."""
    from ome_zarr_models.v05 import Image
    from ome_zarr_models.v05.axes import Axis
    from pydantic_zarr.v3 import ArraySpec

    names = [a[0] for a in axes]
    spec = ArraySpec.from_array(data, dimension_names=names)
    image = Image.new(
        array_specs=[spec, spec], paths=["s0", "s1"],
        axes=[Axis(name=n, type=t, unit=u) for n, t, u in axes],
        scales=[scale, [s * 2 for s in scale]], translations=[None, None], name="from another tool",
    )
    group = image.to_zarr(zarr.storage.LocalStore(str(path)), path="")
    group["s0"][...] = data
    return path


def test_opens_ngff_05_written_by_another_tool(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(6, 1, 1, 20, 24), dtype="uint16")
    path = _write_ngff_05(
        tmp_path / "other.ome.zarr", data,
        axes=[("t", "time", "millisecond"), ("c", "channel", None), ("z", "space", "micrometer"),
              ("y", "space", "micrometer"), ("x", "space", "micrometer")],
        scale=[40.0, 1.0, 1.0, 0.002, 0.0025],
    )
    from ome_zarr_models.v05 import Image

    Image.from_zarr(zarr.open_group(str(path), mode="r"))  # valid by the ecosystem's checker
    movie = temflow.open_movie(path)
    assert movie.dims == ("time", "y", "x") and movie.shape == (6, 20, 24)
    np.testing.assert_array_equal(movie.values, data[:, 0, 0])
    np.testing.assert_allclose(temflow.pixel_size_nm(movie), (2.0, 2.5))
    np.testing.assert_allclose(movie.time.values, np.arange(6) * 0.04)
    assert movie.attrs["format"] == "ome-zarr" and movie.attrs["pixel_calibrated"]
    with pytest.raises(MovieFileError, match="OME-Zarr image written by another tool.*temflow.open_movie"):
        temflow.open_zarr(path)
    # round trip: temflow's own store of it validates too
    assert_valid_ome_zarr(temflow.save_zarr(movie, tmp_path / "mine.zarr"))


def test_opens_ngff_04_on_zarr_v2(tmp_path):
    path = tmp_path / "v04"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = np.arange(3 * 8 * 10, dtype="float32").reshape(3, 8, 10)
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 8, 10))[...] = data
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "t", "type": "time", "unit": "second"}, {"name": "y", "type": "space", "unit": "angstrom"},
                 {"name": "x", "type": "space", "unit": "angstrom"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 4.0, 4.0]}]}],
    }]
    assert temflow.io.detect_format(path) == "zarr"
    movie = temflow.open_movie(path)
    np.testing.assert_array_equal(movie.values, data)
    np.testing.assert_allclose(temflow.pixel_size_nm(movie), (0.4, 0.4))
    np.testing.assert_allclose(movie.time.values, [0.0, 0.5, 1.0])


def test_ome_zarr_that_is_not_a_movie_is_refused(tmp_path):
    data = np.zeros((2, 3, 8, 8), dtype="uint8")
    path = _write_ngff_05(
        tmp_path / "rgb.zarr", data,
        axes=[("t", "time", "second"), ("c", "channel", None), ("y", "space", "nanometer"), ("x", "space", "nanometer")],
        scale=[1.0, 1.0, 1.0, 1.0],
    )
    with pytest.raises(MovieFileError, match="axis 'c' has 3 elements.*one 'c' plane per store"):
        temflow.open_movie(path)


def test_uncalibrated_ome_zarr_warns(tmp_path):
    data = np.zeros((2, 8, 8), dtype="uint8")
    path = _write_ngff_05(tmp_path / "u.zarr", data, axes=[("t", "time", None), ("y", "space", None),
                                                           ("x", "space", None)], scale=[1.0, 1.0, 1.0])
    with pytest.warns(UserWarning, match="no pixel-size calibration"):
        movie = temflow.open_movie(path, frame_interval_s=1.0)
    assert temflow.pixel_size_nm(movie) == (1.0, 1.0)
