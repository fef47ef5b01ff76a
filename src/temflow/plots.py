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

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ += ["plot_training_history"]

def plot_training_history(history: "pd.DataFrame", *, ax: "Axes | None" = None) -> Figure:
    """Loss curves of a training run (and the validation IoU, when there is one).

    Parameters
    ----------
    history : pandas.DataFrame
        From :func:`temflow.train.train`: columns ``epoch``, ``train_loss``,
        ``val_loss`` and optionally ``val_iou`` (NaN without masks).
    ax : matplotlib.axes.Axes, optional
        Draw here; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "val_iou": [0.4, 0.8]})
    >>> figure = plot_training_history(history)
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['train loss', 'validation loss']
    >>> save_figure(figure, "unused", formats=())
    []
    """
    missing = {"epoch", "train_loss"} - set(history.columns)
    if missing:
        raise ValueError(f"history must have columns 'epoch' and 'train_loss'; missing {sorted(missing)}")
    if ax is None:
        figure = Figure(figsize=(5.0, 3.2))
        ax = figure.add_subplot()
    else:
        figure = ax.get_figure()  # type: ignore[assignment]
    ax.plot(history["epoch"], history["train_loss"], "o-", label="train loss")
    if "val_loss" in history and history["val_loss"].notna().any():
        ax.plot(history["epoch"], history["val_loss"], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    handles, labels = ax.get_legend_handles_labels()
    if "val_iou" in history and history["val_iou"].notna().any():
        twin = ax.twinx()
        twin.plot(history["epoch"], history["val_iou"], "^--", color="tab:green", label="validation IoU")
        twin.set_ylabel("IoU")
        twin.set_ylim(0, 1)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="best", fontsize="small")
    return figure


# --- analysis figures (temflow.measure, temflow.track, temflow.coarsening) ---------------------
#
#
#
#
