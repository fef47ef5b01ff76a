"""Synthetic in-situ movies with their ground truth, for tests, benchmarks and the demo.

``make_movie`` simulates ripening (Ostwald) or migration-and-coalescence of supported
nanoparticles (``_simulation``), renders them lazily as a drifting, noisy bright-field
movie (``_render``) and returns it with the truth every other stage is checked against:
the drift, the label images, the particle table and the merge/vanish events.
"""

from __future__ import annotations

from temflow.synthetic.generator import SyntheticMovie, lsw_distribution, make_movie, save_truth

__all__ = [
    "SyntheticMovie",
    "lsw_distribution",
    "make_movie",
    "save_truth",
]
