"""Tests of temflow.segmentation.inference: seamless tiling, laziness, the model shipped once, segmentation physics, clusters."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi
import torch
import xarray as xr

import temflow
from temflow.segmentation import inference as infer
from temflow.segmentation.inference import predict, segment
from temflow.segmentation.models import Autoencoder, UNet
from temflow.segmentation.model_files import load_model, save_model
from temflow.synthetic.generator import make_movie
from temflow.analysis.threshold import threshold_particles
from temflow.segmentation.tiles import percentile_normalisation

NORM = {"method": "percentile", "low": 150.0, "high": 600.0}


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and batch-norm statistics, strong enough that outputs vary a lot across a frame."""
    torch.manual_seed(seed)
    net = type(net)(**net.arguments)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.3 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
                module.weight.copy_(3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return net.eval()


def _identity_batch_norm(net: torch.nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_parameters()
            module.reset_running_stats()
            module.running_var.fill_(1 - module.eps)


def _handmade_unet(level: float = 0.35, gain: float = 12.0) -> UNet:
    """A real UNet whose weights make logits ``gain * (level - blurred frame)``: dark particles -> high probability."""
    net = UNet(depth=1, width=1, convs_per_block=1)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        _identity_batch_norm(net)
        net.down[0][0].weight.fill_(1 / 9)
        net.merge[0][0].weight[0, 0].fill_(1 / 9)  # the skip channel only: a second 3x3 box blur
        net.head.weight.fill_(-gain)
        net.head.bias.fill_(gain * level)
    return net.eval()


def _handmade_autoencoder() -> Autoencoder:
    """A real Autoencoder that reproduces a smoothed frame (blur, max-pool, nearest up-sampling, blur)."""
    net = Autoencoder(depth=1, width=1, bottleneck_channels=1, convs_per_block=1)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        _identity_batch_norm(net)
        net.encoder[0][0].weight.fill_(1 / 9)
        net.encoder[2][0].weight.fill_(1 / 9)
        net.decoder[0].weight.fill_(1.0)
        net.decoder[1][0].weight.fill_(1 / 9)
        net.decoder[2].weight.fill_(1.0)
    return net.eval()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def movie() -> xr.DataArray:
    # frames that are not multiples of any size_multiple, chunks that do not divide the length
    return make_movie(frames=5, size=(125, 110), chunks=3, seed=2).movie


@pytest.fixture(scope="module")
def truth():
    return make_movie(frames=6, size=64, chunks=4, seed=3, drift_px=0, area_fraction=0.15)


MODELS = {
    "unet2": lambda: _randomise(UNet(depth=2, width=4, convs_per_block=1), 1),
    "unet3": lambda: _randomise(UNet(depth=3, width=4, convs_per_block=1), 2),
    "autoencoder": lambda: _randomise(Autoencoder(depth=2, width=4, bottleneck_channels=2), 3),
}


# -- seamless tiling ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("tile_extra", [11, 28])
@pytest.mark.parametrize("chunks", [{"time": 1}, {"time": 3, "y": 20, "x": 50}, {"time": -1}])
def test_tiled_chunked_equals_whole_frame(movie, name, tile_extra, chunks):
    net = MODELS[name]()
    halo, m = net.receptive_field_px, net.size_multiple
    tile = 2 * halo + infer._taper_px(halo, m) + tile_extra  # not a multiple of m: rounded down
    whole = predict(movie.compute(), net, tile=None, normalisation=NORM)  # eager numpy oracle
    tiled = predict(movie.chunk(chunks), net, tile=tile, batch_size=16, normalisation=NORM)
    n_tiles = infer._n_tiles((movie.sizes["y"], movie.sizes["x"]), tile // m * m, halo, m)
    assert n_tiles >= 4, "the test must cut frames into several tiles"
    assert isinstance(tiled.data, da.Array) and isinstance(whole.data, np.ndarray)
    assert tiled.chunks[0] == movie.chunk(chunks).chunks[0]  # time chunks kept
    assert tiled.chunks[1:] == ((movie.sizes["y"],), (movie.sizes["x"],))  # whole frames
    np.testing.assert_allclose(tiled.values, whole.values, atol=1e-4, rtol=0)
    assert float(whole.std()) > 0.02, "outputs must vary across the frame for the test to mean anything"


def test_halo_smaller_than_receptive_field_leaves_seams(movie):
    net = MODELS["unet2"]()
    halo = net.receptive_field_px // 3
    whole = predict(movie.compute(), net, tile=None, normalisation=NORM)
    with pytest.warns(UserWarning, match="smaller than the model's receptive field"):
        tiled = predict(movie.compute(), net, tile=2 * net.receptive_field_px, halo=halo, normalisation=NORM)
    # the exactness test above can fail: too little context gives visible seams
    assert float(abs(tiled - whole).max()) > 1e-3


def test_tile_larger_than_frame_is_whole_frame(movie):
    net = MODELS["autoencoder"]()
    a = predict(movie, net, tile=512, normalisation=NORM)
    b = predict(movie, net, tile=None, normalisation=NORM)
    np.testing.assert_array_equal(a.values, b.values)


# -- laziness, metadata, shipping the model ----------------------------------------------------


def test_predict_is_lazy_and_keeps_metadata(movie, no_compute, tmp_path):
    net = _handmade_unet()
    path = save_model(net, tmp_path / "net.safetensors", normalisation=NORM, tile_size=32)
    with no_compute():
        result = predict(movie, path)
        masks = segment(result)
    assert result.dims == movie.dims and result.dtype == np.float32 and masks.dtype == bool
    for dim in movie.dims:
        xr.testing.assert_identical(result[dim], movie[dim])
        xr.testing.assert_identical(masks[dim], movie[dim])
    assert result.attrs["quantity"] == "particle_probability"
    assert result.attrs["model_sha256"] == load_model(path).card["weights_sha256"]
    assert result.attrs["pixel_size_nm"] == movie.attrs["pixel_size_nm"]
    assert masks.attrs["threshold"] == 0.5 and masks.attrs["particles"] == "bright"
    assert float(result.min()) >= 0 and float(result.max()) <= 1


def test_in_memory_model_is_one_graph_key(movie):
    net = MODELS["unet2"]()
    payload_size = len(infer._model_bytes(net, NORM)[0])
    result = predict(movie.chunk({"time": 1}), net, normalisation=NORM).data
    graph = dict(result.__dask_graph__())
    model_keys = [k for k in graph if isinstance(k, str) and k.startswith("temflow-model-")]
    assert len(model_keys) == 1
    predict_keys = [k for k in graph if isinstance(k, tuple) and k[0].startswith("temflow-predict-")]
    assert len(predict_keys) == movie.sizes["time"]
    # every task refers to the weights by key: pickling a task costs far less than the weights
    task_sizes = [len(pickle.dumps(graph[k])) for k in predict_keys]
    assert max(task_sizes) < payload_size / 4
    # the same model and movie give the same graph (deterministic names)
    assert result.name == predict(movie.chunk({"time": 1}), net, normalisation=NORM).data.name


def test_model_loaded_once_per_process(movie, tmp_path, monkeypatch):
    import temflow.segmentation.model_files
    from temflow.segmentation import _workers  # where the predict task keeps its per-process cache

    loads = []
    real = temflow.segmentation.model_files.load_model

    def counting_load(path):
        loads.append(path)
        return real(path)

    monkeypatch.setattr(temflow.segmentation.model_files, "load_model", counting_load)
    monkeypatch.setattr(_workers, "_MODEL_CACHE", type(infer._MODEL_CACHE)())
    path = save_model(MODELS["unet2"](), tmp_path / "a.safetensors", normalisation=NORM, tile_size=32)
    with dask.config.set(scheduler="threads", num_workers=2):
        predict(movie.chunk({"time": 1}), path).compute()
        predict(movie.chunk({"time": 2}), path).compute()
    assert len(loads) == 1
    # bounded: more models than the cache holds push out the oldest
    for seed in range(infer._MODEL_CACHE_SIZE + 2):
        predict(movie.isel(time=[0]).compute(), _randomise(UNet(depth=1, width=2), 10 + seed), normalisation=NORM)
    assert len(_workers._MODEL_CACHE) == infer._MODEL_CACHE_SIZE


def test_checkpoint_path_equals_in_memory_and_refuses_a_changed_file(movie, tmp_path):
    net = MODELS["unet3"]()
    path = save_model(net, tmp_path / "net.safetensors", normalisation=NORM, tile_size=32)
    from_path = predict(movie, path)
    np.testing.assert_array_equal(from_path.values, predict(movie, net, normalisation=NORM).values)
    np.testing.assert_array_equal(from_path.values, predict(movie, load_model(path)).values)
    lazy = predict(movie, path)
    save_model(MODELS["unet2"](), path, normalisation=NORM, tile_size=32)  # replaced after the graph was built
    infer._MODEL_CACHE.clear()
    with pytest.raises(ValueError, match="changed after predict"):
        lazy.compute(scheduler="sync")


def test_torch_threads_fill_the_cores_under_the_sync_scheduler(movie):
    before = torch.get_num_threads()
    try:
        predict(movie.chunk({"time": 4}), MODELS["unet2"](), normalisation=NORM).compute(scheduler="sync")
        assert torch.get_num_threads() == infer._cores()
        predict(movie.chunk({"time": 4}), MODELS["unet2"](), normalisation=NORM, torch_threads=1).compute(
            scheduler="sync"
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# -- segmentation against the synthetic ground truth -------------------------------------------


def test_unet_probabilities_segment_the_true_particles(truth):
    norm = percentile_normalisation(truth.movie.values)
    probability = predict(truth.movie, _handmade_unet(), tile=None, normalisation=norm)
    masks = segment(probability).values
    labels = truth.labels.values > 0
    inner = (slice(None), slice(6, -6), slice(6, -6))  # the handmade net's zero padding darkens the rim
    assert _iou(masks[inner], labels[inner]) > 0.8
    assert _iou(segment(probability, threshold=0.9).values, labels) < _iou(masks, labels)


def test_reconstruction_flat_field_otsu_segments_the_true_particles(truth, no_compute):
    norm = percentile_normalisation(truth.movie.values)
    reconstruction = predict(truth.movie, _handmade_autoencoder(), normalisation=norm)
    with no_compute(max_computes=1):  # the scale estimate; the flat field's Otsu level is part of the graph
        masks = segment(reconstruction, sample_frames=3)
    assert isinstance(masks.data, da.Array)
    assert masks.attrs["particles"] == "dark" and masks.attrs["flat_field"] is True
    # the reconstruction keeps the movie's metadata: its BF detector decides the contrast
    assert "'BF'" in masks.attrs["particles_reason"]
    given = dict(particles="dark", sigma_nm=0.75, background_nm=16.0, opening_nm=1.0, min_area_nm2=2.0, max_radius_nm=12.0)
    with no_compute(max_computes=0):  # everything given: nothing to estimate
        segment(reconstruction, sample_frames=3, **given)
    assert masks.attrs["threshold_method"] == "otsu"
    labels = truth.labels.values > 0
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert _iou(masks.values[inner], labels[inner]) > 0.8
    # it is the classical recipe, on the reconstruction
    recipe = threshold_particles(reconstruction, sample_frames=3)
    np.testing.assert_array_equal(masks.values, recipe.values)
    # a fixed darkness level instead of Otsu's
    darker = segment(reconstruction, method="threshold", threshold=0.3)
    assert darker.values.sum() < masks.values.sum()
    # the wrong contrast finds (almost) nothing, and says which it used
    wrong = segment(reconstruction, particles="bright")
    assert wrong.attrs["particles"] == "bright" and wrong.values.mean() < 0.01
    with pytest.raises(ValueError, match="particles='auto' decides with the flat field"):
        segment(reconstruction, flat_field=False, particles="auto")
    with pytest.raises(ValueError, match="flat_field=True"):
        segment(reconstruction, flat_field=False, opening_nm=1.0)


def test_reconstruction_plain_otsu_one_threshold_dark_particles(truth, no_compute):
    norm = percentile_normalisation(truth.movie.values)
    reconstruction = predict(truth.movie, _handmade_autoencoder(), normalisation=norm)
    with no_compute(max_computes=1):  # the Otsu sample: one small compute
        masks = segment(reconstruction, flat_field=False, sample_frames=3)
    assert isinstance(masks.data, da.Array) and masks.attrs["particles"] == "dark"
    labels = truth.labels.values > 0
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert _iou(masks.values[inner], labels[inner]) > 0.8
    # the polarity matters: bright-field particles are dark
    inverted = segment(reconstruction, particles="bright", flat_field=False, sample_frames=3)
    assert _iou(inverted.values, labels) < 0.1
    # one threshold for all frames, between the particle and support levels
    threshold = masks.attrs["threshold"]
    values = reconstruction.values
    assert values[labels].mean() < threshold < values[~labels].mean()
    np.testing.assert_array_equal(masks.values, values < threshold)


def test_reconstruction_flat_field_survives_uneven_illumination():
    # a beam 60 % brighter on the right than on the left: the support on the left is as dark
    # as the particles on the right, and no single level on the reconstruction separates them
    truth = make_movie(frames=4, size=128, chunks=2, seed=3, drift_px=0, area_fraction=0.15)
    illumination = np.linspace(0.7, 1.3, 128, dtype=np.float32)
    movie = truth.movie.copy(data=(truth.movie.values * illumination).astype(np.float32))
    reconstruction = predict(movie, _handmade_autoencoder(), normalisation=percentile_normalisation(movie.values))
    labels = truth.labels.values > 0
    inner = (slice(None), slice(6, -6), slice(6, -6))
    # the background window must be narrower than the illumination's variation: 16 px here
    background_nm = 16 * float(movie.x[1] - movie.x[0])
    flat = _iou(segment(reconstruction, background_nm=background_nm).values[inner], labels[inner])
    plain = _iou(segment(reconstruction, flat_field=False).values[inner], labels[inner])
    assert flat > 0.8
    assert plain < 0.4


def test_reconstruction_is_in_movie_units_and_nan_outside_the_recorded_area():
    drifting = make_movie(frames=4, size=64, chunks=2, seed=5, drift_px=12, jumps=0)
    # the true recorded area: the same movie rendered without read noise is exactly 0 outside it
    quiet = make_movie(frames=4, size=64, chunks=2, seed=5, drift_px=12, jumps=0, dose_e_per_px=5000.0, read_noise_e=0.0)
    recorded = quiet.movie.values > 0
    raw = drifting.movie.values.astype(np.float32)
    norm = percentile_normalisation(raw)
    reconstruction = predict(drifting.movie, _handmade_autoencoder(), normalisation=norm)
    assert isinstance(reconstruction.data, da.Array)
    values = reconstruction.values
    # NaN outside the recorded area; the 3 x 3 median decides only the pixels on its edge
    edge = ndi.binary_dilation(recorded, np.ones((1, 3, 3))) & ~ndi.binary_erosion(recorded, np.ones((1, 3, 3)))
    assert (~recorded & ~edge).sum() > 50  # the drift left black borders wider than their edge
    np.testing.assert_array_equal(np.isnan(values)[~edge], ~recorded[~edge])
    # the normalisation is undone: the support reads the generator's dose x gain, to a few per cent
    support = recorded & ~ndi.binary_dilation(drifting.labels.values > 0, np.ones((1, 5, 5))) & ~edge
    expected = drifting.parameters["dose_e_per_px"] * drifting.parameters["gain_counts_per_e"]
    assert np.median(values[support]) == pytest.approx(expected, rel=0.05)
    eager = predict(drifting.movie.compute(), _handmade_autoencoder(), normalisation=norm)
    np.testing.assert_allclose(eager.values, values, rtol=1e-6, atol=1e-3)


def test_reconstruction_eager_equals_lazy(truth):
    norm = percentile_normalisation(truth.movie.values)
    net = _handmade_autoencoder()
    lazy = segment(predict(truth.movie, net, normalisation=norm))
    eager = segment(predict(truth.movie.compute(), net, normalisation=norm))
    assert isinstance(eager.data, np.ndarray)
    assert lazy.attrs["threshold"] == pytest.approx(eager.attrs["threshold"], abs=1e-6)
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_bfloat16_keeps_the_masks(truth):
    norm = percentile_normalisation(truth.movie.values)
    net = _handmade_unet()
    full = predict(truth.movie, net, normalisation=norm, precision="float32").values
    reduced = predict(truth.movie, net, normalisation=norm, precision="bfloat16").values
    assert float(abs(full - reduced).max()) < 0.05
    decided = abs(full - 0.5) > 0.05
    np.testing.assert_array_equal((full > 0.5)[decided], (reduced > 0.5)[decided])
    assert _iou(full > 0.5, reduced > 0.5) > 0.98  # only undecided edge pixels may flip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batched_reduced_precision_keeps_the_masks(truth):
    norm = percentile_normalisation(truth.movie.values)
    net = _handmade_unet()
    cpu = predict(truth.movie, net, normalisation=norm, device="cpu").values
    gpu = predict(truth.movie, net, normalisation=norm, device="cuda", precision="auto", batch_size=8, tile=32)
    gpu = gpu.values
    decided = abs(cpu - 0.5) > 0.05
    np.testing.assert_array_equal((cpu > 0.5)[decided], (gpu > 0.5)[decided])
    assert _iou(cpu > 0.5, gpu > 0.5) > 0.98
    assert float(abs(cpu - gpu).max()) < 0.05


# -- errors ------------------------------------------------------------------------------------


def test_errors(movie, tmp_path):
    net = MODELS["unet2"]()
    with pytest.raises(ValueError, match="must have dims"):
        predict(movie.rename(time="frame"), net, normalisation=NORM)
    with pytest.raises(TypeError, match="temflow model or the path"):
        predict(movie, object())
    with pytest.raises(TypeError, match="temflow.segmentation.models network"):
        predict(movie, torch.nn.Conv2d(1, 1, 3), normalisation=NORM)
    with pytest.raises(ValueError, match="no such file"):
        predict(movie, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="pass normalisation="):
        predict(movie, net)
    with pytest.raises(ValueError, match="too small for a halo"):
        predict(movie, net, tile=16, normalisation=NORM)
    with pytest.raises(ValueError, match="precision must be"):
        predict(movie, net, precision="int8", normalisation=NORM)
    with pytest.raises(ValueError, match="device must be"):
        predict(movie, net, device="tpu", normalisation=NORM)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        predict(movie, net, batch_size=0, normalisation=NORM)
    with pytest.raises(ValueError, match="pass method="):
        segment(movie)
    with pytest.raises(ValueError, match="needs threshold"):
        segment(movie, method="threshold")
    with pytest.raises(ValueError, match="constant"):
        segment(movie * 0, method="otsu")
    with pytest.raises(ValueError, match="particles must be"):
        segment(movie, method="otsu", particles="grey")


# -- on a distributed cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    ) as local, distributed.Client(local) as client:
        yield local, client


def test_same_output_on_a_cluster_and_into_zarr(cluster, movie, tmp_path):
    _, client = cluster
    net = MODELS["unet2"]()
    tile = 2 * net.receptive_field_px + infer._taper_px(net.receptive_field_px, 4) + 8
    oracle = predict(movie.compute(), net, tile=None, normalisation=NORM).values
    result = predict(movie.chunk({"time": 2}), net, tile=tile, normalisation=NORM)
    path = temflow.save_zarr(result, tmp_path / "p.zarr")
    np.testing.assert_allclose(temflow.open_zarr(path).values, oracle, atol=1e-4, rtol=0)
    # workers x torch threads = cores: 2 single-threaded workers on this host
    threads = client.run(torch.get_num_threads)
    assert set(threads.values()) == {max(1, infer._cores() // 2)}
    # and an in-process cluster with one two-threaded worker gives the same
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc:
        with distributed.Client(lc, set_as_default=False) as threaded:
            path = save_model(net, tmp_path / "net.safetensors", normalisation=NORM, tile_size=32)
            again = threaded.compute(predict(movie.chunk({"time": 4}), path, tile=tile).data)
            np.testing.assert_allclose(again.result(), oracle, atol=1e-4, rtol=0)


def test_worker_killed_mid_predict_gives_identical_output(cluster, tmp_path):
    local, client = cluster
    truth = make_movie(frames=12, size=48, chunks=1, seed=4)

    def slow_read(block):  # a slow file system: keeps the run going long enough to kill a worker in it
        time.sleep(0.3)
        return block

    movie = truth.movie.copy(data=truth.movie.data.map_blocks(slow_read, dtype=truth.movie.dtype))
    net = MODELS["unet2"]()  # in memory: its weights are a graph key that must survive the worker's death
    undisturbed = predict(movie, net, tile=64, normalisation=NORM)
    undisturbed = temflow.open_zarr(temflow.save_zarr(undisturbed, tmp_path / "a.zarr")).values

    before = set(client.scheduler_info()["workers"])
    pids = client.run(os.getpid)
    errors = []

    def write():
        try:
            temflow.save_zarr(predict(movie, net, tile=64, normalisation=NORM), tmp_path / "b.zarr")
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    markers = tmp_path / "b.zarr" / ".temflow-done"  # one per chunk written
    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    busy: list[str] = []
    while time.monotonic() < deadline and not busy:
        time.sleep(0.02)
        if markers.exists() and len(list(markers.iterdir())) >= 2:
            busy = [ws.address for ws in local.scheduler.workers.values() if ws.processing]
    written = len(list(markers.iterdir()))
    assert busy and 2 <= written < movie.sizes["time"], "the kill must land in the middle of the run"
    os.kill(pids[busy[0]], signal.SIGKILL)  # as the kernel's OOM killer would
    writer.join(timeout=120)
    assert not writer.is_alive() and not errors, errors
    client.wait_for_workers(2, timeout=60)
    after = set(client.scheduler_info()["workers"])
    assert busy[0] in before and busy[0] not in after, "the busy worker was not killed and replaced"
    np.testing.assert_array_equal(temflow.open_zarr(tmp_path / "b.zarr").values, undisturbed)
