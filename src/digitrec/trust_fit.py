"""The fitting half of `trust_train`: 10 outputs -> 11, fine-tune, calibrate, write the bundle.

A training-only module: it imports Keras (TensorFlow).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import keras
import numpy as np

from digitrec import __version__
from digitrec.atomic import atomic_directory
from digitrec.augment import AugmentConfig, wrap_for_training
from digitrec.bundle import INPUT_FORMAT, KERAS_FILE, TFLITE_FILE, read_metadata, write_metadata
from digitrec.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from digitrec.data import DataConfig, load_split, to_model_input
from digitrec.evaluate import compute_metrics
from digitrec.runtime import NUM_DIGITS, scores_from_outputs

log = logging.getLogger(__name__)

NOT_A_DIGIT = NUM_DIGITS
NEW_ROW_BIAS = -4.0  # the new class starts unlikely: the fine-tune begins from the base model's answers
MAX_DIGIT_REJECTION = 0.003  # the not-a-digit threshold rejects at most this share of validation digits


def with_reject_output(base: keras.Model) -> keras.Model:
    """The base model with its 10-unit softmax replaced by an 11-unit one whose first 10 rows are the
    trained ones (so it starts out giving the base model's answers)."""
    old = base.layers[-1]
    weights, bias = old.get_weights()  # (F, 10), (10,)
    dense = keras.layers.Dense(NUM_DIGITS + 1, activation="softmax", name="probabilities")
    outputs = dense(old.input)
    model = keras.Model(base.input, outputs, name=f"{base.name}_with_reject")
    dense.set_weights([np.concatenate([weights, np.zeros((weights.shape[0], 1), weights.dtype)], axis=1),
                       np.concatenate([bias, [NEW_ROW_BIAS]]).astype(bias.dtype)])
    return model


def drop_unfair_negatives(synth: dict[str, Any], base: keras.Model) -> tuple[dict[str, Any], dict[str, int]]:
    """Drop negatives whose label is doubtful (looked at, not guessed: see the README).

    - blank paper: once the pipeline has read a paper edge or a shadow, its crop is often a bar or a
      rectangle outline, a 1 or a 0 to anyone; the segmenter's job, not the model's;
    - fragments the base model reads as a digit at >= 0.9: half a digit is often a whole one (the top of
      a 7, the stem of a 4); the base model being sure is a fair sign it is one.
    """
    sources = synth["sources"]
    drop = sources == "negative: blank paper"
    fragments = np.flatnonzero(sources == "negative: fragment")
    if fragments.size:
        confidence = np.asarray(base.predict(synth["images"][fragments][..., None], 512, verbose=0)).max(1)
        drop[fragments[confidence >= 0.9]] = True
    counts = dict(Counter(str(s) for s in sources[drop]))
    log.info("dropped doubtful negatives: %s", counts)
    keep = ~drop
    return {key: value[keep] for key, value in synth.items()}, counts


def freeze_leading_blocks(model: keras.Model, blocks: int) -> list[str]:
    """Freeze the first `blocks` conv blocks (conv, batch norm, ReLU): their stroke detectors are MNIST's
    and stay so (batch norm frozen runs on its MNIST statistics), and training skips their gradients,
    the costliest ones on a CPU (they run at full resolution)."""
    frozen: list[str] = []
    relus = 0
    for layer in model.layers:
        if relus >= blocks:
            break
        if layer.weights:
            layer.trainable = False
            frozen.append(layer.name)
        relus += isinstance(layer, keras.layers.ReLU)
    return frozen


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest validation loss."""

    def __init__(self, model: keras.Model, save_to: Path | None = None) -> None:
        super().__init__()
        self.inference = model
        self.save_to = save_to  # the best weights also go to disk, so a run cut short still yields a model
        self.best_loss, self.best_epoch, self.best_weights = np.inf, -1, model.get_weights()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        loss = float((logs or {}).get("val_loss", np.inf))
        log.info("epoch %d: %s", epoch + 1, {k: round(float(v), 5) for k, v in (logs or {}).items()})
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_weights = loss, epoch, self.inference.get_weights()
            if self.save_to is not None:
                self.inference.save_weights(self.save_to)


def not_digit_threshold(scores: np.ndarray, is_digit: np.ndarray) -> dict[str, float]:
    """The lowest not-a-digit threshold that rejects at most MAX_DIGIT_REJECTION of the validation digits
    (never under 0.5: below it a crop is rejected while the model thinks it more likely a digit)."""
    candidates = np.round(np.linspace(0.5, 0.99, 50), 2)
    chosen = candidates[-1]
    for threshold in candidates:
        if np.mean(scores[is_digit] >= threshold) <= MAX_DIGIT_REJECTION:
            chosen = threshold
            break
    return {"threshold": float(chosen), "validation_digits_rejected": float(np.mean(scores[is_digit] >= chosen)),
            "validation_negatives_rejected": float(np.mean(scores[~is_digit] >= chosen))}


def calibrate(val_outputs: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    """One temperature for all 11 outputs, fitted on the validation crops; ECE/NLL before and after; the
    not-a-digit threshold chosen on validation (benchmarks/trust.py --choose-threshold may re-choose it
    and the low-confidence one on USPS)."""
    temperature = fit_temperature(val_outputs, y_val)
    calibrated = apply_temperature(val_outputs, temperature)
    is_digit = y_val < NOT_A_DIGIT
    scores_before = scores_from_outputs(val_outputs)
    scores_after = scores_from_outputs(val_outputs, temperature)
    digit_correct = scores_before.probabilities[is_digit].argmax(1) == y_val[is_digit]
    calibration = {
        "temperature": round(temperature, 4),
        "temperature_fitted_on": "validation: the 5,000 MNIST validation images plus the validation synthetic crops"
                                 " (other seeds than training); minimising the NLL of all 11 outputs",
        "validation_nll": {"before": round(negative_log_likelihood(val_outputs, y_val), 5),
                           "after": round(negative_log_likelihood(calibrated, y_val), 5)},
        "validation_ece_digits": {  # top-label ECE of the digit probabilities on validation digits
            "before": round(expected_calibration_error(scores_before.probabilities[is_digit].max(1), digit_correct), 5),
            "after": round(expected_calibration_error(scores_after.probabilities[is_digit].max(1), digit_correct), 5)},
        "validation_ece_11": {
            "before": round(expected_calibration_error(val_outputs.max(1), val_outputs.argmax(1) == y_val), 5),
            "after": round(expected_calibration_error(calibrated.max(1), calibrated.argmax(1) == y_val), 5)},
    }
    chosen = not_digit_threshold(scores_after.not_digit, is_digit)
    calibration["not_digit_threshold"] = chosen["threshold"]
    calibration["not_digit_threshold_chosen"] = (
        f"lowest threshold (>= 0.5) rejecting at most {MAX_DIGIT_REJECTION:.1%} of validation digits:"
        f" rejects {chosen['validation_digits_rejected']:.2%} of them and"
        f" {chosen['validation_negatives_rejected']:.2%} of validation non-digits")
    calibration["low_confidence_threshold"] = 0.90  # provisional: benchmarks/trust.py sets it from USPS
    calibration["low_confidence_threshold_chosen"] = "provisional default; see benchmarks/trust.py"
    return calibration


def digits_with_rejector(digits: keras.Model, rejector: keras.Model) -> keras.Model:
    """One graph: the digit model's 10 probabilities, unchanged, and the rejector's not-a-digit output.

    outputs = [(1 - r) * p_0..9, r], r = the rejector's 11th output: a proper 11-way distribution whose
    renormalised digits are exactly the digit model's. Built from stock layers only (fixed Dense layers
    pick r out and make 1 - r), so the .keras loads anywhere and converts to LiteRT as it is.
    """
    image = keras.Input(digits.input_shape[1:], name="image")
    probabilities = keras.Model(digits.input, digits.output, name="digit_model")(image)  # (B, 10)
    reject = keras.Model(rejector.input, rejector.output, name="rejector")(image)  # (B, 11)
    pick = keras.layers.Dense(1, use_bias=False, trainable=False, name="not_a_digit")
    keep = keras.layers.Dense(NUM_DIGITS, trainable=False, name="is_a_digit")
    r = pick(reject)  # (B, 1)
    gate = keep(reject)  # (B, 10): 1 - r in every column
    pick.set_weights([np.eye(NUM_DIGITS + 1, dtype=np.float32)[:, NUM_DIGITS:]])
    keep.set_weights([-np.tile(np.eye(NUM_DIGITS + 1, dtype=np.float32)[:, NUM_DIGITS:], (1, NUM_DIGITS)),
                      np.ones(NUM_DIGITS, np.float32)])
    gated = keras.layers.Multiply(name="digit_share")([probabilities, gate])
    outputs = keras.layers.Concatenate(name="probabilities")([gated, r])
    return keras.Model(image, outputs, name="digits_with_rejector")


def combine_and_bundle(args: argparse.Namespace, val_synth: dict[str, Any], command: str) -> None:
    """Ship the unchanged digit model (`--base`) with a fine-tuned model's not-a-digit output (`--combine`)."""
    from digitrec.trust_train import mnist_splits

    started = time.perf_counter()
    base = keras.models.load_model(args.base / KERAS_FILE, compile=False)
    rejector = keras.models.load_model(args.combine / KERAS_FILE, compile=False)
    rejector_metadata = read_metadata(args.combine)
    model = digits_with_rejector(base, rejector)
    val_synth, _ = drop_unfair_negatives(val_synth, base)
    _, mnist_val = mnist_splits()
    x_val = np.concatenate([to_model_input(mnist_val.images), val_synth["images"][..., None]])
    y_val = np.concatenate([mnist_val.labels.astype(np.int64), val_synth["labels"]])
    calibration = calibrate(np.asarray(model.predict(x_val, batch_size=512, verbose=0)), y_val)
    test = load_split("test", DataConfig(data_dir=args.data_dir))
    x_test = to_model_input(test.images)
    metrics = compute_metrics(test.labels, scores_from_outputs(
        np.asarray(model.predict(x_test, 512, verbose=0)), calibration["temperature"]).probabilities)
    log.info("MNIST test accuracy (Keras, measured only): %.4f; calibration %s", metrics.accuracy, calibration)
    base_metadata = read_metadata(args.base)
    metadata = {
        **rejector_metadata,
        "architecture": f"{base_metadata.get('architecture')} + rejector",
        "output": {**rejector_metadata["output"],
                   "note": "[(1 - r) * digit model's 10 probabilities, r]: r = the rejector's not-a-digit probability;"
                           " the runtime applies calibration.temperature, renormalises the 10 digit probabilities"
                           " (= the digit model's) and reports the 11th as not_digit"},
        "digit_model": {"what": "the previous bundled model, unchanged (its weights, its 99.73%)",
                        "architecture": base_metadata.get("architecture"), "command": base_metadata.get("command"),
                        "test_accuracy": base_metadata.get("test_accuracy"), "date": base_metadata.get("date")},
        "rejector": {"what": "the 11-output fine-tune of the same model (fine_tune below); only its not-a-digit"
                             " output is used. Its own digit reading (MNIST test "
                             f"{rejector_metadata.get('test_accuracy')}) fell under the 99.70% bar, so it does not"
                             " read digits", "test_accuracy": rejector_metadata.get("test_accuracy"),
                     "command": rejector_metadata.get("command")},
        "calibration": calibration,
        "command": command,
        "test_accuracy": metrics.accuracy,
        "keras_test_accuracy": metrics.accuracy,
        "per_class_accuracy": metrics.per_class_recall,
        "combine_seconds": round(time.perf_counter() - started, 1),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_bundle(model, args.output, metadata, x_test, test.labels)


def fit_and_bundle(args: argparse.Namespace, train_synth: dict[str, Any], val_synth: dict[str, Any],
                   command: str) -> None:
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    from digitrec.trust_train import mnist_splits

    base = keras.models.load_model(args.base / KERAS_FILE, compile=False)
    train_synth, dropped = drop_unfair_negatives(train_synth, base)
    val_synth, _ = drop_unfair_negatives(val_synth, base)
    mnist_train, mnist_val = mnist_splits()
    if args.limit:
        mnist_train = type(mnist_train)(mnist_train.images[: args.limit], mnist_train.labels[: args.limit])
    x_train = np.concatenate([to_model_input(mnist_train.images), train_synth["images"][..., None]])
    y_train = np.concatenate([mnist_train.labels.astype(np.int64), train_synth["labels"]])
    x_val = np.concatenate([to_model_input(mnist_val.images), val_synth["images"][..., None]])
    y_val = np.concatenate([mnist_val.labels.astype(np.int64), val_synth["labels"]])
    log.info("training on %d crops (%d MNIST), validating on %d", len(y_train), len(mnist_train.labels), len(y_val))

    base_metadata = read_metadata(args.base)
    model = with_reject_output(base)
    frozen = freeze_leading_blocks(model, args.freeze)
    augmentation = AugmentConfig()
    trainable = wrap_for_training(model, augmentation, args.seed)
    steps = args.epochs * -(-len(y_train) // 128)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps, alpha=0.05)
    trainable.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy",
                      metrics=["categorical_accuracy"], jit_compile=False)
    # Targets: one-hot, except MNIST's, which are mixed with the base model's own answers (distillation):
    # the base model is what the 99.7% is made of, and pulling toward it keeps the fine-tune from
    # trading MNIST accuracy for the new classes.
    targets = np.eye(NUM_DIGITS + 1, dtype=np.float32)[y_train]
    if args.distill > 0:
        teacher = np.asarray(base.predict(x_train[: len(mnist_train.labels)], 512, verbose=0))  # (M, 10)
        mnist_targets = targets[: len(mnist_train.labels)]
        mnist_targets[:] = (1 - args.distill) * mnist_targets
        mnist_targets[:, :NUM_DIGITS] += args.distill * teacher
    val_targets = np.eye(NUM_DIGITS + 1, dtype=np.float32)[y_val]
    keep = KeepBest(model, args.cache / "best.weights.h5")
    fit_started = time.perf_counter()
    if args.from_weights is not None:  # a run cut short: finish from its best epoch's weights
        model.load_weights(args.from_weights)
        keep.best_epoch = args.from_epoch - 1
        history_values: dict[str, list[float]] = {}
    else:
        history = trainable.fit(x_train, targets, validation_data=(x_val, val_targets), batch_size=128,
                                epochs=args.epochs, shuffle=True, verbose=0, callbacks=[keep])
        model.set_weights(keep.best_weights)
        history_values = history.history
    fit_seconds = time.perf_counter() - fit_started

    val_outputs = np.asarray(model.predict(x_val, batch_size=512, verbose=0))  # (N, 11)
    calibration = calibrate(val_outputs, y_val)
    temperature = calibration["temperature"]

    test = load_split("test", DataConfig(data_dir=args.data_dir))
    x_test = to_model_input(test.images)
    test_probabilities = scores_from_outputs(np.asarray(model.predict(x_test, 512, verbose=0)), temperature)
    metrics = compute_metrics(test.labels, test_probabilities.probabilities)
    log.info("MNIST test accuracy (Keras, measured only): %.4f; calibration %s", metrics.accuracy, calibration)

    counts = Counter(str(s) for s in train_synth["sources"])
    metadata = {
        "format": "digitrec-bundle/1",
        "architecture": base_metadata.get("architecture"),
        "ensemble_size": 1,
        "input": INPUT_FORMAT,
        "output": {"name": "probabilities", "shape": [NUM_DIGITS + 1], "classes": [*range(NUM_DIGITS), "not a digit"],
                   "note": "softmax over 10 digits and 'not a digit'; the runtime applies calibration.temperature,"
                           " renormalises the 10 digit probabilities and reports the 11th as not_digit"},
        "base_model": {"architecture": base_metadata.get("architecture"), "command": base_metadata.get("command"),
                       "test_accuracy": base_metadata.get("test_accuracy"), "date": base_metadata.get("date")},
        "fine_tune": {
            "epochs": args.epochs, "kept_epoch": keep.best_epoch + 1, "learning_rate": args.learning_rate,
            "schedule": "cosine decay to 5%", "batch_size": 128, "optimizer": "Adam", "seed": args.seed,
            "augmentation": {k: getattr(augmentation, k) for k in augmentation.__dataclass_fields__},
            "frozen_layers": frozen,
            "distillation": f"MNIST targets = {1 - args.distill:g} x one-hot + {args.distill:g} x the base model's"
                            " probabilities; synthetic targets one-hot",
            "dropped_negatives": {**dropped, "why": "blank-paper crops are bars/rectangles (a 1 or a 0); fragments"
                                                   " the base model read at >= 0.9 are often whole digits"},
            "head": f"the base's 10-unit softmax copied into an 11-unit one; new row zero weights, bias {NEW_ROW_BIAS}",
            "data": {"mnist_train": len(mnist_train.labels), "synthetic": dict(sorted(counts.items())),
                     "validation": len(y_val)},
            "fit_seconds": round(fit_seconds, 1), "seconds_per_epoch": round(fit_seconds / args.epochs, 1),
            "device": "CPU (2 shared cores, no GPU)",
        },
        "negatives": NEGATIVES_RECORD,
        "styles": STYLES_RECORD,
        "calibration": calibration,
        "command": command,
        "config": {"augment": True, "validation_size": 5000},
        "test_accuracy": metrics.accuracy,
        "keras_test_accuracy": metrics.accuracy,
        "test_n": metrics.n,
        "per_class_accuracy": metrics.per_class_recall,
        # The names `digitrec evaluate --report` plots (Keras calls soft-target accuracy categorical_accuracy).
        "history": {k.replace("categorical_accuracy", "accuracy"): [float(v) for v in values]
                    for k, values in history_values.items()},
        "training_seconds": round(time.perf_counter() - started, 1),
        "versions": {"digitrec": __version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_bundle(model, args.output, metadata, x_test, test.labels)


def write_bundle(model: keras.Model, output: Path, metadata: dict[str, Any], x_test: np.ndarray,
                 y_test: np.ndarray) -> None:
    """model.keras + model.tflite (checked against Keras; its own test accuracy recorded) + model.json."""
    from digitrec.bundle import ModelSource
    from digitrec.export import export_tflite
    from digitrec.runtime import LiteRTClassifier

    with atomic_directory(Path(output)) as staging:
        model.save(staging / KERAS_FILE)
        export_tflite(model, staging / TFLITE_FILE)
        litert = LiteRTClassifier(ModelSource(None, staging / TFLITE_FILE, metadata))
        raw = litert.predict_raw(x_test[:2000])
        reference = np.asarray(model.predict(x_test[:2000], 512, verbose=0))
        difference = float(np.abs(raw - reference).max())
        if difference > 1e-3:
            raise RuntimeError(f"LiteRT differs from Keras by {difference}")
        metadata["litert_max_probability_difference"] = difference
        metrics = compute_metrics(y_test, litert.predict_proba(x_test))
        metadata["test_accuracy"] = metrics.accuracy
        metadata["per_class_accuracy"] = metrics.per_class_recall
        log.info("MNIST test accuracy of the .tflite (measured only): %.4f", metrics.accuracy)
        write_metadata(staging, metadata)


NEGATIVES_RECORD = {
    "how": "non-digit images drawn at full size, put on paper (random tone, contrast, noise, blur, lighting,"
           " 10% light-on-dark, 10% faint) and read back through the pipeline (find_ink -> segment_ink ->"
           " render_digit): one crop per image, all the ink as one digit or one of its groups. Module:"
           " digitrec.negatives (negative_crops, TRAINING_MIX).",
    "families": {
        "letter": "letters A C E F H K L M N P R T U V W X Y a c d e f h k m n p r t u v w x (1-4 letters), from"
                  " TrueType/OpenType fonts (DejaVu, Liberation, Noto Sans/Serif, FreeFont, URW Nimbus Sans/Roman,"
                  " C059, Z003) and OpenCV Hershey stroke fonts (simplex, duplex, complex, triplex, script simplex;"
                  " pen 2-11 px), tilted +-12 deg, slanted +-0.3, elastic wobble, stroke thinned or thickened",
        "font symbol": "# % & @ + * = < > ~ ^ × ÷ ± ≠ arrows ✓ ✗ ★ ☆ ☺ ☹ card suits ∞ from the same fonts",
        "symbol": "pen-drawn + × = check star (pentagram and outline) smiley arrows asterisk ~ ^ < > triangle"
                  " square dash tap dots grid, jittered, tilted, any pen width (taps 10-60% of the height)",
        "scribble": "wandering strokes with 8-20 turns, zig-zags, hatching",
        "blob": "filled irregular polygons, ink spills with tendrils, holes, blurred",
        "fragment": "half or a corner of an MNIST training digit (20-70% of its ink), or the join of two"
                    " neighbouring digits; narrow upright slivers (a 1) excluded",
        "blank paper": "ruled/squared lines, a paper edge, a shadow, a crease, speckle noise",
        "touching digits": "(added by refining) 2-3 whole MNIST training digits written touching or overlapping"
                           " (gaps -12% to +2% of the height, overlap at most 35% of the narrower one), half of"
                           " them with a 1, read whole as one group: two digits are not one (digitrec.touching)",
    },
    "excluded": "letters that look like digits (O o Q D l I i j J S s Z z B b g q G y), circles and ellipses"
                " (0), any crop whose ink is a narrow upright bar (a 1)",
    "held_out_for_benchmark": "fonts Comic Neue, URW Gothic, URW Bookman, P052, Nimbus Mono PS, Nimbus Sans"
                              " Narrow; Hershey plain, script complex, complex small; drawn heart, diamond,"
                              " infinity, hash",
}
STYLES_RECORD = {
    "how": "digits drawn at stroke level from jittered polyline templates (Catmull-Rom through control points"
           " jittered by 2.5% of the height, tilted +-8 deg, slanted +-0.25, pen 5-16% of the height) or"
           " edits of MNIST training digits, put on paper and read back through the pipeline like the"
           " negatives; crops the pipeline mangled (correlation < 0.5 with a direct rendering) dropped."
           " Module: digitrec.styles.",
    "styles": {
        "continental 1": "flag 22-45% of the height at 30-60 deg below horizontal, base half the time; edits add a"
                         " flag and (60%) a base to MNIST 1s",
        "slashed 0": "oval (open or overshooting variants) with a slash; edits slash MNIST 0s; refined with a"
                     " squared variant (superellipse: straight sides, rounded corners)",
        "open-top 4": "left stroke not meeting the stem; a 'u'-shaped variant",
        "open 9": "g-like tail hooking left; a head open at the top right",
        "short-bar 7": "bar 20-35% of the height (straight or wavy), crossed half the time",
        "crossed 7": "full bar and a cross bar; edits add a bar to MNIST 7s",
        "thin faint": "MNIST digits eroded to a 1 px-4% pen, ink 13-35% darker than the paper",
        "border cropped": "MNIST digits thickened (by up to 4% of the height; refined with up to 9%), on paper"
                          " with no margin, 30% with a sliver cut by the border",
        "photographed": "MNIST digits at 28-120 px on random paper (the pipeline's own rendering of real digits)",
    },
    "held_out_for_benchmark": "one template variant per style (serif 1, boxy slashed 0, slanted open 4, cursive-loop"
                              " 9, ticked short-bar 7, hooked crossed 7), USPS digits for the edits and pens",
}
