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


def _compute(tasks: list[Any], progress: bool, label: str = "writing") -> None:
    # progress goes to stderr and only to a terminal: a pipe or a log file gets the result alone
    if not progress or not sys.stderr.isatty():
        dask.compute(*tasks)
        return
    try:
        from distributed import as_completed, default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    bar = _Bar(len(tasks), label)
    try:
        if client is not None:
            # dask.diagnostics cannot see a distributed scheduler: follow the futures
            futures = client.compute(tasks)
            for future in as_completed(futures):
                future.result()  # re-raises a failed chunk's error here
                bar.update()
            return
        from dask.callbacks import Callback

        keys = {t.key for t in tasks}

        def _finished(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in keys:
                bar.update()

        with Callback(posttask=_finished):
            dask.compute(*tasks)
    finally:
        bar.close()
