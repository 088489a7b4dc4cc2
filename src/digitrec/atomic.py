"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

Everything is written to a temporary sibling first and renamed into place, because a rename within one
file system is atomic on POSIX; a kill -9 mid-write leaves at most a hidden `.tmp` behind, never a
truncated file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(OSError):
    """An output location cannot be written (read-only, full disk, not a folder); the message says which."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a temp file named with a dead pid is garbage)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(path: Path, error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"cannot write {path}: {reason}"


def ensure_writable(folder: Path) -> None:
    """Fail now, with a clear message, if files cannot be created in `folder` (before hours of work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(_describe(folder, error)) from error


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, renamed into place when complete."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(_describe(path, error)) from error
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; these are ordinary files
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(_describe(path, error)) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` whole, on failure it vanishes.

    The old `target` is moved aside and deleted only after the new one is in place, so a crash at any
    point leaves either the previous folder or the new one under `target` (plus, at worst, a hidden
    staging or backup folder beside it).
    """
    target = Path(target).absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover_interrupted(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".staging",
                                        dir=target.parent))
        staging.chmod(0o777 & ~_umask())
    except OSError as error:
        raise OutputError(_describe(target, error)) from error
    try:
        yield staging
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def dead_siblings(target: Path, suffix: str) -> list[Path]:
    """Hidden siblings `.<name>.<pid>.*<suffix>` of `target` (temp files, staging folders) whose pid no
    longer runs: left by a process killed mid-write, garbage now. A live pid may be a concurrent writer."""
    found = []
    for path in target.parent.glob(f".{target.name}.*{suffix}"):
        pid = path.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            found.append(path)
    return found


def recover_interrupted(target: Path) -> None:
    """Clean up after a process killed inside `atomic_directory(target)`.

    Abandoned staging folders are deleted; if the kill fell between moving the old folder aside and
    moving the new one in, the old folder is put back.
    """
    for staging in dead_siblings(target, ".staging"):
        shutil.rmtree(staging, ignore_errors=True)
    for backup in dead_siblings(target, ".old"):
        if not target.exists():
            os.replace(backup, target)
        else:
            shutil.rmtree(backup, ignore_errors=True)


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise OutputError(f"cannot write {target}: it exists and is not a folder")
    backup = None
    try:
        if target.exists():
            backup = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, backup)
        os.replace(staging, target)
    except OSError as error:
        if backup is not None and not target.exists():
            os.replace(backup, target)
        raise OutputError(_describe(target, error)) from error
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
