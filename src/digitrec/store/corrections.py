"""Corrections: add, read, page through, delete, and snapshot them, on SQLite or PostgreSQL alike.

Every write is one transaction committed before the call returns, so a caller that has an id back (and a
client that has its 201) holds a correction that survives kill -9 of the process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from digitrec.store import engine as engines
from digitrec.store.schema import SCHEMA_VERSION, corrections, metadata, schema_version

log = logging.getLogger(__name__)

SOURCES = ("page", "api", "cli")
NONE_LABEL = "none"  # the label meaning "this is not a digit"
MAX_LABEL_DIGITS = 32  # as many digits as one image can be read as
INPUT_SHAPE = (28, 28)
VALIDATION_EVERY = 5  # every 5th correction by id is held out for validation: chosen by id, never by outcome
LABEL_PATTERN = re.compile(rf"[0-9]{{1,{MAX_LABEL_DIGITS}}}")


class StoreError(OSError):
    """The store cannot be opened or used (unreachable server, newer schema, bad file); says which."""


def is_held_out(correction_id: int) -> bool:
    """Whether a correction belongs to the validation slice (fine-tuning never trains on it)."""
    return correction_id % VALIDATION_EVERY == 0


def parse_label(text: str) -> str:
    """A user's label -> its stored form: digits such as "7" or "2026", or "none"; ValueError otherwise."""
    label = str(text).strip()
    if label.lower() == NONE_LABEL:
        return NONE_LABEL
    if not LABEL_PATTERN.fullmatch(label):
        raise ValueError(f"label must be the digits written (such as 7 or 2026, at most {MAX_LABEL_DIGITS})"
                         f" or 'none' for not a digit, got {text!r}")
    return label


@dataclass(frozen=True)
class NewCorrection:
    """A correction about to be stored."""

    label: str  # as parse_label returns it
    source: str  # "page", "api" or "cli"
    image: bytes  # what will be stored (capped: see capture.cap_image)
    image_size: int  # bytes of the original
    image_sha256: str  # of the original
    image_reduced: bool
    inputs: np.ndarray  # (n, 28, 28) uint8: the inputs the model saw, white on black
    answer: dict[str, Any]  # what the model answered
    model_version: str | None = None
    mode: str | None = None
    created_at: dt.datetime | None = None  # None: now


@dataclass(frozen=True)
class Correction:
    """A stored correction; `image` and `inputs` are loaded only when asked for."""

    id: int
    created_at: dt.datetime
    source: str
    label: str
    mode: str | None
    model_version: str | None
    answer: dict[str, Any]
    image_size: int
    image_sha256: str
    image_reduced: bool
    n_inputs: int
    image: bytes | None = field(default=None, repr=False)
    inputs: np.ndarray | None = field(default=None, repr=False)  # (n_inputs, 28, 28) uint8

    @property
    def digit_labels(self) -> list[int] | None:
        """One class per input: the label's digits (10 for "none"), or None when they do not line up."""
        if self.label == NONE_LABEL:
            return [10] * self.n_inputs
        if len(self.label) != self.n_inputs:
            return None
        return [int(ch) for ch in self.label]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "created_at": self.created_at.isoformat(timespec="seconds"), "source": self.source,
            "label": self.label, "mode": self.mode, "model_version": self.model_version, "answer": self.answer,
            "image_size": self.image_size, "image_sha256": self.image_sha256,
            "image_reduced": self.image_reduced, "n_inputs": self.n_inputs,
        }


SUMMARY_COLUMNS = [column for column in corrections.c if column.name not in ("image", "inputs")]


