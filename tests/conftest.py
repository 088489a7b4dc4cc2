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
        pytest.skip(f"{path} not found: the shared data folder is not available here")
    return path


@pytest.fixture(scope="session")
def mnist_dir(shared_dir: Path) -> Path:
    """The folder holding the four canonical MNIST files, gzipped (read-only: never write into it)."""
    path = shared_dir / "mnist"
    missing = [name for name in MNIST_NAMES if not (path / f"{name}.gz").is_file()]
    if missing:
        pytest.skip(f"{path} lacks {', '.join(missing)}")
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
