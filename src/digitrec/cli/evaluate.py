"""`digitrec evaluate`: a model's accuracy on the MNIST test set, with a report of pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from digitrec.bundle import ModelSource
from digitrec.cli.arguments import one_line_errors, path
from digitrec.cli.terminal import printable
from digitrec.data import DataConfig, Split, load_split, to_model_input
from digitrec.evaluate import compute_metrics, misclassified
from digitrec.runtime import load_classifier


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="measure a model on the MNIST test set",
        description="Measure a model on the 10,000 MNIST test images: accuracy, per-class precision and"
                    " recall, and (with --report) a confusion matrix, misclassified digits and training curves.",
    )
    parser.add_argument("model", nargs="?", type=path, metavar="MODEL",
                        help="bundle folder, .keras, legacy .h5 or .tflite (default: the bundled model)")
    parser.add_argument("--data-dir", type=path, help="folder with the MNIST files (default: $DIGITREC_DATA_DIR,"
                        " else the user cache, downloading there)")
    parser.add_argument("--no-verify", action="store_true", help="accept test files with other checksums")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--report", type=path, metavar="DIR", help="write PNG pictures into DIR")
    parser.set_defaults(run=run)
    one_line_errors(parser)


def run(args: argparse.Namespace) -> int:
    test = load_split("test", DataConfig(data_dir=args.data_dir, verify_checksums=not args.no_verify))
    classifier = load_classifier(args.model)
    probabilities = classifier.predict_proba(to_model_input(test.images))
    metrics = compute_metrics(test.labels, probabilities)
    metadata = classifier.source.metadata
    members = _member_metrics(classifier.source, test) if metadata.get("ensemble_size", 1) > 1 else []
    result: dict[str, Any] = {"model": classifier.source.description, "architecture": metadata.get("architecture"),
              **metrics.to_json(), "members": members}

    if args.report is not None:
        from digitrec import report

        args.report.mkdir(parents=True, exist_ok=True)
        report.plot_confusion(metrics.confusion, args.report / "confusion_matrix.png",
                              f"{Path(classifier.source.description).name}: accuracy {metrics.accuracy:.4f}")
        report.plot_misclassified(test.images, test.labels, probabilities,
                                  misclassified(test.labels, probabilities), args.report / "misclassified.png")
        written = ["confusion_matrix.png", "misclassified.png"]
        if metadata.get("history"):
            report.plot_history(metadata["history"], args.report / "training_curves.png")
            written.append("training_curves.png")
        result["report"] = [str(args.report / name) for name in written]

    if args.json:
        print(json.dumps(result))
        return 0
    console = Console()
    console.print(f"model    {_safe(result['model'])}")
    console.print(f"accuracy [bold]{metrics.accuracy:.4f}[/bold] ({metrics.n - result['errors']}/{metrics.n})")
    table = Table("digit", "precision", "recall", "support")
    for digit, row in result["per_class"].items():
        table.add_row(digit, f"{row['precision']:.4f}", f"{row['recall']:.4f}", str(row["support"]))
    console.print(table)
    for member in members:
        console.print(f"member {member['member']}: accuracy {member['accuracy']:.4f}")
    for written_path in result.get("report", []):
        console.print(f"wrote {_safe(written_path)}")
    return 0


def _safe(text: object) -> str:
    """A file name for rich: control characters shown as escapes, [brackets] not read as markup."""
    return escape(printable(text))


def _member_metrics(source: ModelSource, test: Split) -> list[dict[str, Any]]:
    """Each member of an ensemble bundle scored alone (needs its .keras, so Keras: [] in a core install)."""
    import importlib.util

    from digitrec.runtime import load_keras_model, scores_from_outputs

    if source.keras_path is None or importlib.util.find_spec("keras") is None:
        return []
    ensemble = load_keras_model(source.keras_path)
    members = [layer for layer in ensemble.layers if getattr(layer, "layers", None)]  # the sub-models
    images = to_model_input(test.images)
    # A member with a not-a-digit output is scored on its 10 digit probabilities, as the runtime reads them.
    return [{"member": i, "accuracy": compute_metrics(
                test.labels, scores_from_outputs(np.asarray(member.predict(images, 512, verbose=0))).probabilities
            ).accuracy} for i, member in enumerate(members)]
