"""`digitrec train`: train a model (or an ensemble) on MNIST and write a bundle."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.console import Console

from digitrec.cli.arguments import integer, one_line_errors, path, positive_float
from digitrec.cli.progress import epoch_progress_callback
from digitrec.cli.terminal import printable
from digitrec.data import DataConfig

MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are 32-bit
MAX_BATCH_SIZE = 60_000  # the whole training set
MAX_LEARNING_RATE = 10.0  # Adam diverges long before; a typo (3 for 3e-3) is caught
MAX_ENSEMBLE = 100


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from digitrec.models import ARCHITECTURES, DEFAULT_ARCH  # no Keras import: builders are lazy
    from digitrec.recipes import NAMED_RECIPES, describe  # plain data, no Keras

    parser = subparsers.add_parser(
        "train", help="train a model on MNIST and write a bundle",
        description="Train on MNIST (validation split held out of the training set; the test set is only"
                    " measured) and write a bundle: model.keras, model.tflite, model.json.",
    )
    # A named recipe (architecture, epochs, batch, schedule, augmentation) fills every flag left unset; an
    # explicit --arch or other flag wins. The fast ones are tuned with benchmarks/train_speed.py.
    parser.add_argument("--recipe", choices=list(NAMED_RECIPES), default="default",
                        help=". ".join(describe(name) for name in NAMED_RECIPES).replace("%", "%%")
                        + ". Flags given explicitly override the recipe (default: default)")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default=None,
                        help=f"architecture (default: the recipe's, {DEFAULT_ARCH} for --recipe default;"
                             " 'seed' is the original system's CNN)")
    parser.add_argument("--epochs", type=integer(1), help="epochs (default: the architecture's recipe: seed 5, "
                        "bn-strided-cnn 40)")
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH_SIZE), help="batch size (default: 128)")
    parser.add_argument("--learning-rate", type=positive_float(MAX_LEARNING_RATE),
                        help="peak learning rate, above 0 (default: the recipe's)")
    parser.add_argument("--seed", type=integer(0, MAX_SEED), default=0,
                        help="random seed; member i uses seed+i (default: 0)")
    parser.add_argument("--ensemble", type=integer(1, MAX_ENSEMBLE), default=1, metavar="N",
                        help="train N members and average their probabilities (default: 1)")
    parser.add_argument("--patience", type=integer(0), default=8,
                        help="stop after this many epochs without a validation gain (default: 8; 0: never)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random rotation/scale/shear/shift/stroke width while training (default: on)")
    parser.add_argument("--schedule", choices=["constant", "one-cycle"],
                        help="learning-rate schedule (default: recipe's: one-cycle)")
    parser.add_argument("--data-dir", type=path, help="folder with the MNIST files (default: $DIGITREC_DATA_DIR,"
                        " else the user cache, downloading there)")
    parser.add_argument("--no-verify", action="store_true", help="accept MNIST files with other checksums")
    parser.add_argument("--output", type=path, default=Path("digitrec-model"),
                        help="bundle folder to write; a name ending in .h5 also writes the legacy HDF5 file"
                             " (default: digitrec-model)")
    parser.add_argument("--resume", type=path, metavar="DIR",
                        help="continue the interrupted run whose output was DIR (all other flags come from it)")
    parser.add_argument("--limit", type=integer(1), help="train on the first N training images only (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch on 2,000 images")
    parser.set_defaults(run=run)
    one_line_errors(parser)


def run(args: argparse.Namespace) -> int:
    if args.seed + args.ensemble - 1 > MAX_SEED:
        raise ValueError(f"--seed plus --ensemble must stay under 2**32 (member seeds are seed+i), got {args.seed}")
    from digitrec.train import recipe_config, train  # imports Keras/TensorFlow: only now

    console = Console(stderr=True)
    config = recipe_config(
        args.recipe, arch=args.arch, epochs=1 if args.dry_run else args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, ensemble=args.ensemble,
        patience=args.patience or None, augment=args.augment, schedule=args.schedule,
        limit=2000 if args.dry_run else args.limit,
        data=DataConfig(data_dir=args.data_dir, verify_checksums=not args.no_verify),
    )
    output = args.resume if args.resume is not None else args.output
    command = shlex.join(["digitrec", *args.argv])
    progress = epoch_progress_callback(console)
    result = train(config, output, command=command, callbacks=[progress], resume=args.resume is not None)
    meta = result.metadata
    print(f"test accuracy {meta['test_accuracy']:.4f} ({meta['architecture']}, {meta['training_seconds']:.0f} s,"
          f" {meta['seconds_per_epoch']:.1f} s/epoch)")
    for i, member in enumerate(meta["members"] if meta["ensemble_size"] > 1 else []):
        print(f"  member {i}: test accuracy {member['test_accuracy']:.4f}, best epoch {member['best_epoch']}")
    print(f"bundle written to {printable(result.output)}")
    return 0
