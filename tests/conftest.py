"""Fixtures shared across the test suite. Each block is self-contained; append new ones below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# --- MNIST data fixtures (data layer tests) ------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only `../shared` folder beside the repository (real MNIST and other fixtures)."""
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.fail(f"{path} not found: the tests need the shared data folder beside the repository")
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four canonical MNIST files, gzipped (read-only: never write into it).

    $DIGITREC_DATA_DIR when set (as the README's test command sets it), else `../shared/mnist`.
    """
    import os

    # Absolute: tests that change the working folder must still find it (the README passes a relative path).
    path = Path(os.environ.get("DIGITREC_DATA_DIR") or REPO_ROOT.parent / "shared" / "mnist").resolve()
    missing = [name for name in MNIST_NAMES if not (path / f"{name}.gz").is_file()]
    if missing:
        pytest.fail(f"{path} lacks {', '.join(missing)}: point DIGITREC_DATA_DIR at the MNIST files")
    return path


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Redirect the per-user MNIST cache into a temp folder and unset DIGITREC_DATA_DIR; yield the cache."""
    import digitrec.data

    cache = tmp_path / "user-cache" / "mnist"
    monkeypatch.delenv(digitrec.data.DATA_DIR_ENV, raising=False)
    # Belt and braces: platformdirs itself also points into tmp_path should anything bypass cache_dir().
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(digitrec.data, "cache_dir", lambda: cache)
    yield cache


# --- Real-image fixtures (imageio, preprocess, segment, recognize, predict CLI) -------------------------


@pytest.fixture(scope="session")
def seed_classifier(shared_dir: Path):
    """The seed project's model (Keras .h5) through `digitrec.runtime.load_classifier`."""
    from digitrec.runtime import load_classifier

    path = shared_dir / "seed" / "mnist_cnn_model.h5"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_classifier(path)


@pytest.fixture(scope="session")
def mnist_digits(mnist_dir: Path):
    """The first 2000 MNIST test digits: (images (2000, 28, 28) uint8 white on black, labels (2000,) uint8)."""
    from digitrec.data import DataConfig, load_split

    split = load_split("test", DataConfig(data_dir=mnist_dir))
    return split.images[:2000], split.labels[:2000]


def _page_with(digits, gap: int = 12, height: int = 60):
    """MNIST digits (28, 28) uint8 side by side as dark ink on a light page -> (H, W) float32 grey."""
    import cv2
    import numpy as np

    inks = [cv2.resize(d.astype(np.float32) / 255, (height, height)) for d in digits]
    crops = []
    for ink in inks:
        columns = np.nonzero(ink.max(axis=0) > 0.05)[0]
        crops.append(ink[:, columns[0] : columns[-1] + 1])
    margin = 24
    width = sum(c.shape[1] for c in crops) + gap * (len(crops) - 1) + 2 * margin
    alpha = np.zeros((height + 40, width), np.float32)
    x = margin
    for crop in crops:
        window = alpha[20 : 20 + height, x : x + crop.shape[1]]
        window[:] = np.maximum(window, crop)
        x += crop.shape[1] + gap
    return (0.92 - 0.8 * alpha.clip(0, 1)).astype(np.float32)



@pytest.fixture(scope="session")
def number_page():
    """page_with(digits, gap=12, height=60): MNIST digits side by side as dark ink on a light page."""
    return _page_with


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny (all-zero) compressed body."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # a few rows are enough to look real
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")



@pytest.fixture(scope="session")
def png_bomb():
    """png_bomb(width, height): a tiny, valid PNG whose header claims width x height pixels."""
    return _png_bomb


# --- Corrections store: a real PostgreSQL for the store tests (and SQLite beside it) --------------------

POSTGRES_ENV = "DIGITREC_TEST_POSTGRES"  # a server URL (.ci/run starts one); unset: the session starts its own


def _postgres_binary(name: str) -> str:
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} not found: install PostgreSQL (Debian: apt-get install postgresql);"
                    " the store tests need a real server")
    return found


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL for the session: $DIGITREC_TEST_POSTGRES, else a throw-away server.

    The throw-away one lives in a temp folder and listens on a unix socket only; as root it runs as
    `nobody` (PostgreSQL refuses to run as root). If it cannot start the tests fail, they never skip.
    """
    import os
    import shutil
    import subprocess
    import tempfile

    if os.environ.get(POSTGRES_ENV):
        yield os.environ[POSTGRES_ENV]
        return
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="digitrec-pg-"))
    root.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, log = root / "data", root / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120, cwd=root)
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start ({' '.join(command[:2])}): {done.stderr}{done.stdout}{server_log}")

    try:
        run(initdb, "-D", str(data), "-U", "digitrec", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-k {root} -c listen_addresses='' -c max_connections=60", "start")
        yield f"postgresql://digitrec@/postgres?host={root}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    import uuid

    import psycopg

    name = f"digitrec_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, query = postgres_server.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store test on an SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store" / "corrections.sqlite3")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True, scope="session")
def _private_store_and_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep every test (and every server or CLI it starts) off the user's own corrections and model versions:
    `serve` runs the active version of $DIGITREC_MODELS, so a promote in the real user folder would change
    what other tests see."""
    import os

    root = tmp_path_factory.mktemp("user-data")
    saved = {name: os.environ.get(name) for name in ("DIGITREC_STORE", "DIGITREC_MODELS", "DIGITREC_API_TOKEN")}
    os.environ["DIGITREC_STORE"] = str(root / "corrections.sqlite3")
    os.environ["DIGITREC_MODELS"] = str(root / "models")
    os.environ.pop("DIGITREC_API_TOKEN", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
