"""Training end to end on small slices: bundle contents, resume after SIGKILL, ensembles, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
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


def run_cli(argv: list[str]) -> int:
    """main(argv), counting argparse's exit (a bad flag) as the exit code it is."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--epochs", "1.5"], "argument --epochs: not a whole number: '1.5'"),
    (["--ensemble", "0"], "argument --ensemble: must be at least 1"),
    (["--learning-rate", "nan"], "argument --learning-rate: must be a number above 0"),
    (["--learning-rate", "-1"], "argument --learning-rate: must be a number above 0"),
    (["--learning-rate", "0"], "argument --learning-rate: must be a number above 0"),
    (["--learning-rate", "inf"], "argument --learning-rate: must be a number above 0"),
    (["--learning-rate", "fast"], "argument --learning-rate: not a number: 'fast'"),
    (["--patience", "-1"], "argument --patience: must be at least 0, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["--batch-size", "-64"], "argument --batch-size: must be at least 1"),
    (["--seed", "-1"], "argument --seed: must be at least 0"),
    (["--seed", str(2**32)], "argument --seed: must be at most 4294967295"),
    (["--limit", "0"], "argument --limit: must be at least 1"),
    (["--output", ""], "argument --output: must not be empty"),
    (["--resume", ""], "argument --resume: must not be empty"),
    (["--resume", "nowhere"], "no unfinished training run"),
    (["--data-dir", "/nonexistent"], "not found"),
    (["--output", "/proc/digitrec-model"], "cannot write /proc"),
    (["--output", "/dev/null"], "cannot write /dev/null: it exists and is not a folder"),
    (["--output", "/"], "the output must name a folder"),
    (["--learning-rte", "1e-3"], "digitrec: error: unrecognized arguments: --learning-rte 1e-3"),
], ids=["zero-epochs", "fractional-epochs", "zero-members", "nan-rate", "negative-rate", "zero-rate", "inf-rate",
        "word-rate", "negative-patience", "zero-batch", "negative-batch", "negative-seed", "huge-seed",
        "zero-limit", "empty-output", "empty-resume", "resume-nothing", "no-data", "unwritable-output",
        "dev-null-output", "root-output", "misspelt-flag"])
