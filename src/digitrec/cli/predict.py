"""`digitrec predict`: read digits and numbers from image files."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="read the digit or number in image files",
                                   description="Read the digit or number in each image file.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("digitrec predict: being built (issue 4)")
