"""Stage 1, loading and storing: microscope files in, lazy movies and zarr v3 stores out.

Reads Gatan DM3/DM4 (and In-Situ folders), TIA ``.ser``/``.emi``, Velox and Berkeley EMD,
MRC, TIFF stacks, folders of frames and ``.npy`` files lazily into ``xarray.DataArray``
movies (dims ``time, y, x``; coordinates in s and nm; the instrument's metadata in
``attrs``); writes and reads temflow's chunked, compressed zarr v3 stores. No torch, no
``distributed``. ``reader`` dispatches on the file family to one module per family in
``formats/``; ``store`` writes and re-opens zarr (OME-Zarr 0.5 images) and ``labels`` keeps masks
and particle labels in the store's NGFF ``labels/`` group. ``hyperspy`` turns a movie into a HyperSpy signal
(``temflow.as_movie`` reads signals) and ``napari`` gives napari's layer data. ``holder_logs``
reads heating/gas holder logs (Protochips, DENSsolutions Impulse) and ``holder_sync`` puts them on
a movie's time axis; ``dose`` turns the camera counts or the beam current into the electron dose
per frame.
"""

from __future__ import annotations

from temflow.io.dose import add_dose_coords, electron_dose
from temflow.io.holder_logs import read_holder_log
from temflow.io.holder_sync import add_holder_coords, estimate_clock_offset
from temflow.io.hyperspy import to_hyperspy
from temflow.io.napari import napari_layers
from temflow.io.reader import READERS, SUFFIXES, describe, detect_format, open_movie
from temflow.io.labels import label_names, open_labels, save_labels
from temflow.io.store import is_complete, open_zarr, save_zarr

__all__ = [
    "READERS",
    "SUFFIXES",
    "add_dose_coords",
    "add_holder_coords",
    "describe",
    "detect_format",
    "electron_dose",
    "estimate_clock_offset",
    "is_complete",
    "label_names",
    "napari_layers",
    "open_labels",
    "open_movie",
    "open_zarr",
    "read_holder_log",
    "save_labels",
    "save_zarr",
    "to_hyperspy",
]
