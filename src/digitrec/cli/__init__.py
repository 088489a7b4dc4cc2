"""The `digitrec` command: parse, build a config, call the library, print. One module per subcommand.

Each subcommand module has `add_parser(subparsers)` and `run(args) -> int`; errors a user can fix
(bad file, bad data, bad flag) become one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from digitrec import __version__
from digitrec.cli import evaluate, export, feedback, finetune, models, predict, serve, train
from digitrec.cli.arguments import one_line_errors
from digitrec.cli.terminal import printable
from digitrec.extras import missing_extra

COMMANDS = (train, evaluate, predict, serve, export, feedback, models, finetune)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec", description="Handwritten digit recognition: train, evaluate, predict, serve."
    )
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages (default: off)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return one_line_errors(parser)  # unknown flags of any command are reported here: one line, exit 1


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter is noise on a terminal; set before anything imports it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, recorded in what `train` writes
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("digitrec: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        explained = missing_extra(error)
        if explained is None:
            raise
        print(f"digitrec {args.command}: error: {explained}", file=sys.stderr)
        return 1
    except (UserError, ValueError, OSError) as error:
        # Library errors (DataError, BundleError, IdxError, OutputError...) are ValueError/OSError
        # subclasses with messages written for users.
        message = str(error).strip() or type(error).__name__
        # Messages quote file names, which may hold terminal escape sequences: shown, not obeyed.
        print(f"digitrec {args.command}: error: {printable(message, keep_newlines=True)}", file=sys.stderr)
        return 1
