"""Electron dose: the generator's dose comes back from camera counts; a beam current gives I/(e·area)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raise_if_dask_computes

import temflow
from temflow.io.dose import ELEMENTARY_CHARGE_C, add_dose_coords, electron_dose
from temflow.synthetic import make_movie


@pytest.mark.parametrize("chunks", [None, 5, {"time": 3, "y": 20, "x": -1}])
def test_counts_method_recovers_the_generators_dose(chunks):
    movie = make_movie(frames=12, size=64, area_fraction=0.04, pixel_size_nm=0.5, frame_interval_s=0.2, dose_e_per_px=50.0,
                       gain_counts_per_e=8.0, drift_px=0.0, seed=1, chunks=chunks).movie
    dose = electron_dose(movie, counts_per_electron=8.0)  # exposure from the metadata
    per_A2 = 50.0 / (5.0 * 5.0)  # 50 e per 0.5 nm = 5 Å pixel
    # the particles darken part of the field: the median sits ~4 % below the support (measured on this
    # 64x64 field; ~2 % at 128x128), the mean further still
    np.testing.assert_allclose(dose["frame_dose_e_per_A2"], per_A2, rtol=0.06)
    np.testing.assert_allclose(dose["dose_rate_e_per_A2_s"], per_A2 / 0.2, rtol=0.06)
    # beam on between frames, exposure = interval: the cumulative dose grows by one frame's dose per frame
    np.testing.assert_allclose(dose["cumulative_dose_e_per_A2"], per_A2 * np.arange(1, 13), rtol=0.06)
    assert dose.attrs["method"] == "camera counts" and dose.attrs["exposure_s"] == 0.2
    # the median follows the support; the mean is pulled down by the absorbing particles
    mean = electron_dose(movie, counts_per_electron=8.0, statistic="mean")
    assert (mean["frame_dose_e_per_A2"] < dose["frame_dose_e_per_A2"]).all()


def test_beam_blanked_between_frames_counts_only_exposures():
    movie = temflow.as_movie(np.full((4, 4, 4), 10.0), pixel_size_nm=0.1, frame_interval_s=1.0)
    on = electron_dose(movie, counts_per_electron=1.0, exposure_s=0.25)
    off = electron_dose(movie, counts_per_electron=1.0, exposure_s=0.25, beam_between_frames=False,
                        initial_dose_e_per_A2=5.0)
    np.testing.assert_allclose(on["dose_rate_e_per_A2_s"], 40.0)
    np.testing.assert_allclose(on["cumulative_dose_e_per_A2"], [10, 50, 90, 130])
    np.testing.assert_allclose(off["cumulative_dose_e_per_A2"], [15, 25, 35, 45])


def test_beam_current_method():
    movie = temflow.as_movie(np.zeros((3, 4, 4)), pixel_size_nm=0.1, frame_interval_s=0.5)
    dose = electron_dose(movie, beam_current_A=1e-9, illuminated_diameter_nm=1000.0)
    expected = 1e-9 / ELEMENTARY_CHARGE_C / (np.pi * 5000.0**2)  # 1 nA over a 1 µm disc
    np.testing.assert_allclose(dose["dose_rate_e_per_A2_s"], expected)
    np.testing.assert_allclose(dose["cumulative_dose_e_per_A2"], expected * 0.5 * np.arange(1, 4))
    movie.attrs["metadata"] = {"velox": {"Optics": {"LastMeasuredScreenCurrent": "2e-9"}}}
    from_file = electron_dose(movie, illuminated_diameter_nm=1000.0)
    assert from_file.attrs["beam_current_source"].startswith("Velox")
    np.testing.assert_allclose(from_file["dose_rate_e_per_A2_s"], 2 * expected)


def test_refuses_without_what_it_needs():
    movie = temflow.as_movie(np.zeros((3, 4, 4)), pixel_size_nm=0.1, frame_interval_s=0.5)
    with pytest.raises(ValueError, match="cannot compute the electron dose: pass counts_per_electron.*beam current"):
        electron_dose(movie)
    with pytest.raises(ValueError, match="no exposure time.*exposure_s="):
        electron_dose(movie, counts_per_electron=8.0)
    with pytest.raises(ValueError, match="counts_per_electron must be a positive"):
        electron_dose(movie, counts_per_electron=0.0, exposure_s=1.0)
    with pytest.raises(ValueError, match="illuminated_diameter_nm"):
        electron_dose(movie, beam_current_A=1e-9)
    movie.attrs["instrument"] = {"mode": "STEM nP SA Zoom Diffraction", "exposure_s": 1.0}
    with pytest.raises(ValueError, match="scanning mode.*not\n?.*electrons arriving"):
        electron_dose(movie, counts_per_electron=8.0)


@pytest.mark.parametrize("chunks", [None, 2])
def test_dose_coords_keep_the_movie_lazy(chunks):
    movie = temflow.as_movie(np.full((5, 6, 6), 4.0), pixel_size_nm=0.1, frame_interval_s=1.0)
    movie = movie.chunk({"time": chunks}) if chunks else movie
    dose = electron_dose(movie, counts_per_electron=4.0, exposure_s=1.0)
    with raise_if_dask_computes():
        out = add_dose_coords(movie, dose)
    np.testing.assert_allclose(out["cumulative_dose_e_per_A2"], np.arange(1, 6))
    assert out.attrs["electron_dose"]["method"] == "camera counts"
    assert type(out.data) is type(movie.data)
    with pytest.raises(ValueError, match="dose has 5 frames and the movie 2"):
        add_dose_coords(movie.isel(time=slice(0, 2)), dose)
