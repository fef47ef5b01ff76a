"""temflow: from huge in-situ TEM movies to particle counts, sizes, tracks and coarsening laws.

Movies are lazy ``xarray.DataArray`` objects backed by dask, dims
``("time", "y", "x")``, coordinates in s and nm. Importing temflow imports
nothing heavy: every public name is imported on first use, and neither torch
nor ``distributed`` until a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from temflow._version import __version__

# Every public name is imported on first use (PEP 562), so ``import temflow`` and the
# ``temflow`` command's --help and --version stay fast: dask.array, pandas, scipy and
# xarray load only when a function needs them, and torch only for the learned stage.
_LAZY = {
    **dict.fromkeys(
        ["GrowthFit", "Verdict", "coarsening_mechanism", "fit_growth_law", "normalised_size_distribution",
         "size_distribution", "size_statistics"],
        "temflow.analysis.coarsening",
    ),
    **dict.fromkeys(
        ["label_particles", "measure_particles", "measure_particles_to_parquet", "read_particles"],
        "temflow.analysis.measure",
    ),
    "threshold_particles": "temflow.analysis.threshold",
    "find_events": "temflow.analysis.track",
    "link": "temflow.analysis.track",
    **dict.fromkeys(["apply_drift", "correct_drift", "crop_valid", "estimate_drift"], "temflow.drift.correction"),
    "DiskFullError": "temflow.errors",
    "FolderInUseError": "temflow.errors",
    "IncompleteStoreError": "temflow.errors",
    "MovieFileError": "temflow.errors",
    "describe": "temflow.io.reader",
    "open_movie": "temflow.io.reader",
    "open_zarr": "temflow.io.store",
    "save_zarr": "temflow.io.store",
    "to_hyperspy": "temflow.io.hyperspy",
    **dict.fromkeys(["DIMS", "as_movie", "check_movie", "frame_interval_s", "pixel_size_nm"], "temflow.movie"),
    "Config": "temflow.pipeline.config",
    "load_config": "temflow.pipeline.config",
    "run": "temflow.pipeline.runner",
    **dict.fromkeys(["make_tile_set", "normalise", "percentile_normalisation"], "temflow.segmentation.tiles"),
    "TileDataset": "temflow.segmentation.tiles",
    # these import torch
    "train": "temflow.segmentation.training",
    "predict": "temflow.segmentation.inference",
    "segment": "temflow.segmentation.inference",
    "load_model": "temflow.segmentation.model_files",
    "save_model": "temflow.segmentation.model_files",
}

if TYPE_CHECKING:
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
    from temflow.errors import IncompleteStoreError, MovieFileError
    from temflow.io import describe, open_movie, open_zarr, save_zarr, to_hyperspy
    from temflow.movie import DIMS, as_movie, check_movie, frame_interval_s, pixel_size_nm
    from temflow.pipeline import Config, load_config, run
    from temflow.segmentation import TileDataset, make_tile_set, normalise, percentile_normalisation
    from temflow.segmentation.inference import predict, segment
    from temflow.segmentation.model_files import load_model, save_model
    from temflow.segmentation.training import train

__all__ = [
    "__version__",
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
    "to_hyperspy",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # the next look-up is a plain attribute
        return value
    raise AttributeError(f"module 'temflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
