"""The life of a figure: new axes when the caller gives none, saving to files, closing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(
    figure: Figure, path: str | os.PathLike[str], *, formats: Sequence[str] = ("png",), dpi: int = 150
) -> list[Path]:
    """Save ``figure`` as ``path`` with each suffix in ``formats``, then close it.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to save.
    path : str or path
        File name without or with a suffix (the suffix is replaced).
    formats : sequence of {"png", "pdf", "svg"}
        Formats to write.
    dpi : int
        Resolution of raster formats.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    allowed = {"png", "pdf", "svg"}
    bad = [f for f in formats if f not in allowed]
    if bad:
        raise ValueError(f"formats must be among {sorted(allowed)}; got {bad}")
    from temflow._nofollow import write_file

    base = Path(path)
    written = []
    try:
        for fmt in formats:
            target = base.with_suffix("." + fmt)
            # atomically and never through a symbolic link (see temflow._nofollow)
            write_file(target, lambda file: figure.savefig(file, format=fmt, dpi=dpi, bbox_inches="tight"))  # noqa: B023
            written.append(target)
    finally:
        figure.clf()
        import matplotlib.pyplot as plt

        plt.close(figure)
    return written


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> tuple[Any, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=figsize)
    return figure, figure.add_subplot()
