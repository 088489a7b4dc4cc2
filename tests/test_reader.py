"""The Python API (`digitrec.Reader`): one answer whatever the input form, safe across threads, batched
classifier calls in read_many, lazy import, and no TensorFlow on its path or predict's."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitrec


@pytest.fixture(scope="module")
def reader() -> digitrec.Reader:
    return digitrec.Reader()  # the bundled model, through LiteRT


@pytest.fixture(scope="module")
def pages(number_page, mnist_digits) -> list[np.ndarray]:
    """24 pages of 1-3 MNIST digits, (H, W) uint8."""
    digits, _ = mnist_digits
    return [(number_page([digits[i * 3 + k] for k in range(1 + i % 3)]) * 255).astype(np.uint8) for i in range(24)]


def png_bytes(page: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="PNG")
    return buffer.getvalue()


def test_exports() -> None:
    assert set(digitrec.__all__) >= {"Reader", "Recognition", "DigitResult", "ImageError", "__version__"}
    from digitrec.reader import Reader

    assert digitrec.Reader is Reader
    with pytest.raises(AttributeError):
        digitrec.NoSuchThing  # noqa: B018


def test_path_bytes_and_array_give_the_same_answer(reader, pages, mnist_digits, tmp_path: Path) -> None:
    _, labels = mnist_digits
    page = pages[2]  # three digits
    path = tmp_path / "page.png"
    path.write_bytes(png_bytes(page))
    from_path = reader.read(path)
    assert from_path.number == "".join(str(label) for label in labels[6:9])
    assert reader.read(str(path)).to_json() == from_path.to_json()
    assert reader.read(png_bytes(page)).to_json() == from_path.to_json()
    assert reader.read(page).to_json() == from_path.to_json()
    rgb = np.repeat(page[..., None], 3, axis=2)
    assert reader.read(rgb).number == from_path.number
    assert reader.read(page, mode="digit").digit is not None and len(reader.read(page, mode="digit").digits) == 1
    fields = from_path.to_json()
    assert {"digit", "number", "confidence", "digits", "mode", "width", "height"} <= set(fields)


def test_the_api_answer_is_the_cli_json_less_file_and_error(reader, pages, tmp_path: Path, capsys) -> None:
    import json

    from digitrec.cli import main

    path = tmp_path / "page.png"
    path.write_bytes(png_bytes(pages[1]))
    assert main(["predict", str(path), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    api = reader.read(path).to_json()
    assert entry == {"file": str(path), **{k: v for k, v in api.items() if k != "steps"}, "error": None}


def test_bad_input_raises_clear_errors(reader, tmp_path: Path) -> None:
    with pytest.raises(digitrec.ImageError, match="not an image"):
        reader.read(b"certainly not an image")
    with pytest.raises(FileNotFoundError):
        reader.read(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="path, bytes or a numpy array"):
        reader.read(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        reader.read(np.ones((28, 28)), mode="letters")
    entry = reader.entry("x.png", b"garbage")
    assert entry["file"] == "x.png" and entry["error"] and entry["digits"] == [] and entry["number"] is None


def test_one_reader_shared_by_threads(reader, pages) -> None:
    expected = [reader.read(page).to_json() for page in pages]
    answers: dict[int, list] = {}
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()  # all start together, to overlap as much as possible
        answers[worker] = [reader.read(png_bytes(page)).to_json() for page in pages]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 8 and all(answer == expected for answer in answers.values())


class CountingClassifier:
    """The real classifier, counting how often it is called and with how many crops."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.source = inner.source
        self.calls: list[int] = []

    def predict_scores(self, images):
        from digitrec.runtime import classify

        self.calls.append(len(images))
        return classify(self.inner, images)  # the real model's scores, calibration included


def test_read_many_batches_classifier_calls_across_images(pages) -> None:
    reader = digitrec.Reader()
    expected = [reader.read(page).to_json() for page in pages]
    counting = CountingClassifier(reader.classifier)
    reader.classifier = counting
    results = reader.read_many(pages, batch_size=8)
    assert [result.to_json() for result in results] == expected  # same answers, same order
    assert len(counting.calls) <= len(pages) // 4  # ~3 calls of 8 images' crops, not 24 calls
    assert sum(counting.calls) >= sum(len(result.digits) for result in results)
    assert reader.read_many([]) == []
    with pytest.raises(digitrec.ImageError):
        reader.read_many([pages[0], b"not an image", pages[1]])


def test_predict_and_the_api_never_import_tensorflow(tmp_path: Path, pages) -> None:
    """`digitrec predict` (one process and --jobs 2) and `digitrec.Reader` import neither TensorFlow nor Keras."""
    for index, page in enumerate(pages[:20]):
        Image.fromarray(page).save(tmp_path / f"{index:02d}.png")
    code = """if True:
        import sys, contextlib, io
        import digitrec
        assert "numpy" not in sys.modules, "import digitrec must do no work"
        from digitrec.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["predict", sys.argv[1], "--json", "--jobs", "1"]) == 0
            assert main(["predict", sys.argv[1], "--json", "--jobs", "2"]) == 0
        digitrec.Reader().read_many([sys.argv[1] + "/00.png"])
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras")))
    """
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(tmp_path)], capture_output=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == "[]"


BLOCK_TRAIN_EXTRA = """if True:
    import sys
    class NoTrainExtra:  # as if `pip install digitrec` had been run without [train]
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "h5py"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoTrainExtra())
    from digitrec.cli import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["train", "--dry-run", "--output", "{tmp}/m"],
                                     ["evaluate", "{seed}", "--data-dir", "{mnist}"]], ids=["train", "evaluate-h5"])
def test_a_command_that_needs_the_train_extra_says_so_in_one_line(command, tmp_path: Path, shared_dir: Path,
                                                                   mnist_dir: Path) -> None:
    args = [part.format(tmp=tmp_path, seed=shared_dir / "seed" / "mnist_cnn_model.h5", mnist=mnist_dir)
            for part in command]
    result = subprocess.run([sys.executable, "-c", BLOCK_TRAIN_EXTRA, *args], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert 'pip install "digitrec[train]"' in result.stderr and "Traceback" not in result.stderr
