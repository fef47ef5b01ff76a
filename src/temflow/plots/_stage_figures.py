"""Diagnostic figures of the array stages: the drift trajectory and a training run's losses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_drift", "plot_training_history"]


def plot_drift(shifts: xr.DataArray, *, ax: Axes | None = None) -> Figure:
    """Drift trajectory: y and x shift in nm against time, jumps and flagged frames marked.

    Parameters
    ----------
    shifts : xarray.DataArray
        From :func:`temflow.estimate_drift` (dims ``("time", "axis")``), computed
        or lazy (it is computed here). Uses the ``shift_nm`` coord when present
        (else px), and the ``jump`` and ``flagged`` coords when present.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from temflow.synthetic.generator import make_movie
    >>> fig = plot_drift(make_movie(frames=8, size=32, seed=0).shifts)
    >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
    ['y', 'x']
    """
    if not isinstance(shifts, xr.DataArray) or tuple(shifts.dims) != ("time", "axis"):
        raise TypeError("shifts must be the DataArray from temflow.estimate_drift, dims ('time', 'axis')")
    shifts = shifts.compute()
    if ax is None:
        figure = Figure(figsize=(6.4, 3.6))
        ax = figure.add_subplot()
    else:
        figure = ax.figure  # type: ignore[assignment]
    in_nm = "shift_nm" in shifts.coords
    values = np.asarray(shifts.coords["shift_nm"].values if in_nm else shifts.values, float)
    time = np.asarray(shifts.coords["time"].values, float) if "time" in shifts.coords else np.arange(len(values))
    for k, label in enumerate(("y", "x")):
        ax.plot(time, values[:, k], label=label, lw=1.2)
    if "jump" in shifts.coords:
        for i, t in enumerate(time[np.asarray(shifts.coords["jump"].values, bool)]):
            ax.axvline(t, color="0.5", ls="--", lw=0.8, label="jump" if i == 0 else None)
    if "flagged" in shifts.coords:
        bad = np.asarray(shifts.coords["flagged"].values, bool)
        if bad.any():
            ax.plot(time[bad], values[bad, 0], "rx", label="flagged")
            ax.plot(time[bad], values[bad, 1], "rx")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("drift (nm)" if in_nm else "drift (px)")
    ax.legend(frameon=False, fontsize="small")
    return figure


def plot_training_history(history: "pd.DataFrame", *, ax: "Axes | None" = None) -> Figure:
    """Loss curves of a training run (and the validation IoU, when there is one).

    Parameters
    ----------
    history : pandas.DataFrame
        From :func:`temflow.segmentation.training.train`: columns ``epoch``, ``train_loss``,
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
    >>> from temflow.plots import save_figure
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
