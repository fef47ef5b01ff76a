"""Stages 3 to 5, learned segmentation: tiles, models, training and inference.

``tiles`` cuts a movie and its labels into a normalised, time-split tile set
(``_normalisation``, ``_tile_dataset``); ``models`` holds the U-Net and the autoencoder and
``model_files`` their ``.safetensors`` files with a model card; ``training`` fits a model on
one machine or data-parallel over Dask workers (``_training_loop``, ``_checkpoints``,
``_data_parallel``, ``_collectives``, ``_losses``, ``_train_config``); ``inference`` maps a
model over every chunk with halos (``_seamless``, ``_workers``, ``_plan``) and ``segment``
turns the result into masks. This is the only stage that imports torch; the torch-based names
are imported on first use, so ``import temflow.segmentation`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from temflow.segmentation.tiles import DENOISING_NOISE, LABEL_NOISE, TileDataset, make_tile_set, normalise, percentile_normalisation, read_tile_set_info

# name -> module, imported when first asked for (they import torch)
_LAZY = {
    "Autoencoder": "temflow.segmentation.models",
    "UNet": "temflow.segmentation.models",
    "load_model": "temflow.segmentation.model_files",
    "read_card": "temflow.segmentation.model_files",
    "save_model": "temflow.segmentation.model_files",
    "train": "temflow.segmentation.training",
    "predict": "temflow.segmentation.inference",
    "segment": "temflow.segmentation.inference",
}

__all__ = [
    "Autoencoder",
    "DENOISING_NOISE",
    "LABEL_NOISE",
    "TileDataset",
    "UNet",
    "load_model",
    "make_tile_set",
    "normalise",
    "percentile_normalisation",
    "predict",
    "read_card",
    "read_tile_set_info",
    "save_model",
    "segment",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'temflow.segmentation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
