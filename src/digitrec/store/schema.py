"""The store's tables, and the schema version kept in the database itself.

One row per correction. The 28x28 inputs the model saw are kept as raw uint8 bytes (n_inputs x 784), so
fine-tuning trains on exactly what the model read, whatever the preprocessing becomes later.
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1  # bump with a migration in corrections.migrate() when a table changes

metadata = sa.MetaData()

schema_version = sa.Table(
    "digitrec_schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
)

corrections = sa.Table(
    "digitrec_corrections", metadata,
    # sqlite_autoincrement: ids are never reused after a delete (the validation slice is chosen by id).
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),  # "page", "api" or "cli"
    sa.Column("label", sa.String(64), nullable=False),  # "7", "2026", or "none" (not a digit)
    sa.Column("mode", sa.String(8), nullable=True),  # the reading mode asked for: auto, digit, number
    sa.Column("model_version", sa.String(128), nullable=True),  # registry version that answered; None: unversioned
    sa.Column("answer", sa.JSON, nullable=False),  # what the model answered: number, digits, confidences
    sa.Column("image", sa.LargeBinary, nullable=False),  # the original bytes (or a smaller PNG past the cap)
    sa.Column("image_size", sa.Integer, nullable=False),  # bytes of the original upload
    sa.Column("image_sha256", sa.String(64), nullable=False),  # of the original upload
    sa.Column("image_reduced", sa.Boolean, nullable=False),  # True: `image` is a re-encoded, smaller copy
    sa.Column("inputs", sa.LargeBinary, nullable=False),  # (n_inputs, 28, 28) uint8, C order
    sa.Column("n_inputs", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)
sa.Index("ix_digitrec_corrections_created_at", corrections.c.created_at)
