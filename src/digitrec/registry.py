"""Model versions: immutable bundle folders and an active pointer that is swapped atomically.

Layout of a models folder (default: the user data folder; `--models-dir`, $DIGITREC_MODELS):

    versions/v1/   model.keras, model.tflite, model.json   (never changed once written)
    versions/v2/   ...
    active.json    {"version": "v2", "history": ["v1"]}   (replaced whole by a rename: no half state)

`promote` pushes the active version onto `history`; `rollback` pops it back. A reader (the server polling
for a new model) sees the old pointer or the new one, never a mix, and a kill -9 at any moment leaves one
of the two. Read-modify-write of the pointer is serialised by a lock file, so two promotes never lose one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from digitrec.atomic import OutputError, atomic_write_text, dead_siblings
from digitrec.bundle import KERAS_FILE, METADATA_FILE, TFLITE_FILE, read_metadata

log = logging.getLogger(__name__)

MODELS_ENV = "DIGITREC_MODELS"
POINTER_FILE = "active.json"
VERSION_PATTERN = re.compile(r"v([1-9][0-9]*)")


class RegistryError(ValueError):
    """A version that does not exist, nothing to roll back to, a bundle that is not one; says which."""


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    metadata: dict[str, Any]

    @property
    def number(self) -> int:
        match = VERSION_PATTERN.fullmatch(self.name)
        return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class Pointer:
    """The active version (None: none promoted yet, the bundled model is used) and the ones before it."""

    version: str | None
    history: tuple[str, ...] = ()


def default_models_dir() -> Path:
    return Path(platformdirs.user_data_dir("digitrec")) / "models"


def resolve_models_dir(models_dir: str | os.PathLike[str] | None = None) -> Path:
    """`--models-dir`, else $DIGITREC_MODELS, else the user data folder."""
    if models_dir is not None:
        return Path(models_dir).expanduser()
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    return default_models_dir()


class Registry:
    """The versions in one models folder, and which one is active."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_models_dir(root)
        self.versions_dir = self.root / "versions"
        self.pointer_path = self.root / POINTER_FILE

    # --- reading --------------------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Every complete version, oldest first (staging folders of an interrupted add are not versions)."""
        if not self.versions_dir.is_dir():
            return []
        # A version folder claimed by an add that was killed before its files moved in is empty: not a version.
        found = [Version(path.name, path, read_metadata(path)) for path in self.versions_dir.iterdir()
                 if VERSION_PATTERN.fullmatch(path.name) and path.is_dir()
                 and ((path / TFLITE_FILE).is_file() or (path / KERAS_FILE).is_file())]
        return sorted(found, key=lambda version: version.number)

    def get(self, name: str) -> Version:
        path = self.versions_dir / name
        if not VERSION_PATTERN.fullmatch(name) or not path.is_dir() or not any(path.iterdir()):
            known = ", ".join(version.name for version in self.versions()) or "none yet"
            raise RegistryError(f"no model version {name!r} in {self.root} (versions: {known})")
        return Version(name, path, read_metadata(path))

    def pointer(self) -> Pointer:
        """The active pointer as it is on disk now (a missing file: nothing promoted)."""
        try:
            values = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Pointer(None)
        except (OSError, ValueError) as error:
            raise RegistryError(f"{self.pointer_path}: unreadable ({error})") from error
        return Pointer(values.get("version"), tuple(values.get("history") or ()))

    def active(self) -> Version | None:
        name = self.pointer().version
        return self.get(name) if name else None

    # --- writing --------------------------------------------------------------------------------------

    def add(self, bundle: str | os.PathLike[str]) -> Version:
        """Copy a bundle folder in as the next version (v1, v2, ...); returns it. Never overwrites one."""
        source = Path(bundle)
        if not (source / TFLITE_FILE).is_file() and not (source / KERAS_FILE).is_file():
            raise RegistryError(f"{source}: not a model bundle (no {TFLITE_FILE} or {KERAS_FILE} inside)")
        try:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            for staging in dead_siblings(self.versions_dir / "v", ".staging"):
                shutil.rmtree(staging, ignore_errors=True)  # left by a kill -9 mid-copy
            staging = Path(tempfile.mkdtemp(prefix=f".v.{os.getpid()}.", suffix=".staging", dir=self.versions_dir))
            for name in (KERAS_FILE, TFLITE_FILE, METADATA_FILE):
                if (source / name).is_file():
                    shutil.copyfile(source / name, staging / name)
                    with open(staging / name, "rb") as file:
                        os.fsync(file.fileno())
                    (staging / name).chmod(0o444)  # versions are immutable
            staging.chmod(0o755)
        except OSError as error:
            raise OutputError(f"cannot add {source} to {self.versions_dir}: {error.strerror or error}") from error
        try:
            while True:
                claimed = [int(m.group(1)) for m in map(VERSION_PATTERN.fullmatch, os.listdir(self.versions_dir)) if m]
                number = max(claimed, default=0) + 1
                target = self.versions_dir / f"v{number}"
                try:
                    # mkdir is the claim: a concurrent add that picked the same number fails here, not later.
                    target.mkdir()
                except FileExistsError:
                    continue
                os.replace(staging, target)  # onto the empty folder just claimed: atomic
                return Version(target.name, target, read_metadata(target))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def promote(self, name: str) -> Pointer:
        """Make `name` the active version; the one it replaces can be rolled back to."""
        self.get(name)
        with self._locked():
            current = self.pointer()
            if current.version == name:
                return current
            history = (*current.history, current.version) if current.version else current.history
            return self._write_pointer(Pointer(name, history))

    def rollback(self) -> Pointer:
        """Make the previously active version active again."""
        with self._locked():
            current = self.pointer()
            if not current.history:
                raise RegistryError(f"nothing to roll back to in {self.root}"
                                    f" (active: {current.version or 'the bundled model'})")
            return self._write_pointer(Pointer(current.history[-1], current.history[:-1]))

    def _write_pointer(self, pointer: Pointer) -> Pointer:
        text = json.dumps({"version": pointer.version, "history": list(pointer.history),
                           "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}, indent=2)
        atomic_write_text(self.pointer_path, text + "\n")  # temp file, fsync, rename: old or new, never half
        log.info("active model version: %s", pointer.version)
        return pointer

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+b")  # noqa: SIM115 (held for the whole block)
        except OSError as error:
            raise OutputError(f"cannot write {self.root}: {error.strerror or error}") from error
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield


def serving_choice(model: str | os.PathLike[str] | None,
                   models_dir: str | os.PathLike[str] | None = None) -> tuple[Path | None, str | None]:
    """(model path, version) a command should run: an explicit `--model` (no version), else the registry's
    active version, else (None, None): the bundled model."""
    if model is not None:
        return Path(model), None
    active = Registry(models_dir).active()
    return (active.path, active.name) if active else (None, None)

