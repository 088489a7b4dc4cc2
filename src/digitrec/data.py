"""MNIST: find the four canonical files, verify them, download them if missing, load them as arrays.

Where the files come from, in order: an explicit `data_dir`, the `DIGITREC_DATA_DIR` environment
variable, else a per-user cache folder (platformdirs) that is filled from the public mirrors on first use.
Files may be gzipped or raw; the MD5 of the *uncompressed* bytes is what identifies them, so a re-gzipped
copy is as good as the original.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs

from digitrec.download import DownloadError, ProgressFactory, download_verified
from digitrec.idx import IdxError, parse_idx, read_bytes

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DIGITREC_DATA_DIR"
IMAGE_SIZE = 28
NUM_CLASSES = 10

# The published MD5 of each file's uncompressed bytes.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Tried in order; each serves `<name>.gz`. LeCun's own site has been unreliable for years.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DataError(ValueError):
    """MNIST data is missing or invalid; the message names the file and the fault."""


@dataclass(frozen=True)
class DataConfig:
    """Where MNIST lives and how strictly it is checked."""

    data_dir: Path | None = None  # None: $DIGITREC_DATA_DIR, else the per-user cache (downloading there)
    verify_checksums: bool = True  # False accepts non-canonical IDX files (e.g. a user's own digits)
    mirrors: tuple[str, ...] = MNIST_MIRRORS


@dataclass(frozen=True)
class Split:
    """One split of a digit data set: images (N, 28, 28) uint8, white on black; labels (N,) uint8."""

    images: np.ndarray
    labels: np.ndarray
    md5: dict[str, str] = field(default_factory=dict)  # file name -> MD5 of the bytes it was read from


def cache_dir() -> Path:
    """The per-user folder downloads go to."""
    return Path(platformdirs.user_cache_dir("digitrec")) / "mnist"


def resolve_data_dir(config: DataConfig) -> tuple[Path, bool]:
    """Return (folder, may_download): explicit folders are read as they are, the cache is filled."""
    if config.data_dir is not None:
        return Path(config.data_dir).expanduser(), False
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser(), False
    return cache_dir(), True


def find_file(folder: Path, name: str) -> Path | None:
    """The file for `name` in `folder`, gzipped or raw, or None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def ensure_files(config: DataConfig, progress: ProgressFactory | None = None) -> dict[str, Path]:
    """Return the path of each of the four files, downloading missing ones into the cache."""
    folder, may_download = resolve_data_dir(config)
    paths: dict[str, Path] = {}
    for name, md5 in MNIST_FILES.items():
        found = find_file(folder, name)
        if found is None and may_download:
            try:
                found = download_verified(
                    [f"{mirror}{name}.gz" for mirror in config.mirrors],
                    folder / f"{name}.gz",
                    expected_md5=md5,
                    progress=progress,
                )
            except DownloadError as error:
                raise DataError(
                    f"{error}\nPoint --data-dir (or {DATA_DIR_ENV}) at a folder holding the MNIST files."
                ) from error
        if found is None:
            raise DataError(
                f"{folder}: {name}(.gz) not found; MNIST needs the four files {', '.join(MNIST_FILES)}"
                f" (gzipped or raw) in the folder given by --data-dir or {DATA_DIR_ENV}"
            )
        paths[name] = found
    return paths


def _read_checked(path: Path, name: str, verify: bool) -> tuple[np.ndarray, str]:
    """(array, MD5 of the uncompressed bytes) of one MNIST file, checked."""
    # Parse before checking the MD5 so a cut-short or non-IDX file is reported as such, not as a mismatch.
    try:
        data = read_bytes(path)
        array = parse_idx(data, name=str(path))
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from error
    except IdxError as error:  # corrupt gzip (from read_bytes) as well as a bad IDX structure
        raise DataError(str(error)) from error
    digest = md5_hex(data)
    if verify and digest != MNIST_FILES[name]:
        raise DataError(
            f"{path}: checksum mismatch: MD5 of the uncompressed bytes is {digest}, the canonical"
            f" {name} has {MNIST_FILES[name]} (pass --no-verify to accept non-canonical IDX files)"
        )
    return array, digest


def load_split(split: str, config: DataConfig = DataConfig(),
               progress: ProgressFactory | None = None) -> Split:
    """Load the 'train' or 'test' split, checked for shape, dtype, count agreement and checksums."""
    image_name, label_name = SPLITS[split]
    paths = ensure_files(config, progress)
    images, images_md5 = _read_checked(paths[image_name], image_name, config.verify_checksums)
    labels, labels_md5 = _read_checked(paths[label_name], label_name, config.verify_checksums)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(
            f"{paths[image_name]}: wrong dimensions: expected (N, 28, 28) uint8 images,"
            f" got {images.shape} {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{paths[label_name]}: wrong dimensions: expected (N,) uint8 labels, got {labels.shape} {labels.dtype}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"image/label count mismatch: {paths[image_name]} holds {len(images)} images,"
            f" {paths[label_name]} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{paths[label_name]}: label {int(labels.max())} out of range 0-9")
    return Split(images=images, labels=labels, md5={image_name: images_md5, label_name: labels_md5})


def checksums(config: DataConfig = DataConfig()) -> dict[str, str]:
    """MD5 of the uncompressed bytes of each file in use (recorded in every model's metadata)."""
    return {name: md5_hex(read_bytes(path)) for name, path in ensure_files(config).items()}


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the format every model takes."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]
