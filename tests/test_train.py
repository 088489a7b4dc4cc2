"""Training end to end on small slices: bundle contents, resume after SIGKILL, ensembles, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digitrec.bundle import KERAS_FILE, METADATA_FILE, TFLITE_FILE
from digitrec.cli import main
from digitrec.data import DataConfig
from digitrec.train import TrainConfig, train

TINY = ["--arch", "bn-strided-cnn-small", "--limit", "600", "--batch-size", "64"]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A 2-epoch bundle of the small architecture trained on 600 images (shared by several tests)."""
    output = tmp_path_factory.mktemp("train") / "bundle"
    code = main(["train", *TINY, "--epochs", "2", "--data-dir", str(mnist_dir), "--output", str(output)])
    assert code == 0
    return output


def test_train_writes_complete_bundle(tiny_bundle: Path, mnist_dir: Path) -> None:
    assert sorted(p.name for p in tiny_bundle.iterdir()) == [METADATA_FILE, KERAS_FILE, TFLITE_FILE]
    meta = json.loads((tiny_bundle / METADATA_FILE).read_text())
    assert meta["architecture"] == "bn-strided-cnn-small"
    assert meta["epochs"] == 2 and meta["seed"] == 0
    assert meta["command"].startswith("digitrec train --arch bn-strided-cnn-small")
    assert meta["mnist_md5"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"
    assert 0.0 < meta["test_accuracy"] <= 1.0 and meta["test_n"] == 10_000
    assert len(meta["per_class_accuracy"]) == 10
    assert len(meta["history"]["loss"]) == 2 and len(meta["history"]["val_accuracy"]) == 2
    assert meta["training_seconds"] > 0 and meta["versions"]["keras"]
    assert meta["litert_max_probability_difference"] < 1e-3
    assert meta["date"].startswith("20")
    # The checkpoints are gone once the bundle is written.
    assert not tiny_bundle.with_name("bundle.checkpoints").exists()


def test_tflite_and_keras_agree(tiny_bundle: Path, mnist_digits: tuple[np.ndarray, np.ndarray]) -> None:
    from digitrec.runtime import load_classifier

    images = mnist_digits[0][:500].astype(np.float32) / 255
    litert = load_classifier(tiny_bundle, prefer="litert").predict_proba(images)
    keras_probabilities = load_classifier(tiny_bundle, prefer="keras").predict_proba(images)
    assert np.array_equal(litert.argmax(1), keras_probabilities.argmax(1))
    np.testing.assert_allclose(litert, keras_probabilities, atol=1e-4)


def test_export_check_catches_a_different_model(tiny_bundle: Path, tmp_path: Path,
                                                mnist_digits: tuple[np.ndarray, np.ndarray]) -> None:
    from digitrec.export import ExportMismatchError, check_agreement, export_tflite
    from digitrec.models import make_model

    other = tmp_path / "other.tflite"
    export_tflite(make_model("bn-strided-cnn-small"), other)  # untrained: must not pass for the trained one
    from digitrec.runtime import load_keras_model

    model = load_keras_model(tiny_bundle / KERAS_FILE)
    with pytest.raises(ExportMismatchError, match="differs from Keras"):
        check_agreement(model, other, mnist_digits[0][:200, :, :, None].astype(np.float32) / 255)


def test_legacy_h5_output(tmp_path: Path, mnist_dir: Path) -> None:
    output = tmp_path / "seed_model.h5"
    code = main(["train", "--arch", "seed", "--epochs", "1", "--limit", "600", "--data-dir", str(mnist_dir),
                 "--output", str(output)])
    assert code == 0
    assert output.is_file() and output.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    assert (tmp_path / "seed_model" / TFLITE_FILE).is_file()
    from digitrec.runtime import load_classifier

    assert load_classifier(output).predict_proba(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)


def test_failed_bundle_write_keeps_previous_bundle(tiny_bundle: Path, tmp_path: Path, mnist_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import digitrec.train

    output = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, output)
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(digitrec.train, "export_tflite", crash)
    config = TrainConfig(arch="bn-strided-cnn-small", epochs=1, limit=300, data=DataConfig(data_dir=mnist_dir))
    with pytest.raises(OSError, match="No space left"):
        train(config, output, command="test")
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle")] == []


def test_ensemble_bundle_averages_members(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "ensemble"
    assert main(["train", *TINY, "--epochs", "1", "--ensemble", "2", "--data-dir", str(mnist_dir),
                 "--output", str(output)]) == 0
    meta = json.loads((output / METADATA_FILE).read_text())
    assert meta["ensemble_size"] == 2 and len(meta["members"]) == 2
    capsys.readouterr()
    assert main(["evaluate", str(output), "--data-dir", str(mnist_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in report["members"]] == [0, 1]
    assert report["accuracy"] == pytest.approx(meta["test_accuracy"], abs=2e-4)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--ensemble", "0"], "--ensemble must be at least 1"),
    (["--resume", "nowhere"], "no unfinished training run"),
    (["--data-dir", "/nonexistent"], "not found"),
    (["--output", "/proc/digitrec-model"], "cannot write /proc"),
], ids=["zero-epochs", "zero-members", "resume-nothing", "no-data", "unwritable-output"])
def test_train_bad_arguments(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                             mnist_dir: Path) -> None:
    args = ["train", *TINY] + ([] if "--output" in argv else ["--output", str(tmp_path / "out")])
    if "--data-dir" not in argv:
        args += ["--data-dir", str(mnist_dir)]
    assert main([*args, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_after_sigkill_mid_epoch(tmp_path: Path, mnist_dir: Path) -> None:
    """Kill -9 a run during its second epoch; --resume finishes it with every epoch in the history."""
    output = tmp_path / "run"
    state = tmp_path / "run.checkpoints" / "member-0" / "last" / "state.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # The seed arch at batch 32 on 4,000 images: an epoch takes a few seconds, long enough to land in.
    command = [sys.executable, "-m", "digitrec", "train", "--arch", "seed", "--epochs", "3", "--limit", "4000",
               "--patience", "0", "--data-dir", str(mnist_dir), "--output", str(output)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not state.is_file():
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 2
        assert process.poll() is None, "training finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not output.exists()
    epochs_done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= epochs_done < 3

    assert main(["train", "--resume", str(output)]) == 0
    meta = json.loads((output / METADATA_FILE).read_text())
    assert meta["epochs"] == 3 and meta["members"][0]["epochs_run"] == 3
    assert len(meta["history"]["loss"]) == 3
    assert meta["command"].endswith(f"--output {output}")  # the original command, not the resume
    assert meta["test_accuracy"] > 0.8
    assert not (tmp_path / "run.checkpoints").exists()
