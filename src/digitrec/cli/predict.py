"""`digitrec predict`: read digits and numbers from image files, on every core or on a Ray cluster.

Each input is read on its own: one bad file becomes an entry with "error" and the others go on; the exit
code is 1 if any input failed. Inputs stream from the PATH arguments (files, folders, globs; `--recursive`)
or `--from-list`; results stream, in input order, to a table (default), `--json`, `--csv`, or `--output`
FILE.jsonl|.csv|.parquet, so memory does not grow with the number of inputs. `--jobs N` reads in N
processes; `--engine ray` hands the whole job to Ray Data (`digitrec.ray_engine`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.inputs import Input, expand_paths, listed_paths, walk_images

PROGRESS_FROM = 5  # show a progress bar (on a terminal) from this many files
CHUNK = 8  # inputs per task sent to a worker process: amortises the pickling round trip
POOL_FROM = 16  # fewer inputs than this are read in this process: starting workers would cost more


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="read the digit or number in image files",
                                   description="Read the digit or number in each image file.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders (their images) or globs")
    parser.add_argument("--from-list", metavar="FILE", default=None,
                        help="also read the paths listed in FILE, one per line ('-': standard input)")
    parser.add_argument("--recursive", action="store_true", help="read folders' subfolders too (default: off)")
    parser.add_argument("--mode", choices=("auto", "digit", "number"), default="auto",
                        help="digit: the image is one digit; number: a row of digits; auto: decide (default)")
    parser.add_argument("--model", default=None,
                        help="model bundle folder or .tflite/.keras/.h5 file (default: the active model version"
                             " in --models-dir, as `digitrec serve` runs it, else the bundled model)")
    parser.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                        help="model versions folder whose active version is read when --model is not given"
                             " (default: $DIGITREC_MODELS, else the user data folder)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON array (default: a table)")
    output.add_argument("--csv", action="store_true", help="print CSV (default: a table)")
    output.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="write FILE.jsonl, .csv or .parquet as results arrive instead of printing them")
    parser.add_argument("--resume", action="store_true",
                        help="skip the inputs already in --output and append the rest (default: off)")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="processes reading images (default: 0 = every core)")
    parser.add_argument("--show", type=Path, default=None, metavar="DIR",
                        help="write what the model saw (28x28 per digit, boxes on the image) as PNGs here "
                             "(default: off)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this machine's processes (default); ray: Ray Data, needs --output "
                             "and `pip install \"digitrec[ray]\"`")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine)")
    parser.set_defaults(run=run)


# ---------------------------------------------------------------------------------------------- inputs
def inputs_of(args: argparse.Namespace) -> Iterator[Input]:
    yield from expand_paths(args.paths, args.recursive)
    if args.from_list is not None:
        for line in listed_paths(args.from_list):
            if Path(line).is_dir():
                yield from ((str(p), str(p)) for p in walk_images(Path(line), args.recursive))
            else:
                yield line, line  # a listed name is taken as it is (no glob: '*' is legal in a name)


# ------------------------------------------------------------------------------------------- reading
def read_input(reader: Any, name: str, path: str | None, mode: str, show: Path | None) -> dict[str, Any]:
    """One input -> its JSON entry (`Reader.entry`'s fields; "error" set when it could not be read)."""
    from digitrec.imageio import ImageError, read_image_file
    from digitrec.reader import describe_error, result_entry

    if path is None:
        return reader.error_entry(name, "no file matches this pattern")
    try:
        grey = read_image_file(path, max_pixels=reader.max_pixels)
        recognition = reader.read(grey, mode)
    except (ImageError, OSError) as error:
        return reader.error_entry(name, describe_error(error, path))
    entry = result_entry(name, recognition)
    if show is not None:
        try:
            write_show(show, Path(path), grey, recognition)
        except OSError as error:  # this file's pictures are lost; its reading and the other files are not
            entry["error"] = f"--show {show}: {error.strerror or error}"
    return entry


_worker_reader: Any = None  # each worker process's Reader, loaded once by `_start_worker`


def _start_worker(model: str | None) -> None:
    global _worker_reader
    import cv2

    from digitrec.reader import Reader

    cv2.setNumThreads(1)  # one core per worker process: OpenCV's own threads would only fight the others

    _worker_reader = Reader(model)


def _read_chunk(chunk: list[Input], mode: str, show: Path | None) -> list[dict[str, Any]]:
    return [read_input(_worker_reader, name, path, mode, show) for name, path in chunk]


def read_all(inputs: Iterable[Input], reader: Any, args: argparse.Namespace, jobs: int) -> Iterator[dict[str, Any]]:
    """Entries in input order; with jobs > 1, read by a pool of processes with a bounded window of work
    in flight (never the whole input list: memory stays flat however many inputs stream in)."""
    if jobs <= 1:
        for name, path in inputs:
            yield read_input(reader, name, path, args.mode, args.show)
        return
    # Not fork: a process forked while another thread holds a lock (an import, logging, a server's thread
    # in the same program) can hang forever in the child; that happened in the test suite. forkserver
    # forks workers from a fresh single-threaded process; each worker imports the library and loads the model.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    chunks = _chunked(inputs, CHUNK)
    in_flight: deque[Future[list[dict[str, Any]]]] = deque()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method), initializer=_start_worker,
                             initargs=(args.model,)) as pool:
        # 16 chunks per worker in flight: a worker the scheduler holds back for a while does not leave the
        # others idle (results leave in input order, so the window waits for its oldest chunk).
        for chunk in itertools.islice(chunks, 16 * jobs):
            in_flight.append(pool.submit(_read_chunk, chunk, args.mode, args.show))
        while in_flight:
            yield from in_flight.popleft().result()
            chunk = next(chunks, [])
            if chunk:
                in_flight.append(pool.submit(_read_chunk, chunk, args.mode, args.show))


