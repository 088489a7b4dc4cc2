"""digitrec feedback add / list / delete / export, on a temporary SQLite store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from digitrec.cli import main
from digitrec.data import DataConfig, load_split
from digitrec.store import open_store


def write_digit(path: Path, digit: np.ndarray) -> Path:
    """An MNIST digit (28, 28) as a user's picture: dark ink on white, 4x larger."""
    cv2.imwrite(str(path), cv2.resize(255 - digit, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))
    return path


@pytest.fixture
def pictures(tmp_path: Path, mnist_digits) -> list[tuple[Path, int]]:
    images, labels = mnist_digits
    return [(write_digit(tmp_path / f"digit{i}.png", images[i]), int(labels[i])) for i in range(8)]


def test_add_list_delete_export(tmp_path: Path, pictures, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "store.db")]
    (first, label0), (second, _) = pictures[0], pictures[1]
    assert main(["feedback", "add", "--label", str(label0), str(first), str(second), *store,
                 "--models-dir", str(tmp_path / "models")]) == 0
    assert capsys.readouterr().out.count("added ") == 2
    csv = tmp_path / "more.csv"
    csv.write_text("file,label\n" + "".join(f"{path.name},{label}\n" for path, label in pictures[2:]))
    assert main(["feedback", "add", "--from-csv", str(csv), *store]) == 0
    assert main(["feedback", "list", "--json", *store]) == 0
    listing = json.loads(_last_json(capsys))
    assert listing["total"] == 8
    first_item = listing["items"][-1]  # newest first
    assert first_item["label"] == str(label0) and first_item["source"] == "cli" and first_item["n_inputs"] == 1
    assert first_item["answer"]["digit"] == label0  # what the model read is kept
    # the original file is kept as it was sent, byte for byte (not its decoded pixels)
    original = first.read_bytes()
    assert first_item["image_size"] == len(original)
    assert first_item["image_sha256"] == hashlib.sha256(original).hexdigest()
    with open_store(str(tmp_path / "store.db")) as opened:
        kept = opened.get(first_item["id"])
        assert kept is not None and kept.image == original

    assert main(["feedback", "delete", "8", *store]) == 0
    assert main(["feedback", "delete", "8", *store]) == 1
    error = capsys.readouterr().err
    assert "no correction with id 8" in error and error.count("\n") == 1

    out = tmp_path / "export"
    assert main(["feedback", "export", str(out), "--format", "idx", *store]) == 0
    train = load_split("train", DataConfig(data_dir=out, verify_checksums=False))
    held_out = load_split("test", DataConfig(data_dir=out, verify_checksums=False))
    assert len(train.labels) == 6 and len(held_out.labels) == 1  # ids 1-7 left: id 5 is the held-out one
    assert held_out.labels[0] == pictures[4][1]
    assert train.images.shape[1:] == (28, 28) and train.images.max() > 100
    assert main(["feedback", "export", str(tmp_path / "png"), "--format", "png", *store]) == 0
    assert len(list((tmp_path / "png").glob("*/*.png"))) == 7


def _last_json(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    return out[out.index("{"):]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--label", "seven", "X"], "label must be"), (["X"], "give --label"),
     (["--label", "7"], "needs at least one FILE"), ([], "nothing to add")],
    ids=["bad-label", "no-label", "no-files", "nothing"],
)
def test_bad_adds_are_one_line_errors(tmp_path: Path, pictures, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    args = [str(pictures[0][0]) if arg == "X" else arg for arg in args]
    assert main(["feedback", "add", *args, "--store", str(tmp_path / "store.db")]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    with open_store(str(tmp_path / "store.db")) as store:
        assert store.count() == 0


def test_one_unreadable_file_does_not_stop_the_rest(tmp_path: Path, pictures,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    assert main(["feedback", "add", "--label", "3", str(tmp_path / "broken.png"), str(pictures[0][0]),
                 "--store", str(tmp_path / "store.db")]) == 1
    assert "broken.png" in capsys.readouterr().err
    with open_store(str(tmp_path / "store.db")) as store:
        assert store.count() == 1
