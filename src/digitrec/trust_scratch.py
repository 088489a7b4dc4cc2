"""Train the bundled model from scratch: networks with 11 outputs, ten digits and "not a digit".

    python -m digitrec.trust_scratch pack --cache DIR --output data.npz       # CPU, here
    KERAS_BACKEND=jax python -m digitrec.trust_scratch fit --data data.npz --output DIR [--width 32]
    python -m digitrec.trust_scratch bundle --weights W.weights.h5 --output BUNDLE   # CPU, TensorFlow
    python -m digitrec.trust_scratch extra --data data.npz --output more.npz     # CPU: add crops to a pack
    python -m digitrec.trust_scratch refine --data more.npz --init BUNDLE --output DIR   # CPU or GPU

Why from scratch: fine-tuning the 10-digit model into 11 outputs on a CPU (`trust_train`) read MNIST at
only 99.59-99.60%, so the previous bundle carried two networks (the digit model and a rejector), at twice
the inference cost. Trained from the start on MNIST and the synthetic crops together, each network learns
the digits, the writing styles and the non-digits at once (the bundle ships the one chosen on validation;
`bundle` can also average several: README).

The data path:
1. `pack`: MNIST's training images split as `train.split_validation` splits them (55,000 to train, the
   same 5,000 to validate), plus the synthetic crops `trust_train` makes (negatives, label 10; writing
   styles; photographed digits), the doubtful negatives dropped as `trust_fit.drop_unfair_negatives`
   drops them; stored as uint8 in one .npz. The MNIST test set is not in it: nothing downstream of
   `pack` can choose anything by it.
2. `fit`: the default architecture with an 11-unit softmax behind the usual augmentation, the default
   recipe's one-cycle schedule; its length is set from a timed warm-up so a run ends inside `--budget`
   seconds. Any Keras backend: the bundled weights were trained with JAX on a GPU. Writes the last
   epoch's weights and a JSON line of validation figures.
3. `bundle`: loads the weights into the same architecture (TensorFlow), fits the temperature and the
   not-a-digit threshold on validation (`trust_fit.calibrate`), measures MNIST test once, and writes
   model.keras + model.tflite (checked against Keras) + model.json.

Refining (`extra`, then `refine`): when a writing style is found missing after the bundle was trained,
`extra` draws crops of it (`EXTRA_CROPS`, new seeds, train and validation apart) into a copy of the pack,
and `refine` continues training the bundled network on the whole copy for an epoch or two at a tenth of
the learning rate: on a CPU in minutes, where a training from scratch takes hours. `bundle` then
calibrates and measures it like any other.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.data import to_model_input

log = logging.getLogger(__name__)

NOT_A_DIGIT = 10
CLASSES = 11


def pack(cache: Path, seeds: list[int], output: Path, base: Path, data_dir: Path | None) -> None:
    """MNIST train/validation + the cached synthetic crops of `seeds` -> one uint8 .npz (no test set)."""
    import keras

    from digitrec import trust_train
    from digitrec.bundle import KERAS_FILE
    from digitrec.trust_fit import drop_unfair_negatives

    trust_train.DATA_DIR = data_dir
    train, val = trust_train.mnist_splits()
    digit_model = keras.models.load_model(base / KERAS_FILE, compile=False)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
        "train": [(train.images, train.labels, np.full(len(train.labels), "mnist"))],
        "val": [(val.images, val.labels, np.full(len(val.labels), "mnist"))],
    }
    for seed in seeds:
        for split in ("train", "val"):
            with np.load(cache / f"{split}-{seed}.npz") as stored:
                synth, dropped = drop_unfair_negatives({k: stored[k] for k in stored.files}, digit_model)
            log.info("%s-%d: %d crops kept, dropped %s", split, seed, len(synth["labels"]), dropped)
            parts[split].append((np.round(synth["images"] * 255), synth["labels"], synth["sources"]))
    packed: dict[str, Any] = {}  # name -> array (Any: numpy's stubs read **kwargs of arrays as its flags)
    for split, chunks in parts.items():
        packed[f"x_{split}"] = np.concatenate([c[0] for c in chunks]).astype(np.uint8)
        packed[f"y_{split}"] = np.concatenate([c[1] for c in chunks]).astype(np.int8)
        packed[f"s_{split}"] = np.concatenate([c[2] for c in chunks]).astype("U24")
    np.savez_compressed(output, **packed)


# Crops `extra` can add to a pack: name -> style_crops arguments (the name is the crops' source).
EXTRA_CROPS: dict[str, dict[str, Any]] = {
    # the held-out benchmark variant (boxy, pointed top and bottom) stays held out: these are rounded boxes
    "squared slashed 0": {"style": "slashed 0", "variants": ("slashed_zero_squared",)},
    # USPS-like bold markers: strokes grown by up to 9% of the height (the pack's "border cropped": 4%)
    "bolder border cropped": {"style": "border cropped", "bold_grow": 0.09},
    # negatives (label 10) of a `negatives` family: whole touching digits, which the model read as one sure digit
    "touching digits": {"negatives": "touching digits"},
    # ... and each of them cut out with a sliver of its neighbour: still that digit (`touching.cut_digit`)
    "cut from touching": {"cut": True},
}


def extra(data: Path, output: Path, names: list[str], count: int, seed: int, data_dir: Path | None) -> None:
    """The pack at `data` plus `count` training and count/10 validation crops of each of `names` -> `output`."""
    from digitrec import negatives, styles, touching, trust_train

    trust_train.DATA_DIR = data_dir
    packed: dict[str, Any] = load_packed(data)  # (Any: as in `pack`, for numpy's stubs of savez)
    for split, images in zip(("train", "val"), trust_train.mnist_splits(), strict=True):
        digits = images.images.astype(np.float32) / 255.0  # each split draws only its own MNIST images
        for number, name in enumerate(names):
            recipe = dict(EXTRA_CROPS[name])
            rng = np.random.default_rng(seed * 1000 + number * 10 + (5 if split == "val" else 0))
            wanted = count if split == "train" else max(1, count // 10)
            if "negatives" in recipe:
                source = negatives.Source((), (), digits, images.labels)
                crops, _ = negatives.negative_crops(wanted, rng, source, mix={recipe["negatives"]: 1})
                labels = np.full(len(crops), NOT_A_DIGIT)
            elif "cut" in recipe:
                crops, labels = touching.cut_digit_crops(wanted, rng, digits, images.labels)
            else:
                variants = tuple(getattr(styles, v) for v in recipe.pop("variants", ()))
                crops, labels = styles.style_crops(recipe.pop("style"), wanted, rng, digits=digits,
                                                   labels=images.labels, strict=True, variants=variants or None,
                                                   **recipe)
            log.info("%s: %d %s crops", split, len(labels), name)
            packed[f"x_{split}"] = np.concatenate([packed[f"x_{split}"], np.round(crops * 255).astype(np.uint8)])
            packed[f"y_{split}"] = np.concatenate([packed[f"y_{split}"], labels.astype(np.int8)])
            packed[f"s_{split}"] = np.concatenate([packed[f"s_{split}"], np.full(len(labels), name, "U24")])
    np.savez_compressed(output, **packed)


def load_packed(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def split_arrays(data: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """A pack's "train" or "val" split -> (model input (n, 28, 28, 1) float32, labels (n,) int64)."""
    return to_model_input(data[f"x_{split}"]), data[f"y_{split}"].astype(np.int64)