def _chunked(items: Iterable[Input], size: int) -> Iterator[list[Input]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.Resampling.NEAREST).save(
        folder / f"{stem}.digits.png")


# ------------------------------------------------------------------------------------------- command
def run(args: argparse.Namespace) -> int:
    from digitrec.cli import UserError
    from digitrec.cli.terminal import printable
    from digitrec.output import finished_names, open_writer, output_format

    if not args.paths and args.from_list is None:
        raise UserError("give image PATHs or --from-list FILE")
    if args.jobs < 0:
        raise UserError(f"--jobs must be 0 (every core) or more, got {args.jobs}")
    if args.resume and args.output is None:
        raise UserError("--resume needs --output FILE (the results to continue)")
    if args.output is not None:
        output_format(args.output)  # a bad suffix is an error before any work
    if args.model is None:  # the registry's active version, as `serve` runs it (issue 11); else the bundled model
        from digitrec.registry import serving_choice

        model, _ = serving_choice(None, args.models_dir)
        args.model = None if model is None else str(model)
    if args.engine == "ray":
        return run_ray(args)
    inputs = inputs_of(args)
    first = next(inputs, None)
    if first is None:
        raise UserError(f"no images found in {', '.join(printable(p) for p in args.paths) or args.from_list}")
    inputs = itertools.chain([first], inputs)
    if args.resume:
        done = finished_names(args.output)
        inputs = (item for item in inputs if item[0] not in done and printable(item[0]) not in done)
    from digitrec.reader import Reader

    reader = Reader(args.model)  # a bad --model is one error line, before any work
    jobs = args.jobs or available_cores()
    if jobs > 1:
        head = list(itertools.islice(inputs, POOL_FROM))
        if len(head) < POOL_FROM:
            jobs = 1
        inputs = itertools.chain(head, inputs)
    entries = read_all(inputs, reader, args, jobs)
    if args.output is not None:
        sink: Any = open_writer(args.output, args.resume, escape=printable)
    elif args.json:
        sink = JsonArrayPrinter()
    elif args.csv:
        from digitrec.output import CsvWriter

        sink = CsvWriter(sys.stdout, escape=printable)
        sink.close = lambda: None  # stdout is not ours to close
    else:
        sink = TablePrinter()
    failed = 0
    try:
        for entry in with_progress(entries, sink):
            failed += entry["error"] is not None
            sink.write(entry)
    finally:
        sink.close()
    return 1 if failed else 0


def run_ray(args: argparse.Namespace) -> int:
    from digitrec.cli import UserError
    from digitrec.ray_engine import RayJob, run_job

    if args.output is None:
        raise UserError("--engine ray writes its results to --output FILE.parquet or FILE.jsonl")
    if args.show is not None or args.resume:
        raise UserError("--engine ray does not support --show or --resume")
    paths = list(args.paths)
    if args.from_list is not None:
        paths += list(listed_paths(args.from_list))
    summary = run_job(RayJob(paths=tuple(paths), output=str(args.output), mode=args.mode, model=args.model,
                             address=args.ray_address, recursive=args.recursive))
    print(f"{summary.rows} images, {summary.errors} errors, {summary.seconds:.1f} s "
          f"({summary.rows / max(summary.seconds, 1e-9):.1f} images/s) -> {args.output}", file=sys.stderr)
    return 1 if summary.errors else 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def with_progress(entries: Iterator[dict[str, Any]], sink: Any) -> Iterator[dict[str, Any]]:
    """Entries as they come, drawing a progress bar with images/s on a terminal's stderr."""
    if not sys.stderr.isatty():
        yield from entries
        return
    first = list(itertools.islice(entries, PROGRESS_FROM))
    if len(first) < PROGRESS_FROM:
        yield from first
        return
    from digitrec.cli.progress import batch_progress

    with batch_progress(_console(stderr=True), transient=isinstance(sink, TablePrinter)) as advance:
        for entry in itertools.chain(first, entries):
            advance(entry["error"] is not None)
            yield entry


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


class JsonArrayPrinter:
    """`--json`: one JSON array on stdout, written an entry at a time."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, entry: dict[str, Any]) -> None:
        text = json.dumps(entry, indent=2).replace("\n", "\n  ")
        sys.stdout.write(("[\n  " if self.count == 0 else ",\n  ") + text)
        self.count += 1

    def close(self) -> None:
        sys.stdout.write("\n]\n" if self.count else "[]\n")
        sys.stdout.flush()


class TablePrinter:
    """The default output: a table for people (kept until the end: a table cannot stream)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def write(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def close(self) -> None:
        print_table(self.entries)


def print_table(entries: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from digitrec.cli.terminal import printable

    def text(value: str) -> str:
        return escape(printable(value))

    table = Table(show_header=True, header_style="bold")
    table.add_column("file", overflow="fold")  # a long path wraps rather than losing its name
    table.add_column("read")
    table.add_column("confidence", justify="right")
    table.add_column("digits")
    for entry in entries:
        if entry["error"] and not entry["digits"]:
            table.add_row(text(entry["file"]), f"[red]error: {text(entry['error'])}[/red]", "", "")
            continue
        if not entry["digits"]:
            table.add_row(text(entry["file"]), "[dim]no digit[/dim]", "", "")
            continue
        per_digit = " ".join(f"{d['digit']}{'?' if d['low_confidence'] else ''} ({d['confidence']:.2f})"
                             for d in entry["digits"])
        read = text(entry["number"] or "")
        if entry["error"]:
            read += f" [red]({text(entry['error'])})[/red]"
        table.add_row(text(entry["file"]), read, f"{entry['confidence']:.3f}", per_digit)
    _console().print(table)
