"""Reading a tile set: its attributes, and the torch dataset that augments its tiles.

:func:`read_tile_set_info` and :class:`TileDataset`, re-exported by
:mod:`temflow.segmentation.tiles`, which writes the tile sets (:func:`temflow.segmentation.tiles.make_tile_set`).
Torch is imported only when a tile becomes a tensor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from temflow.segmentation._normalisation import normalise
from temflow.errors import IncompleteStoreError, MovieFileError

Split = Literal["train", "validation", "all"]
_SPLIT_CODES = {"train": 0, "validation": 1}
# how the writer, temflow.segmentation.tiles.make_tile_set, marks and names the store
_ATTRS_KEY = "temflow_tiles"
_FORMAT = "temflow tile set (zarr)"


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
        raise MovieFileError(path, _FORMAT, "no such folder", "write one with temflow.segmentation.tiles.make_tile_set")
    try:
        info: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs.get(_ATTRS_KEY) or {})  # type: ignore[arg-type]
    except Exception as exc:
        raise MovieFileError(path, _FORMAT, f"not a zarr group ({type(exc).__name__}: {exc})") from None
    if not info:
        raise MovieFileError(path, _FORMAT, "not a temflow tile set", "write one with temflow.segmentation.tiles.make_tile_set")
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
these units. With the default :class:`~temflow.segmentation.models.Autoencoder`, 0.4, 0.8
and 1.2 gave IoU 0.916, 0.911 and 0.906 through :func:`temflow.segmentation.inference.segment`
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
