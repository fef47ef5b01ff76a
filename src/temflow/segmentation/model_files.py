"""Model files: a network's weights and its model card in one ``.safetensors`` file.

:func:`save_model`, :func:`read_card` and :func:`load_model`, re-exported by
:mod:`temflow.segmentation.models` (whose notes describe the file layout), and the weights'
SHA-256 that the card records and inference uses as the model's identity.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from temflow._json import dumps
from temflow.segmentation._normalisation import _parse_normalisation
from temflow.segmentation.models import _ARCHITECTURES, _check_int

__all__ = ["save_model", "load_model", "read_card"]

_CARD_KEY = "temflow_card"
_CARD_VERSION = 1
_FORMAT = "temflow-model"
_MAX_CARD_CHARS = 2**20
_MAX_CARD_DEPTH = 32
_MAX_TILE = 2**14  # px
# architecture arguments: far above any trained temflow model, far below what hangs or exhausts memory
_ARGUMENT_BOUNDS = {"depth": 8, "width": 1024, "convs_per_block": 16, "bottleneck_channels": 4096}
_ARGUMENTS = {"UNet": ("depth", "width", "convs_per_block"),
              "Autoencoder": ("depth", "width", "bottleneck_channels", "convs_per_block")}


def _weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_normalisation(normalisation: Any) -> dict[str, Any]:
    low, high = _parse_normalisation(normalisation)
    out = dict(normalisation)
    out.update(low=low, high=high)
    return out


def _temflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("temflow")
    except PackageNotFoundError:
        return "unknown"


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    normalisation: Mapping[str, Any],
    tile_size: int,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model's weights and its model card to one ``.safetensors`` file.

    Parameters
    ----------
    model : UNet or Autoencoder
        The trained network.
    path : str or path
        File to write (conventionally ending in ``.safetensors``); replaced if it exists.
    normalisation : mapping
        ``{"method": "percentile", "low": float, "high": float}``, raw intensity
        units: how frames were scaled for training (:func:`temflow.segmentation.tiles.normalise`).
    tile_size : int
        Tile side (px) the model was trained on.
    training : mapping, optional
        Provenance (data, epochs, seed, history summary...); must be JSON-serialisable.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``model`` is not a temflow architecture or ``training`` is not JSON.
    ValueError
        If ``normalisation`` or ``tile_size`` are invalid.

    Examples
    --------
    >>> import tempfile
    >>> from temflow.segmentation.models import UNet
    >>> net = UNet(depth=1, width=2)
    >>> path = save_model(net, tempfile.mkdtemp() + "/net.safetensors",
    ...                   normalisation={"method": "percentile", "low": 10.0, "high": 90.0}, tile_size=32)
    >>> again = load_model(path)
    >>> type(again).__name__, again.card["tile_size"], again.card["normalisation"]["high"]
    ('UNet', 32, 90.0)
    """
    from safetensors.torch import save

    from temflow._nofollow import write_file


    name = type(model).__name__
    net: Any = model  # UNet or Autoencoder: their attributes are plain ints and dicts
    if _ARCHITECTURES.get(name) is not type(model):
        raise TypeError(f"model must be one of {sorted(_ARCHITECTURES)} from temflow.segmentation.models; got {type(model).__name__}")
    norm = _check_normalisation(normalisation)
    tile_size = _check_int("tile_size", tile_size, 1)
    if tile_size % net.size_multiple:
        raise ValueError(f"tile_size must be a multiple of the model's size_multiple {net.size_multiple}; got {tile_size}")
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    card = {
        "format": _FORMAT,
        "card_version": _CARD_VERSION,
        "architecture": name,
        "arguments": dict(net.arguments),
        "output_kind": net.output_kind,
        "normalisation": norm,
        "tile_size": tile_size,
        "receptive_field_px": int(net.receptive_field_px),
        "size_multiple": int(net.size_multiple),
        "training": dict(training) if training is not None else None,
        "temflow_version": _temflow_version(),
        "weights_sha256": _weights_sha256(tensors),
    }
    try:
        text = dumps(card, indent=None, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"training provenance must be JSON-serialisable ({exc})") from None
    target = Path(path)
    blob = save(tensors, metadata={_CARD_KEY: text})
    write_file(target, lambda file: file.write(blob))  # atomically, never through a symbolic link
    return target


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the model card of a saved model without loading its weights.

    Every field of the card is checked against bounds, and the network it
    describes against the number of weights stored, before anything is built.

    Raises
    ------
    ValueError
        Naming the file, if it does not exist, is not a temflow model file, or
        its card is damaged, edited, nested too deeply or out of bounds.
    """
    from safetensors import safe_open

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"cannot load model {str(source)!r}: no such file; save one with temflow.segmentation.model_files.save_model")
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
            # numbers stored (from the header, no tensor is read): bounds the network a card may describe
            stored = sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"cannot load model {str(source)!r}: not a readable safetensors file ({exc})") from None
    if _CARD_KEY not in metadata:
        raise ValueError(
            f"cannot load model {str(source)!r}: it has no temflow model card; it was not written by temflow.segmentation.model_files.save_model"
        )
    text = metadata[_CARD_KEY]
    if len(text) > _MAX_CARD_CHARS:
        raise ValueError(f"cannot load model {str(source)!r}: its model card is {len(text)} characters long; "
                         f"a temflow card is a few kB (at most {_MAX_CARD_CHARS})")
    try:
        card = json.loads(text)
    except RecursionError:
        raise ValueError(f"cannot load model {str(source)!r}: its model card nests deeper than JSON can be read") from None
    except ValueError as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its model card is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != _FORMAT:
        raise ValueError(f"cannot load model {str(source)!r}: its model card is not a temflow model card")
    _check_card(source, card, stored)
    return card


def _depth(value: Any) -> int:
    """Nesting depth of JSON values, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack += [(v, level + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, level + 1) for v in item]
    return deepest


