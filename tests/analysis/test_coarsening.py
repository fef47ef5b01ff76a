"""temflow.analysis.coarsening: statistics, growth laws and the mechanism verdict, against synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from temflow.analysis.coarsening import (
    GrowthFit,
    Verdict,
    coarsening_mechanism,
    compare_growth_laws,
    compare_size_distributions,
    fit_growth_law,
    mark_excluded_frames,
    sized_particles,
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
    rng = np.random.default_rng(0)
    flat = pd.DataFrame({"time": np.arange(30.0), "mean_radius": 3.0 + 0.01 * rng.normal(size=30), "count": 40, "std_diameter": 0.6})
    assert "too little growth" in fit_growth_law(flat).reason
    few = pd.DataFrame({"time": np.arange(5.0), "mean_radius": [1.0, 1.1, 1.2, 1.3, 1.4], "count": 10})
    assert "only 5 frames" in fit_growth_law(few).reason and "at least 8" in fit_growth_law(few).reason
    assert "undetermined" in compare_growth_laws(few).attrs["summary"]
    lonely = pd.DataFrame({"time": np.arange(20.0), "mean_radius": (8.0 + 2.0 * np.arange(20.0)) ** (1 / 3), "count": 4})
    assert "too few particles" in fit_growth_law(lonely).reason
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
    static = make_movie(frames=12, size=48, mechanism="none", drift_px=0, jumps=0, radius_nm=(2.0, 3.0), seed=3)
    table = measure_particles(static.labels, static.movie)
    tracks = link(table, max_step_nm=1.0)
    verdict = coarsening_mechanism(tracks, find_events(tracks))
    assert verdict.mechanism == "no coarsening" and verdict.merges == verdict.vanishes == 0
    # five frames of the same: too short to say anything
    short = tracks[tracks["frame"] < 5]
    verdict = coarsening_mechanism(short, find_events(short))
    assert verdict.mechanism == "insufficient evidence" and "too few to say" in verdict.reason

    bare = make_movie(frames=5, size=48, mechanism="none", drift_px=0, jumps=0, n_particles=0, seed=3)
    table = measure_particles(label_particles(threshold_particles(bare.movie)), bare.movie)
    stats = size_statistics(table)
    assert table.empty and stats["count"].tolist() == [0] * 5
    assert not fit_growth_law(stats).ok
    tracks = link(table, max_step_nm=1.0)
    # nothing in five frames is no evidence of anything
    assert coarsening_mechanism(tracks, find_events(tracks)).mechanism == "insufficient evidence"


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


def test_bootstrap_interval_of_n_covers_the_generators_exponent():
    truth = case("ostwald")["truth"]
    seen = truth.particles[truth.particles["visible"]].assign(equivalent_diameter=lambda p: 2 * p["radius"])
    stats = size_statistics(seen)
    fit = fit_growth_law(stats, particles=sized_particles(seen), resamples=100)
    # 40 frames of ~120 particles: the interval holds 3 but is too wide to call n determined
    assert fit.n_low <= 3.0 <= fit.n_high
    assert not fit.ok and "the data allow n anywhere from" in fit.reason and np.isnan(fit.n)
    assert fit_growth_law(stats, particles=sized_particles(seen), resamples=100, max_exponent_range=4.0).ok
    assert "bootstrap over" in fit.interval_method and fit.particles_used > 100
    # the naive interval (frames treated as independent) is narrower than the bootstrap's
    naive = fit_growth_law(stats)
    assert naive.n_high - naive.n_low < fit.n_high - fit.n_low
    table = compare_growth_laws(stats, particles=sized_particles(seen), resamples=100)
    assert table["model"].tolist() == ["n = 2", "n = 3", "n = 4", "n free"]
    assert table.loc[table["model"] == "n = 3", "delta_bic"].iloc[0] == 0.0
    fixed = table[table["model"] == "n = 3"].iloc[0]
    assert fixed["rate_low"] <= truth.parameters["ripening_rate_nm3_per_s"] <= fixed["rate_high"]


def test_the_same_law_is_undetermined_on_five_frames():
    truth = case("ostwald")["truth"]
    seen = truth.particles[truth.particles["visible"] & (truth.particles["frame"] < 5)]
    seen = seen.assign(equivalent_diameter=2 * seen["radius"])
    stats = size_statistics(seen)
    fit = fit_growth_law(stats, particles=sized_particles(seen))
    assert not fit.ok and np.isnan(fit.n) and "only 5 frames" in fit.reason
    assert "undetermined" in fit.describe()


def test_size_distribution_shapes_against_theory():
    ripening = compare_size_distributions(case("ostwald")["true_labels"]["tracks"])
    coalescence = compare_size_distributions(case("coalescence")["true_labels"]["tracks"])
    assert ripening.attrs["closer"] == "LSW (ripening)"
    # LSW fits ripening far better than it fits coalescence
    assert ripening["ks_statistic"].iloc[0] < 0.5 * coalescence["ks_statistic"].iloc[0]
    assert ripening["particles"].iloc[0] < ripening["values"].iloc[0]  # p-values count particles, not rows
    few = compare_size_distributions(case("ostwald")["true_labels"]["tracks"].head(5))
    assert "too few particles" in few.attrs["reason"] and few["ks_statistic"].isna().all()


def test_blurred_frames_next_to_a_jump_are_left_out():
    rng = np.random.default_rng(1)
    count = 60 + rng.integers(-2, 3, size=30)
    count[10] = int(0.75 * count[10])  # blurred by a stage jump at frame 10: 25 % fewer particles
    count[20] = int(0.9 * count[20])  # a 10 % dip, within what counting gives: kept
    count[25] = 0  # beam blanked
    stats = pd.DataFrame({"frame": np.arange(30), "count": count})
    marked = mark_excluded_frames(stats, jump_frames=[10])
    assert marked.loc[marked["excluded"], "frame"].tolist() == [10, 25]
    assert "stage jump" in marked.loc[10, "exclusion"] and "blank" in marked.loc[25, "exclusion"]
    # without the jump on record a dip must also be an outlier of the count's own scatter
    assert mark_excluded_frames(stats, outlier_sigma=3.0).loc[10, "excluded"]
    assert not mark_excluded_frames(stats, outlier_sigma=3.0).loc[20, "excluded"]
    flagged = np.zeros(30, bool)
    flagged[3] = True
    assert mark_excluded_frames(stats, flagged=flagged).loc[3, "excluded"]
    with pytest.raises(ValueError, match="one value per frame"):
        mark_excluded_frames(stats, flagged=flagged[:5])
    # the fit leaves excluded frames out
    t = np.arange(30.0)
    radius = (27.0 + 3.0 * t) ** (1 / 3)
    radius[10] = 9.0
    full = pd.DataFrame({"frame": np.arange(30), "time": t, "mean_radius": radius, "count": count, "std_diameter": 0.5})
    fit = fit_growth_law(mark_excluded_frames(full, jump_frames=[10]))
    assert fit.ok and fit.n == pytest.approx(3.0, abs=0.05) and fit.frames_used == 28
