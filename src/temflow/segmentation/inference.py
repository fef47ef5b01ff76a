"""Run a segmentation model over every frame of a movie, and threshold its output.

:func:`predict` lifts a :mod:`temflow.segmentation.models` network onto a lazy movie, one
dask task per chunk of whole frames; :func:`segment` turns its output into
boolean particle masks. Both only build graphs (``segment`` with Otsu computes
a small sample, see there); write the result with :func:`temflow.save_zarr`.

Tiling without seams
--------------------
A frame larger than ``tile`` is cut into overlapping tiles. The networks are
fully convolutional with batch norm in eval mode, so an output pixel depends
only on the input pixels within the model's ``receptive_field_px`` (R) and the
network commutes with shifts that are multiples of its ``size_multiple`` (the
pooling grid). Tiles therefore start at multiples of ``size_multiple`` of a
canvas (the frame, padded at the bottom and right to that multiple, exactly as
a whole-frame prediction is), and each tile's output is blended with a weight
that is **zero** within R (the halo) of every tile side that lies inside the
canvas and rises with a raised-cosine taper to one. Every pixel that gets any
weight is thus predicted from exactly the input that a whole-frame prediction
sees, and a weighted mean of equal values is that value: the tiled result
equals the whole-frame result to float rounding (cellpose's ``average_tiles``
blends with a sigmoid that never reaches zero, which leaves seams; cellpose
issue 1482). A ``halo`` smaller than R is allowed (faster) but approximate.

The model on the workers
------------------------
The model is never pickled into the tasks. A checkpoint path travels as a
path and the weights' SHA-256; an in-memory model is saved once to safetensors
bytes that become a single key of the graph, which every worker fetches once
(and which the scheduler can recompute if the worker holding it dies, unlike a
scattered future). Each worker process keeps the loaded models in a small
per-process cache, ``_MODEL_CACHE``, keyed by the weights' SHA-256 and the
device, bounded to ``_MODEL_CACHE_SIZE`` entries (least recently used goes
first). This cache is temflow's one piece of module state: it only avoids
loading the same weights twice in one process.

Threads and devices
-------------------
The dask nanny sets ``OMP_NUM_THREADS=1``, so torch would run one thread per
task. :func:`predict` sets ``torch.set_num_threads`` explicitly in every worker
so that (dask threads on the host) x (torch threads) = the host's cores. On a
worker with a CUDA GPU (``device="auto"``), the tiles run on the GPU in batches
under bfloat16 (or float16) autocast; the test suite checks that this leaves
the masks unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr

from temflow.segmentation import _seamless
from temflow.segmentation._plan import _Plan

from temflow.segmentation import _workers
from temflow.movie import DIMS, TIME, check_movie
from temflow.segmentation._seamless import _taper_px
from temflow.segmentation._workers import _cluster_host_threads, _model_bytes, _model_card_from_path, _predict_block
from temflow.analysis.threshold import border_level

if TYPE_CHECKING:
    from torch import nn

__all__ = ["predict", "segment"]

# reached through this module by the tests and benchmarks: the very objects the code uses
_MODEL_CACHE = _workers._MODEL_CACHE
_MODEL_CACHE_SIZE = _workers._MODEL_CACHE_SIZE
_cores = _workers._cores
_n_tiles = _seamless._n_tiles

Device = str
Precision = Literal["auto", "float32", "bfloat16", "float16"]
Method = Literal["otsu", "threshold"]
Polarity = Literal["bright", "dark"]

PROBABILITY = "particle_probability"
RECONSTRUCTION = "reconstruction"
_QUANTITY = {"probability_logits": PROBABILITY, "reconstruction": RECONSTRUCTION}
_PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_BORDER_SAMPLE = 16  # frames whose typical intensity sets the black-border level of a reconstruction




# -- public API --------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False, minimum: int = 1) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
    return int(value)


def predict(
    movie: xr.DataArray,
    model: nn.Module | str | os.PathLike[str],
    *,
    tile: int | None = 1024,
    halo: int | None = None,
    batch_size: int = 4,
    device: Device = "auto",
    precision: Precision = "auto",
    torch_threads: int | None = None,
    normalisation: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Run a segmentation model over every frame: particle probability or reconstruction.

    Lazy: dask in, dask out (one task per time chunk of whole frames); a
    numpy-backed movie is predicted on the spot (the eager path, the oracle of
    the tests). Frames are scaled with the model card's normalisation
    (:func:`temflow.segmentation.tiles.normalise`), predicted in overlapping tiles blended
    without seams (see the module notes), and for a U-Net passed through a
    sigmoid.

    Parameters
    ----------
    movie : xarray.DataArray
        Raw frames, dims ``("time", "y", "x")``. Chunks that split ``y`` or
        ``x`` are merged to whole frames (a model needs the whole frame, or a
        halo, around every pixel); the time chunks are kept, so pick them to
        hold a few frames each (a chunk's frames are in memory together).
    model : temflow.segmentation.models.UNet or Autoencoder, or path
        A model (e.g. from :func:`temflow.segmentation.model_files.load_model`) or its
        ``.safetensors`` file. A path is opened by every worker, so it must be
        visible to them; an in-memory model is shipped once as bytes (one key
        of the graph; for a model of tens of MB prefer the path, which keeps
        the graph small).
    tile : int or None
        Side of the square tiles the network sees, px, rounded down to a
        multiple of the model's ``size_multiple``; ``None`` or a tile larger
        than the frame predicts whole frames (fastest on a CPU; tiles bound the
        memory of a GPU). Tiles overlap by ``2 * halo`` plus a taper, so they
        cost about ``(tile / (tile - 2.5 * halo))**2`` times the whole-frame work.
    halo : int, optional
        Pixels of context cut away at inner tile sides; default the model's
        ``receptive_field_px``, which makes the tiling exact. Smaller is faster
        and approximate (warns).
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Where the workers run the model; ``"auto"`` uses a CUDA GPU when the
        worker has one.
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast precision; ``"auto"`` is bfloat16 (float16 without bf16
        support) on a GPU and float32 on a CPU.
    torch_threads : int, optional
        Torch threads per task; default: the host's cores divided by the dask
        threads on the host (from the default ``distributed.Client`` when
        there is one), at least 1.
    normalisation : mapping, optional
        ``{"method": "percentile", "low": float, "high": float}`` (raw units)
        for an in-memory model without a card; overrides the card's.

    Returns
    -------
    xarray.DataArray
        float32, same dims, coords and attrs as ``movie`` plus
        ``attrs["quantity"]`` (``"particle_probability"`` in 0..1, or
        ``"reconstruction"``: the denoised frames in the movie's own
        intensity units, the card's normalisation undone, and NaN outside
        the recorded area - black drift borders, whose 3 x 3 median is at
        most a twentieth of the typical intensity, or NaN) and
        ``attrs["model_sha256"]``.

    Raises
    ------
    TypeError
        If ``movie`` is not a DataArray or ``model`` is neither a temflow model nor a path.
    ValueError
        For an unreadable model file, bad options, or a tile too small for the halo.

    Examples
    --------
    >>> import torch, temflow
    >>> from temflow.segmentation.models import UNet
    >>> from temflow.synthetic.generator import make_movie
    >>> _ = torch.manual_seed(0)
    >>> net = UNet(depth=1, width=2).eval()
    >>> movie = make_movie(frames=3, size=40, chunks=2, seed=0).movie
    >>> norm = {"method": "percentile", "low": 0.0, "high": 800.0}
    >>> probability = predict(movie, net, tile=24, normalisation=norm)
    >>> probability.dtype.name, probability.shape, probability.chunks
    ('float32', (3, 40, 40), ((2, 1), (40,), (40,)))
    >>> whole = predict(movie, net, tile=None, normalisation=norm)
    >>> bool(abs(probability - whole).max() < 1e-5)
    True
    """
    from torch import nn

    check_movie(movie)
    if movie.dtype.kind not in "biuf":
        raise TypeError(f"movie must hold numbers; got dtype {movie.dtype}")
    if isinstance(model, (str, os.PathLike)):
        card = _model_card_from_path(Path(model))
        checkpoint: Any = str(Path(model).resolve())
        if normalisation is not None:
            card = dict(card, normalisation=normalisation)
    elif isinstance(model, nn.Module):
        for attribute in ("receptive_field_px", "size_multiple", "output_kind"):
            if not hasattr(model, attribute):
                raise TypeError(
                    f"model must be a temflow.segmentation.models network (UNet or Autoencoder) with {attribute!r}; "
                    f"got {type(model).__name__}"
                )
        checkpoint, card = _model_bytes(model, normalisation)
    else:
        raise TypeError(f"model must be a temflow model or the path of its .safetensors file; got {type(model).__name__}")
    from temflow.segmentation.tiles import _parse_normalisation

    _parse_normalisation(card["normalisation"])
    size_multiple = int(card["size_multiple"])
    receptive_field = int(card["receptive_field_px"])
    tile = _check_positive_int("tile", tile, allow_none=True, minimum=size_multiple)
    if tile is not None:
        tile = tile // size_multiple * size_multiple
    halo = receptive_field if halo is None else int(_check_positive_int("halo", halo, minimum=0) or 0)
    batch_size = int(_check_positive_int("batch_size", batch_size) or 1)
    threads = _check_positive_int("torch_threads", torch_threads, allow_none=True)
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}; got {precision!r}")
    taper = _taper_px(halo, size_multiple)
    height, width = movie.sizes["y"], movie.sizes["x"]
    canvas = max(-(-height // size_multiple), -(-width // size_multiple)) * size_multiple
    if tile is not None and tile < canvas:
        smallest = 2 * halo + taper + size_multiple
        if tile < smallest:
            raise ValueError(
                f"tile {tile} px is too small for a halo of {halo} px and a taper of {taper} px; "
                f"use tile >= {-(-smallest // size_multiple) * size_multiple}, or tile=None for whole frames"
            )
        if halo < receptive_field:
            import warnings

            warnings.warn(
                f"halo {halo} px is smaller than the model's receptive field ({receptive_field} px): "
                "tiles will differ from whole-frame prediction near their edges; leave halo=None for exact tiling",
                UserWarning,
                stacklevel=2,
            )
    plan = _Plan(
        sha256=card["weights_sha256"],
        normalisation=tuple(sorted(dict(card["normalisation"]).items())),
        output_kind=card["output_kind"],
        size_multiple=size_multiple,
        tile=tile,
        halo=halo,
        taper=taper,
        batch_size=batch_size,
        device=device,
        precision=precision,
        torch_threads=threads,
        host_threads=_cluster_host_threads(),
    )
    reconstruction = plan.output_kind == "reconstruction"
    if isinstance(movie.data, da.Array):
        data = movie.data
        if len(data.chunks[1]) > 1 or len(data.chunks[2]) > 1:
            data = data.rechunk({1: -1, 2: -1})
        if isinstance(checkpoint, bytes):
            # one key in the graph: each worker fetches the weights once, not once per task
            checkpoint = dask.delayed(checkpoint, pure=True, name="temflow-model-" + plan.sha256)
        border = border_level(data, _sample_times(len(data), _BORDER_SAMPLE)) if reconstruction else None
        token = dask.base.tokenize(data, plan, border)
        result = da.map_blocks(
            _predict_block,
            data,
            checkpoint,
            plan,
            border,
            dtype=np.float32,
            chunks=data.chunks,
            name="temflow-predict-" + token,
            meta=np.empty((0, 0, 0), dtype=np.float32),
        )
    else:
        frames = np.asarray(movie.data)
        border = border_level(frames, _sample_times(len(frames), _BORDER_SAMPLE)) if reconstruction else None
        result = _predict_block(frames, checkpoint, plan, border)
    attrs = dict(movie.attrs)
    attrs.update(quantity=_QUANTITY[card["output_kind"]], model_sha256=card["weights_sha256"])
    name = "probability" if card["output_kind"] == "probability_logits" else "reconstruction"
    return xr.DataArray(result, dims=DIMS, coords=movie.coords, attrs=attrs, name=name)


def _sample_times(frames: int, sample_frames: int) -> np.ndarray:
    return np.unique(np.linspace(0, frames - 1, min(sample_frames, frames)).round().astype(int))


def segment(
    values: xr.DataArray,
    *,
    method: Method | None = None,
    threshold: float | None = None,
    particles: Polarity | Literal["auto"] | None = None,
    flat_field: bool | None = None,
    sigma_nm: float | None = None,
    background_nm: float | None = None,
    opening_nm: float | None = None,
    min_area_nm2: float | None = None,
    max_radius_nm: float | None = None,
    sample_frames: int = 16,
) -> xr.DataArray:
    """Boolean particle masks from :func:`predict`'s probabilities or reconstruction.

    One threshold for the whole movie, so masks are consistent through time:

    * particle probability (``attrs["quantity"] == "particle_probability"``):
      by default ``method="threshold"`` at 0.5, particles where the
      probability is above it;
    * autoencoder reconstruction (``"reconstruction"``): by default
      (``flat_field=True``) the classical recipe of
      :func:`temflow.analysis.measure.threshold_particles` on the reconstruction: a
      light smoothing, the darkness ``1 - smoothed / background`` where the
      background is a wide flat field that leaves the particles out, one
      Otsu threshold (``method="otsu"``) from ``sample_frames`` frames spread
      through the movie, then an opening that removes specks narrower than
      the disk. The particles' contrast is the movie's (``particles``:
      dark in bright field, bright in HAADF; ``"auto"`` decides as
      :func:`~temflow.analysis.threshold.threshold_particles` does, from
      the metadata the reconstruction keeps or from the frames). A denoising autoencoder removes the shot noise but reproduces what is
      really in the frames: the support's slow thickness and illumination
      variations, and its grain, a pixel or two wide. One threshold on the
      reconstruction itself puts thick support and grain among the
      particles: IoU 0.81-0.84 against 0.91-0.92 with the flat field,
      smoothing and opening, for the default autoencoder trained with three
      seeds (``benchmarks/bench_train.py``). ``flat_field=False`` thresholds
      the values themselves.

    Lazy, except for Otsu without the flat field on a dask-backed input: the
    sampled frames are computed to estimate the threshold (the chunks holding
    them, so at most ``sample_frames`` chunks). With the flat field nothing is
    computed: the threshold is part of the graph, as in
    :func:`~temflow.analysis.measure.threshold_particles`.

    Parameters
    ----------
    values : xarray.DataArray
        Dims ``("time", "y", "x")``, from :func:`predict` or any array where
        particles are bright (or dark, with ``particles="dark"``).
    method : {"otsu", "threshold"}, optional
        Default from ``attrs["quantity"]`` as above; required for other arrays.
    threshold : float, optional
        The level for ``method="threshold"``: of the values, or with the flat
        field the darkness (0..1, the fraction of the local background
        absorbed); default 0.5 for probabilities.
    particles : {"bright", "dark", "auto"}, optional
        Which side of the threshold is particle; default bright for
        probabilities, ``"auto"`` for reconstructions with the flat field
        (decided from the metadata or the frames, and recorded) and dark
        without it, bright otherwise. ``"auto"``
        needs the flat field.
    flat_field : bool, optional
        Smooth, divide out a particle-free background and open the masks
        (the classical recipe); default True for reconstructions, False
        otherwise.
    sigma_nm, background_nm, opening_nm : float, optional
        The recipe's smoothing, background width and opening radius, nm;
        default from the particles' own size (see
        :func:`~temflow.analysis.threshold.threshold_particles`).
    min_area_nm2, max_radius_nm : float, optional
        The recipe's smallest particle area (nm^2) and largest particle
        radius (nm; anything thicker is support or vacuum); default from
        the sample.
    sample_frames : int
        Frames sampled evenly through time for the Otsu threshold.

    Returns
    -------
    xarray.DataArray
        bool, same dims and coords; attrs of ``values`` (without ``quantity``)
        plus ``threshold`` (a number, or ``"movie"`` when the flat field's
        Otsu level is part of the graph), ``threshold_method``,
        ``particles`` (the contrast used; with the flat field also
        ``particles_reason``, the lengths used and ``settings_from``) and
        ``flat_field``.

    Raises
    ------
    ValueError
        For an unknown method, a missing threshold, ``particles="auto"``
        without the flat field, or constant sampled frames.

    Examples
    --------
    >>> import numpy as np, temflow
    >>> probability = temflow.as_movie(np.array([[[0.1, 0.7], [0.4, 0.9]]], dtype="float32"))
    >>> probability.attrs["quantity"] = "particle_probability"
    >>> segment(probability).values.astype(int).tolist()
    [[[0, 1], [0, 1]]]
    """
    check_movie(values, "values")
    if values.dtype.kind not in "biuf":
        raise TypeError(f"values must hold numbers; got dtype {values.dtype}")
    quantity = values.attrs.get("quantity")
    if method is None:
        if quantity == PROBABILITY:
            method = "threshold"
        elif quantity == RECONSTRUCTION:
            method = "otsu"
        else:
            raise ValueError(
                f"values has attrs['quantity'] = {quantity!r}, not one of {(PROBABILITY, RECONSTRUCTION)}; "
                "pass method='otsu' or method='threshold' (with threshold=...)"
            )
    if method not in ("otsu", "threshold"):
        raise ValueError(f"method must be 'otsu' or 'threshold'; got {method!r}")
    if flat_field is None:
        flat_field = quantity == RECONSTRUCTION
    elif not isinstance(flat_field, (bool, np.bool_)):
        raise TypeError(f"flat_field must be True, False or None; got {type(flat_field).__name__}")
    if particles is None:
        # a reconstruction keeps the movie's contrast: decided from it with the flat field, and
        # bright-field (dark) on the values themselves
        particles = ("auto" if flat_field else "dark") if quantity == RECONSTRUCTION else "bright"
    if particles not in ("bright", "dark", "auto"):
        raise ValueError(f"particles must be 'bright', 'dark' or 'auto'; got {particles!r}")
    lengths = (sigma_nm, background_nm, opening_nm, min_area_nm2, max_radius_nm)
    if not flat_field and any(v is not None for v in lengths):
        raise ValueError(
            "sigma_nm, background_nm, opening_nm, min_area_nm2 and max_radius_nm belong to the flat field; "
            "pass flat_field=True to use them"
        )
    if not flat_field and particles == "auto":
        raise ValueError("particles='auto' decides with the flat field's recipe; pass flat_field=True or 'bright'/'dark'")
    sample_frames = int(_check_positive_int("sample_frames", sample_frames) or 1)
    if method == "threshold":
        if threshold is None:
            if quantity != PROBABILITY:
                raise ValueError("method='threshold' needs threshold=... for anything but particle probabilities")
            threshold = 0.5
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold}")
    elif threshold is not None:
        raise ValueError("threshold is set by Otsu's method; pass method='threshold' to give one")
    attrs = {k: v for k, v in values.attrs.items() if k != "quantity"}
    if flat_field:
        from temflow.analysis.threshold import threshold_particles

        called = threshold_particles(
            values,
            particles=particles,
            sigma_nm=sigma_nm,
            background_nm=background_nm,
            opening_nm=opening_nm,
            min_area_nm2=min_area_nm2,
            max_radius_nm=max_radius_nm,
            threshold="movie" if method == "otsu" else float(threshold),  # type: ignore[arg-type]
            sample_frames=sample_frames,
        )
        attrs.update({k: v for k, v in called.attrs.items() if k != "description"})
        attrs.update(threshold_method=method, flat_field=True)
        return called.rename("mask").assign_attrs(attrs)
    if method == "otsu":
        from skimage.filters import threshold_otsu

        sample = values.isel({TIME: _sample_times(values.sizes[TIME], sample_frames)}).data
        sample = np.asarray(sample.compute() if isinstance(sample, da.Array) else sample, dtype=np.float64)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0 or sample.min() == sample.max():
            raise ValueError(
                "cannot estimate an Otsu threshold: the sampled frames are constant; "
                "pass method='threshold', threshold=..."
            )
        threshold = float(threshold_otsu(sample))
    level = cast(float, threshold)  # set above: given, 0.5 for probabilities, or Otsu's
    masks = values < level if particles == "dark" else values > level
    attrs.update(threshold=threshold, threshold_method=method, particles=particles, flat_field=False)
    return masks.rename("mask").assign_attrs(attrs)
