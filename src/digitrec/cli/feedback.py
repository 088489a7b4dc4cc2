"""`digitrec feedback add | list | delete | export`: the corrections store from the command line."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from digitrec.store import STORE_ENV


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, metavar="PATH|URL",
                        help=f"corrections store: an SQLite file or postgresql://USER@HOST/DB (default: ${STORE_ENV},"
                             " else corrections.sqlite3 in the user data folder)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from digitrec.cli.models import add_models_dir_argument

    parser = subparsers.add_parser("feedback", help="store, list, delete and export corrections",
                                   description="Corrections: images with their right reading, kept for"
                                               " `digitrec finetune`.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="store images with their right reading")
    add.add_argument("files", nargs="*", type=Path, metavar="FILE")
    add.add_argument("--label", metavar="L", help="the right reading of every FILE: digits such as 7 or 2026,"
                                                  " or 'none' for not a digit")
    add.add_argument("--from-csv", type=Path, metavar="CSV", help="a CSV with columns file,label (paths relative"
                                                                   " to the CSV's folder)")
    add.add_argument("--mode", choices=("auto", "digit", "number"), default="auto",
                     help="how the model reads each image (default: auto)")
    add.add_argument("--model", type=Path, default=None, metavar="M",
                     help="the model whose reading is recorded (default: the active version, else the bundled one)")
    add_models_dir_argument(add)
    listing = actions.add_parser("list", help="the stored corrections, newest first")
    listing.add_argument("--offset", type=int, default=0, help="skip this many (default: 0)")
    listing.add_argument("--limit", type=int, default=50, help="show at most this many (default: 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    delete = actions.add_parser("delete", help="delete corrections by id")
    delete.add_argument("ids", nargs="+", type=int, metavar="ID")
    export = actions.add_parser("export", help="write the corrections' 28x28 inputs as MNIST IDX files or PNGs")
    export.add_argument("output", type=Path, metavar="DIR")
    export.add_argument("--format", choices=("idx", "png"), default="idx",
                        help="idx: MNIST's four files (train = corrections used for training, t10k = the held-out"
                             " slice; read them with --data-dir DIR --no-verify); png: one file per input"
                             " (default: idx)")
    for action in actions.choices.values():
        add_store_argument(action)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from digitrec.store import open_store

    with open_store(args.store) as store:
        return {"add": add_corrections, "list": list_corrections, "delete": delete_corrections,
                "export": export_corrections}[args.action](store, args)


def read_csv(path: Path) -> list[tuple[Path, str]]:
    """(file, label) rows of a CSV with columns file,label (a header row naming them is optional)."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read ({error})") from error
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["file", "label"]:
        rows = rows[1:]
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: row {number}: expected file,label, got {','.join(row)!r}")
        file = Path(row[0].strip())
        pairs.append((file if file.is_absolute() else path.parent / file, row[1].strip()))
    return pairs


def add_corrections(store, args: argparse.Namespace) -> int:
    from digitrec.cli import UserError
    from digitrec.imageio import read_image_bytes
    from digitrec.registry import serving_choice
    from digitrec.runtime import load_classifier
    from digitrec.store import parse_label
    from digitrec.store.capture import capture

    pairs: list[tuple[Path, str]] = []
    if args.files:
        if args.label is None:
            raise UserError("give --label L for the files (or use --from-csv)")
        pairs += [(file, parse_label(args.label)) for file in args.files]
    elif args.label is not None:
        raise UserError("--label needs at least one FILE")
    if args.from_csv:
        pairs += [(file, parse_label(label)) for file, label in read_csv(args.from_csv)]
    if not pairs:
        raise UserError("nothing to add: give FILE... --label L, or --from-csv CSV")
    model_path, version = serving_choice(args.model, args.models_dir)
    classifier = load_classifier(model_path)
    failed = 0
    for file, label in pairs:
        try:
            data = read_image_bytes(file)
            correction = capture(data, label, classifier, source="cli", mode=args.mode, model_version=version)
        except (ValueError, OSError) as error:  # one bad file does not stop the rest
            print(f"digitrec feedback add: error: {file}: {error}", file=sys.stderr)
            failed += 1
            continue
        ident = store.add(correction)
        answer = correction.answer.get("number") or "nothing"
        print(f"added {ident}: {file} label {label} (model read {answer})")
    return 1 if failed else 0


def list_corrections(store, args: argparse.Namespace) -> int:
    corrections = store.page(args.offset, args.limit)
    if args.json:
        print(json.dumps({"total": store.count(), "items": [c.to_json() for c in corrections]}, indent=2))
        return 0
    table = Table("id", "label", "model read", "version", "source", "inputs", "when")
    for c in corrections:
        table.add_row(str(c.id), c.label, str(c.answer.get("number") or "-"), c.model_version or "-", c.source,
                      str(c.n_inputs), c.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    Console().print(table)
    print(f"{store.count()} corrections in {store.description}")
    return 0


def delete_corrections(store, args: argparse.Namespace) -> int:
    missing = [ident for ident in args.ids if not store.delete(ident)]
    for ident in args.ids:
        if ident not in missing:
            print(f"deleted {ident}")
    if missing:
        from digitrec.cli import UserError

        raise UserError(f"no correction with id {', '.join(map(str, missing))}")
    return 0


def export_corrections(store, args: argparse.Namespace) -> int:
    import cv2

    from digitrec.atomic import atomic_write_bytes
    from digitrec.idx import write_idx
    from digitrec.store import is_held_out

    images: dict[str, list[np.ndarray]] = {"train": [], "t10k": []}
    labels: dict[str, list[int]] = {"train": [], "t10k": []}
    written = skipped = 0
    for c in store.iter_all():
        classes = c.digit_labels
        if classes is None or c.inputs is None:
            skipped += 1  # the label's digits do not line up with what was read
            continue
        if args.format == "png":
            for index, (image, cls) in enumerate(zip(c.inputs, classes, strict=True)):
                name = "none" if cls == 10 else str(cls)
                _, png = cv2.imencode(".png", image)
                atomic_write_bytes(args.output / name / f"{c.id}_{index}.png", png.tobytes())
                written += 1
            continue
        split = "t10k" if is_held_out(c.id) else "train"
        for image, cls in zip(c.inputs, classes, strict=True):
            if cls < 10:  # IDX/MNIST labels are 0-9: "not a digit" inputs are left out of this format
                images[split].append(image)
                labels[split].append(cls)
                written += 1
    if args.format == "idx":
        for split in ("train", "t10k"):
            stack = np.array(images[split], np.uint8).reshape(-1, 28, 28)  # (N, 28, 28)
            write_idx(args.output / f"{split}-images-idx3-ubyte", stack)
            write_idx(args.output / f"{split}-labels-idx1-ubyte", np.array(labels[split], np.uint8))
    print(f"wrote {written} inputs to {args.output} ({args.format})"
          + (f"; skipped {skipped} corrections whose label does not match the digits read" if skipped else ""))
    return 0
