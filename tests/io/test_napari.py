"""napari layer data tuples: movie, masks and tracks in the same physical coordinates."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from conftest import raise_if_dask_computes
from temflow.analysis import link, measure_particles
from temflow.io import napari_layers
from temflow.synthetic.generator import make_movie


def test_layers_sit_in_physical_coordinates_and_stay_lazy():
    truth = make_movie(frames=5, size=40, pixel_size_nm=0.4, frame_interval_s=0.5, seed=2, chunks=2)
    table = link(measure_particles(truth.labels, truth.movie), max_step_nm=3.0)
    with raise_if_dask_computes():
        (image, image_kw, image_kind), (labels, labels_kw, labels_kind), (tracks, tracks_kw, tracks_kind) = napari_layers(
            truth.movie, masks=truth.labels > 0, tracks=table)
    assert (image_kind, labels_kind, tracks_kind) == ("image", "labels", "tracks")
    assert isinstance(image, da.Array) and isinstance(labels, da.Array) and labels.dtype == np.uint8
    assert image_kw["scale"] == pytest.approx((0.5, 0.4, 0.4)) and labels_kw["scale"] == image_kw["scale"]
    assert image_kw["translate"] == labels_kw["translate"] == (0.0, float(truth.movie.y[0]), float(truth.movie.x[0]))
    # a tracked point, mapped through the image's scale, lands on its particle's pixel in the masks
    particle, t, y, x = tracks[len(tracks) // 2]
    frame, row, col = (round((v - o) / s) for v, o, s in zip((t, y, x), image_kw["translate"], image_kw["scale"]))
    assert np.asarray(labels[frame, row, col]) == 1
    assert set(tracks[:, 0]) == set(table["particle"])


def test_masks_of_another_shape_are_refused():
    truth = make_movie(frames=3, size=32, seed=0)
    with pytest.raises(ValueError, match="masks have shape"):
        napari_layers(truth.movie, masks=truth.labels[:2] > 0)
    with pytest.raises(ValueError, match="lacks the columns"):
        import pandas as pd

        napari_layers(truth.movie, tracks=pd.DataFrame({"frame": [0]}))
