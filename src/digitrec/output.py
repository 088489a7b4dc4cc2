"""Streaming writers for per-input result entries (`predict --output`): JSON Lines, CSV and Parquet.

An entry is the CLI's JSON object for one input (`reader.Reader.entry`). Writers take entries as they
arrive and flush as they go, so memory does not grow with the number of inputs and a killed run keeps
what it wrote. `finished_names` reads back which inputs an output already holds (for `--resume`), after
cutting a half-written last line left by a kill.

Columns follow the entries' own keys, so fields added to the recognition reach every format. In CSV and
Parquet, list fields (`digits`, `lines`) are JSON text, except CSV's `digits`, kept in its original
"digit:confidence ..." form; in Parquet, scalar fields get typed columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
CSV_FIRST = ("file", "digit", "number", "confidence", "digits", "error")  # the original CSV columns, in order
PARQUET_ROWS = 1024  # entries per Parquet row group
# Arrow types of the known scalar fields; a field not listed takes its type from its first value.
KNOWN_TYPES = {"file": "string", "digit": "int64", "number": "string", "confidence": "float64",
               "error": "string", "mode": "string", "width": "int64", "height": "int64", "reason": "string",
               "low_confidence": "bool", "truncated": "bool"}


class OutputError(ValueError):
    """An output file that cannot be written or resumed; the message is for users."""


class EntryWriter(Protocol):
    def write(self, entry: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def output_format(path: str | os.PathLike[str]) -> str:
    """"jsonl", "csv" or "parquet" from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OutputError(f"{path}: the output must end in .jsonl, .csv or .parquet")
    return FORMATS[suffix]


def csv_row(entry: dict[str, Any], columns: list[str], escape: Callable[[str], str] = str) -> list[str]:
    """One entry -> CSV cells: numbers as text, confidences to 4 places, text through `escape` (the CLI
    passes one that makes control characters visible)."""
    row = []
    for column in columns:
        value = entry.get(column)
        if column == "digits":
            row.append(" ".join(f"{d['digit']}:{d['confidence']:.3f}" for d in value or []))
        elif column == "confidence":
            row.append("" if value is None else f"{value:.4f}")
        elif value is None:
            row.append("")
        elif isinstance(value, list | dict):
            row.append(json.dumps(value))
        else:
            row.append(escape(str(value)))
    return row


def csv_columns(entry: dict[str, Any]) -> list[str]:
    return [*CSV_FIRST, *(key for key in entry if key not in CSV_FIRST)]


