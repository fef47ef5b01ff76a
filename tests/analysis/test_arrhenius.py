"""Arrhenius analysis: steps found in the temperature, per-step rates and Ea recovered from simulated ripening."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from temflow.analysis.arrhenius import (
    BOLTZMANN_EV_PER_K,
    ArrheniusFit,
    coarsening_rates_per_step,
    fit_arrhenius,
    temperature_steps,
)
from temflow.synthetic.generator import make_movie

EA_EV = 0.8
TEMPERATURES_C = (300.0, 340.0, 370.0, 400.0)


def _rate(temperature_c: float) -> float:
    """Ripening rate (nm^3/s) of an 0.8 eV process, 10 nm^3/s at 400 °C."""
    return 10.0 * float(np.exp(-EA_EV / BOLTZMANN_EV_PER_K * (1 / (temperature_c + 273.15) - 1 / 673.15)))


def _heating_experiment(frames: int = 30) -> pd.DataFrame:
    """Per-frame statistics of the generator's true particles, one simulated movie per temperature step,
    with a 4-frame ramp between steps (which must not count as a step). Like an experimenter, the
    movie holds the colder steps longer (frames further apart) so that every step coarsens visibly."""
    parts, start = [], 0.0
    for i, temperature in enumerate(TEMPERATURES_C):
        interval = 10.0 / _rate(temperature)
        truth = make_movie(frames=frames, size=512, frame_interval_s=interval, ripening_rate_nm3_per_s=_rate(temperature),
                           radius_nm=(2.0, 6.0), seed=10 + i)
        seen = truth.particles[truth.particles["visible"]]
        groups = seen.groupby("frame")
        step = pd.DataFrame({"time": groups["time"].first().to_numpy() + start, "mean_radius": groups["radius"].mean(),
                             "count": groups.size(), "std_diameter": 2 * groups["radius"].std(),
                             "temperature_C": temperature})
        parts.append(step)
        start += frames * interval
        if i + 1 < len(TEMPERATURES_C):
            ramp = np.linspace(temperature, TEMPERATURES_C[i + 1], 6)[1:-1]
            parts.append(pd.DataFrame({"time": start + np.arange(4.0), "mean_radius": np.nan, "count": 0,
                                       "std_diameter": np.nan, "temperature_C": ramp}))
            start += 4
    return pd.concat(parts, ignore_index=True)


def test_steps_skip_ramps_and_gaps():
    temps = [25.0] * 3 + [100.0, 200.0, 300.0] + [301.0, 299.5, 300.2, 300.8] + [np.nan] + [500.0] * 4
    steps = temperature_steps(pd.DataFrame({"time": np.arange(len(temps), dtype=float), "temperature_C": temps}),
                              min_frames=3)
    assert steps["temperature_C"].tolist() == [25.0, pytest.approx(300.5, abs=0.6), 500.0]
    assert steps["frames"].tolist() == [3, 5, 4]  # 300 °C joins the plateau at 299.5-301
    with pytest.raises(ValueError, match="tolerance_C must be a positive"):
        temperature_steps(pd.DataFrame({"time": [0.0], "temperature_C": [1.0]}), tolerance_C=0)


def test_activation_energy_of_simulated_ripening():
    stats = _heating_experiment()
    rates = coarsening_rates_per_step(stats, exponent=3.0)
    assert rates["temperature_C"].tolist() == list(TEMPERATURES_C)
    assert rates["ok"].all()
    # each step's rate is the simulated one (the generator's own mean radius: within 35 %)
    np.testing.assert_allclose(rates["rate"], [_rate(t) for t in TEMPERATURES_C], rtol=0.35)
    fit = fit_arrhenius(rates, rng=0)
    assert fit.ok and fit.steps_used == 4
    assert fit.activation_energy_eV == pytest.approx(EA_EV, rel=0.15)
    low, high = fit.interval_eV
    assert low < EA_EV < high and high - low < 1.0
    assert fit.bootstrap_interval_eV[0] < fit.activation_energy_eV < fit.bootstrap_interval_eV[1]
    assert fit.to_dict()["activation_energy_kJ_per_mol"] == pytest.approx(fit.activation_energy_eV * 96.485, rel=1e-4)
    assert fit.predict(np.array([673.15]))[0] == pytest.approx(np.exp(fit.ln_prefactor - fit.activation_energy_eV / (BOLTZMANN_EV_PER_K * 673.15)))


def test_exact_line_and_two_steps():
    T = np.array([500.0, 600.0])
    K = 3e6 * np.exp(-0.6 / (BOLTZMANN_EV_PER_K * T))
    fit = fit_arrhenius(pd.DataFrame({"temperature_K": T, "rate": K, "rate_error": 0.1 * K}), rng=1)
    assert fit.activation_energy_eV == pytest.approx(0.6, rel=1e-9)
    # two points: the interval comes from their 10 % errors alone, 1.96 sigma
    sigma = np.hypot(0.1, 0.1) / (1 / 500 - 1 / 600) * BOLTZMANN_EV_PER_K
    assert fit.activation_energy_error_eV == pytest.approx(sigma, rel=1e-6)
    assert fit.interval_eV[1] - 0.6 == pytest.approx(1.959964 * sigma, rel=1e-5)
    assert fit_arrhenius(pd.DataFrame({"temperature_K": T, "rate": K, "rate_error": 0.1 * K}), rng=1) == fit


def test_no_line_says_why():
    one = pd.DataFrame({"temperature_K": [600.0, 650.0], "rate": [2.0, 1e-17], "rate_error": [0.1, 0.05]})
    fit = fit_arrhenius(one)
    assert isinstance(fit, ArrheniusFit) and not fit.ok and fit.steps_excluded == 1
    assert "1 temperature step(s) with a coarsening rate above its error" in fit.reason
    same = pd.DataFrame({"temperature_K": [600.0, 600.0], "rate": [2.0, 3.0], "rate_error": [0.1, 0.1]})
    assert fit_arrhenius(same).reason == "every step has the same temperature"
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        fit_arrhenius(same, confidence=95)
