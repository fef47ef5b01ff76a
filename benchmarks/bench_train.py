"""Benchmark of temflow's training: throughput and segmentation accuracy.

1. Throughput: training tiles per second, single process (1 and 2 torch
   threads) against data-parallel training on a 2-worker Dask LocalCluster (one
   rank per worker, one torch thread each), same model, tiles and global
   batch; data-parallel with batch norm over the global batch (the default,
   same result as one process) and with per-rank batch norm.
2. Accuracy on synthetic movies at realistic noise (the generator's defaults:
   50 e/px per frame, read noise, amorphous-support texture, drift): IoU
   against the ground-truth masks on *held-out* data (another movie, other
   seed, none of its frames seen in training) for
   - the supervised U-Net (logits > 0),
   - the unsupervised autoencoder + one movie-wide Otsu threshold of its reconstruction,
   - the classical baseline: Gaussian smoothing + movie-wide Otsu (sigma
     tuned on the training movie),
   - temflow.measure.threshold_particles (the paper's recipe), when present,
     on the raw frames and on the autoencoder's reconstruction,
   - and, to show what limits "denoise, then Otsu" here, Otsu of the same
     movie rendered almost noise-free (its pixel-level support texture alone
     keeps a global Otsu below 0.75), and both routes with the slow
     background divided out (flat field, 32 px) before Otsu.
   IoU counts recorded pixels only, for all methods: the recorded area comes
   from the ground truth (the noise-free render, exactly 0 outside it); with
   read noise about half of the black drift-border pixels read above 0, and a
   dark-particle threshold would call them particles.

Run ``python benchmarks/bench_train.py --quick`` for a small run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from temflow.models import Autoencoder, UNet
from temflow.synthetic import make_movie
from temflow.tiles import TileDataset, make_tile_set, normalise
from temflow.train import train


def _iou(called: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    called, truth = called & valid, truth & valid
    return float((called & truth).sum() / max((called | truth).sum(), 1))


def _forward(model: torch.nn.Module, frames: np.ndarray, normalisation: dict, batch: int = 4) -> np.ndarray:
    """Whole frames through the model (padded by reflection to the size multiple)."""
    model.eval()
    multiple = model.size_multiple
    _, ny, nx = frames.shape
    pad = ((0, 0), (0, (-ny) % multiple), (0, (-nx) % multiple))
    data = np.pad(normalise(frames, normalisation), pad, mode="reflect")
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            tensor = torch.from_numpy(np.ascontiguousarray(data[start : start + batch, None]))
            out.append(model(tensor)[:, 0, :ny, :nx].numpy())
    return np.concatenate(out)


def gaussian_otsu(frames: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    smooth = np.stack([ndi.gaussian_filter(f.astype(np.float32), sigma_px) for f in frames])
    level = threshold_otsu(smooth[valid])
    return (smooth < level) & valid


def flat_field(frames: np.ndarray, valid: np.ndarray, background_px: float = 32.0) -> np.ndarray:
    """Divide out the slow background (normalised convolution over recorded pixels)."""
    out = np.empty(frames.shape, np.float32)
    for k, (frame, ok) in enumerate(zip(frames.astype(np.float32), valid)):
        weight = ndi.gaussian_filter(ok.astype(np.float32), background_px)
        background = ndi.gaussian_filter(np.where(ok, frame, 0), background_px) / np.maximum(weight, 1e-6)
        out[k] = frame / np.where(background > 0, background, 1)
    return out


def throughput(args: argparse.Namespace, workdir: Path) -> dict:
    from distributed import Client, LocalCluster

    truth = make_movie(frames=args.frames, size=args.size, seed=1)
    store = make_tile_set(truth.movie, workdir / "speed.zarr", tile_size=args.tile, frames=args.frames, masks=truth.labels)
    dataset = TileDataset(store)
    kwargs = dict(epochs=args.speed_epochs, batch_size=args.batch, device="cpu", validation=None, lr=1e-3)
    singles = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        started = time.perf_counter()
        _, history = train(UNet(depth=args.depth, width=args.width), dataset, **kwargs)
        singles[threads] = (float(history["tiles_per_s"].max()), time.perf_counter() - started)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            up = time.perf_counter() - started
            torch.manual_seed(0)
            started = time.perf_counter()
            _, parallel = train(UNet(depth=args.depth, width=args.width), dataset, client=client, **kwargs)
            parallel_wall = time.perf_counter() - started
            torch.manual_seed(0)
            started = time.perf_counter()
            _, unsynced = train(
                UNet(depth=args.depth, width=args.width), dataset, client=client, sync_batch_norm=False, **kwargs
            )
            unsynced_wall = time.perf_counter() - started
    return {
        "tiles": len(dataset),
        "tile_px": args.tile,
        "single_1thread_tiles_per_s": singles[1][0],
        "single_1thread_wall_s": singles[1][1],
        "single_2threads_tiles_per_s": singles[2][0],
        "single_2threads_wall_s": singles[2][1],
        "parallel_tiles_per_s": float(parallel["tiles_per_s"].max()),
        "parallel_wall_s": parallel_wall,
        "parallel_local_bn_tiles_per_s": float(unsynced["tiles_per_s"].max()),
        "parallel_local_bn_wall_s": unsynced_wall,
        "cluster_start_s": up,
    }


def accuracy(args: argparse.Namespace, workdir: Path) -> dict:
    torch.set_num_threads(args.threads)
    train_truth = make_movie(frames=args.frames, size=args.size, seed=21)
    test_truth = make_movie(frames=args.test_frames, size=args.size, seed=22)
    test_raw = test_truth.movie.values
    test_masks = test_truth.labels.values > 0
    # the ceiling of any "denoise, then Otsu" route: the same movie rendered almost noise-free
    noiseless = make_movie(frames=args.test_frames, size=args.size, seed=22, dose_e_per_px=5000.0, read_noise_e=0.0)
    quiet = noiseless.movie.values.astype(np.float32)
    # the recorded area from the ground truth: without read noise, outside it is exactly 0 (with read
    # noise, about half of the black-border pixels read > 0 and a dark threshold would count them)
    valid = quiet > 0
    results: dict = {"test_frames": args.test_frames, "size": args.size, "particle_fraction": float(test_masks[valid].mean())}
    results["noise_free_otsu"] = {"iou": _iou((quiet < threshold_otsu(quiet[valid])) & valid, test_masks, valid)}

    # classical baseline, sigma tuned on the training movie
    train_raw = train_truth.movie.values
    train_masks = train_truth.labels.values > 0
    train_quiet = make_movie(frames=args.frames, size=args.size, seed=21, dose_e_per_px=5000.0, read_noise_e=0.0)
    train_valid = train_quiet.movie.values > 0
    sigmas = [1.0, 1.5, 2.0, 3.0]
    tuned = {s: _iou(gaussian_otsu(train_raw, train_valid, s), train_masks, train_valid) for s in sigmas}
    sigma = max(tuned, key=tuned.get)
    started = time.perf_counter()
    results["gaussian_otsu"] = {"iou": _iou(gaussian_otsu(test_raw, valid, sigma), test_masks, valid), "sigma_px": sigma}
    results["gaussian_otsu"]["seconds"] = time.perf_counter() - started
    smooth = np.stack([ndi.gaussian_filter(f.astype(np.float32), sigma) for f in test_raw])
    flat = flat_field(smooth, valid)
    results["gaussian_flat_otsu"] = {"iou": _iou((flat < threshold_otsu(flat[valid])) & valid, test_masks, valid)}
    try:
        from temflow.measure import threshold_particles

        called = threshold_particles(test_truth.movie).values
        results["threshold_particles"] = {"iou": _iou(called, test_masks, valid)}
    except ImportError:
        pass

    store = make_tile_set(train_truth.movie, workdir / "acc.zarr", tile_size=args.tile, frames=args.frames, masks=train_truth.labels)
    dataset = TileDataset(store, noise_jitter=0.03)
    norm = dataset.normalisation

    torch.manual_seed(0)
    started = time.perf_counter()
    unet, history = train(
        UNet(depth=args.depth, width=args.width), dataset, epochs=args.epochs, batch_size=args.batch,
        lr=args.lr, schedule="cosine", device="cpu", restore_best=True, progress=args.progress,
    )
    seconds = time.perf_counter() - started
    called = _forward(unet, test_raw, norm) > 0
    results["unet"] = {
        "iou": _iou(called, test_masks, valid), "train_seconds": seconds, "epochs": len(history),
        "best_val_iou": float(history["val_iou"].max()), "arguments": unet.arguments,
    }

    # a denoising autoencoder: Gaussian noise of up to args.ae_noise (normalised units; the movie's
    # own shot and read noise is about 0.12) is added to its input, its target is the tile without
    # it, so it learns to remove noise rather than to copy the frame through the bottleneck
    ae_dataset = TileDataset(store, noise_jitter=args.ae_noise)
    torch.manual_seed(0)
    started = time.perf_counter()
    autoencoder, history = train(
        Autoencoder(depth=args.ae_depth, width=args.ae_width, bottleneck_channels=args.bottleneck), ae_dataset,
        epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule="cosine", device="cpu", restore_best=True,
        progress=args.progress,
    )
    seconds = time.perf_counter() - started
    reconstruction = _forward(autoencoder, test_raw, norm)
    level = threshold_otsu(reconstruction[valid])
    called = (reconstruction < level) & valid
    levels = np.percentile(reconstruction[valid], np.arange(1.0, 30.0, 0.5))
    flat = flat_field(reconstruction, valid)
    results["autoencoder_flat_otsu"] = {"iou": _iou((flat < threshold_otsu(flat[valid])) & valid, test_masks, valid)}
    try:
        from temflow.measure import threshold_particles

        # the classical recipe's particle-excluded flat field + one movie-wide Otsu + opening, applied to
        # the reconstruction (back in counts; outside the recorded area, as the recipe itself estimates it
        # from the raw frame - 3 x 3 median below a twentieth of the typical intensity - black)
        low, high = norm["low"], norm["high"]
        recorded = ndi.median_filter(test_raw.astype(np.float32), size=(1, 3, 3)) > 0.05 * np.median(test_raw)
        counts = np.where(recorded, reconstruction * (high - low) + low, 0.0).astype(np.float32)
        recipe = threshold_particles(test_truth.movie.copy(data=counts)).values
        results["autoencoder_recipe"] = {"iou": _iou(recipe, test_masks, valid)}
    except ImportError:
        pass
    results["autoencoder_otsu"] = {
        "iou": _iou(called, test_masks, valid),
        "best_level_iou": max(_iou((reconstruction < q) & valid, test_masks, valid) for q in levels), "train_seconds": seconds, "epochs": len(history),
        "best_val_iou": float(history["val_iou"].max()), "arguments": autoencoder.arguments,
    }
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a couple of minutes on 2 cores")
    parser.add_argument("--part", choices=["all", "speed", "accuracy"], default="all")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--test-frames", type=int, default=6)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--ae-depth", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--ae-width", type=int, default=32)
    parser.add_argument("--bottleneck", type=int, default=16)
    parser.add_argument("--ae-noise", type=float, default=0.6,
                        help="largest added-noise standard deviation for the denoising autoencoder (normalised units)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the accuracy runs")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.frames, args.test_frames, args.tile = 128, 16, 4, 32
        args.depth, args.width, args.ae_width, args.epochs, args.batch = 2, 8, 16, 8, 8
    out: dict = {"arguments": vars(args) | {"json": str(args.json)}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "speed"):
            out["throughput"] = speed = throughput(args, Path(tmp))
            print(f"\nTraining throughput (UNet depth {args.depth} width {args.width}, {speed['tiles']} tiles of "
                  f"{args.tile}^2 px, global batch {args.batch}, CPU)")
            print(f"{'setup':<38}{'tiles/s':>10}{'wall s':>10}{'ratio':>8}")
            reference = speed["single_1thread_tiles_per_s"]
            for label, key in (("single process, 1 torch thread", "single_1thread"),
                               ("single process, 2 torch threads", "single_2threads"), ("Dask 2 x 1 thread, global-batch BN", "parallel"),
                               ("Dask 2 x 1 thread, per-rank BN", "parallel_local_bn")):
                print(f"{label:<38}{speed[key + '_tiles_per_s']:>10.1f}{speed[key + '_wall_s']:>10.1f}"
                      f"{speed[key + '_tiles_per_s'] / reference:>8.2f}")
            print(f"(cluster start-up {speed['cluster_start_s']:.1f} s, not included)")
        if args.part in ("all", "accuracy"):
            out["accuracy"] = acc = accuracy(args, Path(tmp))
            base = acc["gaussian_otsu"]["iou"]
            print(f"\nSegmentation IoU on {acc['test_frames']} held-out frames ({acc['size']}^2 px, another seed), "
                  f"particles {acc['particle_fraction']:.1%} of pixels")
            print(f"{'method':<40}{'IoU':>8}{'target':>8}{'vs Gaussian+Otsu':>18}{'error ratio':>13}")
            rows = [("U-Net (supervised)", "unet", 0.90), ("autoencoder + Otsu (unsupervised)", "autoencoder_otsu", 0.85),
                    ("autoencoder + flat field + Otsu", "autoencoder_flat_otsu", None),
                    ("autoencoder + threshold_particles", "autoencoder_recipe", None),
                    (f"Gaussian (sigma {acc['gaussian_otsu']['sigma_px']} px) + Otsu", "gaussian_otsu", None),
                    ("Gaussian + flat field + Otsu", "gaussian_flat_otsu", None),
                    ("measure.threshold_particles", "threshold_particles", None),
                    ("Otsu of the noise-free frames", "noise_free_otsu", None)]
            for label, key, target in rows:
                if key not in acc:
                    continue
                iou = acc[key]["iou"]
                print(f"{label:<40}{iou:>8.3f}{(f'{target:.2f}' if target else '-'):>8}{iou - base:>+18.3f}"
                      f"{(1 - base) / max(1 - iou, 1e-9):>13.2f}")
            print("(error ratio = (1 - IoU of the baseline) / (1 - IoU): how many times fewer wrong pixels)")
            print(f"autoencoder at its best single level (not Otsu's): IoU {acc['autoencoder_otsu']['best_level_iou']:.3f}; "
                  f"U-Net trained {acc['unet']['train_seconds']:.0f} s, autoencoder {acc['autoencoder_otsu']['train_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
