"""Shared test helpers: a scheduler that refuses to compute, small synthetic movies."""

from __future__ import annotations

import contextlib

import dask
import pytest


class _CountingScheduler:
    """A dask scheduler that counts compute calls and raises past ``max_computes``."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(f"too many dask computations: {self.total_computes} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Fail if the block computes anything with dask (xarray's own test idiom)."""
    scheduler = _CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


@pytest.fixture
def no_compute():
    """Context-manager factory: ``with no_compute(): build_graph(...)``."""
    return raise_if_dask_computes
