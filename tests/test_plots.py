"""Analysis figures of temflow.plots: drawn from a real analysis, saved as PNG and PDF, closed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from temflow.analysis.coarsening import fit_growth_law, size_distribution, size_statistics
from temflow.plots import (
    plot_analysis_summary,
    plot_coarsening,
    plot_particle_outlines,
    plot_size_distribution,
    plot_size_trajectories,
    save_figure,
)
from truth_matching import case


@pytest.fixture(scope="module")
def ripening():
    result = case("ostwald")
    table = result["threshold"]["table"]
    stats = size_statistics(table, min_relative_diameter=0.3)
    fits = (fit_growth_law(stats), fit_growth_law(stats, exponent=3.0))
    return result, stats, fits


def test_each_figure_saved_and_closed(ripening, tmp_path):
    result, stats, fits = ripening
    labels = result["truth"].labels
    tracks, events = result["threshold"]["tracks"], result["threshold"]["events"]
    figures = {
        "outlines": plot_particle_outlines(result["movie"], labels),
        "psd": plot_size_distribution(size_distribution(result["threshold"]["table"])),
        "coarsening": plot_coarsening(stats, fits=fits),
        "trajectories": plot_size_trajectories(tracks, events),
        "summary": plot_analysis_summary(result["movie"], labels, stats, tracks, events, fits=fits,
                                         shifts=result["truth"].shifts),
    }
    for name, figure in figures.items():
        assert isinstance(figure, Figure) and figure.axes
        written = save_figure(figure, tmp_path / name, formats=("png", "pdf"))
        assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in written)
    assert plt.get_fignums() == []


def test_draws_on_given_axes(ripening):
    result, stats, fits = ripening
    figure = Figure()
    ax = figure.add_subplot()
    assert plot_size_trajectories(result["true_labels"]["tracks"], ax=ax) is figure
    pair = Figure().subplots(1, 2)
    assert plot_coarsening(stats, fits=fits, axes=pair) is pair[0].figure
    labels = [t.get_text() for t in pair[1].get_legend().get_texts()]
    assert any("n = 3 (fixed)" in text for text in labels)
