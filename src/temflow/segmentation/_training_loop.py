"""The training loop every rank of :func:`temflow.segmentation.training.train` runs.

Per epoch: the learning rate, a seeded order of the tiles cut into this rank's
batches, optimiser steps on gradients summed across ranks, validation, early
stopping and a checkpoint; a text progress bar on rank 0.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
from torch import nn

from temflow.segmentation._checkpoints import (
    _checkpoint_settings,
    _latest_checkpoint,
    _read_checkpoint,
    _state_tensors,
    _write_checkpoint,
)
from temflow.segmentation._collectives import _all_reduce, _barrier, _distributed, _local_batches, _sum_gradients
from temflow.segmentation._losses import _HISTOGRAM_BINS, _HISTOGRAM_RANGE, _sample_losses, iou_from_histograms
from temflow.segmentation.models import _BatchNorm2d
from temflow.segmentation.tiles import TileDataset

if TYPE_CHECKING:
    from temflow.segmentation._train_config import TrainConfig

class _Progress:
    """A one-line text progress bar on a stream (rank 0 only)."""

    def __init__(self, total: int, stream: TextIO | None, label: str) -> None:
        self.total, self.stream, self.label, self.done = max(total, 1), stream, label, 0
        self.start = self.shown = time.perf_counter()
        # a pipe or a log file gets one line per epoch (close), never the redrawn bar
        self.terminal = stream is not None and stream.isatty()

    def update(self, steps: int = 1, note: str = "") -> None:
        self.done += steps
        now = time.perf_counter()
        # redraw at most twice a second
        if self.stream is None or not self.terminal or (now - self.shown < 0.5 and self.done < self.total):
            return
        self.shown = now
        width = 24
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s {note}"
        )
        self.stream.flush()

    def close(self, note: str = "") -> None:
        if self.stream is not None:
            line = f"{self.label} done in {time.perf_counter() - self.start:.1f}s {note}"
            self.stream.write(("\r" + line.ljust(78) if self.terminal else line) + "\n")
            self.stream.flush()


def _collate(dataset: TileDataset, items: Sequence[int] | np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    samples = [dataset[int(i)] for i in items]
    return {key: torch.stack([s[key] for s in samples]).to(device) for key in samples[0]}


def _empty_batch(dataset: TileDataset, device: torch.device) -> dict[str, torch.Tensor]:
    shape = (0, 1, dataset.crop_size, dataset.crop_size)
    keys = ["image", "clean"] + (["mask"] if dataset.has_masks else [])
    return {key: torch.zeros(shape, device=device) for key in keys}


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of an epoch: constant, or cosine from ``lr`` down to ``lr / 100``."""
    if config.schedule == "constant" or config.epochs == 1:
        return config.lr
    fraction = epoch / (config.epochs - 1)
    return config.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * fraction)))


def _validate(
    model: nn.Module, dataset: TileDataset, batch_size: int, device: torch.device, rank: int, world: int
) -> dict[str, float]:
    """Validation loss (and IoU with masks) over this rank's share, summed across ranks."""
    model.eval()
    mine = np.arange(rank, len(dataset), world)
    sums = np.zeros(4)  # loss sum, tiles, intersection, union
    particle = np.zeros(_HISTOGRAM_BINS)
    background = np.zeros(_HISTOGRAM_BINS)
    reconstruction = model.output_kind == "reconstruction"
    with torch.no_grad():
        for start in range(0, mine.size, batch_size):
            batch = _collate(dataset, mine[start : start + batch_size], device)
            losses, output = _sample_losses(model, batch)
            sums[0] += float(losses.sum())
            sums[1] += losses.numel()
            if "mask" in batch:
                truth = batch["mask"] > 0.5
                if reconstruction:
                    values = output.detach().cpu().numpy()
                    inside = truth.cpu().numpy()
                    particle += np.histogram(values[inside], _HISTOGRAM_BINS, _HISTOGRAM_RANGE)[0]
                    background += np.histogram(values[~inside], _HISTOGRAM_BINS, _HISTOGRAM_RANGE)[0]
                else:
                    called = output > 0
                    sums[2] += float((called & truth).sum())
                    sums[3] += float((called | truth).sum())
    totals = _all_reduce(np.concatenate([sums, particle, background]), device)
    sums, particle, background = totals[:4], totals[4 : 4 + _HISTOGRAM_BINS], totals[4 + _HISTOGRAM_BINS :]
    out = {"val_loss": sums[0] / sums[1] if sums[1] else math.nan, "val_iou": math.nan}
    if dataset.has_masks:
        if reconstruction:
            out["val_threshold"], out["val_iou"] = iou_from_histograms(particle, background)
        elif sums[3]:
            out["val_iou"] = sums[2] / sums[3]
    return out


