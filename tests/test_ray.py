"""`predict --engine ray`: Ray Data on a real local Ray (2 CPUs, no dashboard) gives the rows `predict --json` gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.cli import main


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole session: starting one costs seconds, and nothing leaves this machine."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, number_page, mnist_digits) -> Path:
    """240 images in two folders (digits and numbers, PNG and JPEG) plus one corrupt file."""
    digits, _ = mnist_digits
    folder = tmp_path_factory.mktemp("archive")
    for index in range(240):
        count = 1 + index % 3
        page = (number_page([digits[(index * 3 + k) % 2000] for k in range(count)], height=40) * 255)
        where = folder / ("a" if index % 2 else "b")
        where.mkdir(exist_ok=True)
        image = Image.fromarray(page.astype(np.uint8))
        if index % 3:
            image.save(where / f"{index:04d}.png")
        else:
            image.save(where / f"{index:04d}.jpg", quality=90)
    (folder / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


def local_entries(folder: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["predict", str(folder), "--recursive", "--json", "--jobs", "1"]) == 1  # the corrupt file
    return json.loads(capsys.readouterr().out)


def test_ray_rows_equal_local_predict_json(local_ray: None, archive: Path, tmp_path: Path, capsys) -> None:
    import pyarrow.parquet as pq

    from digitrec.output import arrow_to_entries

    expected = sorted(local_entries(archive, capsys), key=lambda entry: entry["file"])
    assert len(expected) == 241
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--engine", "ray", str(archive), "--recursive", "--output", str(out)]) == 1
    rows = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda row: row["file"])
    assert rows == expected  # every field, every probability
    corrupt = next(row for row in rows if row["file"].endswith("corrupt.png"))
    assert corrupt["error"] and corrupt["digits"] == []

    parquet = tmp_path / "out.parquet"
    assert main(["predict", "--engine", "ray", str(archive / "a"), str(archive / "b" / "*.jpg"),
                 "--output", str(parquet)]) == 1
    table = pq.read_table(parquet)
    assert table.column_names == list(expected[0])  # the same fields as --json, in the same order
    rows = sorted(arrow_to_entries(table), key=lambda row: row["file"])
    wanted = [entry for entry in expected if "/a/" in entry["file"] or entry["file"].endswith(".jpg")]
    assert rows == wanted


def test_ray_missing_inputs_are_error_rows(local_ray: None, archive: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jsonl"
    some = sorted(str(p) for p in (archive / "b").iterdir())[:3]
    assert main(["predict", "--engine", "ray", *some, str(archive / "nope.png"), str(archive / "none-*.png"),
                 "--output", str(out)]) == 1
    rows = {row["file"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {*some, str(archive / "nope.png"), str(archive / "none-*.png")}
    assert rows[str(archive / "nope.png")]["error"] == "no such file"
    assert all(rows[name]["error"] is None and rows[name]["digits"] for name in some)
    assert "5 images, 2 errors" in capsys.readouterr().err


def test_ray_needs_an_output_file(archive: Path, capsys) -> None:
    for extra in ([], ["--output", "out.csv"]):
        assert main(["predict", "--engine", "ray", str(archive), *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith("digitrec predict: error:") and len(err.strip().splitlines()) == 1
