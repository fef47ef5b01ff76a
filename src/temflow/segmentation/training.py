"""Training of temflow's segmentation networks: one process, torchrun, or a Dask cluster.

:func:`train` fits a :class:`~temflow.segmentation.models.UNet` (BCE + Dice against the
masks) or an :class:`~temflow.segmentation.models.Autoencoder` (mean squared error against
the frame without the added noise) on a :class:`~temflow.segmentation.tiles.TileDataset`.

Data parallelism
----------------
The global batch of every step is the same whatever the number of ranks: an
epoch's order is a permutation seeded by ``(seed, epoch)``, cut into batches of
``batch_size`` tiles, and each batch is split evenly over the ranks. Every rank
adds up ``loss_i / global_batch`` over its own tiles, the gradients are summed
across ranks (one all-reduce of the flattened gradients) and batch norm uses the
statistics of the global batch (:class:`temflow.segmentation.models._BatchNorm2d`). With the
augmentation seeded per tile (:class:`~temflow.segmentation.tiles.TileDataset`), data-parallel
training is therefore single-process training with the same global batch, up to
the order of floating-point sums.

* ``client=`` a ``distributed.Client``: one rank per Dask worker (gloo on CPU,
  NCCL on GPU), rendezvous over TCP at the first worker. Dask workers are
  daemonic, so tiles are read in the worker's own thread (no DataLoader
  worker processes); the nanny pins thread variables to 1, so each rank calls
  ``torch.set_num_threads`` with the worker's thread count (or ``threads``).
  Every rank reads its own tiles from the tile set, which must be on a file
  system all workers see; so must ``checkpoint_dir``.
* under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment): ``env://``
  rendezvous; every rank calls :func:`train` and gets the same model back.

Checkpoints
-----------
``checkpoint_dir/epoch-0007.safetensors``: model, optimizer and best-so-far
weights as tensors; epoch, history, early-stopping state and the training
settings as JSON metadata. With ``resume=True`` training continues after the
newest checkpoint and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch import nn

from temflow.segmentation._collectives import _distributed
from temflow.segmentation._data_parallel import _resolve_device, _train_here, _train_on_cluster
from temflow.segmentation._losses import dice_loss, iou_from_histograms
from temflow.segmentation.models import _ARCHITECTURES, Autoencoder, UNet
from temflow.segmentation._train_config import TrainConfig
from temflow.segmentation.tiles import TileDataset

__all__ = ["train", "TrainConfig", "dice_loss", "iou_from_histograms"]

Device = Literal["auto", "cpu", "cuda"]


def _check_inputs(model: Any, dataset: Any, validation: Any) -> None:
    if type(model).__name__ not in _ARCHITECTURES or not isinstance(model, (UNet, Autoencoder)):
        raise TypeError(f"model must be a temflow.segmentation.models.UNet or Autoencoder; got {type(model).__name__}")
    if not isinstance(dataset, TileDataset):
        raise TypeError(f"dataset must be a temflow.segmentation.tiles.TileDataset; got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"the training set is empty: {dataset!r} has no tiles; cut more frames or another split")
    if dataset.crop_size % model.size_multiple:
        raise ValueError(
            f"tiles of {dataset.crop_size} px do not fit a {type(model).__name__} of depth "
            f"{model.arguments['depth']}: the crop size must be a multiple of {model.size_multiple}"
        )
    if isinstance(model, UNet) and not dataset.has_masks:
        raise ValueError(
            f"a UNet needs masks, but the tile set {str(dataset.store)!r} has none; "
            "cut it with make_tile_set(..., masks=...) or train an Autoencoder"
        )
    if validation is not None and not isinstance(validation, TileDataset):
        raise TypeError(f"validation must be a TileDataset, 'auto' or None; got {type(validation).__name__}")
    if isinstance(model, UNet) and validation is not None and not validation.has_masks:
        raise ValueError(f"validation tiles {str(validation.store)!r} have no masks, which a UNet needs")
    if validation is not None and validation.crop_size % model.size_multiple:
        raise ValueError(f"validation crop size {validation.crop_size} must be a multiple of {model.size_multiple}")


def train(
    model: nn.Module,
    dataset: TileDataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    schedule: Literal["constant", "cosine"] = "constant",
    device: Device = "auto",
    client: Any = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    validation: TileDataset | Literal["auto"] | None = "auto",
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = False,
    optimizer: Literal["adam", "sgd"] = "adam",
    weight_decay: float = 0.0,
    seed: int = 0,
    num_workers: int = 0,
    threads: int | None = None,
    sync_batch_norm: bool = True,
    progress: bool = False,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train a UNet or an Autoencoder on a tile set.

    Computes: trains in place and returns the model and its history. The model
    is updated in place in a single process and under torchrun; with a
    ``client`` a trained copy comes back (the one passed in is left as it was).

    Parameters
    ----------
    model : UNet or Autoencoder
        The network, initialised (seed torch before building it for repeatable runs).
    dataset : TileDataset
        Training tiles (usually ``split="train"``, ``augment=True``).
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    batch_size : int
        Global batch: tiles per optimiser step, over all ranks together.
    lr : float
        Learning rate (the first epoch's, with a schedule).
    schedule : {"constant", "cosine"}
        Keep ``lr``, or lower it along a cosine to ``lr / 100`` at the last epoch.
    device : {"auto", "cpu", "cuda"}
        Where to train; "auto" takes a GPU when torch sees one.
    client : distributed.Client, optional
        Train data-parallel with one rank per worker of this cluster.
    checkpoint_dir : str or path, optional
        Write a checkpoint after every epoch into this folder.
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir`` when there is
        one; with ``False`` training starts afresh and deletes the checkpoint
        files (``epoch-*.safetensors``) already in ``checkpoint_dir``.
    validation : TileDataset, "auto" or None
        Validation tiles; "auto" uses the ``"validation"`` split of the same
        tile set without augmentation.
    patience : int, optional
        Stop after this many epochs without the validation loss (training loss
        without validation) improving by more than ``min_delta``.
    min_delta : float
        Smallest improvement that counts.
    restore_best : bool
        End with the weights of the best epoch rather than the last.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with momentum 0.9.
    weight_decay : float
        L2 penalty.
    seed : int
        Seeds the order of tiles and their augmentation: the same seed (and the
        same initial weights) gives the same weights on the CPU.
    num_workers : int
        DataLoader worker processes in a single process (0 on Dask workers, always).
    threads : int, optional
        ``torch.set_num_threads`` on each Dask worker; default the worker's thread count.
    sync_batch_norm : bool
        Data-parallel batch norm with the global batch's statistics (the same
        result as one process). ``False`` normalises each rank's share on its
        own: one collective per layer less each way, about twice the
        throughput on a busy CPU, but the result then depends on the number of ranks.
    progress : bool
        Show a progress bar on stderr (per batch; per epoch with a client).

    Returns
    -------
    model : UNet or Autoencoder
        The trained network, in eval mode.
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_iou``
        (NaN without masks), ``seconds``, ``tiles_per_s``, ``lr``;
        ``history.attrs`` holds the provenance to pass to
        :func:`temflow.segmentation.model_files.save_model` as ``training``.

    Raises
    ------
    TypeError
        If ``model`` or ``dataset`` have the wrong type.
    ValueError
        If the training set is empty, the tiles do not fit the model, a UNet
        gets a tile set without masks, or the checkpoint in ``checkpoint_dir``
        is for another architecture or other settings.

    Examples
    --------
    >>> import tempfile, torch
    >>> from temflow.synthetic.generator import make_movie
    >>> from temflow.segmentation.tiles import make_tile_set
    >>> truth = make_movie(frames=6, size=32, seed=0)
    >>> store = make_tile_set(truth.movie, tempfile.mkdtemp() + "/t.zarr", tile_size=16, masks=truth.labels, blocks=3)
    >>> _ = torch.manual_seed(0)
    >>> net, history = train(UNet(depth=1, width=4), TileDataset(store), epochs=2, batch_size=8, device="cpu")
    >>> list(history["epoch"])
    [1, 2]
    """
    _check_inputs(model, dataset, None if validation == "auto" else validation)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive; got {lr!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine'; got {schedule!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be a positive int or None; got {patience!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    _resolve_device(device)
    if checkpoint_dir is not None and not resume:
        # a fresh run: old checkpoints would otherwise be taken for this run's by a later resume
        for old in Path(checkpoint_dir).glob("epoch-*.safetensors"):
            old.unlink()
    if validation == "auto":
        validation = dataset.subset("validation", augment=False)
        validation = validation if len(validation) else None
    config = TrainConfig(
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        schedule=schedule,
        weight_decay=float(weight_decay),
        optimizer=optimizer,
        seed=int(seed),
        patience=patience,
        min_delta=float(min_delta),
        restore_best=bool(restore_best),
        device=device,
        checkpoint_dir=os.fspath(checkpoint_dir) if checkpoint_dir is not None else None,
        resume=bool(resume),
        num_workers=int(num_workers),
        threads=threads,
        progress=bool(progress),
        sync_batch_norm=bool(sync_batch_norm),
    )
    if client is not None:
        model, rows = _train_on_cluster(model, dataset, validation, config, client)
    else:
        rows = _train_here(model, dataset, validation, config)
    model.eval()
    history = pd.DataFrame(rows, columns=_history_columns(rows))
    history.attrs = {
        "tile_set": os.fspath(dataset.store),
        "tiles": len(dataset),
        "validation_tiles": len(validation) if validation is not None else 0,
        "crop_size": dataset.crop_size,
        "normalisation": dict(dataset.normalisation),
        "config": {k: v for k, v in config.to_dict().items() if k not in ("progress", "num_workers", "threads")},
        "ranks": len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else _distributed()[1],
        "epochs_run": len(rows),
        "final": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in (rows[-1] if rows else {}).items()},
    }
    return model, history


def _history_columns(rows: list[dict[str, Any]]) -> list[str]:
    columns = ["epoch", "train_loss", "val_loss", "val_iou", "seconds", "tiles_per_s", "lr"]
    extra = sorted({k for row in rows for k in row} - set(columns))
    return columns + extra
