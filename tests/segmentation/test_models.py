"""Tests for temflow.segmentation.models: shapes, honest receptive fields, safe and checked model files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from temflow.segmentation.models import Autoencoder, UNet

from temflow.segmentation.model_files import load_model, read_card, save_model

NORM = {"method": "percentile", "low": 100.0, "high": 900.0}


def _randomise_batch_norm(net: torch.nn.Module, seed: int = 0) -> None:
    """Give batch norm non-trivial running statistics, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@pytest.mark.parametrize(
    "net",
    [
        UNet(depth=1, width=2),
        UNet(depth=3, width=4),
        Autoencoder(depth=2, width=4, bottleneck_channels=2),
        Autoencoder(depth=3, width=2, bottleneck_channels=1, convs_per_block=2),
    ],
    ids=["unet1", "unet3", "ae2", "ae3"],
)
@pytest.mark.parametrize("shape", [(32, 32), (16, 40)])
def test_shapes_and_attributes(net, shape):
    net.eval()
    h, w = shape
    if h % net.size_multiple or w % net.size_multiple:
        pytest.skip("shape is not a multiple of this net's size_multiple")
    out = net(torch.rand(3, 1, h, w))
    assert out.shape == (3, 1, h, w)
    assert out.dtype == torch.float32
    assert net.size_multiple == 2 ** net.arguments["depth"]
    assert net.output_kind == ("probability_logits" if isinstance(net, UNet) else "reconstruction")


