"""Training tiles: normalisation shared with inference, tile sets in zarr, a torch dataset.

Tile sets
---------
:func:`make_tile_set` cuts frames sampled evenly through a movie into square
tiles and writes them, with their masks when there are any, to a zarr v3 store
(a folder)::

    tiles.zarr/
      zarr.json      group; attrs "temflow_tiles": tile_size, stride, frames,
                     split, normalisation, mask source, movie shape, complete
      images/        (tile, y, x) raw intensities, one tile per chunk
      masks/         (tile, y, x) bool particle masks (only with masks)
      frame/         (tile,) movie frame index of each tile
      origin/        (tile, 2) top-left pixel (y, x) of each tile in its frame
      split/         (tile,) 0 = train, 1 = validation

Frames of a movie are split into train and validation by contiguous *blocks
of time*, so that neighbouring, nearly identical frames never sit on both
sides of the split; a stack of independent images is split by whole images
(``split="image"``). :class:`TileDataset` reads tiles lazily from the store (each process
opens the store itself; the dataset pickles as a path) and augments them on
the fly with a generator seeded by ``(seed, epoch, tile)``, so a tile gets the
same augmentation whichever process or rank reads it.

Normalisation
-------------
Training and inference scale raw frames identically with :func:`normalise`,
``(x - low) / (high - low)`` in float32, where ``low`` and ``high`` are robust
percentiles of the raw intensities (:func:`percentile_normalisation`), recorded
with the tile set and in the model card as
``{"method": "percentile", "low": float, "high": float}`` (raw units).

This module does not import torch at import time (only :class:`TileDataset`
needs it, when it builds tensors).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from temflow.movie import TIME, check_movie, pixel_size_nm
from temflow.segmentation._normalisation import _parse_normalisation, normalise, percentile_normalisation
from temflow.segmentation._tile_dataset import (
    _ATTRS_KEY,
    _FORMAT,
    DENOISING_NOISE,
    LABEL_NOISE,
    Split,
    TileDataset,
    read_tile_set_info,
)
from temflow.errors import IncompleteStoreError, MovieFileError

__all__ = [
    "normalise",
    "percentile_normalisation",
    "make_tile_set",
    "read_tile_set_info",
    "TileDataset",
    "Split",
    "DENOISING_NOISE",
    "LABEL_NOISE",
]

_TILE_SET_VERSION = 1


def _tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` px, plus one flush with the far edge."""
    starts = list(range(0, length - tile_size + 1, stride))
    if starts[-1] + tile_size < length:
        starts.append(length - tile_size)
    return starts


def _sample_frames(n_frames: int, frames: int | Sequence[int]) -> np.ndarray:
    if isinstance(frames, (int, np.integer)) and not isinstance(frames, bool):
        if frames < 1:
            raise ValueError(f"frames must be a positive number of frames or a list of frame indices; got {frames}")
        # evenly through time, first and last frame included
        return np.unique(np.round(np.linspace(0, n_frames - 1, min(int(frames), n_frames))).astype(np.int64))
    try:
        chosen = np.unique(np.asarray(list(frames), dtype=np.int64))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"frames must be an int or a sequence of frame indices; got {frames!r}") from None
    if chosen.size == 0:
        raise ValueError("frames is empty: there is nothing to cut tiles from")
    bad = chosen[(chosen < 0) | (chosen >= n_frames)]
    if bad.size:
        raise ValueError(f"frames must be indices in [0, {n_frames}); got {bad.tolist()}")
    return chosen


