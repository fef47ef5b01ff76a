"""The classical segmentation on real microscope images: default settings against tuned ones.

Reads a folder of public real images (it ships and downloads nothing; the layout is the one
described in the folder's CATALOG.md) and measures :func:`temflow.threshold_particles`:

* bright-field TEM with hand-drawn masks: ``msa-em_seg-track`` (its 20 test crops, 512 x 512,
  of an in-situ sintering movie, each its own one-frame movie) and ``TEM-Seg_Au750C_insitu`` (an
  in-situ movie of Au particles; its masked frames as one movie). Mean IoU per image with
  the default settings (everything from the sample), and the best of a grid of fixed
  settings (smoothing, background window, opening; one setting per data set) - the
  "tuned" classical recipe;
* HAADF-STEM with particle boxes: ``ArdaGen_STEM_YOLO`` (27 HAADF images, YOLO boxes by
  hand; a box centre is a true particle, a detected particle - ``label_particles`` of the
  mask, touching ones cut apart as the pipeline does - matches the nearest unmatched centre
  whose box holds the particle's centroid). Particle precision, recall and F1 per
  image with the default settings, over all boxes and over the *separated* particles:
  the boxes that touch no other box (a detection in a box that touches another is not
  counted either way; any other unmatched detection is false). For four images with
  clear separated particles, the best of a grid of fixed settings per image (``--only
  haadf-tuned``);
* HAADF-STEM without truth (``particlespy``): the particles found (not empty).

Run:  PYTHONPATH=src python benchmarks/bench_real_segmentation.py /path/to/realdata [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi


def _grey(path: Path) -> np.ndarray:
    from PIL import Image

    image = np.asarray(Image.open(path))
    return (image[..., 0] if image.ndim == 3 else image).astype(np.float32)


def _movie(frames: np.ndarray):
    from temflow import as_movie

    return as_movie(np.asarray(frames, dtype=np.float32), pixel_size_nm=1.0)


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def bright_field_sets(root: Path, quick: bool) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Each set: a list of (frames (n, y, x), masks (n, y, x)) movies."""
    sets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    msa = root / "nanoparticles" / "msa-em_seg-track" / "notebooks" / "dataset"
    pairs = []
    for split in ("test",):
        for image in sorted((msa / split / "images").glob("image_*.png")):
            label = msa / split / "labels" / image.name.replace("image_", "label_")
            if label.exists():
                pairs.append((_grey(image)[None], (_grey(label) > 127)[None]))
    sets["msa-em crops (BF)"] = pairs[:8] if quick else pairs
    tem = root / "nanoparticles" / "TEM-Seg_Au750C_insitu"
    truths = sorted((tem / "GroundTruth_5pct").glob("frame_*.png"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    if truths:
        frames = np.stack([_grey(tem / "Raw" / p.name) for p in truths])
        masks = np.stack([_grey(p) > 127 for p in truths])
        sets["TEM-Seg Au 750 C (BF movie)"] = [(frames, masks)]
    return sets


def _segment(frames: np.ndarray, **settings) -> tuple[np.ndarray, dict]:
    from temflow import threshold_particles

    masks = threshold_particles(_movie(frames), **settings)
    return np.asarray(masks.values), dict(masks.attrs)


def evaluate_bright_field(sets, quick: bool, grid_file: Path | None = None) -> list[dict]:
    """Default settings, and the best of a grid of fixed ones (cached in ``grid_file`` if given)."""
    import json

    cached = json.loads(grid_file.read_text()) if grid_file is not None and grid_file.exists() else {}
    grid = list(
        itertools.product(
            [1.0, 2.0, 4.0] if not quick else [1.5, 3.0],
            [32.0, 64.0, 128.0] if not quick else [32.0, 64.0],
            [0.0, 2.0, 4.0] if not quick else [0.0, 2.0],
        )
    )
    rows = []
    for name, movies in sets.items():
        t0 = time.perf_counter()
        default = []
        chosen = []
        for frames, truth in movies:
            mask, attrs = _segment(frames)
            default.extend(_iou(m, t) for m, t in zip(mask, truth))
            chosen.append(attrs)
        tuned = {tuple(json.loads(k)): v for k, v in cached.get(name, {}).items()}
        for sigma, background, opening in grid:
            if (sigma, background, opening) in tuned:
                continue
            scores = []
            for frames, truth in movies:
                mask, _ = _segment(
                    frames, particles="dark", sigma_nm=sigma, background_nm=background, opening_nm=opening,
                    min_area_nm2=0.0, max_radius_nm=float("inf"),
                )
                scores.extend(_iou(m, t) for m, t in zip(mask, truth))
            tuned[(sigma, background, opening)] = float(np.mean(scores))
        best = max(tuned, key=tuned.get)
        if grid_file is not None:
            cached[name] = {json.dumps(list(k)): v for k, v in tuned.items()}
            grid_file.write_text(json.dumps(cached))
        rows.append(
            {
                "set": name,
                "images": len(default),
                "default_iou": float(np.mean(default)),
                "best_iou": tuned[best],
                "best_setting_px": best,
                "polarity": sorted({a["particles"] for a in chosen}),
                "radius_px": float(np.median([a["radius_estimate_nm"] or np.nan for a in chosen])),
                "default_sigma_px": float(np.median([a["sigma_nm"] for a in chosen])),
                "default_background_px": float(np.median([a["background_nm"] for a in chosen])),
                "default_opening_px": float(np.median([a["opening_nm"] for a in chosen])),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _boxes(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """(n, 4) boxes as y0, x0, y1, x1 in px from YOLO's normalised cx, cy, w, h."""
    values = np.loadtxt(path, ndmin=2)
    cx, cy, w, h = (values[:, k] for k in (1, 2, 3, 4))
    ny, nx = shape
    return np.column_stack([(cy - h / 2) * ny, (cx - w / 2) * nx, (cy + h / 2) * ny, (cx + w / 2) * nx])


def isolated_boxes(boxes: np.ndarray) -> np.ndarray:
    """True for the boxes that touch no other box: the separated particles of an image."""
    y0, x0, y1, x1 = boxes.T
    overlap_y = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
    overlap_x = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    touching = (overlap_y >= 0) & (overlap_x >= 0)
    np.fill_diagonal(touching, False)
    return ~touching.any(axis=1)


def _match(centroids: np.ndarray, boxes: np.ndarray) -> dict[int, int]:
    """Detection -> box: each to the nearest unmatched box centre whose box holds the centroid."""
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    inside = (
        (centroids[:, None, 0] >= boxes[None, :, 0]) & (centroids[:, None, 0] <= boxes[None, :, 2])
        & (centroids[:, None, 1] >= boxes[None, :, 1]) & (centroids[:, None, 1] <= boxes[None, :, 3])
    )
    distance = np.hypot(*(centroids[:, None, :] - centres[None]).transpose(2, 0, 1))
    pairs = sorted((distance[i, j], i, j) for i, j in zip(*np.nonzero(inside)))
    matched: dict[int, int] = {}
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in matched and j not in used_t:
            matched[int(i)] = int(j)
            used_t.add(j)
    return matched


def _centroids(mask: np.ndarray) -> np.ndarray:
    """Centroids (px) of the particles the pipeline measures: ``label_particles``, touching ones cut apart."""
    from temflow.analysis.measure import label_particles

    labels = np.asarray(label_particles(_movie(mask[None]).astype(bool)).values[0])
    present = np.unique(labels[labels > 0])
    if len(present) == 0:
        return np.zeros((0, 2))
    return np.asarray(ndi.center_of_mass(mask, labels, present)).reshape(-1, 2)


def separated_counts(mask: np.ndarray, boxes: np.ndarray) -> tuple[int, int, int]:
    """(true, false, missed) detections of the separated particles (boxes touching no other box).

    A detection matched to a separated box is true; one whose centroid lies in a box that
    touches another (a crowded particle, scored by :func:`particle_f1` only) does not count;
    every other detection is false (support relief, noise). A separated box without a
    detection is missed.
    """
    isolated = isolated_boxes(boxes)
    centroids = _centroids(mask)
    matched = _match(centroids, boxes) if len(centroids) else {}
    crowded = boxes[~isolated]
    true = sum(isolated[j] for j in matched.values())
    ignored = 0
    for i, c in enumerate(centroids):
        if i in matched:
            ignored += not isolated[matched[i]]
        elif len(crowded) and np.any(
            (c[0] >= crowded[:, 0]) & (c[0] <= crowded[:, 2]) & (c[1] >= crowded[:, 1]) & (c[1] <= crowded[:, 3])
        ):
            ignored += 1
    false = len(centroids) - true - ignored
    return int(true), int(false), int(isolated.sum() - true)


def _f1(true: int, false: int, missed: int) -> tuple[float, float, float]:
    precision = true / (true + false) if true + false else 0.0
    recall = true / (true + missed) if true + missed else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if true else 0.0)


def particle_f1(mask: np.ndarray, boxes: np.ndarray) -> tuple[float, float, float, int]:
    """Precision, recall, F1 and the number of detections: centroids matched to box centres.

    The particles are what the pipeline measures: ``label_particles`` with touching
    particles cut apart at their necks.
    """
    centroids = _centroids(mask)
    n = len(centroids)
    if n == 0:
        return 0.0, 0.0, 0.0, 0
    tp = len(_match(centroids, boxes))
    precision, recall = tp / n, tp / len(boxes)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return precision, recall, f1, n


def evaluate_haadf(root: Path, quick: bool) -> list[dict]:
    folder = root / "nanoparticles" / "ArdaGen_STEM_YOLO" / "dataset"
    bright_field = {"PtC1", "PtC2", "Pt_carbon1", "Pt_carbon2", "PtCo1", "PtCo3"}
    rows = []
    images = [p for p in sorted((folder / "images").glob("*.jpg")) if p.stem not in bright_field]
    for image in images[:6] if quick else images:
        frame = _grey(image)
        boxes = _boxes(folder / "labels" / f"{image.stem}.txt", frame.shape)
        mask, attrs = _segment(frame[None])
        precision, recall, f1, found = particle_f1(mask[0], boxes)
        true, false, missed = separated_counts(mask[0], boxes)
        rows.append(
            {
                "image": image.stem, "size": frame.shape[0], "boxes": len(boxes), "found": found,
                "separated_boxes": int(isolated_boxes(boxes).sum()), "polarity": attrs["particles"],
                "radius_px": attrs["radius_estimate_nm"], "precision": precision, "recall": recall, "f1": f1,
                "sep_true": true, "sep_false": false, "sep_missed": missed, "sep_f1": _f1(true, false, missed)[2],
            }
        )
        print(rows[-1], flush=True)
    return rows


HAADF_TUNED = ("PtCo", "PtC3", "Pt4", "PtW5")  # the images with the clearest separated particles


def evaluate_haadf_tuned(root: Path, names: tuple[str, ...] = HAADF_TUNED) -> list[dict]:
    """Per image: the best of a grid of fixed settings (bright particles, no size bounds), by F1.

    Picked on the very image it is scored on: an upper bound of what one fixed setting
    of the classical recipe reaches, against which the default (everything from the
    image) is read.
    """
    folder = root / "nanoparticles" / "ArdaGen_STEM_YOLO" / "dataset"
    grid = list(itertools.product([1.0, 2.0, 4.0], [32.0, 64.0, 128.0], [0.0, 2.0]))
    rows = []
    for name in names:
        path = folder / "images" / f"{name}.jpg"
        if not path.exists():
            continue
        frame = _grey(path)
        boxes = _boxes(folder / "labels" / f"{name}.txt", frame.shape)
        scores = {}
        for sigma, background, opening in grid:
            mask, _ = _segment(
                frame[None], particles="bright", sigma_nm=sigma, background_nm=background, opening_nm=opening,
                min_area_nm2=0.0, max_radius_nm=float("inf"),
            )
            scores[(sigma, background, opening)] = (particle_f1(mask[0], boxes)[2], _f1(*separated_counts(mask[0], boxes))[2])
        best = max(scores, key=lambda k: scores[k][0])
        best_separated = max(scores, key=lambda k: scores[k][1])
        rows.append({"image": name, "best_f1": scores[best][0], "best_setting_px": best,
                     "best_separated_f1": scores[best_separated][1], "best_separated_setting_px": best_separated})
        print(rows[-1], flush=True)
    return rows


def print_haadf(rows: list[dict]) -> None:
    """Per image, and pooled: all particles (F1 of every box) and the separated ones."""
    print("\n| image | px | boxes | separated boxes | found | F1 all | F1 separated (true/false/missed) | radius px |")
    for r in rows:
        print(f"| {r['image']} | {r['size']} | {r['boxes']} | {r['separated_boxes']} | {r['found']} | {r['f1']:.3f} | "
              f"{r['sep_f1']:.3f} ({r['sep_true']}/{r['sep_false']}/{r['sep_missed']}) | "
              f"{r['radius_px'] if r['radius_px'] is None else round(r['radius_px'], 1)} |")
    true, false, missed = (sum(r[k] for r in rows) for k in ("sep_true", "sep_false", "sep_missed"))
    precision, recall, f1 = _f1(true, false, missed)
    print(f"\nall {len(rows)} HAADF images: mean F1 (all boxes) {np.mean([r['f1'] for r in rows]):.3f}, "
          f"mean separated F1 {np.mean([r['sep_f1'] for r in rows]):.3f}; separated particles pooled: "
          f"{true + missed} boxes, precision {precision:.3f}, recall {recall:.3f}, F1 {f1:.3f}; "
          f"polarity bright in {sum(r['polarity'] == 'bright' for r in rows)}, "
          f"empty masks {sum(r['found'] == 0 for r in rows)} {[r['image'] for r in rows if r['found'] == 0]}")


def evaluate_particlespy(root: Path) -> list[dict]:
    from temflow import open_movie, threshold_particles

    rows = []
    folder = root / "nanoparticles" / "particlespy"
    dm4 = folder / "JEOL HAADF Image.dm4"
    if dm4.exists():
        movie = open_movie(dm4)
        masks = threshold_particles(movie)
        labels, n = ndi.label(np.asarray(masks.values[0]))
        rows.append({"file": dm4.name, "polarity": masks.attrs["particles"], "reason": masks.attrs["particles_reason"],
                     "particles": n, "area_fraction": float(masks.values.mean()), "radius_nm": masks.attrs["radius_estimate_nm"]})
    hspy = folder / "SiO2 HAADF Image.hspy"
    if hspy.exists():
        import h5py

        with h5py.File(hspy, "r") as handle:
            frame = np.asarray(handle["Experiments/HAADF Image/data"], dtype=np.float32)
        mask, attrs = _segment(frame[None])
        labels, n = ndi.label(mask[0])
        rows.append({"file": hspy.name, "polarity": attrs["particles"], "reason": attrs["particles_reason"],
                     "particles": n, "area_fraction": float(mask.mean()), "radius_px": attrs["radius_estimate_nm"]})
    for row in rows:
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the real-data folder (see its CATALOG.md)")
    parser.add_argument("--quick", action="store_true", help="fewer images and a smaller grid")
    parser.add_argument("--only", choices=["bf", "haadf", "haadf-tuned", "particlespy"], default=None)
    parser.add_argument("--grid-cache", type=Path, default=None, help="JSON file keeping the tuned grid's scores")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        sys.exit(f"{args.folder} is not a folder")
    if args.only in (None, "bf"):
        rows = evaluate_bright_field(bright_field_sets(args.folder, args.quick), args.quick, args.grid_cache)
        print("\n| set | images | default IoU | best tuned IoU | best (sigma, background, opening) px | gap |")
        for r in rows:
            print(f"| {r['set']} | {r['images']} | {r['default_iou']:.3f} | {r['best_iou']:.3f} | "
                  f"{r['best_setting_px']} | {r['best_iou'] - r['default_iou']:+.3f} |")
    if args.only in (None, "haadf"):
        rows = evaluate_haadf(args.folder, args.quick)
        print_haadf(rows)
    if args.only in (None, "haadf-tuned"):
        tuned = evaluate_haadf_tuned(args.folder)
        print("\n| image | best tuned F1 (all boxes) | (sigma, background, opening) px | best tuned F1 separated | setting |")
        for r in tuned:
            print(f"| {r['image']} | {r['best_f1']:.3f} | {r['best_setting_px']} | {r['best_separated_f1']:.3f} | "
                  f"{r['best_separated_setting_px']} |")
    if args.only in (None, "particlespy"):
        evaluate_particlespy(args.folder)


if __name__ == "__main__":
    main()
