"""What the pipeline's stages share: the run's state and how a stage writes its outputs.

``Run`` travels through every stage; the helpers here write a stage's arrays (zarr stores,
resumable), tables (parquet) and JSON into the run folder, and open what an earlier stage
wrote. Its own module so that the stages (``stages``) and the report stage
(``_report_stage``) both use it without importing each other.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from temflow._json import write_json as _write_strict_json
from temflow.pipeline.config import Config

__all__ = ["Run", "write_json"]

# what the classical recipe decided: the masks stage records these, the report lists them
_DECIDED = ("particles", "particles_reason", "radius_estimate_nm", "sigma_nm", "background_nm", "opening_nm",
            "min_area_nm2", "max_radius_nm", "settings_from", "support_texture")


@dataclass
class Run:
    """What the stages share during one run: settings, output folder, client, results so far."""

    config: Config
    folder: Path
    echo: Callable[[str], None]
    client: Any = None
    progress: bool = False
    fingerprints: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON atomically: NaN and infinities become null (see :mod:`temflow._json`)."""
    _write_strict_json(path, data)


def _write_table(table: pd.DataFrame, path: Path) -> Path:
    from temflow.analysis.tables import write_parquet

    return write_parquet(table, path)


def _save_array(run_state: Run, array: xr.DataArray, name: str, resume: bool) -> str:
    from temflow.io.store import save_zarr

    path = run_state.folder / name
    # the run owns its stores' names: a folder there that is no temflow store (left by a
    # version of temflow that could be killed while creating one) is started again
    if path.exists() and (not resume or not _is_store(path)):
        shutil.rmtree(path)
    save_zarr(array, path, resume=resume, progress=run_state.progress)
    return str(path)


def _is_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "temflow" in meta.get("attributes", {})


def _open(path: str) -> xr.DataArray:
    from temflow.io.store import open_zarr

    return open_zarr(path)


def _figure_formats(state: Run) -> list[str]:
    """The configured formats, plus PNG for the report page."""
    return sorted(set(state.config.output.figure_formats) | {"png"})
