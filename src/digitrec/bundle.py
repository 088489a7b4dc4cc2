"""Model bundles: a folder holding `model.keras`, `model.tflite` and `model.json`, which describes them.

A model file never travels alone: `model.json` records the architecture, input format, training command,
data checksums and measured accuracy, and loading code reads it. This module only locates and describes
bundles; it imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from digitrec.atomic import atomic_write_text, live_folder

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
METADATA_FILE = "model.json"
MODEL_SUFFIXES = (".keras", ".h5", ".tflite")
# Far above any model digitrec trains (an ensemble of five is a few MB), far below what would exhaust
# memory when the file is read whole (LiteRT and Keras both load it into memory).
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024 * 1024

# The input every digitrec model takes (and the seed's model took).
INPUT_FORMAT: dict[str, Any] = {
    "shape": [28, 28, 1],
    "dtype": "float32",
    "range": [0.0, 1.0],
    "polarity": "white digit on black background (MNIST)",
    "layout": "digit scaled to fit 20x20, centred by mass in 28x28 (MNIST)",
}


class BundleError(ValueError):
    """A model path is missing or not a model digitrec can read."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: either may be None (a lone .tflite has no .keras, and vice versa)."""

    keras_path: Path | None
    tflite_path: Path | None
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def default_bundle_dir() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("digitrec") / "assets" / "default_model"))


def check_model_file(path: Path, max_bytes: int = MAX_MODEL_BYTES) -> Path:
    """`path` if it is a regular file (after symlinks) of at most `max_bytes`; BundleError otherwise.

    A FIFO would block the reader forever and a device (/dev/zero) never ends: both are refused from
    their stat, without opening them, as image paths are.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        raise BundleError(f"{path}: cannot read ({error.strerror or error})") from error
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path}: not a regular file (a device, pipe or socket), not a model")
    if info.st_size > max_bytes:
        raise BundleError(f"{path}: file too large for a model ({info.st_size:,} bytes; limit {max_bytes:,})")
    return Path(path)


def _regular_or_absent(path: Path) -> Path | None:
    """`path` checked as a model file if anything is there, None if nothing is."""
    if not path.exists() and not path.is_symlink():
        return None
    return check_model_file(path)


def read_metadata(folder: Path) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return {}
    check_model_file(path, MAX_METADATA_BYTES)
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: unreadable model metadata ({error})") from error
    if not isinstance(metadata, dict):
        raise BundleError(f"{path}: model metadata must be a JSON object")
    return metadata


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    atomic_write_text(Path(folder) / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=False) + "\n")


def resolve_model(path: str | Path | None) -> ModelSource:
    """Find the model files for a bundle folder, a `.keras`, a legacy `.h5` or a `.tflite` (None: default)."""
    if path is None:
        folder = default_bundle_dir()
        if not (folder / TFLITE_FILE).is_file() and not (folder / KERAS_FILE).is_file():
            raise BundleError(
                "no bundled default model in this installation; pass a model path (digitrec train writes one)"
            )
        path = folder
    path = Path(path).expanduser()
    # A bundle being replaced by a writer without an atomic exchange is missing for an instant (or, if
    # that writer was killed then, until the next one): its previous version is read meanwhile.
    live = live_folder(path)
    if live is not None:
        keras_path, tflite_path = _regular_or_absent(live / KERAS_FILE), _regular_or_absent(live / TFLITE_FILE)
        if keras_path is None and tflite_path is None:
            raise BundleError(f"{path}: not a model bundle (no {KERAS_FILE} or {TFLITE_FILE} inside)")
        return ModelSource(keras_path, tflite_path, read_metadata(live), str(path))
    if not path.exists():
        raise BundleError(f"{path}: no such model file or bundle folder")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise BundleError(f"{path}: not a model (expected a bundle folder or a {', '.join(MODEL_SUFFIXES)} file)")
    check_model_file(path)
    # A model file written beside a model.json (as `train` writes them) still gets its metadata.
    metadata = read_metadata(path.parent) if (path.parent / METADATA_FILE).is_file() else {}
    if suffix == ".tflite":
        return ModelSource(None, path, metadata, str(path))
    return ModelSource(path, None, metadata, str(path))
