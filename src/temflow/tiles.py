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

Frames are split into train and validation by contiguous *blocks of time*, so
that neighbouring, nearly identical frames never sit on both sides of the
split. :class:`TileDataset` reads tiles lazily from the store (each process
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

from temflow._movie import TIME, check_movie, pixel_size_nm
from temflow.errors import IncompleteStoreError, MovieFileError

__all__ = ["normalise", "percentile_normalisation", "make_tile_set", "TileDataset", "Split", "DENOISING_NOISE", "LABEL_NOISE"]

Split = Literal["train", "validation", "all"]
_SPLIT_CODES = {"train": 0, "validation": 1}
_ATTRS_KEY = "temflow_tiles"
_TILE_SET_VERSION = 1
_FORMAT = "temflow tile set (zarr)"


def _parse_normalisation(normalisation: Any) -> tuple[float, float]:
    if not isinstance(normalisation, Mapping):
        raise TypeError(
            "normalisation must be a mapping {'method': 'percentile', 'low': float, 'high': float}; "
            f"got {type(normalisation).__name__}"
        )
    if normalisation.get("method") != "percentile":
        raise ValueError(f"normalisation['method'] must be 'percentile'; got {normalisation.get('method')!r}")
    try:
        low, high = float(normalisation["low"]), float(normalisation["high"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"normalisation needs numeric 'low' and 'high'; got {dict(normalisation)!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"normalisation needs finite low < high; got low={low}, high={high}")
    return low, high


def normalise(frames: Any, normalisation: Mapping[str, Any]) -> Any:
    """Scale raw intensities to ``(frames - low) / (high - low)`` as float32.

    The one normalisation used by training and inference alike.

    Lazy: dask in, dask out; numpy in, numpy out; a DataArray keeps its dims,
    coords and attrs.

    Parameters
    ----------
    frames : numpy.ndarray, dask.array.Array or xarray.DataArray
        Raw frames, any shape.
    normalisation : mapping
        ``{"method": "percentile", "low": float, "high": float}`` in raw
        intensity units, e.g. from :func:`percentile_normalisation` or a model's
        ``card["normalisation"]``.

    Returns
    -------
    same type as ``frames``
        float32; ``low`` maps to 0 and ``high`` to 1 (values outside are kept).

    Examples
    --------
    >>> import numpy as np
    >>> normalise(np.array([100, 200, 300], dtype=np.uint16), {"method": "percentile", "low": 100, "high": 300})
    array([0. , 0.5, 1. ], dtype=float32)
    """
    low, high = _parse_normalisation(normalisation)
    scale = np.float32(1.0 / (high - low))
    offset = np.float32(low)
    if isinstance(frames, xr.DataArray):
        out = frames.copy(data=normalise(frames.data, normalisation))
        return out
    if isinstance(frames, da.Array):
        return (frames.astype(np.float32) - offset) * scale
    return (np.asarray(frames, dtype=np.float32) - offset) * scale


def percentile_normalisation(
    frames: Any, *, low_percentile: float = 0.5, high_percentile: float = 99.5
) -> dict[str, Any]:
    """Robust intensity range of ``frames``: the normalisation to record with a model.

    Computes: reads every value of ``frames`` (pass a sample of frames for a
    long movie). Pixels of exactly 0 (black borders of drift-corrected or
    blanked frames) are ignored when anything else is present.

    Parameters
    ----------
    frames : array_like, dask array or DataArray
        Raw frames.
    low_percentile, high_percentile : float
        Percentiles (0..100) mapped to 0 and 1.

    Returns
    -------
    dict
        ``{"method": "percentile", "low": float, "high": float,
        "low_percentile": float, "high_percentile": float}``.

    Raises
    ------
    ValueError
        If the percentiles are not ``0 <= low < high <= 100`` or the frames are
        constant (no range to scale).

    Examples
    --------
    >>> import numpy as np
    >>> norm = percentile_normalisation(np.arange(1, 101), low_percentile=0, high_percentile=100)
    >>> norm["low"], norm["high"]
    (1.0, 100.0)
    """
    if not 0 <= low_percentile < high_percentile <= 100:
        raise ValueError(
            f"percentiles must satisfy 0 <= low_percentile < high_percentile <= 100; got {low_percentile}, {high_percentile}"
        )
    data = frames.data if isinstance(frames, xr.DataArray) else frames
    values = np.asarray(data.compute() if isinstance(data, da.Array) else data).ravel()
    if values.size == 0:
        raise ValueError("frames are empty; cannot compute a normalisation")
    nonzero = values[values != 0]
    if nonzero.size:
        values = nonzero
    low, high = np.percentile(values.astype(np.float64), [low_percentile, high_percentile])
    if not high > low:
        raise ValueError(
            f"frames have no intensity range between the {low_percentile} and {high_percentile} percentiles "
            f"(both {low}); a constant movie cannot be normalised"
        )
    return {
        "method": "percentile",
        "low": float(low),
        "high": float(high),
        "low_percentile": float(low_percentile),
        "high_percentile": float(high_percentile),
    }


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


@contextmanager
def _open_masks(masks: Any, movie: xr.DataArray, used: np.ndarray) -> Iterator[Callable[[np.ndarray], np.ndarray] | None]:
    """Yield ``read(frame_indices) -> bool (n, y, x)`` for the given mask source, or None."""
    shape = tuple(movie.shape)
    if masks is None:
        yield None
        return
    if isinstance(masks, str) and masks == "classical":
        try:
            from temflow.measure import threshold_particles
        except ImportError:
            raise ValueError(
                "masks='classical' needs temflow.measure.threshold_particles, which this installation lacks"
            ) from None
        # one pass over the sampled frames (one movie-wide Otsu level); the weak
        # masks of the sampled frames are held in memory, one byte per pixel
        weak = threshold_particles(movie.isel({TIME: used})).data
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
            from temflow.store import open_zarr

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
    blocks: int = 5,
    gap_frames: int = 1,
    max_blank_fraction: float = 0.5,
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
        thresholding recipe (:func:`temflow.measure.threshold_particles` on
        the sampled frames, whose masks are then held in memory, one byte per
        pixel; for huge frames save them with ``save_zarr`` and pass the store).
        ``None``: no masks (unsupervised training).
    normalisation : mapping, optional
        ``{"method": "percentile", "low", "high"}``; default
        :func:`percentile_normalisation` of the sampled frames.
    validation_fraction : float
        Fraction of the time blocks held out for validation, ``[0, 1)``.
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
    >>> from temflow.synthetic import make_movie
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
    train_frames, validation_frames = _split_by_time(sampled, validation_fraction, blocks, int(gap_frames), seed)
    if train_frames.size == 0:
        raise ValueError("no training frames are left after the train/validation split; lower validation_fraction or gap_frames")
    used = np.sort(np.concatenate([train_frames, validation_frames]))
    path = Path(store)
    if path.exists():
        if not overwrite:
            raise MovieFileError(path, _FORMAT, "it already exists", "pass overwrite=True to replace it")
        shutil.rmtree(path)

    with _open_masks(masks, movie, used) as read_masks:
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
    split = np.isin(frame_of_tile, list(validation_set)).astype(np.uint8)
    if not np.any(split == 0):
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
    group.create_array("split", shape=(n,), dtype=np.uint8, chunks=(max(n, 1),), fill_value=0)[...] = split
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
                "blocks": int(blocks),
                "gap_frames": int(gap_frames),
                "normalisation": {k: (float(v) if isinstance(v, (int, float, np.number)) else v) for k, v in norm.items()},
                "masks": mask_source,
                "movie_shape": list(movie.shape),
                "pixel_size_nm": list(pixel_size_nm(movie)),
                "movie_source": str(movie.attrs.get("source", movie.name)),
                "seed": int(seed),
            }
        }
    )
    return path


