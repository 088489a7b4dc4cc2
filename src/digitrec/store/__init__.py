"""The corrections store: what users said the model got wrong, kept durably for fine-tuning.

SQLite in the user data folder by default, PostgreSQL for a `postgresql://` URL (several servers sharing one
store), both through SQLAlchemy 2 Core. `open_store(url)` is the entry point; see `corrections.py`.
"""

from digitrec.store.corrections import (
    SOURCES,
    Correction,
    CorrectionStore,
    NewCorrection,
    StoreError,
    is_held_out,
    open_store,
    parse_label,
)
from digitrec.store.engine import STORE_ENV, default_store_path, describe_url, resolve_store_url

__all__ = [
    "SOURCES",
    "STORE_ENV",
    "Correction",
    "CorrectionStore",
    "NewCorrection",
    "StoreError",
    "default_store_path",
    "describe_url",
    "is_held_out",
    "open_store",
    "parse_label",
    "resolve_store_url",
]
