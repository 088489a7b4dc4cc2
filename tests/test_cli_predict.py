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


# --- issue 10: the empty folder, --show onto a file, control characters in names ------------------------
def test_an_empty_folder_is_an_error_not_an_empty_answer(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", str(tmp_path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("digitrec predict: error: no images found in")
    assert len(captured.err.strip().splitlines()) == 1


def test_show_onto_an_existing_file_fails_each_file_not_the_run(images: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "show"
    blocker.write_text("a file where --show wants a folder")
    code, entries = run_json(capsys, str(images / "number.jpg"), str(images / "blank.png"),
                             "--show", str(blocker))
    assert code == 1
    assert [Path(entry["file"]).name for entry in entries] == ["number.jpg", "blank.png"]
    assert all(entry["error"].startswith(f"--show {blocker}:") for entry in entries)
    assert len(entries[0]["digits"]) == 3  # the reading itself is kept
    assert blocker.read_text() == "a file where --show wants a folder"


def test_control_characters_in_names_are_escaped_in_table_and_csv(images: Path, tmp_path: Path, capsys) -> None:
    hostile = tmp_path / "x\x1b]0;owned\x07\x1b[2J\x9bgnp.png"
    hostile.write_bytes((images / "number.jpg").read_bytes())
    broken = tmp_path / "bad\x1b[31m.png"
    broken.write_text("not an image")
    for output in ([], ["--csv"]):
        main(["predict", str(hostile), str(broken), *output])
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "\\x1b]0;owned\\x07\\x1b[2J\\x9bgnp.png" in out.replace("\n", "").replace("│", "").replace(" ", "")
    code, entries = run_json(capsys, str(hostile))
    assert code == 0 and entries[0]["file"] == str(hostile)  # JSON carries the real name (escaped by JSON)


# --- issue 12: all cores, streaming output, resume, recursive, lists -------------------------------------
@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory, number_page, mnist_digits) -> Path:
    """40 photos-like inputs in a folder and a subfolder: digits and 2-3 digit numbers, PNG and JPEG."""
    digits, _ = mnist_digits
    folder = tmp_path_factory.mktemp("many")
    (folder / "sub").mkdir()
    for index in range(40):
        count = 1 + index % 3
        page = (number_page([digits[index * 3 + k] for k in range(count)]) * 255).astype(np.uint8)
        where = folder / "sub" if index % 4 == 0 else folder
        if index % 2:
            Image.fromarray(page).save(where / f"img{index:03d}.png")
        else:
            Image.fromarray(page).convert("RGB").save(where / f"img{index:03d}.jpg", quality=90)
    (folder / "broken.png").write_text("not an image")
    return folder


def test_jobs_give_the_same_answers_as_one_process(many_images: Path, capsys) -> None:
    code1, one = run_json(capsys, str(many_images), "--recursive", "--jobs", "1")
    code2, two = run_json(capsys, str(many_images), "--recursive", "--jobs", "2")
    assert code1 == code2 == 1  # broken.png
    assert len(one) == 41 and one == two  # same order, same answers, to the last probability
    assert sum(1 for entry in one if entry["error"]) == 1
    assert any(Path(entry["file"]).parent.name == "sub" for entry in one)


def test_recursive_is_off_by_default_and_lists_are_read(many_images: Path, tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, flat = run_json(capsys, str(many_images))
    assert len(flat) == 31 and not any("sub" in Path(entry["file"]).parts for entry in flat)
    listed = sorted(str(p) for p in (many_images / "sub").iterdir())
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(listed[:3]) + "\n\n")
    code, from_file = run_json(capsys, "--from-list", str(listing))
    assert code == 0 and [entry["file"] for entry in from_file] == listed[:3]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(listed) + "\n"))
    code, from_stdin = run_json(capsys, "--from-list", "-")
    assert code == 0 and [entry["file"] for entry in from_stdin] == listed


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_output_resume_and_a_killed_runs_half_line(many_images: Path, tmp_path: Path, capsys) -> None:
    _, expected = run_json(capsys, str(many_images), "--jobs", "1")
    names = [entry["file"] for entry in expected]
    out = tmp_path / "out.jsonl"
    listing = tmp_path / "first.txt"
    listing.write_text("\n".join(names[:10]))
    assert expected[0]["error"]  # broken.png, first by name: the exit code says so
    assert main(["predict", "--from-list", str(listing), "--output", str(out)]) == 1
    assert capsys.readouterr().out == ""  # results go to the file, not the terminal
    assert _jsonl(out) == expected[:10]
    # A run killed mid-write leaves half a line: --resume cuts it and reads that input again.
    out.write_text(out.read_text() + json.dumps(expected[10])[:50])
    assert main(["predict", str(many_images), "--output", str(out)]) == 1  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["predict", str(many_images), "--output", str(out), "--resume", "--jobs", "2"]) == 0
    assert _jsonl(out) == expected  # nothing twice, nothing lost, in order
    assert main(["predict", str(many_images), "--output", str(out), "--resume"]) == 0  # nothing left to do
    assert _jsonl(out) == expected


def test_csv_and_parquet_outputs_resume(many_images: Path, tmp_path: Path, capsys) -> None:
    import pyarrow.parquet as pq

    from digitrec.output import arrow_to_entries

    _, expected = run_json(capsys, str(many_images), "--jobs", "1")
    listing = tmp_path / "first.txt"
    listing.write_text("\n".join(entry["file"] for entry in expected[:5]))
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"out{suffix}"
        assert main(["predict", "--from-list", str(listing), "--output", str(out)]) == 1
        assert main(["predict", str(many_images), "--output", str(out), "--resume"]) == 0
        if suffix == ".parquet":
            assert arrow_to_entries(pq.read_table(out)) == expected
            assert not out.with_name("out.parquet.partial").exists()
        else:
            import csv

            with out.open(newline="") as file:
                rows = list(csv.DictReader(file))
            assert [row["file"] for row in rows] == [entry["file"] for entry in expected]
            assert [row["number"] for row in rows] == [entry["number"] or "" for entry in expected]


def test_output_streams_while_inputs_still_arrive(many_images: Path, tmp_path: Path) -> None:
    """Results reach the file as inputs come in: the run has written 5 lines while its list is still open."""
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "stream.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "digitrec", "predict", "--from-list", "-", "--jobs", "1",
                              "--output", str(out)], stdin=subprocess.PIPE, text=True, env=env)
    try:
        paths = sorted(str(p) for p in many_images.glob("img*"))[:5]
        child.stdin.write("\n".join(paths) + "\n")
        child.stdin.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
            time.sleep(0.2)
        assert out.read_text().count("\n") == 5, "results were held back until the input ended"
        assert child.poll() is None  # still waiting for more paths
        child.stdin.close()
        assert child.wait(60) == 0
    finally:
        child.kill()
        child.wait()
        child.stdin.close()


def test_bad_flags_are_one_line(images: Path, tmp_path: Path, capsys) -> None:
    for args in (["--jobs", "-1", str(images)], ["--resume", str(images)], [str(images), "--output", "x.txt"],
                 []):
        assert main(["predict", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("digitrec predict: error:") and len(err.strip().splitlines()) == 1
