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


def chromium_binary() -> str | None:
    """The headless browser, or None (then the test skips, except in CI where it must exist)."""
    import os
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI must have chromium (.ci/run installs Debian's package)")
    return None


def render_in_browser(page, screenshot=None) -> str:
    """Load ``page`` in headless Chromium, let its scripts run, return the DOM it ends with."""
    import subprocess

    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium on this machine")
    common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    url = page.resolve().as_uri()
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    if screenshot is not None:
        subprocess.run(
            common + [f"--screenshot={screenshot}", "--window-size=1200,2400", url],
            capture_output=True, timeout=120, check=True,
        )
    return dom