def read_tile_set_info(store: str | os.PathLike[str]) -> dict[str, Any]:
    """The attributes of a tile set written by :func:`make_tile_set`.

    Raises
    ------
    MovieFileError
        If ``store`` is missing or not a tile set; :class:`IncompleteStoreError`
        if its writing never finished.
    """
    import zarr

    path = Path(store)
    if not path.is_dir():
        raise MovieFileError(path, _FORMAT, "no such folder", "write one with temflow.tiles.make_tile_set")
    try:
        info: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs.get(_ATTRS_KEY) or {})  # type: ignore[arg-type]
    except Exception as exc:
        raise MovieFileError(path, _FORMAT, f"not a zarr group ({type(exc).__name__}: {exc})") from None
    if not info:
        raise MovieFileError(path, _FORMAT, "not a temflow tile set", "write one with temflow.tiles.make_tile_set")
    if not info.get("complete"):
        raise IncompleteStoreError(path, _FORMAT, "its writing never finished", "write it again with overwrite=True")
    return info


LABEL_NOISE = 0.05
"""Default largest added-noise standard deviation (normalised units) for supervised training."""

DENOISING_NOISE = 0.8
"""Largest added-noise standard deviation for an autoencoder (normalised units).

Added to its input and not to its target, it makes the autoencoder a denoiser:
it learns to remove noise rather than to copy the frame through its
bottleneck. The frames' own shot and read noise at 50 e/px is about 0.12 in
these units. With the default :class:`~temflow.models.Autoencoder`, 0.4, 0.8
and 1.2 gave IoU 0.916, 0.911 and 0.906 through :func:`temflow.infer.segment`
in ``benchmarks/bench_train.py``, and 0.48, 0.915 and 0.906 without its
smoothing (``sigma_nm=0``): at 0.4 the reconstruction still holds the noise.
"""