def _split_by_time(
    frames: np.ndarray, validation_fraction: float, blocks: int, gap_frames: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation frames: whole contiguous blocks of time go to validation.

    Train frames closer than ``gap_frames`` (movie frames) to a validation frame
    are dropped, so the split has a guard band on both sides of every
    validation block.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction}")
    if validation_fraction == 0:
        return frames, frames[:0]
    blocks = min(int(blocks), frames.size)
    if blocks < 2:
        raise ValueError(
            f"a train/validation split needs at least 2 blocks of time; got {blocks} "
            f"(from {frames.size} sampled frames); sample more frames or pass validation_fraction=0"
        )
    groups = np.array_split(frames, blocks)
    n_validation = min(blocks - 1, max(1, int(round(validation_fraction * blocks))))
    chosen = np.sort(np.random.default_rng([seed, 7]).choice(blocks, size=n_validation, replace=False))
    validation = np.concatenate([groups[i] for i in chosen])
    train = np.concatenate([g for i, g in enumerate(groups) if i not in set(chosen.tolist())])
    distance = np.abs(train[:, None] - validation[None, :]).min(axis=1)
    return train[distance > gap_frames], validation


_CLASSICAL_KEYS = ("particles", "sigma_nm", "background_nm", "opening_nm", "min_area_nm2", "max_radius_nm")


def _split_by_image(
    frames: np.ndarray, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation frames for independent images: a random subset of whole images is held out."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction}")
    if validation_fraction == 0:
        return frames, frames[:0]
    if frames.size < 2:
        raise ValueError(
            f"a train/validation split needs at least 2 images; got {frames.size}; "
            "pass more images or validation_fraction=0"
        )
    n_validation = min(frames.size - 1, max(1, int(round(validation_fraction * frames.size))))
    chosen = np.sort(np.random.default_rng([seed, 7]).choice(frames.size, size=n_validation, replace=False))
    held = np.zeros(frames.size, dtype=bool)
    held[chosen] = True
    return frames[~held], frames[held]


def _check_classical(classical: Mapping[str, Any] | None) -> dict[str, Any]:
    if classical is None:
        return {}
    if not isinstance(classical, Mapping):
        raise TypeError(f"classical must be a mapping of threshold_particles settings; got {type(classical).__name__}")
    unknown = sorted(set(classical) - set(_CLASSICAL_KEYS))
    if unknown:
        raise ValueError(f"classical: unknown setting {unknown[0]!r}; known: {', '.join(_CLASSICAL_KEYS)}")
    return dict(classical)


