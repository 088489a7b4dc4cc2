"""The package as users get it: a wheel holding the model and the page, whose core install has no
TensorFlow, and which, installed into a clean venv with its real dependencies, predicts and serves.

test_wheel_installs_into_a_clean_venv is the slow one (about a minute: pip installs the core
dependencies, from its cache after the first run). It stays in the suite because nothing else
checks what a user's `pip install digitrec` really gets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "tensorflow-cpu", "keras", "h5py", "matplotlib", "ray", "pyarrow")
CORE_LIMIT_MB = 500


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from what a build reads (pyproject, README, src/), copied without build leftovers."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
                   check=True, timeout=300, capture_output=True)
    [built] = out.glob("digitrec-*.whl")
    return built


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata.get_all("Requires-Dist") or []


def test_wheel_holds_the_model_the_page_and_no_heavy_core_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for needed in ("digitrec/assets/default_model/model.tflite", "digitrec/assets/default_model/model.json",
                   "digitrec/server/static/index.html", "digitrec/server/static/app.js",
                   "digitrec/server/static/style.css", "digitrec/py.typed", "digitrec/reader.py"):
        assert needed in names, f"{needed} missing from {wheel.name}"
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    required = requirements(wheel)
    core = [r for r in required if "extra ==" not in r]
    core_names = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in core}
    assert {"numpy", "ai-edge-litert", "fastapi", "uvicorn", "opencv-python-headless", "pillow"} <= core_names
    assert not core_names & set(HEAVY), f"heavy core dependencies: {core_names & set(HEAVY)}"
    train = [r for r in required if 'extra == "train"' in r]
    assert any(r.startswith(("tensorflow", "tensorflow-cpu")) for r in train) and any("keras" in r for r in train)
    assert any(r.startswith("ray") for r in required if 'extra == "ray"' in r)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wheel_installs_into_a_clean_venv(wheel: Path, tmp_path: Path, mnist_dir: Path) -> None:
    """pip install WHEEL (its real core dependencies) -> no TensorFlow, <= 500 MB; predict, evaluate and serve
    work; `train` and `evaluate --report` say which extra to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, digitrec = venv / "bin" / "python", venv / "bin" / "digitrec"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True,
                             text=True, timeout=900, env=env)
    assert install.returncode == 0, install.stderr[-3000:]
    no_tf = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True, text=True, env=env)
    assert no_tf.returncode == 1 and "No module named 'tensorflow'" in no_tf.stderr
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    assert size_mb <= CORE_LIMIT_MB, f"core install is {size_mb:.0f} MB"

    predicted = subprocess.run([str(digitrec), "predict", str(REPO / "docs/examples/photo-number.jpg"), "--json"],
                               capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["number"] == "0684"

    evaluated = subprocess.run([str(digitrec), "evaluate", "--data-dir", str(mnist_dir), "--json"],
                               capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] > 0.99  # the bundled model, through LiteRT
    pictures = subprocess.run([str(digitrec), "evaluate", "--data-dir", str(mnist_dir), "--report", "pics"],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert pictures.returncode == 1 and 'pip install "digitrec[report]"' in pictures.stderr, pictures.stderr

    trained = subprocess.run([str(digitrec), "train", "--dry-run", "--output", str(tmp_path / "m")],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert trained.returncode == 1 and trained.stderr.count("\n") == 1, trained.stderr
    assert 'pip install "digitrec[train]"' in trained.stderr

    port = _free_port()
    server = subprocess.Popen([str(digitrec), "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the installed server did not answer /healthz in 60 s"
                time.sleep(0.3)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/predict",
                                         data=(REPO / "docs/examples/photo-number.jpg").read_bytes(),
                                         headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["number"] == "0684"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<html" in response.read().lower()
    finally:
        server.terminate()
        server.wait(30)
        server.stderr.close()
