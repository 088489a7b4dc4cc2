"""Fine-tune a 10-digit bundle into an 11-output model that also says "not a digit", and calibrate it.

    python -m digitrec.trust_train --base BUNDLE --output OUT [--epochs 4] [--data-dir MNIST]

The data path:
1. MNIST training images (the 55,000 `train.split_validation` keeps for training; the 5,000 validation
   images are for choosing and calibrating; the test set is only measured, once, at the end);
2. synthetic crops, all made as images and read back through the pipeline (`synth`): non-digits
   (`negatives`, label 10), writing styles (`styles`), and MNIST digits photographed on random paper;
3. the base model's 10-unit softmax becomes an 11-unit one (its 10 trained rows copied, the new row
   starting at zero weight and a low bias), fine-tuned for a few epochs at a low learning rate behind
   the usual augmentation;
4. a temperature fitted on the validation crops (`calibration`), the not-a-digit threshold chosen there;
5. bundle: model.keras, model.tflite (checked against Keras), model.json recording all of the above.

A training-only module: it imports Keras (TensorFlow). Run it on a machine with the training fonts
(see `negatives.font_files`).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NOT_A_DIGIT = 10
# Crops per source for training (validation uses a tenth, from other seeds).
TRAINING_COUNTS = {"negatives": 36000, "photographed": 12000, "style": 2500, "render style": 3000}


def mnist_splits() -> tuple[Any, Any]:
    """MNIST's training images split as `train.split_validation` splits them (the same fixed shuffle),
    without importing `train` (which imports TensorFlow into every data worker)."""
    from digitrec.data import DataConfig, Split, load_split

    full = load_split("train", DataConfig(data_dir=DATA_DIR))
    order = np.random.default_rng(12345).permutation(len(full.labels))
    validation, train = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]
    return Split(full.images[train], full.labels[train]), Split(full.images[validation], full.labels[validation])


VALIDATION_SIZE = 5000  # as train.VALIDATION_SIZE


def _negatives_job(args: tuple[int, int, bool]) -> tuple[np.ndarray, list[str]]:
    from digitrec.negatives import HERSHEY_TRAIN, Source, font_files, negative_crops

    count, seed, validation = args
    train, val = mnist_splits()
    digits = (val if validation else train).images.astype(np.float32) / 255.0
    source = Source(font_files(held_out=False), HERSHEY_TRAIN, digits)
    return negative_crops(count, np.random.default_rng(seed), source)


def _styles_job(args: tuple[str, int, int, bool]) -> tuple[np.ndarray, np.ndarray]:
    from digitrec.styles import style_crops

    style, count, seed, validation = args
    train, val = mnist_splits()
    split = val if validation else train
    return style_crops(style, count, np.random.default_rng(seed), digits=split.images.astype(np.float32) / 255.0,
                       labels=split.labels, strict=True)


DATA_DIR: Path | None = None


def make_synthetic(validation: bool, scale: float, seed: int, workers: int) -> dict[str, Any]:
    """All synthetic crops for training (or validation) -> {"images", "labels", "sources"}."""
    from digitrec.styles import PHOTOGRAPHED, RENDER_STYLES, TEMPLATES

    base = seed * 1000 + (500 if validation else 0)
    chunks = 8
    negative_jobs = [(round(TRAINING_COUNTS["negatives"] * scale / chunks), base + i, validation)
                     for i in range(chunks)]
    style_jobs = [(style, round(TRAINING_COUNTS["style"] * scale), base + 100 + i, validation)
                  for i, style in enumerate(TEMPLATES)]
    style_jobs += [(style, round(TRAINING_COUNTS["render style"] * scale), base + 200 + i, validation)
                   for i, style in enumerate(RENDER_STYLES)]
    style_jobs += [(PHOTOGRAPHED, round(TRAINING_COUNTS["photographed"] * scale / 4), base + 300 + i, validation)
                   for i in range(4)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        negatives = pool.map_async(_negatives_job, negative_jobs)
        styled = pool.map_async(_styles_job, style_jobs)
        negative_parts, style_parts = negatives.get(), styled.get()
    images = [crops for crops, _ in negative_parts] + [crops for crops, _ in style_parts]
    labels = [np.full(len(crops), NOT_A_DIGIT) for crops, _ in negative_parts] + [y for _, y in style_parts]
    sources = [np.array([f"negative: {k}" for k in kinds]) for _, kinds in negative_parts]
    sources += [np.full(len(y), job[0]) for job, (_, y) in zip(style_jobs, style_parts, strict=True)]
    return {"images": np.concatenate(images).astype(np.float32), "labels": np.concatenate(labels).astype(np.int64),
            "sources": np.concatenate(sources)}


def load_or_make(path: Path, validation: bool, scale: float, seed: int, workers: int) -> dict[str, Any]:
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    started = time.perf_counter()
    data = make_synthetic(validation, scale, seed, workers)
    np.savez_compressed(path, **data)
    log.info("%s: %d crops in %.0f s", path.name, len(data["labels"]), time.perf_counter() - started)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the 10-digit bundle to start from")
    parser.add_argument("--output", type=Path, required=True, help="the bundle folder to write")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: $DIGITREC_DATA_DIR)")
    parser.add_argument("--cache", type=Path, default=Path("trust-data"), help="synthetic crops cache folder"
                        " (default: ./trust-data)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs (default: 4)")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="peak learning rate (default: 2e-4)")
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic data size factor (default: 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--workers", type=int, default=2, help="processes generating data (default: 2)")
    parser.add_argument("--data-only", action="store_true", help="make the synthetic data, then stop")
    parser.add_argument("--distill", type=float, default=0.5,
                        help="weight of the base model's answers in MNIST targets (default: 0.5)")
    parser.add_argument("--freeze", type=int, default=3, help="leading conv blocks left frozen (default: 3)")
    parser.add_argument("--from-weights", type=Path, default=None,
                        help="skip fitting: load these 11-output weights (a run cut short) and finish")
    parser.add_argument("--from-epoch", type=int, default=0, help="the epoch --from-weights came from")
    parser.add_argument("--combine", type=Path, default=None,
                        help="no training: ship --base's digits with this 11-output bundle's not-a-digit output")
    parser.add_argument("--limit", type=int, default=None, help="use only N MNIST training images (smoke runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    global DATA_DIR
    DATA_DIR = args.data_dir
    args.cache.mkdir(parents=True, exist_ok=True)
    train_synth = load_or_make(args.cache / f"train-{args.seed}.npz", False, args.scale, args.seed, args.workers)
    val_synth = load_or_make(args.cache / f"val-{args.seed}.npz", True, args.scale / 10, args.seed, args.workers)
    if args.data_only:
        return 0
    command = " ".join(["python -m digitrec.trust_train", *sys.argv[1:]])
    if args.combine is not None:
        from digitrec.trust_fit import combine_and_bundle

        combine_and_bundle(args, val_synth, command)
        return 0
    from digitrec.trust_fit import fit_and_bundle

    fit_and_bundle(args, train_synth, val_synth, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