class CorrectionStore:
    """One store (a SQLite file or a PostgreSQL database); thread-safe, cheap to share."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = engines.describe_url(url)
        try:
            self.engine = engines.create_engine(url)
        except (ImportError, sa.exc.ArgumentError) as error:
            raise StoreError(f"cannot use store {self.description}: {error}") from error
        try:
            self._ensure_schema()
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def backend(self) -> str:
        return self.engine.dialect.name  # "sqlite" or "postgresql"

    def _ensure_schema(self) -> None:
        """Create the tables on first use; refuse a store written by a newer digitrec."""
        for attempt in range(5):
            try:
                with self.engine.begin() as connection:
                    metadata.create_all(connection, checkfirst=True)
                    found = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
                    if found is None:
                        connection.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))
                    elif found > SCHEMA_VERSION:
                        raise StoreError(f"store {self.description} has schema version {found}; this digitrec"
                                         f" knows up to {SCHEMA_VERSION}: upgrade digitrec")
                return
            except (IntegrityError, ProgrammingError):
                # Two processes creating the tables at once on PostgreSQL: one loses the race; look again.
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))
            except (OperationalError, DBAPIError) as error:
                raise StoreError(f"cannot open store {self.description}: {_reason(error)}") from error

    def _write(self, statement: sa.Executable) -> sa.CursorResult[Any]:
        try:
            with self.engine.begin() as connection:
                return connection.execute(statement)
        except (OperationalError, DBAPIError) as error:
            raise StoreError(f"store {self.description}: {_reason(error)}") from error

    def add(self, new: NewCorrection) -> int:
        """Store a correction; returns its id once it is committed."""
        if new.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {new.source!r}")
        label = parse_label(new.label)
        inputs = np.ascontiguousarray(new.inputs, dtype=np.uint8).reshape(-1, *INPUT_SHAPE)  # (n, 28, 28)
        values = {
            "created_at": new.created_at or dt.datetime.now(dt.UTC), "source": new.source, "label": label,
            "mode": new.mode, "model_version": new.model_version, "answer": new.answer, "image": new.image,
            "image_size": new.image_size, "image_sha256": new.image_sha256, "image_reduced": new.image_reduced,
            "inputs": inputs.tobytes(), "n_inputs": len(inputs),
        }
        key = self._write(sa.insert(corrections).values(**values)).inserted_primary_key
        if key is None:  # SQLAlchemy gives one for every single-row insert into a table with a primary key
            raise StoreError(f"store {self.description}: the new correction got no id")
        return int(key[0])

    def delete(self, correction_id: int) -> bool:
        """Delete one correction; False when there was none with that id."""
        result = self._write(sa.delete(corrections).where(corrections.c.id == correction_id))
        return result.rowcount > 0

    def _read(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(statement))
        except (OperationalError, DBAPIError) as error:
            raise StoreError(f"store {self.description}: {_reason(error)}") from error

    def get(self, correction_id: int, *, with_data: bool = True) -> Correction | None:
        columns = list(corrections.c) if with_data else SUMMARY_COLUMNS
        rows = self._read(sa.select(*columns).where(corrections.c.id == correction_id))
        return _to_correction(rows[0]) if rows else None

    def count(self) -> int:
        return int(self._read(sa.select(sa.func.count()).select_from(corrections))[0][0])

    def page(self, offset: int = 0, limit: int = 50, *, newest_first: bool = True) -> list[Correction]:
        """Corrections without their image and inputs, newest first by default."""
        order = corrections.c.id.desc() if newest_first else corrections.c.id.asc()
        statement = sa.select(*SUMMARY_COLUMNS).order_by(order).offset(max(offset, 0)).limit(max(limit, 0))
        return [_to_correction(row) for row in self._read(statement)]

    def iter_all(self, *, with_data: bool = True, batch: int = 500) -> Iterator[Correction]:
        """Every correction, oldest first, with image and inputs; read in batches (one snapshot each)."""
        columns = list(corrections.c) if with_data else SUMMARY_COLUMNS
        last = 0
        while True:
            rows = self._read(sa.select(*columns).where(corrections.c.id > last)
                              .order_by(corrections.c.id).limit(batch))
            if not rows:
                return
            for row in rows:
                yield _to_correction(row)
            last = rows[-1].id

    def snapshot_id(self) -> str:
        """Names the store's current contents: count, last id and a hash of (id, image hash, label)."""
        rows = self._read(sa.select(corrections.c.id, corrections.c.image_sha256, corrections.c.label)
                          .order_by(corrections.c.id))
        digest = hashlib.sha256("\n".join(f"{r.id}:{r.image_sha256}:{r.label}" for r in rows).encode())
        return f"{len(rows)}-{rows[-1].id if rows else 0}-{digest.hexdigest()[:12]}"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> CorrectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(store: str | None = None) -> CorrectionStore:
    """The store at `store` (path or URL), else $DIGITREC_STORE, else the SQLite file in the user data folder."""
    return CorrectionStore(engines.resolve_store_url(store))


def _to_correction(row: sa.Row[Any]) -> Correction:
    values = row._mapping
    created = values["created_at"]
    if created.tzinfo is None:  # SQLite keeps no zone; everything is written in UTC
        created = created.replace(tzinfo=dt.UTC)
    inputs = None
    if "inputs" in values:
        inputs = np.frombuffer(values["inputs"], np.uint8).reshape(-1, *INPUT_SHAPE)
    return Correction(
        id=int(values["id"]), created_at=created, source=values["source"], label=values["label"],
        mode=values["mode"], model_version=values["model_version"], answer=values["answer"] or {},
        image_size=int(values["image_size"]), image_sha256=values["image_sha256"],
        image_reduced=bool(values["image_reduced"]), n_inputs=int(values["n_inputs"]),
        image=bytes(values["image"]) if "image" in values else None, inputs=inputs,
    )


def _reason(error: DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
