"""Convert a Keras model to LiteRT (`.tflite`) and prove the two give the same answers."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitrec.atomic import OutputError, atomic_write_bytes
from digitrec.bundle import ModelSource
from digitrec.runtime import LiteRTClassifier

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# Float32 LiteRT and Keras differ only by kernel rounding; anything above this is a conversion bug.
MAX_PROBABILITY_DIFFERENCE = 1e-3


class ExportMismatchError(RuntimeError):
    """The `.tflite` does not reproduce the Keras model's predictions."""


def export_tflite(model: keras.Model, path: Path) -> None:
    """Write `model` as a float32 LiteRT flatbuffer at `path` (atomically)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="digitrec-export-") as tmp:
        tmp_path = Path(tmp) / "model.tflite"
        # A fixed (None, 28, 28, 1) signature keeps the batch dimension resizable at run time.
        signature = [keras.InputSpec(shape=(None, 28, 28, 1), dtype="float32")]
        try:
            model.export(str(tmp_path), format="litert", verbose=False, input_signature=signature)
        except OSError as error:
            raise OutputError(f"cannot write {path}: LiteRT conversion in {tmp} failed"
                              f" ({error.strerror or error})") from error
        except Exception as error:
            # The conversion saves a SavedModel through TensorFlow ops first; a full temporary folder
            # surfaces as a TensorFlow OpError ("...; File too large [Op:SaveV2]"), not an OSError.
            import tensorflow as tf

            if not isinstance(error, tf.errors.OpError):
                raise
            reason = str(error.message).rsplit(";", 1)[-1].strip()
            raise OutputError(f"cannot write {path}: LiteRT conversion in {tmp} failed ({reason})") from error
        atomic_write_bytes(Path(path), tmp_path.read_bytes())


def check_agreement(model: keras.Model, tflite_path: Path, images: np.ndarray) -> float:
    """Max absolute probability difference between Keras and LiteRT on `images` (N, 28, 28, 1).

    Raises ExportMismatchError if any prediction differs or probabilities drift past the tolerance.
    """
    keras_probabilities = np.asarray(model.predict(images, batch_size=256, verbose=0))
    litert = LiteRTClassifier(ModelSource(None, Path(tflite_path)))
    litert_probabilities = litert.predict_raw(images)  # the raw outputs: 11 wide for a model with a reject output
    difference = float(np.max(np.abs(keras_probabilities - litert_probabilities))) if len(images) else 0.0
    disagreements = int(np.sum(keras_probabilities.argmax(1) != litert_probabilities.argmax(1)))
    log.info("LiteRT vs Keras on %d images: max |dp| = %.2g, %d disagreements", len(images), difference,
             disagreements)
    if difference > MAX_PROBABILITY_DIFFERENCE:
        raise ExportMismatchError(
            f"{tflite_path}: LiteRT differs from Keras by up to {difference:.3g} in probability"
            f" ({disagreements} of {len(images)} predictions differ)"
        )
    return difference


def complete_bundle(folder: Path, test_images: np.ndarray, test_labels: np.ndarray) -> dict[str, object]:
    """Add `model.tflite` to a bundle trained on another Keras backend, and measure what will be served.

    The bundle's `test_accuracy` becomes the `.tflite`'s own figure on the test set (the Keras figure is
    kept as `keras_test_accuracy`), so the number in model.json is the number `evaluate` reproduces.
    """
    from digitrec.atomic import atomic_directory
    from digitrec.bundle import KERAS_FILE, TFLITE_FILE, check_model_file, read_metadata, write_metadata
    from digitrec.evaluate import compute_metrics
    from digitrec.runtime import load_keras_model

    folder = Path(folder)
    model = load_keras_model(check_model_file(folder / KERAS_FILE))  # a FIFO would hang Keras's reader
    metadata = read_metadata(folder)
    with atomic_directory(folder) as staging:
        for item in folder.iterdir():
            if item.is_file():
                (staging / item.name).write_bytes(item.read_bytes())
        export_tflite(model, staging / TFLITE_FILE)
        metadata["litert_max_probability_difference"] = check_agreement(model, staging / TFLITE_FILE,
                                                                        test_images[:2000])
        probabilities = LiteRTClassifier(ModelSource(None, staging / TFLITE_FILE)).predict_proba(test_images)
        metrics = compute_metrics(test_labels, probabilities)
        metadata.setdefault("keras_test_accuracy", metadata.get("test_accuracy"))
        metadata["test_accuracy"] = metrics.accuracy
        metadata["per_class_accuracy"] = metrics.per_class_recall
        write_metadata(staging, metadata)
    return metadata
