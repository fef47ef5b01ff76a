"""Stage 6, analysis: masks in, particles, tracks, events and coarsening laws out.

``threshold`` is the classical segmentation (flat field, Otsu); ``measure`` labels masks
(cutting touching particles apart, ``_touching``) and measures every particle in nm;
``track`` links particles through time and finds merges and vanishings (``incremental_link``
links frame by frame as a movie is recorded, with the same tracks); ``coarsening``
gives size statistics and distributions, fits and compares growth laws (``_growth_law``
with its chi-square profile ``_growth_profile``, ``_growth_comparison``), sets the size
distribution against theory (``_size_shapes``) and weighs the mechanism (``_mechanism``);
``arrhenius`` finds temperature steps, fits a rate per step and an apparent activation
energy; ``tables`` gives every table's column units. No torch.
"""

from __future__ import annotations

from temflow.analysis.threshold import threshold_particles
from temflow.analysis.measure import COLUMNS, label_particles, measure_particles, measure_particles_to_parquet, read_particles
from temflow.analysis.track import EVENT_COLUMNS, find_events, link
from temflow.analysis.incremental_link import link_next, start_link
from temflow.analysis.arrhenius import ArrheniusFit, coarsening_rates_per_step, fit_arrhenius, temperature_steps
from temflow.analysis.coarsening import (
    GrowthFit,
    Verdict,
    coarsening_mechanism,
    compare_growth_laws,
    compare_size_distributions,
    fit_growth_law,
    mark_excluded_frames,
    normalised_size_distribution,
    size_distribution,
    size_statistics,
    sized_particles,
)

__all__ = [
    "ArrheniusFit",
    "COLUMNS",
    "EVENT_COLUMNS",
    "GrowthFit",
    "Verdict",
    "coarsening_mechanism",
    "coarsening_rates_per_step",
    "compare_growth_laws",
    "compare_size_distributions",
    "find_events",
    "fit_arrhenius",
    "fit_growth_law",
    "label_particles",
    "link",
    "link_next",
    "mark_excluded_frames",
    "measure_particles",
    "measure_particles_to_parquet",
    "normalised_size_distribution",
    "read_particles",
    "size_distribution",
    "size_statistics",
    "temperature_steps",
    "sized_particles",
    "start_link",
    "threshold_particles",
]
