"""Terminal progress: one rich bar per training epoch (loss, accuracy); images read and images/s for predict."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """Images per second, averaged over rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} images/s", style="progress.data.speed")


@contextmanager
def batch_progress(console: Console, transient: bool = False) -> Iterator[Callable[[bool], None]]:
    """A running count of images read (the total is unknown: inputs stream), errors, images/s and time;
    yields `advance(failed)`, to call once per image."""
    progress = Progress(TextColumn("reading"), BarColumn(), TextColumn("{task.completed:,} images"),
                        TextColumn("{task.fields[errors]}"), RateColumn(), TimeElapsedColumn(),
                        console=console, transient=transient)
    task = progress.add_task("reading", total=None, errors="")
    errors = 0

    def advance(failed: bool) -> None:
        nonlocal errors
        errors += failed
        progress.update(task, advance=1, errors=f"{errors:,} errors" if errors else "")

    with progress:
        yield advance


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
