"""`digitrec evaluate` and the metrics behind it, on the real MNIST test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.bundle import default_bundle_dir, read_metadata
from digitrec.cli import main
from digitrec.evaluate import compute_metrics, confusion_matrix, misclassified


def run_json(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_metrics_on_known_predictions() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(10)[[0, 1, 1, 1, 2, 0]]
    metrics = compute_metrics(labels, probabilities)
    assert metrics.n == 6 and metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.per_class_recall[:3] == [0.5, 1.0, 0.5]
    assert metrics.per_class_precision[:3] == [0.5, pytest.approx(2 / 3, abs=1e-6), 1.0]
    assert metrics.confusion[0][1] == 1 and metrics.confusion[2][0] == 1
    assert confusion_matrix(labels, probabilities.argmax(1)).sum() == 6
    assert list(misclassified(labels, probabilities)) in ([1, 5], [5, 1])


def test_seed_h5_scores_its_published_accuracy(shared_dir: Path, mnist_dir: Path, capsys) -> None:
    """The original system's legacy HDF5 file, loaded and measured: 99.07%, as it was published."""
    capsys.readouterr()
    assert main(["evaluate", str(shared_dir / "seed" / "mnist_cnn_model.h5"), "--data-dir", str(mnist_dir)]) == 0
    assert "accuracy 0.9907 (9907/10000)" in capsys.readouterr().out


def test_bundled_model_meets_the_bar_and_its_metadata(mnist_dir: Path, capsys, tmp_path: Path) -> None:
    result = run_json(["evaluate", "--data-dir", str(mnist_dir), "--json", "--report", str(tmp_path)], capsys)
    metadata = read_metadata(default_bundle_dir())
    assert result["accuracy"] >= 0.9970
    assert result["accuracy"] == metadata["test_accuracy"]
    assert result["n"] == 10_000 and set(result["per_class"]) == {str(d) for d in range(10)}
    assert sum(row["support"] for row in result["per_class"].values()) == 10_000
    for name in ("confusion_matrix.png", "misclassified.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make_model, message", [
    (lambda d: d / "missing.keras", "no such model file"),
    (lambda d: d / "notes.txt", "not a model"),
    (lambda d: d, "not a model bundle"),
    (lambda d: d / "broken.tflite", "not a valid LiteRT model"),
    (lambda d: d / "broken.keras", "not a Keras model"),
], ids=["missing", "wrong-suffix", "empty-folder", "corrupt-tflite", "corrupt-keras"])
def test_evaluate_bad_model_is_one_clear_line(make_model, message: str, tmp_path: Path, mnist_dir: Path,
                                              capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.tflite").write_bytes(b"TFL3" + bytes(100))
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    folder = tmp_path / "empty"
    folder.mkdir()
    target = make_model(folder if message == "not a model bundle" else tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(target), "--data-dir", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("digitrec evaluate: error:")


# --- hostile model paths and file names ----------------------------------------------------------------


@pytest.fixture
def hostile_models(tmp_path: Path) -> dict[str, Path]:
    """Model paths that are not regular files, or are too large to read: each must be refused unopened."""
    import os

    from digitrec.bundle import MAX_MODEL_BYTES

    paths = {"fifo": tmp_path / "pipe.tflite", "zero": tmp_path / "zero.tflite", "huge": tmp_path / "huge.tflite"}
    os.mkfifo(paths["fifo"])  # nobody writes to it: reading would block forever
    paths["zero"].symlink_to("/dev/zero")  # endless: reading it whole was a MemoryError
    with paths["huge"].open("wb") as file:  # sparse: no disk used, but over the limit
        file.truncate(MAX_MODEL_BYTES + 1)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").symlink_to("/dev/zero")
    paths["bundle"] = bundle
    return paths


@pytest.mark.parametrize(("name", "fault"), [
    ("fifo", "not a regular file"), ("zero", "not a regular file"), ("huge", "file too large for a model"),
    ("bundle", "not a regular file"),
], ids=["fifo", "dev-zero-symlink", "over-size-limit", "bundle-file-on-dev-zero"])
def test_model_paths_must_be_regular_files_under_the_size_limit(hostile_models: dict[str, Path], name: str,
                                                                fault: str) -> None:
    from digitrec.bundle import BundleError, resolve_model

    with pytest.raises(BundleError, match=fault):
        resolve_model(hostile_models[name])


def test_evaluate_on_a_fifo_is_one_line_at_once(hostile_models: dict[str, Path], mnist_dir: Path) -> None:
    """As a user runs it: a FIFO model path used to hang forever."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "digitrec", "evaluate", str(hostile_models["fifo"]),
                             "--data-dir", str(mnist_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"digitrec evaluate: error: {hostile_models['fifo']}: not a regular file (a device, pipe or socket),"
        " not a model")
    assert "Traceback" not in result.stderr


ESCAPE = "\x1b]0;pwned\x07\x1b[2J"  # retitle the terminal, clear the screen


def test_evaluate_shows_escape_sequences_in_names_instead_of_obeying_them(
        tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    bundle = tmp_path / f"model{ESCAPE}[bold]"
    shutil.copytree(default_bundle_dir(), bundle)
    capsys.readouterr()
    assert main(["evaluate", str(bundle), "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    # Shown, [bold] too (not read as markup); rich wraps long lines, so they are joined first.
    assert "model\\x1b]0;pwned\\x07\\x1b[2J[bold]" in out.replace("\n", "")

    assert main(["evaluate", str(tmp_path / f"missing{ESCAPE}"), "--data-dir", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "missing\\x1b]0;pwned" in err
