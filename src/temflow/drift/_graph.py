"""The dask graph of a drift estimate: chunk tasks, shared spectra, an ordering chain, one solve."""

from __future__ import annotations

import operator
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from temflow.drift import _registration as reg
from temflow.drift import _trajectory


def _after(previous: object, result: object) -> None:
    """An empty task that only orders the chunks (see ``estimate_graph``)."""
    return None


def estimate_graph(data: da.Array, plan: np.ndarray, settings: reg.Settings, min_quality: float) -> dict[str, Any]:
    """The drift estimate of a dask-backed movie as dask arrays, one per output field.

    One task per time chunk measures the pairings it owns; one per shared
    frame computes that frame's spectrum for other chunks; one solves. See
    ``temflow.drift.correction`` for the design.
    """
    frames = data.shape[0]
    data = data.rechunk({1: -1, 2: -1})
    bounds = np.cumsum((0,) + data.chunks[0])
    n_chunks = len(data.chunks[0])
    chunk_of = np.searchsorted(bounds, np.arange(frames), side="right") - 1
    i, j = plan[:, 0].astype(np.int64), plan[:, 1].astype(np.int64)
    # a pair belongs to the chunk of its first frame; the second frame, when it
    # lies in another chunk, gets a small task of its own whose one band-limited
    # spectrum is all that crosses the chunk boundary
    owner = chunk_of[i]
    shared_frames = np.unique(j[chunk_of[j] != owner])
    token = tokenize(data.name, plan, settings, min_quality)
    spectrum, pairs, order, solve = (f"drift-{part}-{token}" for part in ("spectrum", "pairs", "order", "solve"))
    graph: dict[Any, Any] = {}
    for f in shared_frames.tolist():
        c = int(chunk_of[f])
        graph[(spectrum, f)] = (reg.shared_spectrum, (data.name, c, 0, 0), f - int(bounds[c]), settings)
    shared = set(shared_frames.tolist())
    by_owner = np.argsort(owner, kind="stable")
    cuts = np.searchsorted(owner[by_owner], np.arange(n_chunks + 1))
    previous = None
    for c in range(n_chunks):
        mine = plan[by_owner[cuts[c] : cuts[c + 1]]]
        wanted = set(mine[:, 1].astype(np.int64).tolist()) | set(range(int(bounds[c]), int(bounds[c + 1])))
        needed = sorted(wanted & shared)
        graph[(pairs, c)] = (
            _measure,
            (data.name, c, 0, 0),
            int(bounds[c]),
            mine,
            needed,
            [(spectrum, f) for f in needed],
            settings,
        )
        # a chain of empty tasks through the chunks in time order: the scheduler
        # then works along the movie, and a chunk (or a key frame's spectrum)
        # leaves memory soon after it was read, instead of waiting for
        # stragglers it picked out of order (measured: held memory grew with
        # the movie's length without it)
        graph[(order, c)] = (_after, previous, (pairs, c))
        previous = (order, c)
    graph[solve] = (_trajectory.solve_trajectory, [(pairs, c) for c in range(n_chunks)], frames, min_quality, previous)
    shapes = {
        "shift": ((frames, 2), np.float64),
        "quality": ((frames,), np.float32),
        "flagged": ((frames,), bool),
        "jump": ((frames,), bool),
        "valid_start": ((frames, 2), np.int64),
        "valid_stop": ((frames, 2), np.int64),
    }
    out = {}
    for field, (shape, dtype) in shapes.items():
        name = f"drift-{field}-{token}"
        layer: dict[Any, Any] = dict(graph)
        layer[(name,) + (0,) * len(shape)] = (operator.getitem, solve, field)
        hlg = HighLevelGraph.from_collections(name, layer, dependencies=[data])  # type: ignore[list-item]
        out[field] = da.Array(hlg, name, chunks=tuple((n,) for n in shape), dtype=dtype)
    return out


def _measure(
    block: np.ndarray, start: int, plan: np.ndarray, frames: list[int], spectra: list[Any], settings: reg.Settings
) -> dict[str, np.ndarray]:
    return reg.measure_chunk(block, start, plan, dict(zip(frames, spectra)), settings)
