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
   - the supervised U-Net (predict, then segment: probability > 0.5),
   - the unsupervised route as a user runs it: a denoising autoencoder,
     temflow.segmentation.inference.predict, then temflow.segmentation.inference.segment (the reconstruction's
     darkness against a flat field that leaves the particles out, one
     movie-wide Otsu threshold, an opening of 2 px), and the same without
     the flat field and opening (one Otsu on the raw reconstruction) or
     without the opening,
   - the classical baseline: Gaussian smoothing + movie-wide Otsu (sigma
     tuned on the training movie),
   - temflow.analysis.measure.threshold_particles (the paper's recipe: Gaussian,
     the same flat field, Otsu, opening) on the raw frames,
   - and, to show what limits "denoise, then one Otsu", Otsu of the same
     movie rendered almost noise-free (its pixel-level support texture alone
     keeps a global Otsu below 0.75).
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

from temflow.segmentation.inference import predict, segment
from temflow.analysis.measure import threshold_particles
from temflow.segmentation.models import Autoencoder, UNet
from temflow.synthetic.generator import make_movie
from temflow.segmentation.tiles import DENOISING_NOISE, TileDataset, make_tile_set
from temflow.segmentation.training import train


def _iou(called: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    called, truth = called & valid, truth & valid
    return float((called & truth).sum() / max((called | truth).sum(), 1))


def gaussian_otsu(frames: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    smooth = np.stack([ndi.gaussian_filter(f.astype(np.float32), sigma_px) for f in frames])
    level = threshold_otsu(smooth[valid])
    return (smooth < level) & valid


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
    results["threshold_particles"] = {"iou": _iou(threshold_particles(test_truth.movie).values, test_masks, valid)}

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
    called = segment(predict(test_truth.movie, unet, tile=None, normalisation=norm)).values
    results["unet"] = {
        "iou": _iou(called, test_masks, valid), "train_seconds": seconds, "epochs": len(history),
        "best_val_iou": float(history["val_iou"].max()), "arguments": unet.arguments,
    }

    # a denoising autoencoder: Gaussian noise of up to args.ae_noise (normalised units; the movie's
    # own shot and read noise is about 0.12) is added to its input, its target is the tile without
    # it, so it learns to remove noise rather than to copy the frame through the bottleneck. Trained
    # with several seeds: the figures vary from one seed to the next more than between settings
    ae_dataset = TileDataset(store, noise_jitter=args.ae_noise)
    runs: dict[str, list[float]] = {"autoencoder_otsu": [], "autoencoder_unsmoothed": [], "autoencoder_plain_otsu": [],
                                    "best_level": [], "train_seconds": []}
    for seed in range(args.ae_seeds):
        torch.manual_seed(seed)
        started = time.perf_counter()
        autoencoder, history = train(
            Autoencoder(depth=args.ae_depth, width=args.ae_width, bottleneck_channels=args.bottleneck), ae_dataset,
            epochs=args.ae_epochs, batch_size=args.batch, lr=args.lr, schedule="cosine", device="cpu",
            restore_best=True, progress=args.progress,
        )
        runs["train_seconds"].append(time.perf_counter() - started)
        # the library's route: predict (the reconstruction in counts, NaN outside the recorded
        # area), then segment (smoothing, flat field, one movie-wide Otsu, opening)
        reconstruction = predict(test_truth.movie, autoencoder, tile=None, normalisation=norm)
        runs["autoencoder_otsu"].append(_iou(segment(reconstruction).values, test_masks, valid))
        runs["autoencoder_unsmoothed"].append(_iou(segment(reconstruction, sigma_nm=0.0).values, test_masks, valid))
        runs["autoencoder_plain_otsu"].append(_iou(segment(reconstruction, flat_field=False).values, test_masks, valid))
        values = reconstruction.values
        levels = np.nanpercentile(values[valid], np.arange(1.0, 30.0, 0.5))
        runs["best_level"].append(max(_iou((values < q) & valid, test_masks, valid) for q in levels))
    for key in ("autoencoder_otsu", "autoencoder_unsmoothed", "autoencoder_plain_otsu"):
        results[key] = {"iou": float(np.mean(runs[key])), "worst": float(np.min(runs[key])), "per_seed": runs[key]}
    results["autoencoder_otsu"].update(
        train_seconds=float(np.mean(runs["train_seconds"])), epochs=args.ae_epochs, arguments=autoencoder.arguments,
        seeds=args.ae_seeds,
    )
    results["autoencoder_plain_otsu"]["best_level_iou"] = float(np.mean(runs["best_level"]))
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
    parser.add_argument("--ae-depth", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--ae-width", type=int, default=32)
    parser.add_argument("--bottleneck", type=int, default=8)
    parser.add_argument("--ae-noise", type=float, default=DENOISING_NOISE,
                        help="largest added-noise standard deviation for the denoising autoencoder (normalised units)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--ae-seeds", type=int, default=3, help="autoencoders trained, one per seed; mean and worst reported")
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the accuracy runs")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.frames, args.test_frames, args.tile = 128, 16, 4, 32
        args.depth, args.width, args.ae_width, args.epochs, args.ae_epochs, args.batch = 2, 8, 16, 8, 8, 8
        args.ae_seeds = 1
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
            rows = [("U-Net (supervised)", "unet", 0.90),
                    ("autoencoder + segment (unsupervised)", "autoencoder_otsu", 0.85),
                    ("  the same without the smoothing", "autoencoder_unsmoothed", None),
                    ("  one Otsu on the raw reconstruction", "autoencoder_plain_otsu", None),
                    (f"Gaussian (sigma {acc['gaussian_otsu']['sigma_px']} px) + Otsu", "gaussian_otsu", None),
                    ("measure.threshold_particles", "threshold_particles", None),
                    ("Otsu of the noise-free frames", "noise_free_otsu", None)]
            for label, key, target in rows:
                if key not in acc:
                    continue
                iou = acc[key]["iou"]
                worst = f" (worst of {len(acc[key]['per_seed'])} seeds {acc[key]['worst']:.3f})" if "per_seed" in acc[key] else ""
                print(f"{label:<40}{iou:>8.3f}{(f'{target:.2f}' if target else '-'):>8}{iou - base:>+18.3f}"
                      f"{(1 - base) / max(1 - iou, 1e-9):>13.2f}{worst}")
            print("(error ratio = (1 - IoU of the baseline) / (1 - IoU): how many times fewer wrong pixels)")
            print(f"raw reconstruction at its best single level (not Otsu's): IoU {acc['autoencoder_plain_otsu']['best_level_iou']:.3f}; "
                  f"U-Net trained {acc['unet']['train_seconds']:.0f} s, autoencoder {acc['autoencoder_otsu']['train_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