@contextmanager
def _open_masks(
    masks: Any, movie: xr.DataArray, used: np.ndarray, classical: Mapping[str, Any], record: dict[str, Any]
) -> Iterator[Callable[[np.ndarray], np.ndarray] | None]:
    """Yield ``read(frame_indices) -> bool (n, y, x)`` for the given mask source, or None.

    For classical weak labels, ``record`` receives the settings used.
    """
    shape = tuple(movie.shape)
    if masks is None:
        yield None
        return
    if isinstance(masks, str) and masks == "classical":
        from temflow.analysis.threshold import threshold_particles

        # one pass over the sampled frames (one movie-wide Otsu level); the weak
        # masks of the sampled frames are held in memory, one byte per pixel
        called = threshold_particles(movie.isel({TIME: used}), **classical)
        record.update({k: v for k, v in called.attrs.items() if k != "description"})
        weak = called.data
        weak = np.asarray(weak.compute() if isinstance(weak, da.Array) else weak)
        position = {int(f): k for k, f in enumerate(used)}
        yield lambda idx: weak[[position[int(i)] for i in idx]]
        return
    if isinstance(masks, (str, os.PathLike)):
        path = Path(masks)
        if not path.exists():
            raise MovieFileError(path, "masks", "no such file or folder")
        suffix = path.suffix.lower()
        if suffix in (".tif", ".tiff"):
            import tifffile

            try:
                handle = tifffile.TiffFile(path)
                series = handle.series[0]
            except Exception as exc:
                raise MovieFileError(path, "tiff", f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
            try:
                found = tuple(series.shape)
                if found != shape:
                    raise ValueError(
                        f"masks {str(path)!r} have shape {found} but the movie has shape {shape}; "
                        "masks must have one frame per movie frame, of the same size"
                    )
                if len(series.pages) == shape[0]:
                    pages: Any = series.pages
                    yield lambda idx: np.stack([pages[int(i)].asarray() for i in idx]) > 0
                else:
                    whole = series.asarray()
                    yield lambda idx: whole[idx] > 0
            finally:
                handle.close()
            return
        if path.is_dir():
            from temflow.io.store import open_zarr

            try:
                opened: Any = open_zarr(path)
            except IncompleteStoreError:
                raise
            except MovieFileError:
                import zarr

                try:
                    opened = zarr.open_array(str(path), mode="r")
                except Exception as exc:
                    raise MovieFileError(path, "zarr", f"neither a temflow store nor a zarr array ({exc})") from None
            masks = opened
        else:
            raise MovieFileError(path, "masks", f"unknown mask file type {suffix!r}", "use a TIFF stack or a zarr store")
    if isinstance(masks, xr.DataArray):
        data = masks.data
    elif isinstance(masks, (np.ndarray, da.Array)) or hasattr(masks, "shape"):
        data = masks
    else:
        raise TypeError(
            "masks must be None, 'classical', an array, a DataArray, or the path of a zarr store or TIFF; "
            f"got {type(masks).__name__}"
        )
    found = tuple(data.shape)
    if found != shape:
        raise ValueError(
            f"masks have shape {found} but the movie has shape {shape}; "
            "masks must have one frame per movie frame, of the same size"
        )
    if isinstance(data, da.Array):
        yield lambda idx: np.asarray(data[idx].compute()) > 0
    elif isinstance(data, np.ndarray):
        yield lambda idx: data[idx] > 0
    else:  # zarr and other array-likes: read whole frames one by one
        yield lambda idx: np.stack([np.asarray(data[int(i)]) for i in idx]) > 0


def make_tile_set(
    movie: xr.DataArray,
    store: str | os.PathLike[str],
    *,
    tile_size: int,
    stride: int | None = None,
    frames: int | Sequence[int] = 64,
    masks: Any = None,
    normalisation: Mapping[str, Any] | None = None,
    validation_fraction: float = 0.2,
    split: Literal["time", "image"] = "time",
    blocks: int = 5,
    gap_frames: int = 1,
    max_blank_fraction: float = 0.5,
    classical: Mapping[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Cut a training set of tiles from a movie into a zarr store.

    Computes: reads the sampled frames (twice when the normalisation is
    computed here: once for its percentiles, once to cut tiles) and writes the
    store, a few frames at a time.

    Parameters
    ----------
    movie : xarray.DataArray
        Raw frames, dims ``("time", "y", "x")``, lazy or in memory.
    store : str or path
        Folder of the tile set to create.
    tile_size : int
        Side of the square tiles, px.
    stride : int, optional
        Step between tile origins, px; default ``tile_size`` (no overlap). A
        last tile flush with the far edge is always added.
    frames : int or sequence of int
        How many frames to sample, evenly through time (all frames if the movie
        is shorter), or the frame indices to use.
    masks : None, "classical", array, DataArray or path
        Particle masks of the movie's shape (any value > 0 is particle):
        ``synthetic.labels``, user masks as an array, a zarr store or a TIFF
        stack, or ``"classical"`` for weak labels from the classical
        thresholding recipe (:func:`temflow.analysis.measure.threshold_particles` on
        the sampled frames, whose masks are then held in memory, one byte per
        pixel; for huge frames save them with ``save_zarr`` and pass the store).
        ``None``: no masks (unsupervised training).
    classical : mapping, optional
        Settings of the classical weak labels (``masks="classical"``), as
        :func:`temflow.analysis.threshold.threshold_particles` takes them:
        ``particles`` ("dark", "bright" or "auto"), ``sigma_nm``,
        ``background_nm``, ``opening_nm``, ``min_area_nm2``,
        ``max_radius_nm``; what is not given comes from the sample. The
        settings used are recorded in the store's attrs (``classical``).
    normalisation : mapping, optional
        ``{"method": "percentile", "low", "high"}``; default
        :func:`percentile_normalisation` of the sampled frames.
    validation_fraction : float
        Fraction of the time blocks (or images) held out for validation, ``[0, 1)``.
    split : {"time", "image"}
        ``"time"``: frames of one movie, split by contiguous blocks of time
        with a guard band (neighbouring frames are nearly identical).
        ``"image"``: independent images (a stack of unrelated micrographs),
        split by whole images at random, no guard band. A time split that
        drops more than a quarter of the frames in its guard bands warns,
        with the numbers.
    blocks : int
        Number of contiguous blocks of time the sampled frames are split into.
    gap_frames : int
        Training frames within this many movie frames of a validation frame are dropped.
    max_blank_fraction : float
        Tiles with a larger fraction of exactly-zero pixels (black borders) are skipped.
    seed : int
        Chooses the validation blocks.
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    pathlib.Path
        The store.

    Raises
    ------
    ValueError
        If tiles are larger than the frames, the masks' shape differs from the
        movie's, or no training tile is left.
    MovieFileError
        If ``store`` exists and ``overwrite`` is false, or a mask file cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> from temflow.synthetic.generator import make_movie
    >>> truth = make_movie(frames=10, size=32, seed=0)
    >>> path = make_tile_set(truth.movie, tempfile.mkdtemp() + "/t.zarr", tile_size=16, frames=10, masks=truth.labels)
    >>> len(TileDataset(path, split="train")) > len(TileDataset(path, split="validation")) > 0
    True
    """
    import zarr

    movie = check_movie(movie)
    n_frames, ny, nx = movie.shape
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int; got {tile_size!r}")
    tile_size = int(tile_size)
    if tile_size > min(ny, nx):
        raise ValueError(
            f"tile_size {tile_size} px is larger than the frames ({ny} x {nx} px); use tile_size <= {min(ny, nx)}"
        )
    stride = tile_size if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be a positive int; got {stride}")
    if not 0 <= max_blank_fraction <= 1:
        raise ValueError(f"max_blank_fraction must be in [0, 1]; got {max_blank_fraction}")
    sampled = _sample_frames(n_frames, frames)
    classical_settings = _check_classical(classical)
    if classical_settings and not (isinstance(masks, str) and masks == "classical"):
        raise ValueError("classical settings are for masks='classical'; remove them or pass masks='classical'")
    if split == "image":
        train_frames, validation_frames = _split_by_image(sampled, validation_fraction, seed)
    elif split == "time":
        train_frames, validation_frames = _split_by_time(sampled, validation_fraction, blocks, int(gap_frames), seed)
        dropped = sampled.size - train_frames.size - validation_frames.size
        if dropped > 0.25 * sampled.size:
            import warnings

            warnings.warn(
                f"the time split drops {dropped} of {sampled.size} sampled frames in its guard bands "
                f"(gap_frames={gap_frames}): {train_frames.size} train, {validation_frames.size} validation; "
                "for independent images pass split='image', for a movie sample more frames or lower gap_frames",
                UserWarning,
                stacklevel=2,
            )
    else:
        raise ValueError(f"split must be 'time' or 'image'; got {split!r}")
    if train_frames.size == 0:
        raise ValueError("no training frames are left after the train/validation split; lower validation_fraction or gap_frames")
    used = np.sort(np.concatenate([train_frames, validation_frames]))
    path = Path(store)
    if path.exists():
        if not overwrite:
            raise MovieFileError(path, _FORMAT, "it already exists", "pass overwrite=True to replace it")
        shutil.rmtree(path)

    classical_used: dict[str, Any] = {}
    with _open_masks(masks, movie, used, classical_settings, classical_used) as read_masks:
        if normalisation is None:
            normalisation = percentile_normalisation(movie.isel({TIME: used}))
        norm = dict(normalisation)
        _parse_normalisation(norm)
        ys, xs = _tile_starts(ny, tile_size, stride), _tile_starts(nx, tile_size, stride)
        group = zarr.open_group(str(path), mode="w")
        tile_shape = (tile_size, tile_size)
        images = group.create_array(
            "images", shape=(0, *tile_shape), dtype=movie.dtype, chunks=(1, *tile_shape), fill_value=0
        )
        mask_array = None
        if read_masks is not None:
            mask_array = group.create_array(
                "masks", shape=(0, *tile_shape), dtype=bool, chunks=(1, *tile_shape), fill_value=False
            )
        group.update_attributes({_ATTRS_KEY: {"complete": False, "version": _TILE_SET_VERSION}})
        tile_frames: list[int] = []
        origins: list[tuple[int, int]] = []
        validation_set = set(validation_frames.tolist())
        batch = max(1, int(2**26 // max(ny * nx * movie.dtype.itemsize, 1)))
        for start in range(0, used.size, batch):
            idx = used[start : start + batch]
            raw = np.asarray(movie.data[idx]) if not isinstance(movie.data, da.Array) else movie.data[idx].compute()
            mask = read_masks(idx) if read_masks is not None else None
            kept_images, kept_masks = [], []
            for k, frame in enumerate(idx):
                for y0 in ys:
                    for x0 in xs:
                        tile = raw[k, y0 : y0 + tile_size, x0 : x0 + tile_size]
                        if np.mean(tile == 0) > max_blank_fraction:
                            continue
                        kept_images.append(tile)
                        if mask is not None:
                            kept_masks.append(mask[k, y0 : y0 + tile_size, x0 : x0 + tile_size])
                        tile_frames.append(int(frame))
                        origins.append((y0, x0))
            if kept_images:
                images.append(np.stack(kept_images), axis=0)
                if mask_array is not None:
                    mask_array.append(np.stack(kept_masks), axis=0)
    frame_of_tile = np.asarray(tile_frames, dtype=np.int64)
    split_of_tile = np.isin(frame_of_tile, list(validation_set)).astype(np.uint8)
    if not np.any(split_of_tile == 0):
        shutil.rmtree(path, ignore_errors=True)
        raise ValueError(
            "the training set is empty: every tile of the training frames was blank "
            f"(more than {max_blank_fraction:.0%} zero pixels) or no frame was left for training"
        )
    n = frame_of_tile.size
    group.create_array("frame", shape=(n,), dtype=np.int64, chunks=(max(n, 1),), fill_value=0)[...] = frame_of_tile
    group.create_array("origin", shape=(n, 2), dtype=np.int64, chunks=(max(n, 1), 2), fill_value=0)[...] = np.asarray(
        origins, dtype=np.int64
    ).reshape(n, 2)
    group.create_array("split", shape=(n,), dtype=np.uint8, chunks=(max(n, 1),), fill_value=0)[...] = split_of_tile
    mask_source = (
        None
        if masks is None
        else masks
        if isinstance(masks, str)
        else os.fspath(masks)
        if isinstance(masks, os.PathLike)
        else f"array named {getattr(masks, 'name', None)!r}"
    )
    group.update_attributes(
        {
            _ATTRS_KEY: {
                "version": _TILE_SET_VERSION,
                "complete": True,
                "tile_size": tile_size,
                "stride": stride,
                "frames": used.tolist(),
                "sampled_frames": sampled.tolist(),
                "train_frames": train_frames.tolist(),
                "validation_frames": validation_frames.tolist(),
                "split": split,
                "blocks": int(blocks),
                "gap_frames": int(gap_frames),
                "normalisation": {k: (float(v) if isinstance(v, (int, float, np.number)) else v) for k, v in norm.items()},
                "masks": mask_source,
                "classical": classical_used or None,
                "movie_shape": list(movie.shape),
                "pixel_size_nm": list(pixel_size_nm(movie)),
                "movie_source": str(movie.attrs.get("source", movie.name)),
                "seed": int(seed),
            }
        }
    )
    return path
