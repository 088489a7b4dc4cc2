"""The corrections store, on an SQLite file and on a real PostgreSQL (the same tests on both)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from digitrec.store import CorrectionStore, NewCorrection, StoreError, open_store, parse_label, resolve_store_url
from digitrec.store.schema import schema_version


def correction(label: str = "7", n: int = 1, source: str = "cli", fill: int = 200) -> NewCorrection:
    inputs = np.zeros((n, 28, 28), np.uint8)
    inputs[:, 4:24, 12:16] = fill  # (n, 28, 28): a bar, different per call when `fill` differs
    return NewCorrection(label=label, source=source, image=b"\x89PNG fake bytes " + bytes([fill]), image_size=17,
                         image_sha256=f"{fill:064x}", image_reduced=False, inputs=inputs,
                         answer={"number": "1", "digits": [{"digit": 1, "confidence": 0.9}]}, model_version="v2",
                         mode="auto")


def test_round_trip_keeps_everything(store_url: str) -> None:
    with open_store(store_url) as store:
        new = correction("2026", n=4, fill=99)
        ident = store.add(new)
        got = store.get(ident)
        assert got is not None
        assert (got.label, got.source, got.mode, got.model_version) == ("2026", "cli", "auto", "v2")
        assert got.image == new.image and got.image_sha256 == new.image_sha256
        assert got.inputs is not None and got.inputs.shape == (4, 28, 28)
        np.testing.assert_array_equal(got.inputs, new.inputs)
        assert got.answer == new.answer
        assert got.digit_labels == [2, 0, 2, 6]
        assert abs(got.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
        assert store.get(ident + 1000) is None


def test_page_count_delete_and_ids_never_reused(store_url: str) -> None:
    with open_store(store_url) as store:
        ids = [store.add(correction(str(i % 10), fill=i)) for i in range(5)]
        assert store.count() == 5
        assert [c.id for c in store.page(0, 2)] == ids[::-1][:2]  # newest first
        assert [c.id for c in store.page(2, 10, newest_first=False)] == ids[2:]
        assert store.page(0, 2)[0].image is None  # summaries carry no blobs
        before = store.snapshot_id()
        assert store.delete(ids[-1]) is True
        assert store.delete(ids[-1]) is False
        assert store.snapshot_id() != before
        # The validation slice is chosen by id: a deleted id must never come back for another correction.
        assert store.add(correction("3")) > ids[-1]
        assert [c.label for c in store.iter_all()] == ["0", "1", "2", "3", "3"]


def test_none_label_and_misaligned_labels(store_url: str) -> None:
    with open_store(store_url) as store:
        none = store.get(store.add(correction("none", n=2)))
        short = store.get(store.add(correction("12", n=3)))
        assert none is not None and none.digit_labels == [10, 10]
        assert short is not None and short.digit_labels is None  # 2 digits written, 3 crops read: unusable


@pytest.mark.parametrize("label", ["", "seven", "7a", "1" * 33, "-1", "7 2"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="label must be"):
        parse_label(label)


def test_labels_are_normalised() -> None:
    assert parse_label(" 2026 ") == "2026"
    assert parse_label("NONE") == "none"


def test_a_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    engine = sa.create_engine(resolve_store_url(store_url))
    with engine.begin() as connection:
        connection.execute(sa.update(schema_version).values(version=99))
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(store_url)


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_store_url(tmp_path / "a.db") == f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_store_url(tmp_path) == f"sqlite:///{tmp_path / 'corrections.sqlite3'}"
    assert resolve_store_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_store_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("DIGITREC_STORE", str(tmp_path / "env.db"))
    assert resolve_store_url() == f"sqlite:///{tmp_path / 'env.db'}"
    with pytest.raises(ValueError, match="unsupported store URL"):
        resolve_store_url("mysql://u:secret@h/db")


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        CorrectionStore(f"postgresql+psycopg://nobody@/db?host={tmp_path}&connect_timeout=2")


WRITER = """
import sys
import numpy as np
from digitrec.store import NewCorrection, open_store
store = open_store(sys.argv[1])
label, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    inputs = np.full((1, 28, 28), i % 256, np.uint8)
    ident = store.add(NewCorrection(label=label, source="cli", image=b"img%d" % i, image_size=4,
                                    image_sha256="%064x" % i, image_reduced=False, inputs=inputs, answer={}))
    print(ident, flush=True)  # acknowledged: committed
"""


def start_writer(url: str, label: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, url, label, str(count)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_writers_at_once_lose_nothing(store_url: str) -> None:
    open_store(store_url).close()  # tables exist before the race (the race to create them is tested below)
    writers = [start_writer(store_url, label, 80) for label in ("1", "2")]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    for writer, (_, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        assert "locked" not in stderr
    acknowledged = {int(line) for out, _ in outputs for line in out.split()}
    with open_store(store_url) as store:
        stored = {c.id: c.label for c in store.iter_all()}
    assert len(acknowledged) == 160 and set(stored) == acknowledged
    assert sorted(stored.values()).count("1") == 80


def test_two_writers_creating_a_new_store_at_once(store_url: str) -> None:
    writers = [start_writer(store_url, label, 5) for label in ("1", "2")]
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
    with open_store(store_url) as store:
        assert store.count() == 10


def test_kill_9_during_writes_loses_nothing_acknowledged(store_url: str) -> None:
    open_store(store_url).close()
    writer = start_writer(store_url, "5", 100_000)
    assert writer.stdout is not None
    acknowledged = [int(writer.stdout.readline()) for _ in range(30)]
    time.sleep(0.05)  # mid-write, not between two
    os.kill(writer.pid, signal.SIGKILL)
    rest, _ = writer.communicate(timeout=30)
    acknowledged += [int(line) for line in rest.split() if line.strip().isdigit()]
    with open_store(store_url) as store:
        stored = {c.id for c in store.iter_all(with_data=False)}
        assert set(acknowledged) <= stored
        # the store still works after the kill
        assert store.add(correction("5")) > max(stored)
