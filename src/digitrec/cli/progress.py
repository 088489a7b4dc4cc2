"""Terminal rendering of training progress: one rich progress bar per epoch with loss and accuracy."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def epoch_progress_callback(console: Console) -> Any:
    """A Keras callback drawing a bar per epoch (Keras imported here: only `train` needs this)."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.member = 0
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.member += 1

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            steps = self.params.get("steps") or 0
            label = f"epoch {epoch + 1}/{self.params.get('epochs')}"
            if self.member > 1:
                label = f"member {self.member} {label}"
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), console=console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(label, total=steps, metrics="")

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.progress is not None and batch % 10 == 0:
                self.progress.update(self.task, completed=batch + 1, metrics=_format(logs))

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=self.params.get("steps") or 0, metrics=_format(logs))
                self.progress.stop()
                self.progress = None

    return EpochProgress()


def _format(logs: dict[str, Any] | None) -> str:
    logs = logs or {}
    parts = []
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {float(logs[key]):.4f}")
    return "  ".join(parts)
