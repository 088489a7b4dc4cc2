"""`digitrec serve`: flags, one-line errors, and a real server process answering on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from digitrec.cli import main


def test_help_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: the model bundled with digitrec)",
                    "(default: 1)", "CORS off"):
        assert default in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--model", "no/such/model.tflite"], "no such model"), (["--workers", "0"], "--workers must be at least 1"),
     (["--port", "70000"], "--port must be 1-65535")],
    ids=["missing-model", "no-workers", "bad-port"],
)
def test_bad_flags_are_one_line_errors(capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    assert main(["serve", *flags]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_serve_answers_on_localhost(model_path: Path, digit_png: Callable[[int], bytes]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--model", str(model_path)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "server did not start in 30 s"
                time.sleep(0.05)
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            assert b"<canvas" in response.read()
        request = urllib.request.Request(base + "/api/v1/predict", data=digit_png(6), method="POST",
                                         headers={"content-type": "image/png"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["digit"] == 6
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()  # type: ignore[union-attr]
