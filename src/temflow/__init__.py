"""temflow: from huge in-situ TEM movies to particle counts, sizes, tracks and coarsening laws.

Movies are lazy ``xarray.DataArray`` objects backed by dask, dims
``("time", "y", "x")``, coordinates in s and nm. Importing temflow imports
neither torch nor ``distributed``.
"""

from temflow._movie import DIMS, as_movie, check_movie, frame_interval_s, pixel_size_nm
from temflow.errors import IncompleteStoreError, MovieFileError
from temflow.store import open_zarr, save_zarr

__version__ = "0.1.0"

__all__ = [
    "DIMS",
    "IncompleteStoreError",
    "MovieFileError",
    "as_movie",
    "check_movie",
    "frame_interval_s",
    "open_zarr",
    "pixel_size_nm",
    "save_zarr",
]
