"""`digitrec predict` on hostile paths: a 1 GB file, a FIFO nobody writes to, a device, a pixel bomb.

Each is run as a real process, so the test sees what a user sees: it returns promptly, prints one error
line per bad input while still reading the good one, exits 1, and its peak memory stays small (measured
for that process alone from its VmHWM, not guessed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

PEAK_RSS_LIMIT_MB = 600  # the CLI with LiteRT and one small image peaks near 100 MB; reading 1 GB would not fit
TIME_LIMIT_S = 60  # generous for a shared 2-core machine; a hang would run forever


def run_predict(*paths: Path | str) -> tuple[int, list[dict], float]:
    """Run `digitrec predict --json PATHS` -> (exit code, entries, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "digitrec", "predict", "--json", *map(str, paths)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        output, _ = process.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"digitrec predict did not return in {TIME_LIMIT_S} s")
    return process.returncode, json.loads(output), time.monotonic() - started


def peak_rss_mb(*paths: Path | str) -> float:
    """Peak RSS (MB) of one `digitrec predict` process: its VmHWM, polled until it exits.

    Not wait4's ru_maxrss: Linux carries the parent's high-water mark across fork and exec into it, so
    from a pytest process that has loaded TensorFlow it reads gigabytes the child never touched.
    VmHWM belongs to the child's own address space and only grows, so the last reading is its peak
    (to within the final 10 ms).
    """
    process = subprocess.Popen([sys.executable, "-m", "digitrec", "predict", "--json", *map(str, paths)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIME_LIMIT_S
    peak_kib = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            readings = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
            peak_kib = max([peak_kib, *readings])  # a zombie (exited, not yet reaped) has no VmHWM line
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass  # exited between poll() and the read
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"digitrec predict did not return in {TIME_LIMIT_S} s")
        time.sleep(0.01)
    assert process.returncode == 1, "predict must exit 1 when an input could not be read"
    assert peak_kib > 0, "no memory reading was taken"
    return peak_kib / 1024


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Path]:
    """A good image and the hostile inputs beside it."""
    paths = {"good": tmp_path / "good.png", "huge": tmp_path / "huge.png", "fifo": tmp_path / "pipe.png"}
    Image.new("L", (40, 40), 255).save(paths["good"])
    with paths["huge"].open("wb") as file:  # 1 GB, sparse: costs no disk, but every read returns zeros
        file.write(b"\x89PNG\r\n\x1a\n")
        file.truncate(1 << 30)
    os.mkfifo(paths["fifo"])  # no writer will ever open it: a blocking open or read would hang forever
    return paths


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, sparse files and wait4: Linux")
def test_predict_on_a_1gb_file_a_fifo_and_a_device_returns_promptly(hostile: dict[str, Path]) -> None:
    code, entries, seconds = run_predict(hostile["huge"], hostile["fifo"], "/dev/zero", hostile["good"])
    assert code == 1
    assert seconds < TIME_LIMIT_S
    errors = {Path(entry["file"]).name: entry["error"] for entry in entries}
    assert "file too large" in errors["huge.png"] and "1,073,741,824 bytes" in errors["huge.png"]
    assert "not a regular file" in errors["pipe.png"]
    assert "not a regular file" in errors["zero"]
    assert errors["good.png"] is None  # the bad inputs did not stop the good one
    assert all("\n" not in (error or "") for error in errors.values())  # one line each


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, sparse files and wait4: Linux")
def test_predict_on_a_1gb_file_and_a_fifo_uses_bounded_memory(hostile: dict[str, Path]) -> None:
    assert peak_rss_mb(hostile["huge"], hostile["fifo"], hostile["good"]) < PEAK_RSS_LIMIT_MB


def test_predict_on_a_pixel_bomb_is_one_error_and_bounded_memory(tmp_path: Path, png_bomb) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30_000, 30_000))  # 900 megapixels (3.6 GB as float32) in a few kB
    code, entries, _ = run_predict(bomb)
    assert code == 1
    assert "too large" in entries[0]["error"]
    if sys.platform.startswith("linux"):
        assert peak_rss_mb(bomb) < PEAK_RSS_LIMIT_MB
