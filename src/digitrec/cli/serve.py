"""`digitrec serve`: the web page and JSON API, on uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from digitrec.bundle import resolve_model

LIMITS_HELP = """\
limits (each refusal is immediate, JSON, with Retry-After where waiting helps):
  uploads      413 past 10 MB or 40 megapixels (from the header, before decoding); 415 for anything
               but PNG, JPEG, GIF, BMP, TIFF, WebP, HEIC, and for JPEGs costing far more to decode than
               their size (hundreds of progressive scans, or data far too short for the declared size)
  busy         503 + Retry-After when 64 recognitions are already queued or the oldest has waited 4 s,
               ~128 MB of uploads are in flight, or 48 megapixels are being decoded; /healthz still
               answers at once
  slow         503 at --timeout; a connection silent for --header-timeout, or idle --keep-alive after
               an answer, is closed; past --max-connections the longest-idle connection is closed
  deadline     big images (over 1 MB, or PNGs over 4 megapixels) are read in child processes, killed
               0.5 s after their request's --timeout: their CPU stops with the request
exposure:
  --host 0.0.0.0 serves everyone who can reach this machine: no authentication, no per-client rate
  limit (put a reverse proxy in front for those). --cors-origin '*' lets any web page call the API
  from its visitors' browsers.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the web page and JSON API", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the drawing/upload page at / and the JSON API at /api/v1 (docs at /docs).",
        epilog=LIMITS_HELP)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 exposes the server to every network this machine is on,"
                             " with no authentication and no per-client rate limit (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--model", type=Path, default=None, metavar="M",
                        help="model bundle folder or .tflite file (default: the model bundled with digitrec)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="server processes, each with its own model (default: 1)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="longest a request may take, upload included, before a 503 (default: 10)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser calls from this origin; repeatable; '*' lets every web site call"
                             " the API from its visitors' browsers (default: none, CORS off)")
    parser.add_argument("--max-connections", type=int, default=0, metavar="N",
                        help="open connections per process; past it the longest-idle one is closed"
                             " (default: 0, from the open-file limit: `ulimit -n` minus 128, at most 4096)")
    parser.add_argument("--max-queued", type=int, default=64, metavar="N",
                        help="recognitions waiting for a thread before new ones get a 503 (default: 64)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="a connection must send its request headers within this (default: 10)")
    parser.add_argument("--keep-alive", type=float, default=5.0, metavar="S",
                        help="close a keep-alive connection idle this long (default: 5)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="log every request (default: on)")
    # Corrections and model versions (issue 11).
    parser.add_argument("--api-token", default=os.environ.get("DIGITREC_API_TOKEN") or None, metavar="TOKEN",
                        help="bearer token the feedback API requires (default: $DIGITREC_API_TOKEN; without one,"
                             " feedback is accepted only on a loopback --host)")
    parser.add_argument("--store", default=None, metavar="PATH|URL",
                        help="corrections store: SQLite file or postgresql:// URL (default: $DIGITREC_STORE, else"
                             " the user data folder)")
    parser.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                        help="model versions; without --model the active one is served and a promote or rollback"
                             " is picked up within seconds (default: $DIGITREC_MODELS, else the user data folder)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from digitrec.server import acceptor
    from digitrec.server.app import create_app
    from digitrec.server.connections import uvicorn_options
    from digitrec.server.settings import SETTINGS_ENV, ServerSettings

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1-65535, got {args.port}")
    for flag, value in (("--timeout", args.timeout), ("--header-timeout", args.header_timeout),
                        ("--keep-alive", args.keep_alive)):
        if not 0 < value < 86_400:
            raise ValueError(f"{flag} must be a number of seconds above 0, got {value}")
    if args.max_connections < 0 or args.max_queued < 0:
        raise ValueError("--max-connections and --max-queued must be 0 or more")
    settings = ServerSettings(model_path=args.model, request_timeout_s=args.timeout,
                              cors_origins=tuple(args.cors_origin), max_connections=args.max_connections,
                              max_queued=args.max_queued, header_timeout_s=args.header_timeout,
                              keep_alive_s=args.keep_alive)
    settings = dataclasses.replace(settings, host=args.host, api_token=args.api_token, store=args.store,
                                   models_dir=args.models_dir)  # corrections and model versions (issue 11)
    if settings.feedback_mode == "off":
        print(f"digitrec serve: feedback (corrections) is off: --host {args.host} is not loopback and no"
              " --api-token (or DIGITREC_API_TOKEN) is set", file=sys.stderr)
    resolve_model(settings.model_path)  # a wrong --model is one line on stderr now, not a traceback per worker
    options = {"host": args.host, "port": args.port, "access_log": args.access_log, "timeout_graceful_shutdown": 5,
               **uvicorn_options(settings)}
    if args.workers == 1:
        acceptor.run(uvicorn.Config(create_app(settings), **options))
    else:
        # Worker processes import the app and the connection guard, so they read the settings from the
        # environment.
        os.environ[SETTINGS_ENV] = settings.to_env()
        options["http"] = "digitrec.server.connections:environment_protocol"
        acceptor.run(uvicorn.Config("digitrec.server.app:app_from_environment", factory=True, workers=args.workers,
                                    **options))
    return 0
