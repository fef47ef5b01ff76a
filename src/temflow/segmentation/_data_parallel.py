"""Where the ranks of :func:`temflow.segmentation.training.train` run: this process, torchrun, or Dask workers.

``_train_here`` trains in this process, joining a torchrun job (``env://``
rendezvous) when ``WORLD_SIZE`` > 1. ``_train_on_cluster`` runs ``_rank_main``
as a task on every Dask worker (module-level, so it pickles): gloo on CPU or NCCL
on GPU, rendezvous over TCP at the first worker, weights shipped as safetensors
bytes, and rank 0 sends back the trained weights and the history.
``_resolve_device`` picks each rank's device.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from temflow.segmentation._collectives import _distributed
from temflow.segmentation._training_loop import _Progress, _fit
from temflow.segmentation.models import _ARCHITECTURES
from temflow.segmentation.tiles import TileDataset

if TYPE_CHECKING:
    from temflow.segmentation._train_config import TrainConfig


def _resolve_device(device: str, rank: int = 0) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA GPU; use device='cpu' or 'auto'")
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _train_here(model: nn.Module, dataset: TileDataset, validation: TileDataset | None, config: TrainConfig) -> list[dict[str, Any]]:
    """Single process, or one rank of a torchrun job (``env://`` rendezvous)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    started_here = False
    if world > 1 and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        device = _resolve_device(config.device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
        started_here = True
    rank = _distributed()[0]
    device = _resolve_device(config.device, int(os.environ.get("LOCAL_RANK", rank)))
    try:
        return _fit(model, dataset, validation, config, device)
    finally:
        if started_here:
            dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as handle:
        handle.bind(("", 0))
        return int(handle.getsockname()[1])


def _rank_main(
    rank: int,
    world: int,
    address: str,
    port: int,
    architecture: str,
    arguments: dict[str, Any],
    weights: bytes,
    dataset: TileDataset,
    validation: TileDataset | None,
    config: TrainConfig,
    queue_name: str | None,
) -> tuple[bytes, list[dict[str, Any]]] | None:
    """One data-parallel rank, run as a task on a Dask worker."""
    from datetime import timedelta

    import torch.distributed as dist
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    threads = config.threads
    if threads is None:
        try:
            from distributed import get_worker

            threads = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            threads = 1
    # the nanny sets OMP_NUM_THREADS=1; choose the intra-op threads on purpose
    torch.set_num_threads(max(1, int(threads)))
    device = _resolve_device(config.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = _ARCHITECTURES[architecture](**arguments)
    model.load_state_dict(load_tensors(weights))
    report = None
    if queue_name is not None and rank == 0:
        from distributed import Queue

        queue = Queue(queue_name)
        report = queue.put
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(minutes=10),
    )
    try:
        local_config = replace(config, num_workers=0, progress=False)
        rows = _fit(model, dataset, validation, local_config, device, report)
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    return save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}), rows


def _train_on_cluster(
    model: nn.Module, dataset: TileDataset, validation: TileDataset | None, config: TrainConfig, client: Any
) -> tuple[nn.Module, list[dict[str, Any]]]:
    from urllib.parse import urlparse

    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    arguments: dict[str, Any] = dict(getattr(model, "arguments"))
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise ValueError("the Dask client has no workers; start some before training")
    world = len(workers)
    if config.batch_size < world:
        raise ValueError(f"batch_size {config.batch_size} is smaller than the {world} workers; use batch_size >= {world}")
    address = urlparse(workers[0]).hostname or "127.0.0.1"
    port = client.run(_free_port, workers=[workers[0]])[workers[0]]
    # ship weights as safetensors bytes, not a pickled nn.Module (distributed 3807)
    weights = save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    queue_name = None
    queue = None
    if config.progress:
        from distributed import Queue

        queue_name = f"temflow-train-{uuid.uuid4().hex}"
        queue = Queue(queue_name, client=client)
    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            _rank_main,
            rank,
            world,
            address,
            port,
            type(model).__name__,
            dict(arguments),
            weights,
            dataset,
            validation,
            config,
            queue_name,
            workers=[worker],
            allow_other_workers=False,
            pure=False,
            key=f"temflow-train-rank{rank}-{token}",
        )
        for rank, worker in enumerate(workers)
    ]
    if queue is not None:
        bar = _Progress(config.epochs, sys.stderr, f"training on {world} workers")
        # poll rather than block in get(timeout=...), which the scheduler logs as an error
        while True:
            finished = all(f.done() for f in futures)
            for row in queue.get(batch=queue.qsize()) if queue.qsize() else []:
                note = f"epoch {row['epoch']}/{config.epochs} train {row['train_loss']:.4f} val {row['val_loss']:.4f}"
                bar.update(1, note)
                if not bar.terminal:  # a pipe or a log file: one line per epoch instead of the bar
                    sys.stderr.write(note + "\n")
                    sys.stderr.flush()
            if finished:
                break
            time.sleep(0.2)
        bar.close()
    results = client.gather(futures)
    state, rows = results[0]
    trained = type(model)(**arguments)
    trained.load_state_dict(load_tensors(state))
    return trained, rows
