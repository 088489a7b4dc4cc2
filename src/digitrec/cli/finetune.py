"""`digitrec finetune`: train the active (or given) model further on the stored corrections, behind a gate."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from digitrec.cli.feedback import add_store_argument
from digitrec.cli.models import add_models_dir_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a model on the stored corrections (with MNIST replay, behind a gate)",
        description="Start from the base model, train on the corrections (oversampled) mixed with MNIST,"
                    " hold every 5th correction (by id) out for validation, and write a bundle only if MNIST"
                    " test accuracy drops by at most 0.10 points and the held-out corrections do not get worse.")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="bundle folder to write")
    parser.add_argument("--model", type=Path, default=None, metavar="BASE",
                        help="base bundle, .keras or .h5 (default: the active version, else the bundled model)")
    parser.add_argument("--data-dir", type=Path, help="folder with the MNIST files (default: $DIGITREC_DATA_DIR,"
                        " else the user cache)")
    parser.add_argument("--promote", action="store_true",
                        help="add the result to the model versions and make it active (default: off)")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the mix (default: 3)")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default: 1e-4)")
    parser.add_argument("--replay", type=int, default=None, metavar="N",
                        help="MNIST training images mixed into each epoch (default: 6000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="replay only from the first N MNIST training images (smoke runs, tests)")
    parser.add_argument("--test-limit", type=int, default=None, metavar="N",
                        help="gate on the first N MNIST test images (default: all 10,000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_store_argument(parser)
    add_models_dir_argument(parser)
    parser.set_defaults(run=run)


def progress_callback(console: Console) -> Any:
    """One bar over all training steps of all epochs."""
    import keras

    class StepProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.progress = Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console)
            self.task: Any = None
            self.done = 0
            self.running = False

        def set_total(self, total: int) -> None:
            self.task = self.progress.add_task("fine-tuning", total=total, loss="")
            self.progress.start()
            self.running = True

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.done += 1
            if self.task is not None and (self.done % 5 == 0):
                loss = (logs or {}).get("loss")
                self.progress.update(self.task, completed=self.done,
                                     loss=f"loss {float(loss):.4f}" if loss is not None else "")

        def stop(self) -> None:
            if self.running:
                self.progress.update(self.task, completed=self.done)
                self.progress.stop()
                self.running = False

    return StepProgress()


def run(args: argparse.Namespace) -> int:
    from digitrec.data import DataConfig
    from digitrec.finetune import GateRefused, default_config, finetune
    from digitrec.registry import Registry, serving_choice
    from digitrec.store import open_store

    config = default_config(epochs=args.epochs, limit=args.limit, data=DataConfig(data_dir=args.data_dir),
                            seed=args.seed, test_limit=args.test_limit, learning_rate=args.learning_rate,
                            replay=args.replay)
    base, base_version = serving_choice(args.model, args.models_dir)
    console = Console(stderr=True)
    progress = progress_callback(console)

    def on_stage(stage: str, steps: int) -> None:
        progress.stop()
        if stage == "training":
            progress.set_total(steps)
        else:
            console.print(f"[dim]{stage}...[/dim]")

    command = "digitrec " + shlex.join(args.argv) if getattr(args, "argv", None) else "digitrec finetune"
    with open_store(args.store) as store:
        try:
            result = finetune(store, args.output, config, base=base, base_version=base_version, command=command,
                              callbacks=[progress], on_stage=on_stage)
        except GateRefused as refused:
            progress.stop()
            print_figures(refused.figures, args.json)
            print(f"digitrec finetune: error: {refused}", file=sys.stderr)
            return 2
        finally:
            progress.stop()
    print_figures(result.figures, args.json)
    print(f"wrote {result.output} (base {base_version or base or 'the bundled model'},"
          f" {result.figures['corrections']} corrections, {result.figures['seconds']} s)")
    if args.promote:
        registry = Registry(args.models_dir)
        version = registry.add(result.output)
        registry.promote(version.name)
        print(f"promoted: {version.name} is the active model version")
    return 0


def print_figures(figures: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    print(f"MNIST test     {figures['mnist_test_before']:.4f} -> {figures['mnist_test_after']:.4f}"
          f"  (drop {figures['mnist_drop_points']:.2f} points, {figures['mnist_test_n']} images)")
    print(f"held-out       {figures['held_out_before']:.4f} -> {figures['held_out_after']:.4f}"
          f"  ({figures['held_out_n']} inputs of corrections never trained on)")
    print(f"trained on     {figures['train_inputs']} correction inputs x{figures['oversample']} + MNIST replay;"
          f" {figures['corrections']} corrections used"
          + (f", {figures['skipped_misaligned']} skipped (label/digits mismatch"
             + (f"; {figures['skipped_no_input']} where the reading found no ink to read"
                if figures.get("skipped_no_input") else "") + ")" if figures['skipped_misaligned'] else "")
          + (f", {figures['skipped_none']} 'none' skipped (no not-a-digit output)" if figures['skipped_none']
             else ""))
    if "temperature" in figures:
        print(f"temperature    {figures['temperature']} (refitted on held-out validation data; see model.json)")
