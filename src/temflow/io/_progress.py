"""Progress for the chunk writes of temflow's stores: a one-line bar on a terminal, nothing elsewhere.

``_compute`` runs a list of dask write tasks on whatever scheduler is active (the default
client of ``distributed`` if one exists, else dask's local schedulers) and, when asked and
stderr is a terminal, draws ``_Bar`` as chunks finish.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import dask


class _Bar:
    """A one-line progress bar on stderr: ``\\r`` redraws, no ANSI escapes, at most 4 per second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.start = self.shown = time.perf_counter()

    def update(self, steps: int = 1) -> None:
        self.done += steps
        now = time.perf_counter()
        if now - self.shown < 0.25 and self.done < self.total:
            return
        self.shown = now
        filled = int(30 * self.done / self.total)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} chunks {now - self.start:5.1f} s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _window(client: Any) -> int:
    """Write tasks in flight at once on a distributed cluster: two per worker thread."""
    try:
        threads = sum(client.nthreads().values())
    except Exception:  # noqa: BLE001 - a cluster that cannot say: a small window is always safe
        threads = 2
    return max(4, 2 * threads)


def _compute_windowed(client: Any, tasks: list[Any], bar: _Bar | None) -> None:
    """Run ``tasks`` on ``client`` with at most :func:`_window` of them submitted at a time.

    Given the whole pass at once, the scheduler runs ahead on the movie's reads and
    early steps and the workers hold their results while later steps wait: the peak
    grew with the movie (1.33x from 500 to 8000 frames of 128^2 on 2 workers). A
    sliding window (the next write submitted as one finishes) bounds what is in
    flight; keys the windows share (the movie-wide levels) stay on the cluster while
    a submitted write still needs them, so they are computed once.
    """
    from distributed import as_completed

    width = _window(client)
    pending = iter(tasks)
    running = as_completed([client.compute(task) for task in _take(pending, width)])
    for future in running:
        future.result()  # re-raises a failed chunk's error here
        if bar is not None:
            bar.update()
        for task in _take(pending, 1):
            running.add(client.compute(task))
        del future


def _take(iterator: Any, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def _compute(tasks: list[Any], progress: bool, label: str = "writing") -> None:
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    if client is not None and dask.base.get_scheduler() != client.get:
        client = None  # a local scheduler chosen in dask's configuration wins, as in dask.compute
    # progress goes to stderr and only to a terminal: a pipe or a log file gets the result alone
    show = progress and sys.stderr.isatty()
    if client is not None:
        bar = _Bar(len(tasks), label) if show else None
        try:
            # dask.diagnostics cannot see a distributed scheduler: follow the futures
            _compute_windowed(client, tasks, bar)
        finally:
            if bar is not None:
                bar.close()
        return
    if not show:
        dask.compute(*tasks)
        return
    bar = _Bar(len(tasks), label)
    try:
        from dask.callbacks import Callback

        keys = {t.key for t in tasks}

        def _finished(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in keys:
                bar.update()

        with Callback(posttask=_finished):
            dask.compute(*tasks)
    finally:
        bar.close()
