"""Figures for every stage (matplotlib object API; every figure is closed after saving).

Each function takes the stage's result, draws on an ``Axes`` when one is given
(else makes its own figure), and returns the ``Figure``. ``save_figure`` writes
PNG and/or PDF and closes the figure. One private module per kind of figure:
``_figure`` (new axes, saving), ``_stage_figures`` (drift, training),
``_analysis_figures`` (particles, size distributions, coarsening) and
``_insitu_figures`` (temperature, Arrhenius, dose).
"""

from __future__ import annotations

import matplotlib

# before anything can import pyplot: figures are drawn off-screen, also without a display
matplotlib.use("Agg", force=False)

from temflow.plots._analysis_figures import (  # noqa: E402
    plot_analysis_summary,
    plot_coarsening,
    plot_particle_outlines,
    plot_scaled_size_distribution,
    plot_size_distribution,
    plot_size_trajectories,
)
from temflow.plots._figure import save_figure  # noqa: E402
from temflow.plots._insitu_figures import plot_arrhenius, plot_dose, plot_size_vs_temperature  # noqa: E402
from temflow.plots._stage_figures import plot_drift, plot_training_history  # noqa: E402

__all__ = [
    "plot_analysis_summary",
    "plot_arrhenius",
    "plot_coarsening",
    "plot_dose",
    "plot_drift",
    "plot_particle_outlines",
    "plot_scaled_size_distribution",
    "plot_size_distribution",
    "plot_size_trajectories",
    "plot_size_vs_temperature",
    "plot_training_history",
    "save_figure",
]