@pytest.mark.parametrize(
    "build",
    [
        lambda: UNet(depth=1, width=4),
        lambda: UNet(depth=2, width=4),
        lambda: UNet(depth=2, width=4, convs_per_block=1),
        lambda: Autoencoder(depth=2, width=4, bottleneck_channels=4),
        lambda: Autoencoder(depth=3, width=4, bottleneck_channels=4),
    ],
    ids=["unet1", "unet2", "unet2-1conv", "ae2", "ae3"],
)
def test_receptive_field_is_exact(build):
    """Perturbing one input pixel changes outputs up to receptive_field_px away, never farther."""
    torch.manual_seed(0)
    net = build().double().eval()
    _randomise_batch_norm(net)
    size = 4 * ((2 * net.receptive_field_px + 16) // 4 + 1) + 8
    size += (-size) % net.size_multiple
    frame = torch.rand(1, 1, size, size, dtype=torch.float64)
    base = net(frame)
    reach = 0
    centre = size // 2
    # both parities of the pooling grid: the reach is one-sided on the odd one
    for dy, dx in [(0, 0), (1, 1), (0, 1), (1, 0), (2, 3)]:
        y, x = centre + dy, centre + dx
        for kick in (5.0, -5.0):  # both signs: a ReLU shut for one may open for the other
            poked = frame.clone()
            poked[0, 0, y, x] += kick
            changed = (net(poked) - base)[0, 0].abs().detach().numpy() > 0
            rows, cols = np.nonzero(changed)
            if rows.size:
                reach = max(reach, int(np.abs(rows - y).max()), int(np.abs(cols - x).max()))
    assert reach == net.receptive_field_px


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        UNet(depth=0)
    with pytest.raises(TypeError, match="width must be an int"):
        Autoencoder(width="8")


def _saved(tmp_path, net=None, name="net.safetensors"):
    torch.manual_seed(1)
    net = net if net is not None else UNet(depth=2, width=4)
    _randomise_batch_norm(net)
    path = save_model(net, tmp_path / name, normalisation=NORM, tile_size=32, training={"epochs": 3, "seed": 7})
    return net, path


@pytest.mark.parametrize("cls", [UNet, Autoencoder])
def test_round_trip_rebuilds_class_and_weights(tmp_path, cls):
    net, path = _saved(tmp_path, cls(depth=2, width=4))
    loaded = load_model(path)
    assert type(loaded) is cls
    assert loaded.arguments == net.arguments
    assert not loaded.training
    frames = torch.rand(2, 1, 32, 32)
    net.eval()
    assert torch.equal(net(frames), loaded(frames))
    card = loaded.card
    assert card["architecture"] == cls.__name__
    assert card["normalisation"] == {"method": "percentile", "low": 100.0, "high": 900.0}
    assert card["tile_size"] == 32
    assert card["output_kind"] == net.output_kind
    assert card["receptive_field_px"] == net.receptive_field_px
    assert card["training"] == {"epochs": 3, "seed": 7}
    assert card["temflow_version"]
    assert len(card["weights_sha256"]) == 64
    assert read_card(path) == card


def test_tampered_weights_are_refused(tmp_path):
    _, path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # the last bytes are tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"net\.safetensors.*SHA-256"):
        load_model(path)


def test_tampered_card_is_refused(tmp_path):
    """A card claiming another architecture than the tensors hold is refused, not half-loaded."""
    _, path = _saved(tmp_path)
    tensors = load_file(str(path))
    card = read_card(path)
    card["arguments"]["width"] = 8
    save_file(tensors, str(path), metadata={"temflow_card": json.dumps(card)})
    with pytest.raises(ValueError, match=r"net\.safetensors.*do not fit a UNet"):
        load_model(path)
    card["arguments"]["width"] = 4
    card["architecture"] = "Autoencoder"
    card["arguments"]["bottleneck_channels"] = 2
    save_file(tensors, str(path), metadata={"temflow_card": json.dumps(card)})
    with pytest.raises(ValueError, match=r"do not fit an? Autoencoder|do not fit a Autoencoder"):
        load_model(path)
    card["architecture"] = "os.system"
    save_file(tensors, str(path), metadata={"temflow_card": json.dumps(card)})
    with pytest.raises(ValueError, match="unknown architecture 'os.system'"):
        load_model(path)


def test_foreign_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_model(tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04\x95not a safetensors file")  # a pickle header, for instance
    with pytest.raises(ValueError, match="garbage.safetensors.*not a readable safetensors"):
        load_model(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="plain.safetensors.*no temflow model card"):
        load_model(plain)


def test_save_model_checks_its_arguments(tmp_path):
    net = UNet(depth=2, width=2)
    with pytest.raises(ValueError, match="multiple of the model's size_multiple 4"):
        save_model(net, tmp_path / "a.safetensors", normalisation=NORM, tile_size=30)
    with pytest.raises(ValueError, match="low < high"):
        save_model(net, tmp_path / "a.safetensors", normalisation={"method": "percentile", "low": 5, "high": 5}, tile_size=32)
    with pytest.raises(TypeError, match="model must be one of"):
        save_model(torch.nn.Conv2d(1, 1, 3), tmp_path / "a.safetensors", normalisation=NORM, tile_size=32)
    with pytest.raises(TypeError, match="JSON"):
        save_model(net, tmp_path / "a.safetensors", normalisation=NORM, tile_size=32, training={"when": object()})


# --------------------------------------------------------------------------- hostile model cards


def _edit(card: dict, path: str, value) -> dict:
    """``card`` with the dotted ``path`` set to ``value`` (``...`` removes it)."""
    card = json.loads(json.dumps(card))
    *parents, last = path.split(".")
    target = card
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return card


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_CARDS = {
    "width 1e6": ("arguments.width", 10**6, "argument width must be an integer from 1 to 1024"),
    "width float": ("arguments.width", 1e6, "argument width must be an integer"),
    "width bool": ("arguments.width", True, "argument width must be an integer"),
    "width 0": ("arguments.width", 0, "argument width must be an integer from 1"),
    "depth 1e3": ("arguments.depth", 1000, "argument depth must be an integer from 1 to 8"),
    "convs_per_block 1e7": ("arguments.convs_per_block", 10**7, "argument convs_per_block must be an integer"),
    "largest network in bounds": ("arguments", {"depth": 8, "width": 1024, "convs_per_block": 16}, "do not fit a UNet"),
    "unknown argument": ("arguments.evil", 1, "unknown argument 'evil'"),
    "arguments not a table": ("arguments", [2, 4], "arguments must be a table"),
    "size_multiple 0": ("size_multiple", 0, "size_multiple is 0"),
    "size_multiple -8": ("size_multiple", -8, "size_multiple is -8"),
    "size_multiple 3": ("size_multiple", 3, "size_multiple is 3"),
    "receptive field 0": ("receptive_field_px", 0, "receptive_field_px is 0"),
    "unknown output_kind": ("output_kind", "logits?", "output_kind is 'logits\\?'"),
    "missing hash": ("weights_sha256", ..., "no valid weights_sha256"),
    "hash not hex": ("weights_sha256", "z" * 64, "no valid weights_sha256"),
    "tile_size 0": ("tile_size", 0, "tile_size must be a multiple of 4"),
    "tile_size 30": ("tile_size", 30, "tile_size must be a multiple of 4"),
    "tile_size huge": ("tile_size", 2**40, "tile_size must be a multiple of 4"),
    "normalisation NaN": ("normalisation.low", float("nan"), "normalisation is invalid"),
    "normalisation missing": ("normalisation", ..., "normalisation is invalid"),
    "card_version 2": ("card_version", 2, "version 2"),
    "architecture os.system": ("architecture", "os.system", "unknown architecture 'os.system'"),
    "training a list": ("training", [1, 2], "training must be a table"),
    "nested 100 levels": ("training.deep", _nested(100), "nests 10[0-9] levels deep"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CARDS))
def test_hostile_cards_are_refused_before_anything_is_built(tmp_path, case, monkeypatch):
    import time

    from temflow.segmentation import models

    key, value, match = HOSTILE_CARDS[case]
    _, path = _saved(tmp_path)
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"temflow_card": json.dumps(_edit(read_card(path), key, value))})
    built = []
    original = models.UNet.__init__

    def spy(self, **kwargs):
        built.append(torch.empty(0).device.type)  # the device real (non-meta) tensors would go to
        original(self, **kwargs)

    monkeypatch.setattr(models.UNet, "__init__", spy)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        load_model(path)
    assert time.perf_counter() - started < 5
    assert "net.safetensors" in str(info.value) and "\n" not in str(info.value)
    assert "cpu" not in built, "a network was built on real memory before the card was refused"


def test_deeply_nested_card_json_is_refused_cleanly(tmp_path):
    _, path = _saved(tmp_path)
    tensors = load_file(str(path))
    text = json.dumps(read_card(path))[:-1] + ', "training_deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    save_file(tensors, str(path), metadata={"temflow_card": text})
    with pytest.raises(ValueError, match="nests deeper than JSON can be read|nests .* levels deep|characters long"):
        read_card(path)


def test_a_hostile_card_fails_cleanly_in_inference_too(tmp_path):
    from temflow.segmentation.inference import predict
    from temflow.synthetic import make_movie

    _, path = _saved(tmp_path)
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"temflow_card": json.dumps(_edit(read_card(path), "size_multiple", 0))})
    movie = make_movie(frames=2, size=32, seed=0).movie
    with pytest.raises(ValueError, match="size_multiple is 0"):
        predict(movie, path)
