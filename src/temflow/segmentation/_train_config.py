"""The settings of one training run, shared by the public entry point and the rank code.

Its own module so that :mod:`temflow.segmentation.training` and the per-rank modules it calls
(``_training_loop``, ``_checkpoints``, ``_data_parallel``) can all import it without a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (everything :func:`train` needs on every rank)."""

    epochs: int
    batch_size: int
    lr: float
    schedule: str
    weight_decay: float
    optimizer: str
    seed: int
    patience: int | None
    min_delta: float
    restore_best: bool
    device: str
    checkpoint_dir: str | None
    resume: bool
    num_workers: int
    threads: int | None
    progress: bool
    sync_batch_norm: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