class JsonLinesWriter:
    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def write(self, entry: dict[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        self.file.close()


class CsvWriter:
    def __init__(self, file: IO[str], header: bool = True, escape: Callable[[str], str] = str) -> None:
        self.file = file
        self.escape = escape
        self.writer = csv.writer(file, lineterminator="\n")
        self.header = header
        self.columns: list[str] | None = None

    def write(self, entry: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = csv_columns(entry)
            if self.header:
                self.writer.writerow(self.columns)
        self.writer.writerow(csv_row(entry, self.columns, self.escape))

    def close(self) -> None:
        self.file.close()


class ParquetWriter:
    """Row groups of `PARQUET_ROWS` entries; written to NAME.partial and renamed when complete, so a
    Parquet file at the output path is always whole (a kill loses the run: use .jsonl to resume one)."""

    def __init__(self, path: Path, keep: Any = None) -> None:
        import pyarrow  # noqa: F401  (fail now, with the extra's name, not after the first 1024 images)

        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.keep = keep  # a pyarrow Table already in the output (--resume), written first
        self.writer: Any = None
        self.schema: Any = None
        self.rows: list[dict[str, Any]] = []

    def write(self, entry: dict[str, Any]) -> None:
        self.rows.append(entry)
        if len(self.rows) >= PARQUET_ROWS:
            self._flush()

    def close(self) -> None:
        self._flush()
        if self.writer is None and self.keep is not None:
            self.schema = self.keep.schema
            self._open()
        if self.writer is not None:
            self.writer.close()
            os.replace(self.partial, self.path)

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self.writer = pq.ParquetWriter(self.partial, self.schema)
        if self.keep is not None:
            self.writer.write_table(self.keep.cast(self.schema))

    def _flush(self) -> None:
        if not self.rows:
            return
        if self.schema is None:
            # Types come from the first entry that was read (a failed one has only nulls to go by).
            sample = next((row for row in self.rows if row.get("error") is None), self.rows[0])
            self.schema = self.keep.schema if self.keep is not None else parquet_schema(sample)
            self._open()
        self.writer.write_table(entries_to_arrow(self.rows, self.schema))
        self.rows = []


def parquet_schema(entry: dict[str, Any]) -> Any:
    """The Arrow schema for entries shaped like `entry`: known scalars typed, lists/dicts as JSON text."""
    import pyarrow as pa

    fields = []
    for key, value in entry.items():
        if key in KNOWN_TYPES:
            kind = KNOWN_TYPES[key]
        elif isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int):
            kind = "int64"
        elif isinstance(value, float):
            kind = "float64"
        else:
            kind = "string"  # str, and lists/dicts as JSON text
        fields.append(pa.field(key, {"string": pa.string, "int64": pa.int64, "float64": pa.float64,
                                     "bool": pa.bool_}[kind]()))
    return pa.schema(fields)


def entries_to_arrow(entries: list[dict[str, Any]], schema: Any) -> Any:
    """Entries -> a pyarrow Table of `schema` (list/dict values as JSON text)."""
    import pyarrow as pa

    columns = {}
    for field in schema:
        values = [entry.get(field.name) for entry in entries]
        if pa.types.is_string(field.type):
            # lists/dicts as JSON text; a field first seen empty (typed string) keeps later values as text
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=schema)


def arrow_to_entries(table: Any) -> list[dict[str, Any]]:
    """The inverse of `entries_to_arrow` for the list fields: JSON text back to lists."""
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str) and value[:1] in "[{" and key not in ("file", "number", "error"):
                row[key] = json.loads(value)
    return rows


def open_writer(path: Path, resume: bool, escape: Callable[[str], str] = str) -> EntryWriter:
    """A writer for `path` by its suffix; with `resume`, one that appends to what is there. `escape` is
    applied to CSV text cells."""
    kind = output_format(path)
    if path.exists() and not resume:
        raise OutputError(f"{path} exists: add --resume to continue it, or remove it")
    if kind == "parquet":
        keep = None
        if resume and path.exists():
            import pyarrow.parquet as pq

            keep = pq.read_table(path)
        return ParquetWriter(path, keep)
    existing = resume and path.exists() and path.stat().st_size > 0
    file = open(path, "a" if existing else "w", encoding="utf-8", newline="", buffering=1)  # noqa: SIM115
    return CsvWriter(file, header=not existing, escape=escape) if kind == "csv" else JsonLinesWriter(file)


def finished_names(path: Path) -> set[str]:
    """The `file` of every entry already in an output (empty if there is none), for --resume.

    A JSONL or CSV file cut mid-line by a kill is first truncated to its last whole line.
    """
    if not path.exists():
        return set()
    kind = output_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return set(pq.read_table(path, columns=["file"]).column("file").to_pylist())
        except Exception as error:  # pyarrow raises several types for a file that is not whole Parquet
            raise OutputError(f"{path}: not a complete Parquet file, cannot resume it ({error}); "
                              "use .jsonl output for runs that may be interrupted") from error
    _cut_partial_line(path)
    with open(path, encoding="utf-8", newline="") as file:
        if kind == "jsonl":
            names = set()
            for number, line in enumerate(file, 1):
                if line.strip():
                    try:
                        names.add(json.loads(line)["file"])
                    except (ValueError, KeyError, TypeError) as error:
                        raise OutputError(f"{path}:{number}: not a digitrec JSON line ({error})") from error
            return names
        reader = csv.DictReader(file)
        if reader.fieldnames is None:
            return set()
        if "file" not in reader.fieldnames:
            raise OutputError(f"{path}: not a digitrec CSV (no 'file' column)")
        return {row["file"] for row in reader}


def _cut_partial_line(path: Path) -> None:
    with open(path, "rb+") as file:
        end = file.seek(0, io.SEEK_END)
        start = max(0, end - (1 << 20))  # one entry is a few KB: the last whole line is in the last MB
        file.seek(start)
        tail = file.read()
        if not tail or tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        file.truncate(start + cut + 1 if cut >= 0 else start)
