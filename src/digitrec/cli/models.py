"""`digitrec models list | show | add | promote | rollback`: the model versions `serve` runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from digitrec.registry import MODELS_ENV, Registry, Version


def add_models_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                        help=f"the model versions folder (default: ${MODELS_ENV}, else the user data folder)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, promote and roll back model versions",
                                   description="Model versions: immutable bundles; `serve` runs the active one"
                                               " and picks up a promote or rollback within seconds.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the versions, the active one marked")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="one version's model.json")
    show.add_argument("version", metavar="VERSION")
    add = actions.add_parser("add", help="copy a bundle folder in as a new version (not promoted)")
    add.add_argument("bundle", type=Path, metavar="BUNDLE")
    add.add_argument("--promote", action="store_true", help="make it the active version too")
    promote = actions.add_parser("promote", help="make VERSION the active version")
    promote.add_argument("version", metavar="VERSION")
    actions.add_parser("rollback", help="make the previously active version active again")
    for action in actions.choices.values():
        add_models_dir_argument(action)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    registry = Registry(args.models_dir)
    if args.action == "list":
        return list_versions(registry, args.json)
    if args.action == "show":
        version = registry.get(args.version)
        print(json.dumps({"version": version.name, "path": str(version.path), **version.metadata}, indent=2))
        return 0
    if args.action == "add":
        version = registry.add(args.bundle)
        print(f"added {version.name} ({version.path})")
        if args.promote:
            registry.promote(version.name)
            print(f"active: {version.name}")
        return 0
    if args.action == "promote":
        previous = registry.pointer().version
        registry.promote(args.version)
        print(f"active: {args.version} (was {previous or 'the bundled model'})")
        return 0
    pointer = registry.rollback()
    print(f"active: {pointer.version}")
    return 0


def summary(version: Version) -> dict:
    metadata = version.metadata
    lineage = metadata.get("lineage") or {}
    return {"version": version.name, "architecture": metadata.get("architecture"),
            "test_accuracy": metadata.get("test_accuracy"), "date": metadata.get("date"),
            "base": lineage.get("base_version"), "corrections": lineage.get("corrections")}


def list_versions(registry: Registry, as_json: bool) -> int:
    versions = registry.versions()
    active = registry.pointer().version
    if as_json:
        print(json.dumps({"active": active, "versions": [summary(version) for version in versions]}, indent=2))
        return 0
    if not versions:
        print(f"no model versions in {registry.root}: serving the bundled model"
              " (`digitrec finetune --promote` or `digitrec models add` creates one)")
        return 0
    table = Table("", "version", "MNIST test", "base", "corrections", "date")
    for version in versions:
        row = summary(version)
        accuracy = row["test_accuracy"]
        table.add_row("*" if version.name == active else "", version.name,
                      f"{accuracy:.4f}" if isinstance(accuracy, float) else "-", str(row["base"] or "-"),
                      str(row["corrections"] if row["corrections"] is not None else "-"), str(row["date"] or "-"))
    Console().print(table)
    print(f"active: {active or 'none (the bundled model)'}; folder {registry.root}")
    return 0
