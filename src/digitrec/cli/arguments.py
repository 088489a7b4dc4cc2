"""Argument types that refuse nonsense at parse time, and one-line argparse errors.

`--learning-rate nan`, `-1` or `--patience -1` used to train a whole run into a 10%-accuracy bundle and
exit 0. Each numeric flag gets a type here that says what it accepts; a bad value is one line on stderr
and exit code 1, like every other user error of the CLI.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from digitrec.cli.terminal import printable


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An int type accepting `minimum` <= value (<= `maximum`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def positive_float(maximum: float) -> Callable[[str], float]:
    """A float type accepting finite values in (0, `maximum`]: no nan, no inf, no zero or negatives."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a number above 0 and at most {maximum:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def path(text: str) -> Path:
    """A path that is not empty (Path('') is '.', which no one means)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` report a bad argument as one line on stderr and exit 1 (argparse: usage + exit 2)."""

    def error(message: str) -> NoReturn:
        parser.exit(1, f"{parser.prog}: error: {printable(message)} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser
