"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

Everything is written to a temporary sibling first and renamed into place, because a rename within one
file system is atomic on POSIX; a kill -9 mid-write leaves at most a hidden `.tmp` behind, never a
truncated file under the real name.

A folder (a model bundle, a checkpoint) cannot be renamed over an existing one, so replacing it whole
takes either one atomic exchange or two renames. On Linux the staging folder and the old folder are
swapped with renameat2(RENAME_EXCHANGE): the name never points at nothing, and the output stays a plain
folder that cp, tar and rm treat as users expect. (The alternative, a symlink swapped onto immutable
versioned folders, also has no window, but turns the output into a link whose target a copy loses.)
Where the exchange is not available (another OS, a file system without it), the old folder is renamed
aside to `.NAME.<pid>.old` and the new one renamed in; for the instant between, `live_folder` lets
readers find the old one there, and the next writer puts it back if the process died in that instant.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import sys
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


def check_folder_target(target: Path) -> None:
    """Fail now, before hours of work, if `atomic_directory(target)` could not replace `target` at the end.

    `target` must not be an existing file or device, and an existing folder must be writable (its old
    contents are deleted once the new folder is in) and its parent writable (where the swap happens).
    """
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise OutputError(f"cannot write {str(target) or repr(str(target))}: the output must name a folder"
                          " to create (e.g. my-model)")
    if target.is_symlink():
        raise OutputError(f"cannot write {target}: it is a symbolic link; give the folder it points to")
    if target.exists() and not target.is_dir():
        raise OutputError(f"cannot write {target}: it exists and is not a folder")
    ensure_writable(target.absolute().parent)
    if target.is_dir():
        ensure_writable(target)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, renamed into place when complete."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in dead_siblings(path, ".tmp"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        # Named with the pid, as `dead_siblings` expects: a kill -9 leaves a temporary a later run can find.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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
    for path in target.parent.glob(f".{glob.escape(target.name)}.*{suffix}"):  # a name may hold [ or *
        pid = path.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            found.append(path)
    return found


def recover_interrupted(target: Path) -> None:
    """Clean up after a process killed inside `atomic_directory(target)`.

    Abandoned staging folders are deleted (after an exchange, one holds the previous folder: garbage
    too); if the kill fell between the two renames of the fallback swap, the old folder is put back.
    """
    for staging in dead_siblings(target, ".staging"):
        shutil.rmtree(staging, ignore_errors=True)
    for backup in dead_siblings(target, ".old"):
        if not target.exists():
            os.replace(backup, target)
        else:
            shutil.rmtree(backup, ignore_errors=True)


def live_folder(target: Path) -> Path | None:
    """The folder a reader should open for `target`: itself, or, when it is momentarily missing because
    a fallback swap is between its two renames (or died there), the old folder moved aside. None if neither."""
    target = Path(target)
    if target.is_dir():
        return target
    if target.exists() or target.is_symlink():
        return None
    for backup in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.old")):
        if backup.is_dir() and backup.name[len(target.name) + 2 :].split(".", 1)[0].isdigit():
            return backup
    return target if target.is_dir() else None  # the writer may have finished while we looked


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_libc_renameat2 = None


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where this system cannot
    (not Linux, an old C library, a file system without it); raises OSError for any other failure."""
    global _libc_renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _libc_renameat2 is None:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):  # glibc < 2.28, or a libc without it
            return False
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        _libc_renameat2 = function
    if _libc_renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.is_symlink():  # an exchange would swap the link itself, and the old folder stay behind
        raise OutputError(f"cannot write {target}: it is a symbolic link; give the folder it points to")
    if target.exists() and not target.is_dir():
        raise OutputError(f"cannot write {target}: it exists and is not a folder")
    try:
        if target.exists() and exchange(staging, target):
            # `target` is the new folder now, in one step; `staging` holds the old one, deleted below (a
            # kill before that leaves a dead-pid `.staging`, which the next writer deletes).
            shutil.rmtree(staging, ignore_errors=True)
            return
    except OSError as error:
        raise OutputError(_describe(target, error)) from error
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
