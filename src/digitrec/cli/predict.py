"""`digitrec predict`: read digits and numbers from image files.

Each input is read on its own: one bad file becomes an "error" entry and the others go on; the exit code
is 1 if any input failed. Output: a table (default), `--json` (one array, one object per input) or `--csv`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif",
                  ".avif", ".pgm", ".ppm", ".pbm", ".pnm", ".jfif"}
PROGRESS_FROM = 5  # show a progress bar (on a terminal) from this many files


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="read the digit or number in image files",
                                   description="Read the digit or number in each image file.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (their images) or globs")
    parser.add_argument("--mode", choices=("auto", "digit", "number"), default="auto",
                        help="digit: the image is one digit; number: a row of digits; auto: decide (default)")
    parser.add_argument("--model", default=None,
                        help="model bundle folder or .tflite/.keras/.h5 file (default: the bundled model)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON array (default: a table)")
    output.add_argument("--csv", action="store_true", help="print CSV (default: a table)")
    parser.add_argument("--show", type=Path, default=None, metavar="DIR",
                        help="write what the model saw (28x28 per digit, boxes on the image) as PNGs here "
                             "(default: off)")
    parser.set_defaults(run=run)


def expand_paths(paths: list[str]) -> list[tuple[str, Path | None]]:
    """PATH arguments -> (name as given, path or None when nothing matched), in order, without repeats."""
    found: list[tuple[str, Path | None]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [(str(p), p) for p in images]
        elif path.exists() or path.is_symlink() or not glob.has_magic(given):
            found.append((given, path))
        else:
            matches = sorted(glob.glob(given, recursive=True))
            found += [(m, Path(m)) for m in matches if not Path(m).is_dir()] or [(given, None)]
    seen: set[str] = set()
    return [(name, path) for name, path in found if not (name in seen or seen.add(name))]


def read_one(name: str, path: Path | None, classifier: Any, mode: str, show: Path | None) -> dict[str, Any]:
    """One input -> its JSON object (with "error" set when it could not be read)."""
    from digitrec.imageio import ImageError, read_image_file
    from digitrec.recognize import recognize

    entry: dict[str, Any] = {"file": name, "digit": None, "number": None, "confidence": None, "digits": [],
                             "error": None}
    if path is None:
        entry["error"] = "no file matches this pattern"
        return entry
    try:
        grey = read_image_file(path)
        result = recognize(grey, classifier, mode)
    except (ImageError, OSError) as error:
        message = getattr(error, "strerror", None) or str(error)
        entry["error"] = str(message).removeprefix(f"{path}: ")
        return entry
    entry.update(digit=result.digit, number=result.number, confidence=result.confidence,
                 digits=[{"digit": d.digit, "confidence": d.confidence, "box": list(d.box),
                          "probabilities": list(d.probabilities), "low_confidence": d.low_confidence}
                         for d in result.digits])
    if show is not None:
        write_show(show, path, grey, result)
    return entry


def write_show(folder: Path, path: Path, grey: np.ndarray, result: Any) -> None:
    """<stem>.boxes.png: the image with the digits' boxes; <stem>.digits.png: each 28x28 the model saw."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray((grey * 255).round().astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    line = max(1, round(max(image.size) / 300))
    for digit in result.digits:
        x, y, w, h = digit.box
        colour = (255, 140, 0) if digit.low_confidence else (220, 0, 0)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=line)
        draw.text((x, max(0, y - 12)), str(digit.digit), fill=colour)
    stem = path.stem
    image.save(folder / f"{stem}.boxes.png")
    tiles = [(d.image * 255).round().astype(np.uint8) for d in result.digits] or [np.zeros((28, 28), np.uint8)]
    strip = np.concatenate([np.pad(tile, 1, constant_values=128) for tile in tiles], axis=1)  # (30, 30 n)
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.NEAREST).save(
        folder / f"{stem}.digits.png")


def run(args: argparse.Namespace) -> int:
    from digitrec.runtime import load_classifier

    inputs = expand_paths(args.paths)
    classifier = load_classifier(args.model)  # a bad --model is one error line, before any work
    entries = []
    if len(inputs) >= PROGRESS_FROM and sys.stderr.isatty() and not (args.json or args.csv):
        from rich.progress import track

        for name, path in track(inputs, description="reading", transient=True, console=_console(stderr=True)):
            entries.append(read_one(name, path, classifier, args.mode, args.show))
    else:
        entries = [read_one(name, path, classifier, args.mode, args.show) for name, path in inputs]
    if args.json:
        print(json.dumps(entries, indent=2))
    elif args.csv:
        print_csv(entries)
    else:
        print_table(entries)
    return 1 if any(entry["error"] for entry in entries) else 0


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


def print_csv(entries: list[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "digit", "number", "confidence", "digits", "error"])
    for entry in entries:
        confidence = "" if entry["confidence"] is None else f"{entry['confidence']:.4f}"
        per_digit = " ".join(f"{d['digit']}:{d['confidence']:.3f}" for d in entry["digits"])
        writer.writerow([entry["file"], "" if entry["digit"] is None else entry["digit"], entry["number"] or "",
                         confidence, per_digit, entry["error"] or ""])


def print_table(entries: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("file", overflow="fold")  # a long path wraps rather than losing its name
    table.add_column("read")
    table.add_column("confidence", justify="right")
    table.add_column("digits")
    for entry in entries:
        if entry["error"]:
            table.add_row(escape(entry["file"]), f"[red]error: {escape(entry['error'])}[/red]", "", "")
            continue
        if not entry["digits"]:
            table.add_row(escape(entry["file"]), "[dim]no digit[/dim]", "", "")
            continue
        per_digit = " ".join(f"{d['digit']}{'?' if d['low_confidence'] else ''} ({d['confidence']:.2f})"
                             for d in entry["digits"])
        table.add_row(escape(entry["file"]), entry["number"], f"{entry['confidence']:.3f}", per_digit)
    _console().print(table)
