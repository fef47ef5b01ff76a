"""Checkpoints of :func:`temflow.segmentation.training.train`: write one per epoch, find the newest, resume from it.

``checkpoint_dir/epoch-0007.safetensors`` holds the model, optimizer and
best-so-far weights as tensors, and the epoch, history, early-stopping state and
training settings as JSON metadata; a resumed run must have the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from temflow.segmentation._train_config import TrainConfig

_CHECKPOINT_KEY = "temflow_checkpoint"


def _state_tensors(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _checkpoint_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that must match for a resumed run to equal an uninterrupted one."""
    keys = ["batch_size", "lr", "schedule", "weight_decay", "optimizer", "seed", "sync_batch_norm"]
    if config.schedule == "cosine":
        keys.append("epochs")  # the cosine schedule depends on the total
    return {k: getattr(config, k) for k in keys}


def _write_checkpoint(
    directory: Path,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    best: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> Path:
    from safetensors.torch import save

    from temflow._nofollow import write_file

    tensors = _state_tensors(model, "model.")
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    if best is not None:
        tensors.update({"best." + k: v for k, v in best.items()})
    meta = dict(meta, epoch=epoch, param_groups=state["param_groups"])
    target = directory / f"epoch-{epoch:04d}.safetensors"
    blob = save(tensors, metadata={_CHECKPOINT_KEY: json.dumps(meta)})
    # a checkpoint file is complete or absent, and never written through a symbolic link
    write_file(target, lambda file: file.write(blob))
    return target


def _latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("epoch-*.safetensors")) if directory.is_dir() else []
    return found[-1] if found else None


def _read_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load a checkpoint into ``model`` and ``optimizer``; return its metadata and best weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[_CHECKPOINT_KEY])
        tensors = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"cannot resume from checkpoint {str(path)!r}: not a temflow checkpoint ({exc})") from None
    name = type(model).__name__
    if meta.get("architecture") != name or meta.get("arguments") != model.arguments:
        raise ValueError(
            f"checkpoint {str(path)!r} is for {meta.get('architecture')}({meta.get('arguments')}), "
            f"not for this {name}({model.arguments}); use another checkpoint_dir or resume=False"
        )
    wanted = _checkpoint_settings(config)
    if meta.get("settings") != wanted:
        raise ValueError(
            f"checkpoint {str(path)!r} was written with settings {meta.get('settings')}, not {wanted}; "
            "a resumed run must use the same batch_size, lr, schedule, weight_decay, optimizer and seed "
            "(and epochs, with the cosine schedule) "
            "(use another checkpoint_dir to start afresh)"
        )
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {str(path)!r} does not fit the model: {exc}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, field = key.split(".", 2)
            state.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return meta, best