def test_train_bad_arguments(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                             mnist_dir: Path) -> None:
    """Each is one line and exit 1 at once: nothing is trained, no checkpoint folder is made."""
    args = ["train", *TINY] + ([] if "--output" in argv else ["--output", str(tmp_path / "out")])
    if "--data-dir" not in argv:
        args += ["--data-dir", str(mnist_dir)]
    assert run_cli([*args, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == []


def test_output_that_is_an_existing_file_is_refused_before_training(tmp_path: Path, mnist_dir: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    assert run_cli(["train", *TINY, "--data-dir", str(mnist_dir), "--output", str(existing)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"digitrec train: error: cannot write {existing}: it exists and is not a folder")
    assert existing.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_output_that_is_a_folder_of_other_files_is_refused(tmp_path: Path, mnist_dir: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """A bundle replaces its folder whole: `--output ~/Documents` must not delete the documents."""
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    assert run_cli(["train", *TINY, "--data-dir", str(mnist_dir), "--output", str(documents)]) == 1
    assert f"cannot write {documents}: it exists and is not a model bundle" in capsys.readouterr().err
    assert (documents / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


@pytest.fixture
def unwritable_bundle(tmp_path: Path, tiny_bundle: Path) -> Iterator[Path]:
    """An existing bundle folder its owner cannot write (in a writable parent).

    As root, permissions do not stop writes, so the folder is bind-mounted read-only onto itself, what a
    read-only volume in a container looks like; as anyone else it is chmod 555.
    """
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    if os.geteuid() != 0:
        bundle.chmod(0o555)
        yield bundle
        bundle.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(bundle), str(bundle)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(bundle)], check=True)
        yield bundle
    finally:
        subprocess.run(["umount", str(bundle)], check=True)


def test_unwritable_existing_bundle_is_refused_before_training(unwritable_bundle: Path, mnist_dir: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    before = {p.name: p.read_bytes() for p in unwritable_bundle.iterdir()}
    assert run_cli(["train", *TINY, "--data-dir", str(mnist_dir), "--output", str(unwritable_bundle)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"digitrec train: error: cannot write {unwritable_bundle}: ")
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in unwritable_bundle.iterdir()} == before
    assert sorted(p.name for p in unwritable_bundle.parent.iterdir()) == ["bundle"]  # no checkpoints begun


def test_train_messages_show_escape_sequences_instead_of_obeying_them(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    data_dir = tmp_path / "data\x1b]0;pwned\x07\x1b[2J"
    data_dir.mkdir()
    assert run_cli(["train", *TINY, "--data-dir", str(data_dir), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "data\\x1b]0;pwned\\x07\\x1b[2J" in err and len(err.strip().splitlines()) == 1


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


def _limit_file_size(max_bytes: int) -> Callable[[], None]:
    """A preexec_fn making every file the child writes stop at `max_bytes`: a full disk, anywhere, no root.

    Writes past the limit fail with EFBIG, as they fail with ENOSPC on a full disk (SIGXFSZ, which would
    kill the process instead, is ignored first, as the default action of a full disk is not to die).
    """

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def test_disk_full_during_training_is_one_line_and_keeps_the_old_bundle(tiny_bundle: Path, tmp_path: Path,
                                                                        mnist_dir: Path) -> None:
    """The first checkpoint (a few hundred kB) cannot be written: HDF5 used to print tracebacks and the
    process to segfault at exit (139), leaving a `.best-<pid>.tmp.weights.h5`."""
    import shutil

    output = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, output)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "digitrec", "train", *TINY, "--epochs", "2", "--data-dir", str(mnist_dir),
         "--output", str(output)],
        preexec_fn=_limit_file_size(100_000), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"digitrec train: error: cannot write {tmp_path}/bundle.checkpoints/member-0/best.weights.h5:"
                    " File too large")
    assert "Traceback" not in result.stderr and "h5py" not in result.stderr
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before  # the old bundle, untouched
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [name for name in written if not name.startswith("bundle/")] == ["bundle.checkpoints/run.json"]


def test_resume_after_a_kill_inside_the_checkpoint_swap_continues_where_it_was(tmp_path: Path,
                                                                                 mnist_dir: Path) -> None:
    """Killed between the two renames of the per-epoch checkpoint (where no atomic exchange exists), the
    last checkpoint sits at `.last.<pid>.old`: --resume must continue from it, not silently start over."""
    import keras

    class Killed(Exception):
        pass

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise Killed  # after the checkpoint callback, which runs first, saved epoch 1

    class EpochsRun(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[int] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epochs.append(epoch)

    output = tmp_path / "run"
    config = TrainConfig(arch="bn-strided-cnn-small", epochs=2, limit=300, batch_size=64, patience=None,
                         data=DataConfig(data_dir=mnist_dir))
    with pytest.raises(Killed):
        train(config, output, command="test", callbacks=[KillAfterFirstEpoch()])
    member = tmp_path / "run.checkpoints" / "member-0"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    os.replace(member / "last", member / f".last.{dead_pid}.old")  # what a kill inside the swap leaves

    epochs_run = EpochsRun()
    result = train(config, output, command="test", callbacks=[epochs_run], resume=True)
    assert epochs_run.epochs == [1]  # only the second epoch: the first was recovered, not redone
    assert result.metadata["members"][0]["epochs_run"] == 2
    assert len(result.metadata["history"]["loss"]) == 2


def test_full_temporary_folder_during_litert_conversion_is_an_output_error(tmp_path: Path) -> None:
    """The conversion writes a SavedModel to the temporary folder through TensorFlow ops, whose disk-full
    error is a TensorFlow OpError: it must reach the CLI as an OutputError (one line), not a traceback."""
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from digitrec.atomic import OutputError
        from digitrec.export import export_tflite
        from digitrec.models import make_model
        model = make_model("bn-strided-cnn-small")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        try:
            export_tflite(model, Path({str(tmp_path / "model.tflite")!r}))
        except OutputError as error:
            print(error)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith(f"cannot write {tmp_path / 'model.tflite'}: LiteRT conversion in ")
    assert message.endswith("failed (File too large [Op:SaveV2])") and "\n" not in message
    assert list(tmp_path.iterdir()) == []
