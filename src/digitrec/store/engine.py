"""Where the store lives and how to connect to it: a path or URL in, a configured SQLAlchemy engine out.

SQLite is set up for several writers at once (two server workers, a CLI beside a server): WAL journal, a
busy timeout, and `BEGIN IMMEDIATE` so a writer takes the write lock when its transaction starts instead of
failing with "database is locked" when it tries to upgrade a read lock. `synchronous=FULL`: a commit is on
disk before the caller hears about it, so an acknowledged correction survives kill -9 and power loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
import sqlalchemy as sa
from sqlalchemy.engine import make_url

STORE_ENV = "DIGITREC_STORE"
STORE_FILE = "corrections.sqlite3"
SQLITE_BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's transaction before giving up


def default_store_path() -> Path:
    """The SQLite file used when neither `--store` nor $DIGITREC_STORE says otherwise."""
    return Path(platformdirs.user_data_dir("digitrec")) / STORE_FILE


def resolve_store_url(store: str | os.PathLike[str] | None = None) -> str:
    """`--store` (a path or URL), else $DIGITREC_STORE, else the default SQLite file -> a SQLAlchemy URL."""
    text = os.fspath(store) if store is not None else os.environ.get(STORE_ENV) or str(default_store_path())
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        # psycopg 3 is the driver; "postgres://" is what many hosting services hand out.
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if scheme == "sqlite":
        return text
    if scheme:
        raise ValueError(f"unsupported store URL {describe_url(text)!r}: use a file path, sqlite:///PATH"
                         " or postgresql://USER@HOST/DB")
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        path = path / STORE_FILE
    return f"sqlite:///{path}"


def describe_url(url: str) -> str:
    """The URL with any password masked (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing secret to hide in a plain path
        return url


def create_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets its folder created and the pragmas above."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: a server restart between two corrections costs a reconnect, not an error.
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own deferred BEGIN is what deadlocks).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
