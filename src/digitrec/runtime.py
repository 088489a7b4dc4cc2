"""Run a trained model: 28x28 digit images in, class probabilities out.

`LiteRTClassifier` is the serving path: the LiteRT runtime alone, no TensorFlow import, so it starts in
a fraction of a second and stays small. `KerasClassifier` runs `.keras` / legacy `.h5` files through
Keras (TensorFlow), for evaluation and for models that were never exported. `load_classifier` picks.

A model has 10 outputs (the digits) or 11 (the digits and "not a digit"). Both classifiers turn either
into `Scores` the same way (`scores_from_outputs`): the model.json's calibration temperature applied,
then the 10 digit probabilities renormalised among themselves, the 11th output as the not-a-digit score.
`predict_proba` keeps returning (N, 10) digit probabilities for every model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from digitrec.bundle import ModelSource, resolve_model
from digitrec.calibration import apply_temperature

IMAGE_SHAPE = (28, 28)
NUM_DIGITS = 10


class Classifier(Protocol):
    """Anything that maps images (N, 28, 28) float32 in [0, 1] to probabilities (N, 10)."""

    source: ModelSource

    def predict_proba(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Scores:
    """What a classifier says about a batch of 28x28 crops."""

    probabilities: np.ndarray  # (N, 10) float32: each digit's probability, rows summing to 1
    not_digit: np.ndarray  # (N,) float32 in [0, 1]: probability the crop is not a digit (0 for 10-class models)


def classify(classifier: Classifier, images: np.ndarray) -> Scores:
    """Digit probabilities and not-a-digit scores for (N, 28, 28) images, from any classifier.

    Classifiers that know "not a digit" (a reject output, calibration) provide `predict_scores`; any other
    object with `predict_proba` (an original 10-class model, a test double) scores every crop as a digit.
    """
    predict_scores = getattr(classifier, "predict_scores", None)
    if predict_scores is not None:
        scores: Scores = predict_scores(images)
        return scores
    probabilities = np.asarray(classifier.predict_proba(images), dtype=np.float32)  # (N, 10)
    return Scores(probabilities, np.zeros(len(probabilities), np.float32))


@dataclass(frozen=True)
class Thresholds:
    """Where a model's scores become decisions; measured per model and recorded in its model.json."""

    not_digit: float = 0.5  # a crop whose not-a-digit score is at least this is rejected
    low_confidence: float = 0.90  # a digit whose (calibrated) probability is below this is flagged unsure


def decision_thresholds(classifier: Classifier) -> Thresholds:
    """The thresholds in the model's metadata (`calibration` in model.json), else the defaults."""
    metadata = getattr(getattr(classifier, "source", None), "metadata", None) or {}
    calibration = metadata.get("calibration") or {}
    defaults = Thresholds()
    return Thresholds(
        not_digit=float(calibration.get("not_digit_threshold", defaults.not_digit)),
        low_confidence=float(calibration.get("low_confidence_threshold", defaults.low_confidence)),
    )


def temperature_of(source: ModelSource) -> float:
    """The calibration temperature in a model's metadata (1: none, the softmax as trained)."""
    calibration = (source.metadata or {}).get("calibration") or {}
    temperature = float(calibration.get("temperature", 1.0))
    if not 0.0 < temperature < 1e3:
        raise ValueError(f"{source.description}: calibration temperature {temperature} is not a positive number")
    return temperature


def scores_from_outputs(outputs: np.ndarray, temperature: float = 1.0) -> Scores:
    """A model's softmax outputs (N, 10) or (N, 11) -> `Scores`, calibrated by `temperature`.

    With 11 outputs the digit probabilities are the first 10 renormalised: "which digit, if it is one",
    so a digit the model also doubts is a digit still reads as that digit.
    """
    outputs = np.asarray(outputs, np.float32)
    if outputs.ndim != 2 or outputs.shape[1] not in (NUM_DIGITS, NUM_DIGITS + 1):
        raise ValueError(f"expected model outputs of shape (N, 10) or (N, 11), got {outputs.shape}")
    calibrated = apply_temperature(outputs, temperature) if len(outputs) else outputs
    if outputs.shape[1] == NUM_DIGITS:
        return Scores(np.ascontiguousarray(calibrated, np.float32), np.zeros(len(outputs), np.float32))
    digits = calibrated[:, :NUM_DIGITS].astype(np.float64)  # (N, 10)
    digits /= np.maximum(digits.sum(axis=1, keepdims=True), 1e-30)
    return Scores(digits.astype(np.float32), np.ascontiguousarray(calibrated[:, NUM_DIGITS], np.float32))