def _check_card(source: Path, card: dict[str, Any], stored: int) -> None:
    """Every field of a card within bounds, and its network no larger than the weights stored.

    Runs before anything is built: a card is untrusted input (``width: 1e6`` would
    ask for terabytes, ``convs_per_block: 1e7`` for ten million layers), and the
    weights' SHA-256 does not cover the card.
    """
    def refuse(problem: str) -> ValueError:
        return ValueError(f"cannot load model {str(source)!r}: {problem}")

    if _depth(card) > _MAX_CARD_DEPTH:
        raise refuse(f"its model card nests {_depth(card)} levels deep; a temflow card has at most {_MAX_CARD_DEPTH}")
    if card.get("card_version") != _CARD_VERSION:
        raise refuse(f"its model card has version {card.get('card_version')!r}; this temflow reads version {_CARD_VERSION}")
    name = card.get("architecture")
    if not isinstance(name, str) or name not in _ARCHITECTURES:
        raise refuse(f"unknown architecture {name!r}; expected one of {sorted(_ARCHITECTURES)}")
    cls = _ARCHITECTURES[name]
    arguments = card.get("arguments")
    if not isinstance(arguments, dict):
        raise refuse(f"its card's arguments must be a table of integers; got {arguments!r}")
    allowed = {key: _ARGUMENT_BOUNDS[key] for key in _ARGUMENTS[name]}
    for key, value in arguments.items():
        if key not in allowed:
            raise refuse(f"its card's arguments do not build a {name}: unknown argument {key!r}; "
                         f"expected some of {sorted(allowed)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= allowed[key]:
            raise refuse(f"its card's argument {key} must be an integer from 1 to {allowed[key]}; got {value!r}")
    with torch.device("meta"):  # shapes only: nothing is allocated
        net: Any = cls(**arguments)
    needed = sum(tensor.numel() for tensor in net.state_dict().values())
    if needed != stored:
        raise refuse(f"its weights do not fit a {name}({arguments}): the card's arguments need {needed} numbers, "
                     f"the file holds {stored}")
    for key, expected in (("output_kind", net.output_kind), ("size_multiple", net.size_multiple),
                          ("receptive_field_px", net.receptive_field_px)):
        if card.get(key) != expected or isinstance(card.get(key), bool):
            raise refuse(f"its card's {key} is {card.get(key)!r}, but a {name}({arguments}) has {expected!r}; "
                         "the card was edited")
    tile = card.get("tile_size")
    if isinstance(tile, bool) or not isinstance(tile, int) or not 1 <= tile <= _MAX_TILE or tile % net.size_multiple:
        raise refuse(f"its card's tile_size must be a multiple of {net.size_multiple} from 1 to {_MAX_TILE} px; "
                     f"got {tile!r}")
    try:
        _parse_normalisation(card.get("normalisation"))
    except (TypeError, ValueError) as exc:
        raise refuse(f"its card's normalisation is invalid ({exc})") from None
    digest = card.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
        raise refuse(f"its card has no valid weights_sha256 (64 hex digits); got {digest!r}; "
                     "the file was not written by save_model or was edited")
    if card.get("training") is not None and not isinstance(card.get("training"), dict):
        raise refuse(f"its card's training must be a table or null; got {type(card.get('training')).__name__}")


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a saved model from its file, without naming its class.

    The architecture and its arguments come from the model card; the weights
    are read with safetensors (no unpickling) and checked against the card's
    SHA-256 before they are loaded. The model is returned in eval mode with
    the card attached as ``model.card`` (a dict).

    Parameters
    ----------
    path : str or path
        A file written by :func:`save_model`.

    Returns
    -------
    UNet or Autoencoder
        On the CPU, in eval mode, with ``card``.

    Raises
    ------
    ValueError
        Naming the file, if it is missing or damaged, was not written by
        temflow, names an unknown architecture, its weights do not match the
        card's hash (tampered) or do not fit the architecture (mismatched).
    """
    from safetensors.torch import load_file


    source = Path(path)
    card = read_card(source)
    name = card.get("architecture")
    if name not in _ARCHITECTURES:
        raise ValueError(f"cannot load model {str(source)!r}: unknown architecture {name!r}; expected one of {sorted(_ARCHITECTURES)}")
    try:
        tensors = load_file(str(source))
    except Exception as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its tensors cannot be read ({exc})") from None
    if _weights_sha256(tensors) != card.get("weights_sha256"):
        raise ValueError(
            f"cannot load model {str(source)!r}: its weights do not match the SHA-256 in its model card; "
            "the file was modified or damaged after saving; use the original file"
        )
    try:
        model = _ARCHITECTURES[name](**card.get("arguments", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load model {str(source)!r}: its card's arguments do not build a {name} ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"cannot load model {str(source)!r}: its weights do not fit a {name}({card.get('arguments')}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    model.load_state_dict(tensors)
    model.eval()
    model.card = card  # type: ignore[assignment]
    return model
