"""Pictures of an evaluation: confusion matrix, the misclassified digits, training curves (PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitrec.atomic import atomic_write_bytes


def _figure_bytes(figure: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
    """Confusion matrix with counts; the diagonal in its own colour so the errors stand out."""
    plt = _pyplot()
    matrix = np.asarray(confusion)
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    figure, axes = plt.subplots(figsize=(6.4, 5.6))
    image = axes.imshow(errors, cmap="Reds", vmin=0, vmax=max(int(errors.max()), 1))
    for true in range(10):
        for predicted in range(10):
            count = int(matrix[true, predicted])
            if count:
                on_diagonal = true == predicted
                axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                          color="#1a7f37" if on_diagonal else ("white" if count > errors.max() / 2 else "black"),
                          fontweight="bold" if on_diagonal else "normal")
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="errors")
    atomic_write_bytes(path, _figure_bytes(figure))
    plt.close(figure)


def plot_misclassified(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                       indices: np.ndarray, path: Path, limit: int = 64) -> None:
    """Grid of wrong predictions, most confident first: true / predicted / confidence under each."""
    plt = _pyplot()
    shown = indices[:limit]
    columns = 8
    rows = max(-(-len(shown) // columns), 1)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(columns * 1.25, rows * 1.45), squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, index in zip(axes_grid.flat, shown, strict=False):
        predicted = int(probabilities[index].argmax())
        axes.imshow(images[index].reshape(28, 28), cmap="gray_r", vmin=0, vmax=255 if images.max() > 1 else 1)
        axes.set_title(f"{int(labels[index])}→{predicted} {probabilities[index, predicted]:.2f}", fontsize=8)
    figure.suptitle(f"{len(indices)} misclassified (true→predicted confidence), most confident first",
                    fontsize=9)
    atomic_write_bytes(path, _figure_bytes(figure))
    plt.close(figure)


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation."""
    plt = _pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, axes in (("loss", loss_axes), ("accuracy", accuracy_axes)):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = history.get(prefix + key)
            if values:
                axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.set_title(key)
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.set_ylim(top=1.0)
    atomic_write_bytes(path, _figure_bytes(figure))
    plt.close(figure)
