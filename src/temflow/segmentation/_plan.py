"""The prediction plan: what every block task needs besides its frames and the weights.

Its own module so that :mod:`temflow.segmentation.inference` (which builds it) and the
worker-side modules ``_seamless`` and ``_workers`` (which read it) share it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["_Plan"]


@dataclass(frozen=True)
class _Plan:
    """Everything a block task needs besides the frames and the weights (small, picklable)."""

    sha256: str
    normalisation: tuple[tuple[str, Any], ...]
    output_kind: str
    size_multiple: int
    tile: int | None
    halo: int
    taper: int
    batch_size: int
    device: str
    precision: str
    torch_threads: int | None
    host_threads: tuple[tuple[str, int], ...]
