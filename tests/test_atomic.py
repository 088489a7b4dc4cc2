"""Crash-safe writes: the old file or folder survives every failure, and no temporary is left behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import digitrec.atomic
from digitrec.atomic import OutputError, atomic_directory, atomic_write_bytes, atomic_write_text


def names(folder: Path) -> list[str]:
    """Every entry in `folder`, hidden temporaries included."""
    return sorted(path.name for path in folder.iterdir())


def test_atomic_write_bytes_creates_the_file_and_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "model.bin"
    atomic_write_bytes(path, b"\x00payload")
    assert path.read_bytes() == b"\x00payload"
    assert names(path.parent) == ["model.bin"]


def test_atomic_write_bytes_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"old contents, longer than the new ones")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert names(tmp_path) == ["model.bin"]


def test_atomic_write_text_writes_utf8(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    atomic_write_text(path, '{"name": "Zoë ✓"}')
    assert path.read_bytes() == '{"name": "Zoë ✓"}'.encode()


class _Unwritable:
    """Stands in for data whose bytes cannot be produced: writing it raises."""


def _fail_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


def _interrupt_fsync(fd: int) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("data", "patch", "expected_error", "message"),
    [
        (_Unwritable(), None, TypeError, None),
        (b"new", ("fsync", _fail_fsync), OutputError, os.strerror(errno.ENOSPC)),
        (b"new", ("replace", _fail_replace), OutputError, os.strerror(errno.EXDEV)),
        (b"new", ("fsync", _interrupt_fsync), KeyboardInterrupt, None),
    ],
    ids=["data-raises", "disk-full", "rename-fails", "interrupted"],
)
def test_failed_atomic_write_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data, patch, expected_error, message
) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    if patch is not None:
        monkeypatch.setattr(digitrec.atomic.os, *patch)

    with pytest.raises(expected_error) as caught:
        atomic_write_bytes(path, data)

    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["model.bin"]  # the temporary sibling is gone
    if message is not None:
        assert str(caught.value) == f"cannot write {path}: {message}"


def test_atomic_write_bytes_under_a_file_raises_output_error(tmp_path: Path) -> None:
    # Tests run as root, where chmod cannot make a folder read-only; a parent that is a file always fails.
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    path = blocker / "model.bin"
    with pytest.raises(OutputError, match=f"cannot write {path}"):
        atomic_write_bytes(path, b"new")
    assert blocker.read_bytes() == b"x"
    assert names(tmp_path) == ["not-a-folder"]


def test_output_error_is_an_os_error() -> None:
    # The CLI reports OSError subclasses as user-facing errors; OutputError must stay one of them.
    assert issubclass(OutputError, OSError)


def test_atomic_directory_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path  # same file system, so the final rename is atomic
        assert names(staging) == []
        assert not target.exists()  # nothing visible under the real name until the body finishes
        (staging / "model.tflite").write_bytes(b"m")
    assert names(target) == ["model.tflite"]
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_replaces_the_old_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    (target / "model.tflite").write_bytes(b"old")

    with atomic_directory(target) as staging:
        assert (target / "stale.txt").exists()  # the old folder stays in place while the body runs
        (staging / "model.tflite").write_bytes(b"new")

    assert names(target) == ["model.tflite"]  # stale.txt did not survive: replaced, not merged
    assert (target / "model.tflite").read_bytes() == b"new"
    assert names(tmp_path) == ["bundle"]  # no backup or staging folder left beside it


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "interrupt"])
def test_atomic_directory_keeps_the_old_folder_when_the_body_raises(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "model.tflite").write_bytes(b"old")

    with pytest.raises(type(error)), atomic_directory(target) as staging:
        (staging / "model.tflite").write_bytes(b"half-written")
        raise error

    assert names(target) == ["model.tflite"]
    assert (target / "model.tflite").read_bytes() == b"old"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_restores_the_old_folder_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "model.tflite").write_bytes(b"old")
    real_replace = os.replace

    def replace_failing_for_staging(src, dst):
        # Let the old folder move aside, then fail the rename of the new one into place.
        if str(src).endswith(".staging"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(digitrec.atomic, "exchange", lambda first, second: False)  # the two-rename fallback
    monkeypatch.setattr(digitrec.atomic.os, "replace", replace_failing_for_staging)
    with pytest.raises(OutputError, match=f"cannot write {target}"), atomic_directory(target) as staging:
        (staging / "model.tflite").write_bytes(b"new")

    assert (target / "model.tflite").read_bytes() == b"old"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_keeps_the_old_folder_when_the_exchange_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "model.tflite").write_bytes(b"old")

    def failing_exchange(first: Path, second: Path) -> bool:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(second))

    monkeypatch.setattr(digitrec.atomic, "exchange", failing_exchange)
    with pytest.raises(OutputError, match=f"cannot write {target}"), atomic_directory(target) as staging:
        (staging / "model.tflite").write_bytes(b"new")
    assert (target / "model.tflite").read_bytes() == b"old"
    assert names(tmp_path) == ["bundle"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "name").write_text("a")
    (second / "name").write_text("b")
    assert digitrec.atomic.exchange(first, second)  # tmpfs and ext4 both support it
    assert (first / "name").read_text() == "b" and (second / "name").read_text() == "a"


WATCHER = """
import os, sys
path, stop = sys.argv[1], sys.argv[2]
checks = misses = 0
print("ready", flush=True)
while not os.path.exists(stop):
    for _ in range(200):
        checks += 1
        if not os.path.exists(path):
            misses += 1
