"""temflow: from huge in-situ TEM movies to particle counts, sizes, tracks and coarsening laws.

Movies are lazy ``xarray.DataArray`` objects backed by dask, dims
``("time", "y", "x")``, coordinates in s and nm. Importing temflow imports
neither torch nor ``distributed``: the torch-based entry points (``train``,
``predict``, ``segment``, ``load_model``) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from temflow._movie import DIMS, as_movie, check_movie, frame_interval_s, pixel_size_nm
from temflow.coarsening import (
    GrowthFit,
    Verdict,
    coarsening_mechanism,
    fit_growth_law,
    normalised_size_distribution,
    size_distribution,
    size_statistics,
)
from temflow.config import Config, load_config
from temflow.drift import apply_drift, correct_drift, crop_valid, estimate_drift
from temflow.errors import IncompleteStoreError, MovieFileError
from temflow.io import describe, open_movie
from temflow.measure import label_particles, measure_particles, measure_particles_to_parquet, read_particles
from temflow.threshold import threshold_particles
from temflow.pipeline import run
from temflow.store import open_zarr, save_zarr
from temflow.tiles import TileDataset, make_tile_set, normalise, percentile_normalisation
from temflow.track import find_events, link

__version__ = "0.1.0"

# name -> module, imported when first asked for (they import torch)
_LAZY = {
    "train": "temflow.train",
    "predict": "temflow.infer",
    "segment": "temflow.infer",
    "load_model": "temflow.models",
    "save_model": "temflow.models",
}

__all__ = [
    "DIMS",
    "Config",
    "GrowthFit",
    "Verdict",
    "IncompleteStoreError",
    "MovieFileError",
    "TileDataset",
    "apply_drift",
    "as_movie",
    "check_movie",
    "coarsening_mechanism",
    "correct_drift",
    "crop_valid",
    "describe",
    "estimate_drift",
    "find_events",
    "fit_growth_law",
    "frame_interval_s",
    "label_particles",
    "link",
    "load_config",
    "load_model",
    "measure_particles",
    "measure_particles_to_parquet",
    "normalised_size_distribution",
    "read_particles",
    "make_tile_set",
    "normalise",
    "open_movie",
    "open_zarr",
    "percentile_normalisation",
    "pixel_size_nm",
    "predict",
    "run",
    "save_model",
    "save_zarr",
    "segment",
    "size_distribution",
    "size_statistics",
    "threshold_particles",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'temflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
