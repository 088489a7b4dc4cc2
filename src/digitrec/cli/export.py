"""`digitrec export`: finish a bundle trained on a non-TensorFlow Keras backend by adding model.tflite."""

from __future__ import annotations

import argparse

from digitrec.cli.arguments import one_line_errors, path
from digitrec.cli.terminal import printable
from digitrec.data import DataConfig, load_split, to_model_input


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="add the LiteRT model.tflite to a bundle (after training on e.g. the JAX backend)",
        description="Convert a bundle's model.keras to model.tflite, check they agree, and record the"
                    " .tflite's own MNIST test accuracy in model.json.",
    )
    parser.add_argument("bundle", type=path, metavar="BUNDLE", help="bundle folder holding model.keras")
    parser.add_argument("--data-dir", type=path, help="folder with the MNIST files (default: $DIGITREC_DATA_DIR,"
                        " else the user cache)")
    parser.set_defaults(run=run)
    one_line_errors(parser)


def run(args: argparse.Namespace) -> int:
    from digitrec.export import complete_bundle

    test = load_split("test", DataConfig(data_dir=args.data_dir))
    metadata = complete_bundle(args.bundle, to_model_input(test.images), test.labels)
    print(f"wrote {printable(args.bundle / 'model.tflite')}: test accuracy {metadata['test_accuracy']:.4f}")
    return 0
