"""`digitrec predict`: files, folders and globs; table, JSON and CSV; --show; bad files do not stop the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, number_page, mnist_digits) -> Path:
    """A folder of inputs: a digit (PNG), a number (JPEG), a blank page, a text file named .png."""
    digits, labels = mnist_digits
    folder = tmp_path_factory.mktemp("inputs")
    one = (number_page([digits[0]]) * 255).astype(np.uint8)
    Image.fromarray(one).save(folder / f"digit_{labels[0]}.png")
    many = (number_page([digits[i] for i in range(3)]) * 255).astype(np.uint8)
    Image.fromarray(many).convert("RGB").save(folder / "number.jpg", quality=92)
    Image.new("L", (60, 60), 255).save(folder / "blank.png")
    return folder


@pytest.fixture(scope="module")
def model(shared_dir: Path) -> str:
    path = shared_dir / "seed" / "mnist_cnn_model.h5"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(["predict", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_json_for_a_folder(images: Path, model: str, mnist_digits, capsys) -> None:
    _, labels = mnist_digits
    code, entries = run_json(capsys, str(images), "--model", model)
    assert code == 0
    by_name = {Path(entry["file"]).name: entry for entry in entries}
    assert set(by_name) == {f"digit_{labels[0]}.png", "number.jpg", "blank.png"}
    digit = by_name[f"digit_{labels[0]}.png"]
    assert digit["digit"] == labels[0] and digit["number"] == str(labels[0]) and digit["error"] is None
    assert set(digit["digits"][0]) >= {"digit", "confidence", "box", "probabilities"}
    assert len(digit["digits"][0]["probabilities"]) == 10
    number = by_name["number.jpg"]
    assert number["digit"] is None and number["number"] == "".join(str(x) for x in labels[:3])
    blank = by_name["blank.png"]
    assert blank["digits"] == [] and blank["number"] is None and blank["digit"] is None


def test_bad_inputs_are_reported_and_the_rest_still_read(images: Path, model: str, tmp_path: Path,
                                                          capsys) -> None:
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    good = str(images / "blank.png")
    code, entries = run_json(capsys, str(tmp_path / "text.png"), good, str(tmp_path / "empty.png"),
                             str(tmp_path / "missing.png"), str(tmp_path / "nothing-*.png"), "--model", model)
    assert code == 1
    assert [entry["file"] for entry in entries][1] == good and entries[1]["error"] is None
    errors = [entry["error"] for entry in entries if entry["file"] != good]
    assert len(errors) == 4 and all(errors)


def test_glob_and_mode_digit(images: Path, model: str, capsys) -> None:
    code, entries = run_json(capsys, str(images / "*.jpg"), "--mode", "digit", "--model", model)
    assert code == 0 and len(entries) == 1
    assert len(entries[0]["digits"]) == 1 and entries[0]["digit"] is not None


def test_table_csv_and_show(images: Path, model: str, mnist_digits, tmp_path: Path, capsys) -> None:
    _, labels = mnist_digits
    assert main(["predict", str(images), "--model", model, "--show", str(tmp_path / "show")]) == 0
    table = capsys.readouterr().out
    assert "".join(str(x) for x in labels[:3]) in table and "no digit" in table
    assert (tmp_path / "show" / "number.boxes.png").is_file()
    with Image.open(tmp_path / "show" / "number.digits.png") as strip:
        assert strip.width >= 3 * 28
    assert main(["predict", str(images / "number.jpg"), "--model", model, "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,digit,number") and len(lines) == 2


def test_a_bad_model_is_one_error_line(images: Path, tmp_path: Path, capsys) -> None:
    assert main(["predict", str(images), "--model", str(tmp_path / "nope.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("digitrec predict: error:") and len(err.strip().splitlines()) == 1
