"""Measure a classifier on labelled digits: accuracy, per-class precision and recall, confusion matrix.

Pure numpy on probabilities; running the model is the caller's job (see runtime.py), so the same code
scores a Keras model, a `.tflite` or an ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    per_class_precision: list[float]
    per_class_recall: list[float]  # = per-class accuracy: share of each true class read correctly
    confusion: list[list[int]]  # confusion[true][predicted]

    def to_json(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "errors": self.n - sum(self.confusion[d][d] for d in range(NUM_CLASSES)),
            "per_class": {
                str(digit): {"precision": self.per_class_precision[digit], "recall": self.per_class_recall[digit],
                             "support": int(sum(self.confusion[digit]))}
                for digit in range(NUM_CLASSES)
            },
            "confusion_matrix": self.confusion,
        }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(10, 10) int counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray) -> Metrics:
    """Metrics of `probabilities` (N, 10) against integer `labels` (N,)."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    matrix = confusion_matrix(np.asarray(labels), predictions)
    correct = np.diag(matrix).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(correct / matrix.sum(axis=0))
        recall = np.nan_to_num(correct / matrix.sum(axis=1))
    n = len(labels)
    return Metrics(
        n=n,
        accuracy=float(correct.sum() / n) if n else 0.0,
        per_class_precision=[round(float(v), 6) for v in precision],
        per_class_recall=[round(float(v), 6) for v in recall],
        confusion=matrix.tolist(),
    )


def misclassified(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of wrong predictions, most confident mistakes first."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-probabilities[wrong].max(axis=1))]
