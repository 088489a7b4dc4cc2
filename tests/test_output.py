"""Streaming result writers: every field type survives Parquet, CSV keeps its first columns, --resume reads back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from digitrec.output import (
    CsvWriter,
    OutputError,
    arrow_to_entries,
    entries_to_arrow,
    finished_names,
    open_writer,
    output_format,
    parquet_schema,
)

ENTRY = {"file": "a.png", "digit": None, "number": "12", "confidence": 0.9, "error": None,
         "digits": [{"digit": 1, "confidence": 0.95, "box": [1, 2, 3, 4], "not_digit": 0.01},
                    {"digit": 2, "confidence": 0.95, "box": [5, 2, 3, 4], "not_digit": 0.02}],
         "reason": None, "lines": [{"text": "12", "digits": [0, 1], "box": [1, 2, 7, 4]}], "truncated": False,
         "low_confidence": True, "a_new_count": 3, "a_new_score": 0.5, "a_new_flag": True}
FAILED = {**{key: [] if isinstance(value, list) else None for key, value in ENTRY.items()},
          "file": "b.png", "error": "not an image"}


def test_parquet_keeps_every_type_and_field() -> None:
    schema = parquet_schema(ENTRY)
    assert str(schema.field("low_confidence").type) == "bool" and str(schema.field("a_new_count").type) == "int64"
    assert str(schema.field("digit").type) == "int64" and str(schema.field("a_new_flag").type) == "bool"
    table = entries_to_arrow([ENTRY, FAILED], schema)
    assert table.column_names == list(ENTRY)
    assert arrow_to_entries(table) == [ENTRY, FAILED]


def test_a_failed_first_entry_still_types_the_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "r.parquet"
    writer = open_writer(out, resume=False)
    writer.write(FAILED)
    writer.write(ENTRY)
    writer.close()
    table = pq.read_table(out)
    assert str(table.schema.field("a_new_count").type) == "int64"  # typed from the entry that was read
    assert arrow_to_entries(table) == [FAILED, ENTRY]


def test_csv_keeps_the_original_columns_first_and_escapes_through_the_callers_function() -> None:
    buffer = io.StringIO()
    writer = CsvWriter(buffer, escape=lambda text: text.replace("\x1b", "\\x1b"))
    writer.write({**ENTRY, "file": "x\x1by.png"})
    header, row = buffer.getvalue().splitlines()
    assert header.startswith("file,digit,number,confidence,digits,error,")
    assert row.startswith("x\\x1by.png,,12,0.9000,1:0.950 2:0.950,,") and "\x1b" not in row


def test_resume_reads_names_back_and_cuts_a_half_line(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    writer = open_writer(out, resume=False)
    writer.write(ENTRY)
    writer.close()
    out.write_text(out.read_text() + '{"file": "half')
    assert finished_names(out) == {"a.png"}
    assert out.read_text().endswith("}\n")
    with pytest.raises(OutputError, match="--resume"):
        open_writer(out, resume=False)
    with pytest.raises(OutputError, match=r"\.jsonl, \.csv or \.parquet"):
        output_format("r.txt")
    broken = tmp_path / "r.parquet"
    broken.write_bytes(b"PAR1 not whole")
    with pytest.raises(OutputError, match="not a complete Parquet file"):
        finished_names(broken)
