"""temflow.analysis.coarsening: statistics, growth laws and the mechanism verdict, against synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from temflow.analysis.coarsening import (
    GrowthFit,
    Verdict,
    coarsening_mechanism,
    fit_growth_law,
    normalised_size_distribution,
    size_distribution,
    size_statistics,
)
from temflow.analysis.measure import label_particles, measure_particles, threshold_particles
from temflow.synthetic.generator import lsw_distribution, make_movie
from temflow.analysis.track import find_events, link
from truth_matching import case


def _truth_statistics(particles: pd.DataFrame) -> pd.DataFrame:
    groups = particles.groupby("frame")
    return pd.DataFrame(
        {
            "time": groups["time"].first(),
            "mean_radius": groups["radius"].mean(),
            "count": groups.size(),
            "std_diameter": 2 * groups["radius"].std(),
        }
    )


def test_statistics_units_and_empty_frames():
    table = pd.DataFrame(
        {
            "frame": [0, 0, 0, 2],
            "time": [0.0, 0.0, 0.0, 1.0],
            "area": [np.pi, 4 * np.pi, 9 * np.pi, 4 * np.pi],
            "equivalent_diameter": [2.0, 4.0, 6.0, 4.0],
            "touches_border": [False, False, True, False],
        }
    )
    table.attrs = {"times_s": [0.0, 0.5, 1.0], "field_area_nm2": [1e4, 1e4, 5e3]}
    stats = size_statistics(table)
    assert stats["count"].tolist() == [2, 0, 1]
    # 2 particles + half of the one on the border, in 0.01 um^2
    assert stats["number_density"].tolist() == pytest.approx([250.0, 0.0, 200.0])
    assert stats["mean_diameter"].iloc[0] == 3.0 and np.isnan(stats["mean_diameter"].iloc[1])
    assert stats["area_fraction"].iloc[0] == pytest.approx(14 * np.pi / 1e4)
    assert size_statistics(table, include_border=True)["count"].tolist() == [3, 0, 1]
    assert size_statistics(table, min_relative_diameter=0.7)["mean_diameter"].iloc[0] == 4.0


def test_size_distribution_integrates_to_one():
    table = case("coalescence")["true_labels"]["table"]
    psd = size_distribution(table, bins=np.linspace(0, 16, 33))
    assert psd.dims == ("time", "diameter") and psd.sizes["time"] == 40
    widths = np.diff(psd.attrs["diameter_edges"])
    np.testing.assert_allclose((psd * widths).sum("diameter"), 1.0)
    assert (psd["count"] > 0).all()


def test_lsw_shape_recovered_in_ripening_not_in_coalescence():
    ripening = normalised_size_distribution(case("ostwald")["true_labels"]["table"])
    coalescence = normalised_size_distribution(case("coalescence")["true_labels"]["table"])
    assert np.trapezoid(ripening["lsw"], ripening["u"]) == pytest.approx(1.0, abs=0.02)
    assert ripening.attrs["l1_distance"] < 0.2 < coalescence.attrs["l1_distance"]
    u = np.linspace(0, 1.5, 301)
    assert np.trapezoid(lsw_distribution(u), u) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("source", ["true_labels", "threshold"])
def test_growth_exponent_of_ripening(source):
    result = case("ostwald")
    truth_fit = fit_growth_law(_truth_statistics(result["truth"].particles))
    fit = fit_growth_law(size_statistics(result[source]["table"], min_relative_diameter=0.3))
    assert fit.ok and not fit.exponent_fixed
    assert fit.n == pytest.approx(3.0, abs=0.5)
    assert fit.n == pytest.approx(truth_fit.n, abs=0.3)  # what the generator's own particles give
    fixed = fit_growth_law(size_statistics(result[source]["table"]), exponent=3.0)
    assert fixed.exponent_fixed and fixed.n == 3.0 and fixed.n_error == 0.0
    # K of <r>^3 - <r0>^3 = K t, as simulated
    assert fixed.rate == pytest.approx(result["truth"].parameters["ripening_rate_nm3_per_s"], rel=0.15)
    assert fixed.rate_error > 0 and fixed.predict(np.array([0.0]))[0] == pytest.approx(fixed.r0)


def test_fit_with_nothing_to_fit_says_why():
    empty = pd.DataFrame({"time": [0.0, 1.0], "mean_radius": [np.nan, np.nan], "count": [0, 0]})
    fit = fit_growth_law(empty)
    assert not fit.ok and np.isnan(fit.n) and "no frame has 3 or more particles" in fit.reason
    flat = pd.DataFrame({"time": np.arange(5.0), "mean_radius": 3.0, "count": 10})
    assert "does not grow" in fit_growth_law(flat).reason
    few = pd.DataFrame({"time": [0.0, 1.0, 2.0], "mean_radius": [1.0, 1.1, 1.2], "count": 10})
    assert "the fit needs 4" in fit_growth_law(few).reason
    assert isinstance(fit, GrowthFit) and fit.to_dict()["reason"] == fit.reason
    with pytest.raises(ValueError, match="exponent must be a positive number"):
        fit_growth_law(flat, exponent=-3.0)


@pytest.mark.parametrize(
    ("mechanism", "source", "expected"),
    [
        ("ostwald", "true_labels", "ostwald ripening"),
        ("ostwald", "threshold", "ostwald ripening"),
        ("coalescence", "true_labels", "migration and coalescence"),
        ("coalescence", "threshold", "migration and coalescence"),
    ],
)
def test_verdict(mechanism, source, expected):
    result = case(mechanism)[source]
    verdict = coarsening_mechanism(result["tracks"], result["events"])
    assert isinstance(verdict, Verdict) and verdict.mechanism == expected, verdict.reason
    if expected == "ostwald ripening":
        assert verdict.vanishes > 10 * verdict.merges and verdict.rms_step_nm < 0.5
    else:
        assert verdict.merges > 10 and verdict.vanishes <= 0.7 * verdict.merges and verdict.diffusion_nm2_per_s > 0.1
    assert verdict.to_dict()["mechanism"] == expected


def test_static_and_empty_movies():
    static = make_movie(frames=6, size=48, mechanism="none", drift_px=0, jumps=0, radius_nm=(2.0, 3.0), seed=3)
    table = measure_particles(static.labels, static.movie)
    tracks = link(table, max_step_nm=1.0)
    verdict = coarsening_mechanism(tracks, find_events(tracks))
    assert verdict.mechanism == "no coarsening" and verdict.merges == verdict.vanishes == 0

    bare = make_movie(frames=5, size=48, mechanism="none", drift_px=0, jumps=0, n_particles=0, seed=3)
    table = measure_particles(label_particles(threshold_particles(bare.movie)), bare.movie)
    stats = size_statistics(table)
    assert table.empty and stats["count"].tolist() == [0] * 5
    assert not fit_growth_law(stats).ok
    tracks = link(table, max_step_nm=1.0)
    assert coarsening_mechanism(tracks, find_events(tracks)).mechanism == "no coarsening"


def test_bad_tables():
    with pytest.raises(ValueError, match=r"table lacks the columns \['equivalent_diameter'\]"):
        size_statistics(pd.DataFrame({"frame": [0]}))
    with pytest.raises(TypeError, match="table must be a pandas DataFrame"):
        size_statistics([1, 2])
    with pytest.raises(ValueError, match="stats lacks the columns"):
        fit_growth_law(pd.DataFrame({"time": [0.0]}))
    with pytest.raises(ValueError, match="tracks lacks the columns"):
        coarsening_mechanism(pd.DataFrame({"frame": [0]}), pd.DataFrame())
    with pytest.raises(ValueError, match="min_relative_diameter must be in"):
        size_statistics(case("coalescence")["true_labels"]["table"], min_relative_diameter=1.5)
    with pytest.raises(ValueError, match="empty table carries no frames"):
        size_statistics(pd.DataFrame({"frame": [], "equivalent_diameter": []}))
