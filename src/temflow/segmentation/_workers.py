"""The predict task on a worker, and the model and torch settings it runs with.

The client turns a model into something small to ship: a checkpoint path, or
the model saved once to safetensors bytes, with the weights' SHA-256. In the
task (:func:`_predict_block`) a worker loads it once per process into
``_MODEL_CACHE`` (checking the hash), sets torch's threads so that the dask
threads on the host times the torch threads fill its cores, resolves the
device and predicts its frames with :mod:`temflow.segmentation._seamless`. The notes of
:mod:`temflow.segmentation.inference` explain these choices to users.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from temflow.segmentation._normalisation import normalise
from temflow.segmentation._seamless import _predict_frames
from temflow.analysis.threshold import _recorded

if TYPE_CHECKING:
    from torch import nn

    from temflow.segmentation._plan import _Plan

_MODEL_CACHE_SIZE = 4
_MODEL_CACHE: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()


# -- the model: where it comes from, how a worker gets it ---------------------------------------


def _model_card_from_path(path: Path) -> dict[str, Any]:
    from temflow.segmentation.model_files import read_card

    return read_card(path)


def _model_bytes(model: nn.Module, normalisation: Mapping[str, Any] | None) -> tuple[bytes, dict[str, Any]]:
    """Serialise an in-memory temflow model once, as safetensors bytes with its card."""
    from temflow.segmentation.model_files import read_card, save_model

    card = getattr(model, "card", None) or {}
    norm = normalisation if normalisation is not None else card.get("normalisation")
    if norm is None:
        raise ValueError(
            "model has no card with a normalisation (it was not loaded with temflow.segmentation.model_files.load_model); "
            "pass normalisation={'method': 'percentile', 'low': ..., 'high': ...} in raw intensity units"
        )
    tile_size = int(card.get("tile_size") or getattr(model, "size_multiple"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_model(model, path, normalisation=norm, tile_size=tile_size, training=card.get("training"))
        return path.read_bytes(), read_card(path)


def _load(checkpoint: bytes | str, sha256: str) -> nn.Module:
    from temflow.segmentation.model_files import load_model

    if isinstance(checkpoint, bytes):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.safetensors"
            path.write_bytes(checkpoint)
            model = load_model(path)
    else:
        model = load_model(checkpoint)
    found = str(getattr(model, "card")["weights_sha256"])
    if found != sha256:
        source = "the in-memory model's bytes" if isinstance(checkpoint, bytes) else f"model file {checkpoint!r}"
        raise ValueError(
            f"{source} changed after predict() was called (weights SHA-256 {found[:12]}..., "
            f"expected {sha256[:12]}...); call predict() again"
        )
    return model


def _cached_model(checkpoint: bytes | str, sha256: str, device: str) -> nn.Module:
    """The model for these weights on ``device``, loaded at most once per process."""
    key = (sha256, device)
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _load(checkpoint, sha256).to(device)
            _MODEL_CACHE[key] = model
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        _MODEL_CACHE.move_to_end(key)
    return model


# -- threads and devices -----------------------------------------------------------------------


def _address_host(address: str) -> str:
    """Host part of a dask address.

    Examples
    --------
    >>> [_address_host(a) for a in ("tcp://10.0.0.1:8786", "tcp://[::1]:8786", "inproc://192.0.2.2/77/1")]
    ['10.0.0.1', '::1', '192.0.2.2']
    """
    location = address.split("://", 1)[-1].split("/", 1)[0]
    if location.startswith("["):  # IPv6 with a port
        return location[1:].split("]", 1)[0]
    return location.rsplit(":", 1)[0] if location.count(":") == 1 else location


def _cluster_host_threads() -> tuple[tuple[str, int], ...]:
    """Dask threads per host of the default distributed client, if any (a metadata query, no compute)."""
    import sys

    if "distributed" not in sys.modules:
        return ()
    from distributed import default_client

    try:
        client = default_client()
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except (ValueError, KeyError, OSError, RuntimeError):  # no client, or one that is closing
        return ()
    threads: dict[str, int] = collections.defaultdict(int)
    for address, info in workers.items():
        threads[_address_host(address)] += int(info.get("nthreads", 1))
    return tuple(sorted(threads.items()))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _torch_threads(plan: _Plan) -> int:
    """Torch threads for one task so that all tasks running on this host share its cores."""
    if plan.torch_threads is not None:
        return plan.torch_threads
    cores = _cores()
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    if worker is not None:
        host_threads = dict(plan.host_threads).get(_address_host(worker.address), worker.state.nthreads)
    elif threading.current_thread() is threading.main_thread():
        host_threads = 1  # the synchronous scheduler runs one task at a time in the caller's thread
    else:
        host_threads = int(dask.config.get("num_workers", None) or cores)
    return max(1, cores // max(1, host_threads))


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# -- the task ----------------------------------------------------------------------------------


def _predict_block(block: np.ndarray, checkpoint: bytes | str, plan: _Plan, border: Any = None) -> np.ndarray:
    """One dask task: a chunk of whole raw frames in, the model's output frames out.

    A reconstruction goes back to the movie's intensity units and is NaN
    outside the recorded area (3 x 3 median of the raw frame at or below
    ``border``, see :func:`temflow.analysis.threshold.border_level`).
    """
    import torch

    device = _resolve_device(plan.device)
    threads = _torch_threads(plan)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    model = _cached_model(checkpoint, plan.sha256, device)
    normalisation = dict(plan.normalisation)
    out = _predict_frames(normalise(block, normalisation), model, plan, device)
    if plan.output_kind == "reconstruction":
        low, high = float(normalisation["low"]), float(normalisation["high"])
        out = out * np.float32(high - low) + np.float32(low)
        if border is not None:
            out[~_recorded(block, np.float32(border))] = np.nan
    return out