def as_model_batch(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) or (N, 28, 28, 1), any real dtype in [0, 1] -> (N, 28, 28, 1) float32."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[..., np.newaxis]
    if batch.ndim != 4 or batch.shape[1:] != (*IMAGE_SHAPE, 1):
        raise ValueError(f"expected images of shape (N, 28, 28[, 1]), got {batch.shape}")
    return batch


class LiteRTClassifier:
    """A `.tflite` model on the LiteRT interpreter; safe to share between threads.

    A LiteRT interpreter is not thread-safe, so each thread gets its own (they share nothing but the
    model bytes, and building one takes about a millisecond).
    """

    def __init__(self, source: ModelSource, num_threads: int = 1) -> None:
        if source.tflite_path is None:
            raise ValueError(f"{source.description}: no .tflite model to run")
        self.source = source
        self.num_threads = num_threads
        self.temperature = temperature_of(source)
        self._model_bytes = Path(source.tflite_path).read_bytes()
        self._local = threading.local()
        self._interpreter()  # fail now, not on the first request, if the file is not a model

    def _interpreter(self) -> Any:
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            try:
                interpreter = Interpreter(model_content=self._model_bytes, num_threads=self.num_threads)
            except (ValueError, RuntimeError) as error:
                raise ValueError(f"{self.source.description}: not a valid LiteRT model ({error})") from error
            self._local.interpreter = interpreter
            self._local.batch_size = None
        return interpreter

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images).probabilities  # (N, 10)

    def predict_scores(self, images: np.ndarray) -> Scores:
        return scores_from_outputs(self.predict_raw(images), self.temperature)

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """The model's own outputs (N, 10) or (N, 11), uncalibrated."""
        batch = as_model_batch(images)
        interpreter = self._interpreter()
        input_index = interpreter.get_input_details()[0]["index"]
        if self._local.batch_size != len(batch):
            interpreter.resize_tensor_input(input_index, batch.shape, strict=False)
            interpreter.allocate_tensors()
            self._local.batch_size = len(batch)
        output = interpreter.get_output_details()[0]
        if len(batch) == 0:
            return np.zeros((0, int(output["shape"][-1])), np.float32)
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output["index"]), dtype=np.float32)  # (N, 10|11), a copy


class KerasClassifier:
    """A `.keras` or legacy `.h5` model run by Keras (imports TensorFlow)."""

    def __init__(self, source: ModelSource) -> None:
        if source.keras_path is None:
            raise ValueError(f"{source.description}: no Keras model to run")
        self.source = source
        self.temperature = temperature_of(source)
        self.model = load_keras_model(source.keras_path)
        self._lock = threading.Lock()

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images).probabilities  # (N, 10)

    def predict_scores(self, images: np.ndarray) -> Scores:
        return scores_from_outputs(self.predict_raw(images), self.temperature)

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """The model's own outputs (N, 10) or (N, 11), uncalibrated."""
        batch = as_model_batch(images)
        if len(batch) == 0:
            return np.zeros((0, int(self.model.output_shape[-1])), np.float32)
        with self._lock:
            return np.asarray(self.model.predict(batch, batch_size=256, verbose=0), dtype=np.float32)


def load_keras_model(path: Path) -> Any:
    """Load a `.keras` or legacy `.h5` model for inference, with a clear error for anything else."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same to a user
        raise ValueError(f"{path}: not a Keras model Keras can load ({type(error).__name__}: {error})") from error


def load_classifier(path: str | Path | None = None, *, prefer: str = "litert") -> Classifier:
    """The classifier for a bundle, `.tflite`, `.keras` or `.h5` (None: the bundled default model).

    `prefer="litert"` runs the `.tflite` when there is one (serving, predicting); `prefer="keras"` runs the
    Keras file when there is one.
    """
    source = resolve_model(path)
    if source.tflite_path is not None and (prefer == "litert" or source.keras_path is None):
        return LiteRTClassifier(source)
    return KerasClassifier(source)