def _fit(
    model: nn.Module,
    dataset: TileDataset,
    validation: TileDataset | None,
    config: TrainConfig,
    device: torch.device,
    report: Any = None,
) -> list[dict[str, Any]]:
    """The training loop every rank runs; returns the history rows."""
    rank, world = _distributed()
    model.to(device)
    for module in model.modules():
        if isinstance(module, _BatchNorm2d):
            module.synchronise = config.sync_batch_norm
    optimizer = _make_optimizer(model, config)
    history: list[dict[str, Any]] = []
    best: dict[str, torch.Tensor] | None = None
    best_loss, bad_epochs, start_epoch, stopped = math.inf, 0, 0, False
    directory = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if directory is not None and config.resume:
        latest = _latest_checkpoint(directory)
        if latest is not None:
            meta, best = _read_checkpoint(latest, model, optimizer, config)
            model.to(device)
            history = list(meta["history"])
            best_loss, bad_epochs, stopped = meta["best_loss"], meta["bad_epochs"], meta["stopped"]
            start_epoch = int(meta["epoch"]) + 1
    settings = _checkpoint_settings(config)
    stream = sys.stderr if (config.progress and rank == 0 and report is None) else None
    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        model.train()
        dataset.set_epoch(epoch)
        lr = _epoch_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = np.random.default_rng([config.seed, 1, epoch]).permutation(len(dataset))
        batches = _local_batches(order, config.batch_size, rank, world)
        progress = _Progress(len(batches), stream, f"epoch {epoch + 1}/{config.epochs}")
        started = time.perf_counter()
        loss_sum = 0.0
        loader = _batch_loader(dataset, batches, config.num_workers, device)
        for global_start, batch in zip(range(0, order.size, config.batch_size), loader):
            global_size = min(config.batch_size, order.size - global_start)
            optimizer.zero_grad(set_to_none=False)
            losses, _ = _sample_losses(model, batch)
            (losses.sum() / global_size).backward()
            _sum_gradients(model, world)
            optimizer.step()
            loss_sum += float(losses.detach().sum())
            progress.update(1, f"loss {float(losses.detach().mean()) if losses.numel() else math.nan:.4f}")
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(_all_reduce(np.array([loss_sum]), device)[0]) / len(dataset)}
        if validation is not None and len(validation):
            row.update(_validate(model, validation, config.batch_size, device, rank, world))
        else:
            row.update(val_loss=math.nan, val_iou=math.nan)
        row.update(seconds=seconds, tiles_per_s=len(dataset) / seconds if seconds else math.nan, lr=lr)
        history.append(row)
        monitored = row["val_loss"] if not math.isnan(row["val_loss"]) else row["train_loss"]
        if monitored < best_loss - config.min_delta:
            best_loss, bad_epochs = monitored, 0
            best = _state_tensors(model, "") if config.restore_best else None
        else:
            bad_epochs += 1
        stopped = config.patience is not None and bad_epochs >= config.patience
        progress.close(
            f"train {row['train_loss']:.4f} val {row['val_loss']:.4f} IoU {row['val_iou']:.3f}"
            + (" (early stop)" if stopped else "")
        )
        if report is not None:
            report(row)
        if directory is not None:
            if rank == 0:
                meta = {
                    "architecture": type(model).__name__,
                    "arguments": model.arguments,
                    "settings": settings,
                    "history": history,
                    "best_loss": best_loss,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                }
                _write_checkpoint(directory, epoch, model, optimizer, best, meta)
            _barrier(device)
    if config.restore_best and best is not None:
        model.load_state_dict(best)
    return history


def _batch_loader(dataset: TileDataset, batches: list[np.ndarray], num_workers: int, device: torch.device) -> Any:
    """Batches of this rank's tiles, on ``device``; worker processes only when asked (never in Dask)."""
    if num_workers == 0:
        return (
            _collate(dataset, b, device) if b.size else _empty_batch(dataset, device) for b in batches
        )
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=num_workers)  # type: ignore[arg-type]
    return ({k: v.to(device) for k, v in batch.items()} for batch in loader)
