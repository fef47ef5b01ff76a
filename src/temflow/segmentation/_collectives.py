"""What the ranks of data-parallel training share: rank and world size, sums, gradients, a barrier.

Each global batch is cut in near-equal parts, one per rank; the ranks sum their
losses, gradients and validation counts with ``torch.distributed`` all-reduces.
With one rank (no process group) nothing is exchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Sum a float64 vector across ranks (no-op with one rank)."""
    rank, world = _distributed()
    if world == 1:
        return values
    import torch.distributed as dist

    tensor = torch.as_tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def _local_batches(order: np.ndarray, batch_size: int, rank: int, world: int) -> list[np.ndarray]:
    """Each global batch of ``order``, cut in ``world`` near-equal parts; this rank's part."""
    return [np.array_split(order[i : i + batch_size], world)[rank] for i in range(0, order.size, batch_size)]


def _barrier(device: torch.device) -> None:
    _all_reduce(np.zeros(1), device)


def _sum_gradients(model: nn.Module, world: int) -> None:
    """Sum every parameter's gradient across ranks, in one all-reduce."""
    if world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
