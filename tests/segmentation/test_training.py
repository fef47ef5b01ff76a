"""Tests for temflow.segmentation.training: determinism, resume, data parallelism on Dask and torchrun, learning."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from temflow.segmentation.models import Autoencoder, UNet

from temflow.segmentation.model_files import load_model, save_model
from temflow.plots import plot_training_history, save_figure
from temflow.synthetic.generator import make_movie
from temflow.segmentation.tiles import TileDataset, make_tile_set
from temflow.segmentation.training import train


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and spinning OpenMP threads crawl on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tile_set(tmp_path_factory):
    truth = make_movie(frames=10, size=48, seed=5, chunks=4)
    store = tmp_path_factory.mktemp("train") / "tiles.zarr"
    return make_tile_set(truth.movie, store, tile_size=16, frames=10, masks=truth.labels, blocks=5)


def _unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(depth=1, width=4)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key].double(), wb[key].double(), atol=atol, rtol=0, msg=key)


def test_same_seed_same_weights(tile_set):
    dataset = TileDataset(tile_set, seed=1)
    first, history = train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=3)
    second, again = train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=3)
    _assert_same_weights(first, second)
    np.testing.assert_array_equal(history["train_loss"], again["train_loss"])
    other, _ = train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(first).values(), _weights(other).values()))
    assert list(history.columns[:4]) == ["epoch", "train_loss", "val_loss", "val_iou"]
    assert history["val_iou"].between(0, 1).all()
    assert history.attrs["tiles"] == len(dataset) and history.attrs["config"]["seed"] == 3


def test_progress_in_a_pipe_is_one_line_per_epoch(tile_set, capsys):
    # capsys's stderr is not a terminal, as in `temflow run 2> log`: no redrawn bar, one line per epoch
    train(_unet(), TileDataset(tile_set, seed=1), epochs=2, batch_size=8, device="cpu", seed=3, progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and "\r" not in err, err
    assert lines[0].startswith("epoch 1/2 done in") and "train " in lines[0] and "val " in lines[0]


def test_dataloader_worker_processes_give_the_same_weights(tile_set):
    """Augmentation is seeded per tile, so reading tiles in worker processes changes nothing."""
    dataset = TileDataset(tile_set)
    here, _ = train(_unet(), dataset, epochs=1, batch_size=8, device="cpu")
    forked, _ = train(_unet(), dataset, epochs=1, batch_size=8, device="cpu", num_workers=2)
    _assert_same_weights(here, forked)


def test_resume_after_interruption_equals_uninterrupted(tile_set, tmp_path):
    dataset = TileDataset(tile_set)
    straight, history = train(_unet(), dataset, epochs=3, batch_size=8, device="cpu", checkpoint_dir=tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"epoch-000{i}.safetensors" for i in range(3)]
    # "interrupted" after two epochs: a fresh process starts from a freshly built model
    train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", checkpoint_dir=tmp_path / "b")
    resumed, resumed_history = train(_unet(seed=9), dataset, epochs=3, batch_size=8, device="cpu", checkpoint_dir=tmp_path / "b")
    _assert_same_weights(straight, resumed)
    np.testing.assert_array_equal(history["train_loss"], resumed_history["train_loss"])
    np.testing.assert_array_equal(history["val_loss"], resumed_history["val_loss"])


def test_checkpoint_of_another_architecture_is_refused(tile_set, tmp_path):
    dataset = TileDataset(tile_set)
    train(_unet(), dataset, epochs=1, batch_size=8, device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"epoch-0000.safetensors' is for UNet\(.*'width': 4.*not for this UNet\(.*'width': 2"):
        train(UNet(depth=1, width=2), dataset, epochs=2, batch_size=8, device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="is for UNet.*not for this Autoencoder"):
        train(Autoencoder(depth=1, width=4, bottleneck_channels=2), dataset, epochs=2, batch_size=8, device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="same batch_size, lr"):
        train(_unet(), dataset, epochs=2, batch_size=4, device="cpu", checkpoint_dir=tmp_path)
    # resume=False starts afresh: the other run's checkpoints go, this run's come
    fresh, _ = train(UNet(depth=1, width=2), dataset, epochs=1, batch_size=4, device="cpu", checkpoint_dir=tmp_path, resume=False)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0000.safetensors"]
    again, _ = train(UNet(depth=1, width=2), dataset, epochs=1, batch_size=4, device="cpu", checkpoint_dir=tmp_path)
    _assert_same_weights(fresh, again)  # and a resume from it is accepted


def test_early_stopping_and_history_figure(tile_set, tmp_path):
    dataset = TileDataset(tile_set)
    # nothing after the first epoch counts as an improvement: stop after `patience` more
    _, history = train(_unet(), dataset, epochs=10, batch_size=8, device="cpu", patience=2, min_delta=1e9)
    assert list(history["epoch"]) == [1, 2, 3]
    written = save_figure(plot_training_history(history), tmp_path / "loss", formats=("png",))
    assert written[0].stat().st_size > 1000


def test_autoencoder_trains_and_saves(tile_set, tmp_path):
    dataset = TileDataset(tile_set, noise_jitter=0.05)
    torch.manual_seed(0)
    net, history = train(
        Autoencoder(depth=1, width=8, bottleneck_channels=4), dataset, epochs=6, batch_size=8, device="cpu", lr=3e-3,
        schedule="cosine",
    )
    # it learned the frames, not only their brightness: the validation tiles are reproduced better
    # than by each tile's own mean (the output layer starts at a flat mid-grey)
    validation = dataset.subset("validation")
    tiles = np.stack([validation.read(i)[0] for i in range(len(validation))])
    flat = float(((tiles - tiles.mean(axis=(1, 2), keepdims=True)) ** 2).mean())
    assert history["val_loss"].iloc[-1] < min(flat, 0.75 * history["val_loss"].iloc[0])
    cosine = 3e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * np.arange(6) / 5)))
    np.testing.assert_allclose(history["lr"], cosine)
    assert history["val_iou"].between(0, 1).all() and "val_threshold" in history
    path = save_model(net, tmp_path / "ae.safetensors", normalisation=dataset.normalisation, tile_size=16, training=history.attrs)
    card = load_model(path).card
    assert card["training"]["tile_set"] == os.fspath(tile_set)
    assert card["normalisation"] == {k: v for k, v in dataset.normalisation.items()}


def test_bad_inputs(tile_set, tmp_path):
    dataset = TileDataset(tile_set)
    empty = TileDataset(make_tile_set(
        make_movie(frames=4, size=32, seed=1).movie, tmp_path / "e.zarr", tile_size=16, validation_fraction=0
    ), split="validation")
    with pytest.raises(ValueError, match="training set is empty"):
        train(_unet(), empty, epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="multiple of 4"):
        train(UNet(depth=2, width=2), TileDataset(tile_set, crop_size=14), epochs=1, batch_size=4, device="cpu")
    unlabelled = TileDataset(make_tile_set(make_movie(frames=4, size=32, seed=1).movie, tmp_path / "u.zarr", tile_size=16, blocks=2))
    with pytest.raises(ValueError, match="a UNet needs masks"):
        train(_unet(), unlabelled, epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        train(_unet(), dataset, epochs=1, batch_size=0, device="cpu")
    with pytest.raises(TypeError, match="model must be a temflow.segmentation.models.UNet or Autoencoder"):
        train(torch.nn.Conv2d(1, 1, 3), dataset, epochs=1, batch_size=4, device="cpu")
    with pytest.raises(TypeError, match="dataset must be a temflow.segmentation.tiles.TileDataset"):
        train(_unet(), [1, 2, 3], epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        train(_unet(), dataset, epochs=1, batch_size=4, device="tpu")


def test_data_parallel_on_two_dask_workers_equals_single_process(tile_set, tmp_path):
    from distributed import Client, LocalCluster

    dataset = TileDataset(tile_set, seed=2)
    # 31 training tiles, global batch 8: the last batch (7) splits 4 + 3 over the ranks
    assert len(dataset) % 8 != 0
    single, history = train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=5)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            parallel, parallel_history = train(
                _unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=5, client=client,
                checkpoint_dir=tmp_path / "ddp",
            )
            # per-rank batch norm statistics: a different (faster) computation
            local, _ = train(_unet(), dataset, epochs=2, batch_size=8, device="cpu", seed=5, client=client, sync_batch_norm=False)
    with pytest.raises(AssertionError):
        _assert_same_weights(single, local, atol=1e-5)
    _assert_same_weights(single, parallel, atol=1e-5)
    np.testing.assert_allclose(history["train_loss"], parallel_history["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], parallel_history["val_loss"], rtol=1e-5)
    assert parallel_history.attrs["ranks"] == 2
    assert (tmp_path / "ddp" / "epoch-0001.safetensors").is_file()


def test_torchrun_equals_single_process(tile_set, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import torch, torch.distributed as dist
            from safetensors.torch import save_file
            from temflow.segmentation.models import UNet
            from temflow.segmentation.tiles import TileDataset
            from temflow.segmentation.training import train
            torch.manual_seed(0)
            net, history = train(UNet(depth=1, width=4), TileDataset({os.fspath(tile_set)!r}, seed=2),
                                 epochs=1, batch_size=8, device="cpu", seed=5)
            import os
            save_file({{k: v.contiguous() for k, v in net.state_dict().items()}},
                      {os.fspath(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.safetensors")
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors.torch import load_file

    single, _ = train(_unet(), TileDataset(tile_set, seed=2), epochs=1, batch_size=8, device="cpu", seed=5)
    for rank in (0, 1):
        weights = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        for key, value in _weights(single).items():
            torch.testing.assert_close(weights[key].double(), value.double(), atol=1e-5, rtol=0, msg=key)


def test_unet_learns_to_find_particles(tmp_path):
    """A small U-Net trained for seconds finds the synthetic particles on held-out frames."""
    truth = make_movie(frames=12, size=64, seed=3)
    store = make_tile_set(truth.movie, tmp_path / "t.zarr", tile_size=32, frames=12, masks=truth.labels, blocks=4)
    torch.manual_seed(0)
    net, history = train(
        UNet(depth=2, width=8), TileDataset(store), epochs=10, batch_size=4, device="cpu", lr=3e-3, restore_best=True
    )
    best = history["val_iou"].max()
    assert best > 0.75, history
    assert not math.isnan(history["val_loss"].min())


def test_temflow_train_is_callable_even_after_the_module_is_imported(tmp_path):
    import importlib

    import temflow

    importlib.import_module("temflow.segmentation.training")  # what the pipeline does
    from temflow.segmentation.models import UNet
    from temflow.synthetic.generator import make_movie
    from temflow.segmentation.tiles import TileDataset, make_tile_set

    truth = make_movie(frames=6, size=64, seed=0)
    store = make_tile_set(truth.movie, tmp_path / "t.zarr", tile_size=32, frames=6, masks=truth.labels > 0, gap_frames=0)
    assert callable(temflow.train) and callable(temflow.segmentation.train)
    model, history = temflow.train(UNet(depth=2, width=4), TileDataset(store), epochs=1, batch_size=4)
    assert len(history) == 1 and isinstance(model, UNet)
