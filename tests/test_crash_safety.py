"""kill -9 at the worst moments: during an MNIST download, inside a bundle write. Nothing half-written stays."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from digitrec.download import remove_abandoned_parts


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves a large body very slowly, so a client can be killed mid-download."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10_000_000))
        self.end_headers()
        try:
            for _ in range(10_000):
                self.wfile.write(b"\x1f\x8b" + bytes(998))
                self.wfile.flush()
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


def kill_when(script: str, ready: Callable[[], bool], timeout_s: float = 30) -> None:
    """Run `script` in a fresh interpreter and SIGKILL it as soon as `ready()` holds."""
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert process.poll() is None, "the process ended before the moment to kill it"
            assert time.monotonic() < deadline, f"not ready within {timeout_s} s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def slow_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_kill_during_download_leaves_no_file_and_next_run_cleans_up(slow_server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from digitrec.download import download_verified
        download_verified([{slow_server!r} + "t10k-labels-idx1-ubyte.gz"],
                          Path({str(cache)!r}) / "t10k-labels-idx1-ubyte.gz", expected_md5="0" * 32)
    """)
    kill_when(script, lambda: any(p.stat().st_size > 20_000 for p in cache.glob(".*.part")))
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()  # nothing under the real name
    leftovers = list(cache.glob(".*.part"))
    assert len(leftovers) == 1  # the killed process's hidden part file, named with its dead pid...
    removed = remove_abandoned_parts(cache / "t10k-labels-idx1-ubyte.gz")
    assert removed == leftovers and list(cache.iterdir()) == []  # ...which the next download deletes


def test_part_file_of_a_live_download_is_left_alone(tmp_path: Path) -> None:
    live = tmp_path / f".data.gz.{os.getpid()}.abc.part"
    live.write_bytes(b"in progress")
    assert remove_abandoned_parts(tmp_path / "data.gz") == []
    assert live.exists()


def test_kill_inside_bundle_write_keeps_previous_bundle(tmp_path: Path) -> None:
    """SIGKILL while the new bundle's files are being written: the old bundle stays whole and loadable."""
    import shutil

    from digitrec.bundle import default_bundle_dir
    from digitrec.runtime import load_classifier

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from digitrec.atomic import atomic_directory
        with atomic_directory(Path({str(bundle)!r})) as staging:
            (staging / "model.tflite").write_bytes(b"new but unfinished")
            Path({str(marker)!r}).touch()
            time.sleep(60)
    """)
    kill_when(script, marker.exists)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert len(list(tmp_path.glob(".bundle.*.staging"))) == 1  # the killed writer's leftover...
    from digitrec.atomic import recover_interrupted

    recover_interrupted(bundle)
    assert list(tmp_path.glob(".bundle.*")) == []  # ...removed by the next writer
    import numpy as np

    assert load_classifier(bundle).predict_proba(np.zeros((1, 28, 28), np.float32)).shape == (1, 10)


def test_kill_between_the_two_renames_restores_the_old_bundle(tmp_path: Path) -> None:
    """The one instant the bundle name is empty: old moved aside, new not yet in. Recovery puts it back."""
    from digitrec.atomic import atomic_directory

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    os.replace(bundle, tmp_path / f".bundle.{dead_pid}.old")  # what a kill at that instant leaves
    with atomic_directory(bundle) as staging:  # the next writer recovers first, then writes anew
        assert (bundle / "model.json").read_text() == "{}"
        (staging / "model.json").write_text('{"new": true}')
    assert (bundle / "model.json").read_text() == '{"new": true}'
    assert list(tmp_path.glob(".bundle.*")) == []


def _kill_inside_swap(bundle: Path, patch: str) -> None:
    """Run atomic_directory(bundle) in a child whose swap SIGKILLs it at the point `patch` sets up."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import digitrec.atomic as atomic
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        {patch}
        with atomic.atomic_directory(Path({str(bundle)!r})) as staging:
            (staging / "model.json").write_text('{{"version": "new"}}')
            (staging / "model.tflite").write_bytes((Path({str(bundle)!r}) / "model.tflite").read_bytes())
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -signal.SIGKILL


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    import json
    import shutil

    from digitrec.bundle import default_bundle_dir

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    (bundle / "model.json").write_text(json.dumps({"version": "old"}))
    return bundle


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_kill_right_after_the_exchange_leaves_the_new_bundle_whole(old_bundle: Path) -> None:
    """The exchange is the single step: killed just after it, the new bundle is in place, the old one is
    garbage in a dead writer's staging folder, which the next writer deletes."""
    from digitrec.atomic import recover_interrupted
    from digitrec.bundle import resolve_model

    _kill_inside_swap(old_bundle, "atomic.shutil.rmtree = die")
    assert resolve_model(old_bundle).metadata == {"version": "new"}
    assert len(list(old_bundle.parent.glob(".bundle.*.staging"))) == 1
    recover_interrupted(old_bundle)
    assert sorted(p.name for p in old_bundle.parent.iterdir()) == ["bundle"]


def test_kill_between_the_fallback_renames_still_leaves_readers_a_whole_bundle(old_bundle: Path) -> None:
    """Where no exchange exists: killed with the old bundle moved aside and the new one not in, readers
    (evaluate, serve, predict --model: all through load_classifier) still get the old bundle."""
    import numpy as np

    from digitrec.atomic import atomic_directory
    from digitrec.runtime import load_classifier

    patch = textwrap.dedent("""
        atomic.exchange = lambda first, second: False
        real_replace = os.replace
        def replace_then_die(source, destination):
            real_replace(source, destination)
            die()
        atomic.os.replace = replace_then_die
    """).replace("\n", "\n        ")
    _kill_inside_swap(old_bundle, patch)
    assert not old_bundle.exists()  # the window: nothing under the name itself...
    classifier = load_classifier(old_bundle)  # ...yet a reader gets the old bundle, whole
    assert classifier.source.metadata == {"version": "old"}
    assert classifier.predict_proba(np.zeros((1, 28, 28), np.float32)).shape == (1, 10)
    with atomic_directory(old_bundle) as staging:  # the next writer puts it back first, then replaces it
        (staging / "model.json").write_text("{}")
    assert sorted(p.name for p in old_bundle.parent.iterdir()) == ["bundle"]