def rounded_history(history: Any) -> dict[str, list[float]]:
    """A Keras History's per-epoch figures, rounded for the RESULT line and model.json."""
    return {k: [round(float(v), 5) for v in vs] for k, vs in history.history.items()}


def build(width: int, dropout: float) -> Any:
    from digitrec.models import make_bn_strided_cnn

    return make_bn_strided_cnn(width=width, dropout=dropout, classes=CLASSES)


def compile_for_training(model: Any, seed: int, learning_rate: float, total_steps: int) -> Any:
    import keras

    from digitrec.augment import AugmentConfig, wrap_for_training
    from digitrec.train import one_cycle_schedule  # the default recipe's schedule

    trainable = wrap_for_training(model, AugmentConfig(), seed)
    trainable.compile(optimizer=keras.optimizers.Adam(one_cycle_schedule(learning_rate, total_steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return trainable


def seconds_per_step(width: int, dropout: float, seed: int, x: np.ndarray, y: np.ndarray,
                     batch_size: int) -> float:
    """Time training steps of a throw-away copy, after compilation, to size the real run's schedule."""
    import keras

    keras.utils.set_random_seed(seed)
    trainable = compile_for_training(build(width, dropout), seed, 1e-3, 1000)
    steps = 60
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.started)

    sample = min(steps * batch_size, len(y))
    trainable.fit(x[:sample], y[:sample], batch_size=batch_size, epochs=3, verbose=0, callbacks=[Clock()])
    return min(times[1:]) / math.ceil(sample / batch_size)


def deadline_callback(deadline: float) -> Any:
    """A callback that ends training before the epoch that would overrun `deadline` (perf_counter time;
    made on call, so importing this module needs no Keras).

    The warm-up's timing can be optimistic (several runs sharing one GPU slow each other once all are
    past compiling); a run stopped early still writes its weights, which a run killed at its limit does not.
    """
    import keras

    class _Deadline(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stopped = False
            self.epoch_started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            if now + 1.1 * (now - self.epoch_started) > deadline:
                self.stopped = True
                self.model.stop_training = True

    return _Deadline()


def validation_figures(model: Any, x: np.ndarray, y: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """Accuracy on MNIST validation (digits only, argmax of the 10), on synthetic digits, and the share of
    negatives / digits whose not-a-digit probability is >= 0.5."""
    outputs = np.asarray(model.predict(x, batch_size=1024, verbose=0))
    digit_answer = outputs[:, :NOT_A_DIGIT].argmax(1)
    mnist = sources == "mnist"
    negative = y == NOT_A_DIGIT
    synthetic_digit = ~mnist & ~negative
    return {
        "mnist_val_accuracy": float(np.mean(digit_answer[mnist] == y[mnist])),
        "synthetic_digit_accuracy": float(np.mean(digit_answer[synthetic_digit] == y[synthetic_digit])),
        "negatives_rejected_at_0.5": float(np.mean(outputs[negative, NOT_A_DIGIT] >= 0.5)),
        "digits_rejected_at_0.5": float(np.mean(outputs[~negative, NOT_A_DIGIT] >= 0.5)),
        "mnist_rejected_at_0.5": float(np.mean(outputs[mnist, NOT_A_DIGIT] >= 0.5)),
    }


def fit(args: argparse.Namespace) -> None:
    import keras

    started = time.perf_counter()
    data = load_packed(args.data)
    # MNIST repeated `--mnist-repeat` times per epoch: the synthetic crops outnumber it 2.4 to 1, and
    # MNIST is what the 99.7% is made of.
    mnist = np.flatnonzero(data["s_train"] == "mnist")
    rows = np.concatenate([np.arange(len(data["y_train"])), np.tile(mnist, args.mnist_repeat - 1)])
    x_train, y_train = to_model_input(data["x_train"][rows]), data["y_train"][rows].astype(np.int64)
    x_val, y_val = split_arrays(data, "val")
    order = np.random.default_rng(args.seed).permutation(len(y_train))  # the warm-up sees a mix
    step = seconds_per_step(args.width, args.dropout, args.seed, x_train[order], y_train[order], args.batch_size)
    steps_per_epoch = math.ceil(len(y_train) / args.batch_size)
    left = args.budget - (time.perf_counter() - started)
    # 1.25: validation each epoch, and slack; the schedule must finish, a run cut short is worth little
    affordable = int(left / (step * steps_per_epoch * 1.25))
    epochs = max(1, min(args.epochs, affordable))
    log.info("%.2f ms/step -> %d epochs of %d steps", step * 1e3, epochs, steps_per_epoch)

    keras.utils.set_random_seed(args.seed)
    model = build(args.width, args.dropout)
    trainable = compile_for_training(model, args.seed, args.learning_rate, epochs * steps_per_epoch)
    fit_started = time.perf_counter()
    guard = deadline_callback(started + args.budget)
    history = trainable.fit(x_train, y_train, batch_size=args.batch_size, epochs=epochs, shuffle=True,
                            validation_data=(x_val, y_val), verbose=2, callbacks=[guard])
    fit_seconds = time.perf_counter() - fit_started
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"w{args.width}-s{args.seed}"
    model.save_weights(args.output / f"{name}.weights.h5")
    record = {"name": name, "width": args.width, "seed": args.seed, "dropout": args.dropout,
              "mnist_repeat": args.mnist_repeat,
              "epochs": epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "ms_per_step": round(step * 1e3, 3), "fit_seconds": round(fit_seconds, 1),
              "epochs_run": len(history.history.get("loss", [])), "stopped_at_budget": guard.stopped,
              "backend": keras.backend.backend(), "device": os.environ.get("DIGITREC_DEVICE", ""),
              "train_n": len(y_train), "val_n": len(y_val),
              "history": rounded_history(history),
              **validation_figures(model, x_val, y_val, data["s_val"])}
    print("RESULT " + json.dumps(record), flush=True)


def refine(args: argparse.Namespace) -> None:
    """Continue training a bundle's network on a pack (with `extra`'s crops) at a low learning rate."""
    import keras

    from digitrec.bundle import KERAS_FILE, read_metadata
    from digitrec.train import fuse_batch_norm

    data = load_packed(args.data)
    x_train, y_train = split_arrays(data, "train")
    x_val, y_val = split_arrays(data, "val")
    members = read_metadata(args.init)["training"]["members"]
    if len(members) != 1:
        raise SystemExit("refine takes a bundle of one network")
    base = {key: value for key, value in members[0].items() if key != "history"}
    keras.utils.set_random_seed(args.seed)
    model = build(base["width"], base["dropout"])
    model.set_weights(keras.models.load_model(args.init / KERAS_FILE, compile=False).get_weights())
    before = validation_figures(model, x_val, y_val, data["s_val"])
    log.info("before: %s", before)
    if keras.backend.backend() == "tensorflow":
        fuse_batch_norm(model)  # a fifth faster on a CPU; the weights and the saved layers are unchanged
    steps = args.epochs * math.ceil(len(y_train) / args.batch_size)
    trainable = compile_for_training(model, args.seed, args.learning_rate, steps)
    started = time.perf_counter()
    history = trainable.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
                            validation_data=(x_val, y_val), verbose=2)
    fit_seconds = time.perf_counter() - started
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"{base['name']}-refined"
    model.save_weights(args.output / f"{name}.weights.h5")
    added = sorted({str(s) for s in data["s_train"]} & set(EXTRA_CROPS))
    # a network refined again keeps the earlier refinements' records, oldest first
    earlier = [{k: v for k, v in step.items() if k != "earlier"} for step in refinements(base)]
    record = {**base, "name": name,
              "refined": {**({"earlier": earlier} if earlier else {}), "from": base["name"],
                          "added_crops": {s: int(np.sum(data["s_train"] == s)) for s in added},
                          "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                          "seed": args.seed, "fit_seconds": round(fit_seconds, 1),
                          "backend": keras.backend.backend(), "device": os.environ.get("DIGITREC_DEVICE", "CPU"),
                          "train_n": len(y_train), "val_n": len(y_val), "before": before},
              "history": rounded_history(history),
              **validation_figures(model, x_val, y_val, data["s_val"])}
    print("RESULT " + json.dumps(record), flush=True)


def refinements(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A network's refinements, oldest first ([] for a network as `fit` left it)."""
    refined = record.get("refined")
    return [*refined.get("earlier", []), refined] if refined else []


def bundle(args: argparse.Namespace) -> None:
    """Weights from `fit` -> a calibrated, verified bundle (TensorFlow, CPU)."""
    import datetime as dt
    import platform
    from collections import Counter

    import keras

    from digitrec import __version__
    from digitrec.bundle import INPUT_FORMAT
    from digitrec.data import DataConfig, load_split
    from digitrec.evaluate import compute_metrics
    from digitrec.models import average_ensemble
    from digitrec.runtime import scores_from_outputs
    from digitrec.trust_fit import NEGATIVES_RECORD, STYLES_RECORD, calibrate, write_bundle

    if len(args.weights) != len(args.record):
        raise SystemExit("give one --record per --weights")
    records = [json.loads(path.read_text()) for path in args.record]
    members = []
    for weights, record in zip(args.weights, records, strict=True):
        member = build(record["width"], record["dropout"])
        member.load_weights(weights)
        members.append(member)
    model = members[0] if len(members) == 1 else average_ensemble(members)
    data = load_packed(args.data)
    x_val, y_val = split_arrays(data, "val")
    calibration = calibrate(np.asarray(model.predict(x_val, batch_size=512, verbose=0)), y_val)
    test = load_split("test", DataConfig(data_dir=args.data_dir))
    x_test = to_model_input(test.images)
    metrics = compute_metrics(test.labels, scores_from_outputs(
        np.asarray(model.predict(x_test, 512, verbose=0)), calibration["temperature"]).probabilities)
    log.info("MNIST test accuracy (Keras, measured only): %.4f", metrics.accuracy)
    histories = [record.pop("history", {}) for record in records]
    widths = sorted({record["width"] for record in records})
    architecture = "bn-strided-cnn" if widths == [32] else f"bn-strided-cnn (width {'/'.join(map(str, widths))})"
    metadata = {
        "format": "digitrec-bundle/1",
        "architecture": architecture if len(members) == 1 else f"average of {len(members)} x {architecture}",
        "ensemble_size": len(members),
        "input": INPUT_FORMAT,
        "output": {"name": "probabilities", "shape": [CLASSES], "classes": [*range(NOT_A_DIGIT), "not a digit"],
                   "note": "softmax over 10 digits and 'not a digit'; the runtime applies calibration.temperature,"
                           " renormalises the 10 digit probabilities and reports the 11th as not_digit"},
        "training": {
            "what": "networks trained from scratch on MNIST's 55,000 training images and the synthetic crops"
                    " together (python -m digitrec.trust_scratch); the last epoch of each one-cycle run kept;"
                    " with several, the bundle averages their 11 probabilities in one graph"
                    + ("; then refined (`refine`): trained on, at a low learning rate, with the crops `extra`"
                       " added (each member's `refined`)" if any("refined" in r for r in records) else ""),
            "members": records,
            "data": {"synthetic": dict(sorted(Counter(str(s) for s in data["s_train"]).items()))},
            "augmentation": "digitrec.augment defaults (random affine and stroke width)",
            "selection": args.selection,
        },
        "negatives": NEGATIVES_RECORD,
        "styles": STYLES_RECORD,
        "calibration": calibration,
        "command": "; ".join(f"python -m digitrec.trust_scratch fit --width {r['width']} --seed {r['seed']}"
                             + "".join(f" && ... refine --epochs {step['epochs']} --learning-rate"
                                       f" {step['learning_rate']} --seed {step['seed']}"
                                       for step in refinements(r))
                             for r in records),
        "config": {"augment": True, "validation_size": 5000},
        "test_accuracy": metrics.accuracy,
        "keras_test_accuracy": metrics.accuracy,
        "test_n": metrics.n,
        "per_class_accuracy": metrics.per_class_recall,
        "history": histories[0],
        "versions": {"digitrec": __version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "backend": records[0].get("backend"),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_bundle(model, args.output, metadata, x_test, test.labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="MNIST + synthetic crops -> one uint8 .npz")
    packing.add_argument("--cache", type=Path, required=True, help="trust_train's synthetic crops folder")
    packing.add_argument("--seeds", type=int, nargs="+", default=[1], help="synthetic data seeds (default: 1)")
    packing.add_argument("--base", type=Path, required=True, help="a 10-digit bundle (drops doubtful negatives)")
    packing.add_argument("--data-dir", type=Path, default=None, help="MNIST folder")
    packing.add_argument("--output", type=Path, required=True)
    fitting = commands.add_parser("fit", help="train one 11-output network")
    fitting.add_argument("--data", type=Path, required=True)
    fitting.add_argument("--output", type=Path, required=True, help="folder for the weights")
    fitting.add_argument("--width", type=int, default=32)
    fitting.add_argument("--dropout", type=float, default=0.4)
    fitting.add_argument("--seed", type=int, default=1)
    fitting.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: 30)")
    fitting.add_argument("--budget", type=float, default=400.0, help="wall seconds for the whole run")
    fitting.add_argument("--batch-size", type=int, default=128)
    fitting.add_argument("--learning-rate", type=float, default=4e-3)
    fitting.add_argument("--mnist-repeat", type=int, default=1, help="MNIST images per epoch, in copies")
    adding = commands.add_parser("extra", help="a pack plus crops of EXTRA_CROPS -> a new .npz")
    adding.add_argument("--data", type=Path, required=True, help="the .npz `pack` wrote")
    adding.add_argument("--names", nargs="+", choices=sorted(EXTRA_CROPS), default=sorted(EXTRA_CROPS))
    adding.add_argument("--count", type=int, default=5000, help="training crops of each (validation: a tenth)")
    adding.add_argument("--seed", type=int, default=11, help="random seed (default: 11; the pack used 1)")
    adding.add_argument("--data-dir", type=Path, default=None, help="MNIST folder")
    adding.add_argument("--output", type=Path, required=True)
    refining = commands.add_parser("refine", help="continue training a bundle's network at a low learning rate")
    refining.add_argument("--data", type=Path, required=True, help="the .npz `extra` wrote")
    refining.add_argument("--init", type=Path, required=True, help="the bundle to start from")
    refining.add_argument("--output", type=Path, required=True, help="folder for the weights")
    refining.add_argument("--epochs", type=int, default=2)
    refining.add_argument("--batch-size", type=int, default=128)
    refining.add_argument("--learning-rate", type=float, default=4e-4, help="peak (default: a tenth of fit's)")
    refining.add_argument("--seed", type=int, default=1)
    bundling = commands.add_parser("bundle", help="calibrate, measure and export one network's weights")
    bundling.add_argument("--weights", type=Path, nargs="+", required=True,
                          help="the .weights.h5 that `fit` wrote (several: their average is bundled)")
    bundling.add_argument("--record", type=Path, nargs="+", required=True,
                          help="the RESULT line `fit` printed, as JSON, one per --weights")
    bundling.add_argument("--data", type=Path, required=True, help="the .npz `pack` wrote (validation)")
    bundling.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (test set, measured only)")
    bundling.add_argument("--selection", default="", help="how this network was chosen, for model.json")
    bundling.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "pack":
        pack(args.cache, args.seeds, args.output, args.base, args.data_dir)
    elif args.command == "extra":
        extra(args.data, args.output, args.names, args.count, args.seed, args.data_dir)
    elif args.command == "fit":
        fit(args)
    elif args.command == "refine":
        refine(args)
    else:
        bundle(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