print(checks, misses, flush=True)
"""


def test_a_reader_never_finds_the_folder_missing_during_swaps(tmp_path: Path) -> None:
    """Another process checks the bundle's file in a tight loop while it is replaced 300 times."""
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "model.json").write_text("0")
    stop = tmp_path / "stop"
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(target / "model.json"), str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
        for version in range(300):
            with atomic_directory(target) as staging:
                (staging / "model.json").write_text(str(version))
        stop.touch()
        checks, misses = map(int, watcher.communicate(timeout=30)[0].split())
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert checks > 1000  # it really watched
    assert misses == 0
    assert (target / "model.json").read_text() == "299"
    assert names(tmp_path) == ["bundle", "stop"]


def test_live_folder_finds_the_old_folder_between_the_two_renames(tmp_path: Path) -> None:
    """The fallback swap's window (old moved aside, new not yet in): readers are sent to the old folder."""
    from digitrec.atomic import live_folder

    target = tmp_path / "bundle"
    assert live_folder(target) is None
    target.mkdir()
    assert live_folder(target) == target
    aside = tmp_path / f".bundle.{os.getpid()}.old"
    os.replace(target, aside)
    assert live_folder(target) == aside


def test_atomic_directory_refuses_to_replace_a_file(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.write_bytes(b"a file, not a folder")
    with pytest.raises(OutputError, match="exists and is not a folder"), atomic_directory(target) as staging:
        (staging / "model.tflite").write_bytes(b"new")
    assert target.read_bytes() == b"a file, not a folder"
    assert names(tmp_path) == ["bundle"]


def test_atomic_directory_under_a_file_raises_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    target = blocker / "bundle"
    with pytest.raises(OutputError, match=f"cannot write {target}"), atomic_directory(target):
        pytest.fail("the body must not run when no staging folder can be made")
    assert names(tmp_path) == ["not-a-folder"]


def test_a_dead_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    path = tmp_path / "best[1].weights.h5"  # glob characters in the name must not hide its temporaries
    (tmp_path / f".{path.name}.{dead_pid}.abc123.tmp").write_bytes(b"half")
    live = tmp_path / f".{path.name}.{os.getpid()}.def456.tmp"  # a concurrent writer's: left alone
    live.write_bytes(b"in progress")
    atomic_write_bytes(path, b"whole")
    assert names(tmp_path) == sorted([path.name, live.name])
