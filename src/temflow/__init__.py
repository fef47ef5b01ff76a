"""temflow: from huge in-situ TEM movies to particle counts, sizes, tracks and coarsening laws.

Movies are lazy ``xarray.DataArray`` objects backed by dask, dims
``("time", "y", "x")``, coordinates in s and nm. Importing temflow imports
neither torch nor ``distributed``: the torch-based entry points (``train``,
``predict``, ``segment``, ``load_model``) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from temflow.analysis import (
    GrowthFit,
    Verdict,
    coarsening_mechanism,
    find_events,
    fit_growth_law,
    label_particles,
    link,
    measure_particles,
    measure_particles_to_parquet,
    normalised_size_distribution,
    read_particles,
    size_distribution,
    size_statistics,
    threshold_particles,
)
from temflow.drift import apply_drift, correct_drift, crop_valid, estimate_drift
from temflow.errors import DiskFullError, FolderInUseError, IncompleteStoreError, MovieFileError
from temflow.io import describe, open_movie, open_zarr, save_zarr
from temflow.movie import DIMS, as_movie, check_movie, frame_interval_s, pixel_size_nm
from temflow.pipeline import Config, load_config, run
from temflow.segmentation import TileDataset, make_tile_set, normalise, percentile_normalisation

__version__ = "0.1.0"

# name -> module, imported when first asked for (they import torch)
_LAZY = {
    "train": "temflow.segmentation.training",
    "predict": "temflow.segmentation.inference",
    "segment": "temflow.segmentation.inference",
    "load_model": "temflow.segmentation.model_files",
    "save_model": "temflow.segmentation.model_files",
}

__all__ = [
    "DIMS",
    "Config",
    "GrowthFit",
    "Verdict",
    "DiskFullError",
    "FolderInUseError",
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