class TileDataset:
    """Map-style torch dataset of tiles read lazily from a tile set, with seeded augmentation.

    Each item is a dict of float32 tensors shaped ``(1, s, s)`` with ``s`` the
    crop size: ``"image"`` (normalised, augmented, with noise jitter),
    ``"clean"`` (the same without the added noise: the autoencoder's target)
    and, when the set has masks, ``"mask"`` (1 = particle). Augmentation of
    tile ``i`` in epoch ``e`` is drawn from ``numpy.random.default_rng((seed, e, i))``:
    the same whichever process reads it. Works with ``torch.utils.data.DataLoader``
    (duck-typed: ``__len__`` and ``__getitem__``); pickles as the store path.

    Parameters
    ----------
    store : str or path
        A tile set from :func:`make_tile_set`.
    split : {"train", "validation", "all"}
        Which tiles.
    augment : bool
        Apply the eight rotations/flips, random crops, intensity and noise
        jitter; without it a centred crop of the plain tile is returned.
    crop_size : int, optional
        Side of the (random) crop, px; default the tile size (no crop).
    intensity_jitter : float
        Contrast gain drawn from ``1 ± intensity_jitter`` and offset from
        ``± intensity_jitter`` (normalised units).
    noise_jitter : float
        Gaussian noise with a standard deviation drawn from ``[0, noise_jitter]``
        (normalised units) is added to ``"image"``, not to ``"clean"``. For an
        autoencoder use :data:`DENOISING_NOISE` (0.8): the small default
        suits labels, and an autoencoder trained with it learns to copy the
        noise it should remove.
    seed : int
        Seed of the augmentation.

    Attributes
    ----------
    epoch : int
        Current epoch (set with :meth:`set_epoch`); part of the augmentation seed.
    info : dict
        The tile set's attributes (tile size, normalisation, frames, split).
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        *,
        split: Split = "train",
        augment: bool = True,
        crop_size: int | None = None,
        intensity_jitter: float = 0.1,
        noise_jitter: float = LABEL_NOISE,
        seed: int = 0,
    ) -> None:
        import zarr

        self.store = Path(store)
        self.info = read_tile_set_info(self.store)
        if split not in ("train", "validation", "all"):
            raise ValueError(f"split must be 'train', 'validation' or 'all'; got {split!r}")
        tile_size = int(self.info["tile_size"])
        crop = tile_size if crop_size is None else int(crop_size)
        if not 1 <= crop <= tile_size:
            raise ValueError(f"crop_size must be between 1 and the tile size {tile_size}; got {crop_size}")
        if intensity_jitter < 0 or noise_jitter < 0:
            raise ValueError(f"jitters must be >= 0; got intensity_jitter={intensity_jitter}, noise_jitter={noise_jitter}")
        self.split = split
        self.augment = bool(augment)
        self.crop_size = crop
        self.tile_size = tile_size
        self.intensity_jitter = float(intensity_jitter)
        self.noise_jitter = float(noise_jitter)
        self.seed = int(seed)
        self.epoch = 0
        group: Any = zarr.open_group(str(self.store), mode="r")
        codes = np.asarray(group["split"][...])
        self.indices = np.arange(codes.size) if split == "all" else np.flatnonzero(codes == _SPLIT_CODES[split])
        self.frames = np.asarray(group["frame"][...])[self.indices]
        self.has_masks = "masks" in group
        self.normalisation = dict(self.info["normalisation"])
        self._arrays: tuple[Any, Any] | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def __repr__(self) -> str:
        return (
            f"TileDataset({str(self.store)!r}, split={self.split!r}, tiles={len(self)}, "
            f"crop_size={self.crop_size}, augment={self.augment}, masks={self.has_masks})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None  # open zarr handles stay in the process that opened them
        return state

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which reseeds the augmentation."""
        self.epoch = int(epoch)

    def subset(self, split: Split, *, augment: bool | None = None) -> TileDataset:
        """The same store and settings, another split (``augment`` defaults to this one's)."""
        return TileDataset(
            self.store,
            split=split,
            augment=self.augment if augment is None else augment,
            crop_size=self.crop_size,
            intensity_jitter=self.intensity_jitter,
            noise_jitter=self.noise_jitter,
            seed=self.seed,
        )

    def _open(self) -> tuple[Any, Any]:
        if self._arrays is None:
            import zarr

            group = zarr.open_group(str(self.store), mode="r")
            self._arrays = (group["images"], group["masks"] if self.has_masks else None)
        return self._arrays

    def read(self, item: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tile ``item`` of this split, normalised float32, and its bool mask (or None); no augmentation."""
        images, masks = self._open()
        index = int(self.indices[item])
        image = normalise(np.asarray(images[index]), self.normalisation)
        mask = np.asarray(masks[index]) if masks is not None else None
        return image, mask

    def __getitem__(self, item: int) -> dict[str, Any]:
        import torch

        if not -len(self) <= item < len(self):
            raise IndexError(f"tile {item} out of range for {len(self)} tiles")
        item = item % len(self)
        image, mask = self.read(item)
        crop = self.crop_size
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(self.indices[item])])
            y0, x0 = rng.integers(0, self.tile_size - crop + 1, size=2)
            turn, flip = rng.integers(0, 4), rng.integers(0, 2)
            gain = 1.0 + rng.uniform(-self.intensity_jitter, self.intensity_jitter)
            offset = rng.uniform(-self.intensity_jitter, self.intensity_jitter)
            sigma = rng.uniform(0.0, self.noise_jitter)
            noise = rng.standard_normal((crop, crop), dtype=np.float32)
            planes = [image] if mask is None else [image, mask]
            planes = [np.rot90(p[y0 : y0 + crop, x0 : x0 + crop], int(turn)) for p in planes]
            if flip:
                planes = [p[:, ::-1] for p in planes]
            clean = (planes[0] * np.float32(gain) + np.float32(offset)).astype(np.float32)
            noisy = clean + np.float32(sigma) * noise
            mask = planes[1] if mask is not None else None
        else:
            y0 = x0 = (self.tile_size - crop) // 2
            clean = image[y0 : y0 + crop, x0 : x0 + crop]
            noisy = clean
            mask = mask[y0 : y0 + crop, x0 : x0 + crop] if mask is not None else None
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32)[None]),
            "clean": torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)[None]),
        }
        if mask is not None:
            out["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)[None])
        return out
