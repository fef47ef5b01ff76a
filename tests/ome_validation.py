"""Validate stores against the OME-Zarr specification with ome-zarr-models (the ecosystem's own checker)."""

from __future__ import annotations

from pathlib import Path

import zarr


def assert_valid_ome_zarr(path) -> None:
    """Fail unless ``path`` is a valid OME-Zarr 0.5 image (its ``labels/`` group included)."""
    from ome_zarr_models.v05 import Image

    image = Image.from_zarr(zarr.open_group(str(path), mode="r"))
    axes = [a.name for a in image.ome_attributes.multiscales[0].axes]
    assert axes == ["time", "y", "x"], axes
    if (Path(path) / "labels" / "zarr.json").exists():
        assert image.labels is not None and image.labels.label_paths


def assert_every_store_valid(folder) -> int:
    """Validate every ``*.zarr`` image under ``folder``; return how many were checked."""
    stores = [p for p in Path(folder).rglob("*.zarr") if (p / "zarr.json").exists() and "labels" not in p.parts]
    for store in stores:
        assert_valid_ome_zarr(store)
    return len(stores)
