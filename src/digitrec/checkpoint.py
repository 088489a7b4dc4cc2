"""Resumable training: a crash-safe checkpoint after every epoch, early stopping, best-epoch weights.

Layout of a run's checkpoint folder (`<output>.checkpoints/`, removed once the bundle is written):
    run.json                     the config and command of the run (what `--resume` reads)
    member-<i>/last/             weights with optimizer state, and progress, after the last finished epoch,
                                 replaced whole each epoch (a kill -9 leaves the previous one)
    member-<i>/best.weights.h5   the inference model at its best validation accuracy so far

The optimizer's variables include its step counter, so the learning-rate schedule resumes where it was.
A training-only module: it imports Keras.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from digitrec.atomic import atomic_directory, atomic_write_text, recover_interrupted
from digitrec.keras_files import save_weights

RUN_FILE = "run.json"
STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.weights.h5"
BEST_FILE = "best.weights.h5"


def checkpoint_dir_for(output: Path) -> Path:
    """Where the checkpoints of a run writing the bundle `output` live."""
    output = Path(output)
    folder = output.with_suffix("") if output.suffix == ".h5" else output
    return folder.with_name(folder.name + ".checkpoints")


@dataclass
class RunState:
    """The run as a whole: what to resume and how long it has taken so far."""

    directory: Path
    config: dict[str, Any]  # the TrainConfig as JSON (train.py converts both ways)
    command: str
    seconds: float = 0.0  # wall time spent in earlier, interrupted processes

    @classmethod
    def start(cls, directory: Path, config: dict[str, Any], command: str) -> RunState:
        if (directory / RUN_FILE).exists():
            raise FileExistsError(
                f"{directory} holds an unfinished run; resume it with --resume, or delete the folder to start over"
            )
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"config": config, "command": command}
        atomic_write_text(directory / RUN_FILE, json.dumps(payload, indent=2))
        return cls(directory, config, command)

    @classmethod
    def load(cls, directory: Path) -> RunState:
        path = directory / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no unfinished training run to resume (no {RUN_FILE})")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            config, command = dict(payload["config"]), str(payload["command"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: unreadable run state ({error})") from error
        for member in directory.glob("member-*"):
            recover_interrupted(member / "last")
        seconds = sum(
            json.loads((member / "last" / STATE_FILE).read_text())["seconds"]
            for member in sorted(directory.glob("member-*")) if (member / "last" / STATE_FILE).is_file()
        )
        return cls(directory, config, command, seconds)


@dataclass
class MemberState:
    epochs_done: int = 0
    finished: bool = False
    best_epoch: int | None = None
    best_validation_loss: float = float("inf")
    best_validation_accuracy: float = 0.0
    epochs_without_gain: int = 0
    seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_run": self.epochs_done,
            "best_epoch": self.best_epoch,
            "validation_loss": self.best_validation_loss,
            "validation_accuracy": self.best_validation_accuracy,
            "seconds": round(self.seconds, 1),
            "history": self.history,
        }


class TrainingCheckpoint(keras.callbacks.Callback):
    """Checkpoint `trainable` (with optimizer) every epoch; keep `model`'s best weights; stop early."""

    def __init__(self, directory: Path, trainable: keras.Model, model: keras.Model,
                 patience: int | None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.trainable, self.inference_model = trainable, model
        self.patience = patience
        self.state = MemberState()
        self._epoch_started = 0.0

    # -- restoring -------------------------------------------------------------------------------
    def restore(self) -> MemberState:
        last = self.directory / "last"
        # A kill inside the swap of `last` (where no atomic exchange exists) leaves it aside as
        # `.last.<pid>.old`: put it back, or the run would silently restart from epoch 0.
        recover_interrupted(last)
        if not (last / STATE_FILE).is_file():
            return self.state
        self.state = MemberState(**json.loads((last / STATE_FILE).read_text(encoding="utf-8")))
        # Keras saves the optimizer's variables (step counter included) with the model's weights, and
        # restores them only into an optimizer that has been built.
        self.trainable.optimizer.build(self.trainable.trainable_variables)
        self.trainable.load_weights(last / WEIGHTS_FILE)
        return self.state

    def load_best(self) -> None:
        if (self.directory / BEST_FILE).is_file():
            self.inference_model.load_weights(self.directory / BEST_FILE)

    # -- saving ----------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        state = self.state
        state.epochs_done = epoch + 1
        state.seconds += time.perf_counter() - self._epoch_started
        for key, value in logs.items():
            state.history.setdefault(key, []).append(float(value))
        # Select on validation loss, not accuracy: on 5,000 images accuracy moves in steps of 0.02% and
        # its noise picked mid-schedule epochs; the loss is smooth and favours the converged end of the cycle.
        loss = float(logs.get("val_loss", logs.get("loss", float("inf"))))
        if loss < state.best_validation_loss:
            state.best_validation_loss, state.best_epoch = loss, epoch + 1
            state.best_validation_accuracy = float(logs.get("val_accuracy", logs.get("accuracy", 0.0)))
            state.epochs_without_gain = 0
            self._save_best()
        else:
            state.epochs_without_gain += 1
            if self.patience is not None and state.epochs_without_gain >= self.patience:
                self.trainable.stop_training = True
                state.finished = True
        self._save_last()

    def finish(self) -> MemberState:
        self.state.finished = True
        self._save_last()
        return self.state

    def _save_best(self) -> None:
        # Serialized in memory, then written atomically: a full disk is one OutputError, no temp left.
        save_weights(self.inference_model, self.directory / BEST_FILE)

    def _save_last(self) -> None:
        with atomic_directory(self.directory / "last") as staging:
            save_weights(self.trainable, staging / WEIGHTS_FILE)
            atomic_write_text(staging / STATE_FILE, json.dumps(asdict(self.state)))
