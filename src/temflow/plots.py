"""Figures for every stage (matplotlib object API; every figure is closed after saving).

Each function takes the stage's result, draws on an ``Axes`` when one is given
(else makes its own figure), and returns the ``Figure``. ``save_figure`` writes
PNG and/or PDF and closes the figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.figure import Figure  # noqa: E402

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
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in formats:
            target = base.with_suffix("." + fmt)
            figure.savefig(target, dpi=dpi, bbox_inches="tight")
            written.append(target)
    finally:
        figure.clf()
        import matplotlib.pyplot as plt

        plt.close(figure)
    return written


# --- drift figures (temflow.drift) -------------------------------------------------------------
#
#
#
#
# --- training figures (temflow.train) ----------------------------------------------------------
#
#
#
#
# --- analysis figures (temflow.measure, temflow.track, temflow.coarsening) ---------------------
#
#
#
#
