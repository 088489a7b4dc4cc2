"""MNIST data layer: where the files are found, how they are checked, and the error each fault gets.

Downloads are covered in test_download.py; here every folder is local and nothing is fetched.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import digitrec.data
from digitrec.data import (
    DATA_DIR_ENV,
    MNIST_FILES,
    DataConfig,
    DataError,
    cache_dir,
    checksums,
    ensure_files,
    load_split,
    to_model_input,
)
from digitrec.idx import encode_idx

pytestmark = pytest.mark.usefixtures("isolated_cache")

UNVERIFIED = {"verify_checksums": False}
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
ALL_BUT_TEST_LABELS = (*TRAIN_FILES, "t10k-images-idx3-ubyte")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download in these tests is a bug: fail loudly instead of touching a network."""

    def refuse(*args, **kwargs):
        pytest.fail(f"unexpected download: {args} {kwargs}")

    monkeypatch.setattr(digitrec.data, "download_verified", refuse)


def user_set(count_train: int = 6, count_test: int = 4) -> dict[str, np.ndarray]:
    """A small, valid, non-canonical digit set: what a user's own IDX files look like."""
    rng = np.random.default_rng(0)
    counts = {"train": count_train, "t10k": count_test}
    arrays = {}
    for prefix, count in counts.items():
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = np.arange(count, dtype=np.uint8) % 10
    return arrays


def write_set(
    folder: Path, arrays: dict[str, np.ndarray], gzipped: bool = True, replace: dict[str, bytes] | None = None
) -> Path:
    """Write the four files into `folder`; `replace` swaps a file's IDX bytes for hand-made ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = (replace or {}).get(name, encode_idx(array))
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def link_mnist(folder: Path, mnist_dir: Path, names=tuple(MNIST_FILES)) -> Path:
    """Symlink the real gzipped files into `folder` (no 11 MB copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    return folder


# --- Where the files come from ------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count"), [("train", 60_000), ("test", 10_000)], ids=["train", "test"])
def test_load_split_reads_real_mnist(mnist_dir: Path, split: str, count: int) -> None:
    data = load_split(split, DataConfig(data_dir=mnist_dir))
    assert data.images.shape == (count, 28, 28)
    assert data.images.dtype == np.uint8
    assert data.labels.shape == (count,)
    assert set(np.unique(data.labels)) == set(range(10))
    # White digits on black: the background (most pixels) is 0.
    assert np.median(data.images) == 0
    assert data.images.max() == 255


def test_checksums_of_real_mnist_are_the_published_ones(mnist_dir: Path) -> None:
    assert checksums(DataConfig(data_dir=mnist_dir)) == MNIST_FILES


def test_environment_variable_is_honoured(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))
    paths = ensure_files(DataConfig())
    assert paths == {name: mnist_dir / f"{name}.gz" for name in MNIST_FILES}
    assert not isolated_cache.exists()


def test_explicit_data_dir_wins_over_the_environment(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    paths = ensure_files(DataConfig(data_dir=mnist_dir))
    assert {path.parent for path in paths.values()} == {mnist_dir}


def test_data_dir_expands_the_home_folder(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    link_mnist(tmp_path / "digits", mnist_dir)
    paths = ensure_files(DataConfig(data_dir=Path("~/digits")))
    assert {path.parent for path in paths.values()} == {tmp_path / "digits"}


def test_files_already_in_the_cache_are_used_without_downloading(
    mnist_dir: Path, isolated_cache: Path
) -> None:
    link_mnist(isolated_cache, mnist_dir)
    paths = ensure_files(DataConfig())
    assert {path.parent for path in paths.values()} == {isolated_cache}


@pytest.mark.parametrize("from_env", [False, True], ids=["data-dir", "env"])
def test_missing_file_in_an_explicit_folder_is_an_error_not_a_download(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    folder = link_mnist(tmp_path / "partial", mnist_dir, names=["train-images-idx3-ubyte"])
    if from_env:
        monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    config = DataConfig() if from_env else DataConfig(data_dir=folder)
    with pytest.raises(DataError) as caught:
        load_split("test", config)
    message = str(caught.value)
    assert f"{folder}: train-labels-idx1-ubyte(.gz) not found" in message
    assert "--data-dir" in message and DATA_DIR_ENV in message


def test_cache_dir_is_the_platformdirs_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME steers platformdirs on Linux only")
    # `cache_dir` was imported before isolated_cache patched the module attribute: this is the real one.
    assert digitrec.data.cache_dir is not cache_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "digitrec" / "mnist"


# --- Raw, re-gzipped and user files -------------------------------------------------------------------


def _gunzip_to(source: Path, destination: Path) -> None:
    destination.write_bytes(gzip.decompress(source.read_bytes()))


def _regzip_to(source: Path, destination: Path) -> None:
    destination.with_name(destination.name + ".gz").write_bytes(
        gzip.compress(gzip.decompress(source.read_bytes()), compresslevel=1)
    )


@pytest.mark.parametrize("convert", [_gunzip_to, _regzip_to], ids=["raw", "regzipped"])
def test_canonical_content_passes_the_checksum_in_any_wrapper(
    mnist_dir: Path, tmp_path: Path, convert: Callable[[Path, Path], None]
) -> None:
    folder = link_mnist(tmp_path / "mixed", mnist_dir, names=TRAIN_FILES)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        convert(mnist_dir / f"{name}.gz", folder / name)

    data = load_split("test", DataConfig(data_dir=folder))
    assert data.images.shape == (10_000, 28, 28)
    assert checksums(DataConfig(data_dir=folder)) == MNIST_FILES


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzipped", "raw"])
def test_unverified_config_accepts_a_user_digit_set(tmp_path: Path, gzipped: bool) -> None:
    arrays = user_set()
    folder = write_set(tmp_path / "mine", arrays, gzipped=gzipped)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_split(split, DataConfig(data_dir=folder, **UNVERIFIED))
        np.testing.assert_array_equal(data.images, arrays[f"{prefix}-images-idx3-ubyte"])
        np.testing.assert_array_equal(data.labels, arrays[f"{prefix}-labels-idx1-ubyte"])


def test_user_digit_set_fails_the_checksum_by_default(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "mine", user_set())
    with pytest.raises(DataError) as caught:
        load_split("train", DataConfig(data_dir=folder))
    message = str(caught.value)
    assert message.startswith(f"{folder / 'train-images-idx3-ubyte.gz'}: checksum mismatch")
    assert MNIST_FILES["train-images-idx3-ubyte"] in message
    assert "--no-verify" in message


# --- Every fault in bad data, with the file named -----------------------------------------------------

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
_valid_images = encode_idx(np.zeros((6, 28, 28), dtype=np.uint8))


@pytest.mark.parametrize(
    ("replace", "bad_file", "fault"),
    [
        ({IMAGES: _valid_images[:-100]}, IMAGES, "truncated"),
        ({IMAGES: b"\x00\x00"}, IMAGES, "truncated"),
        ({IMAGES: b"\x00\x01\x08\x03" + _valid_images[4:]}, IMAGES, "wrong magic number 0x00010803"),
        ({LABELS: b"\x00\x00\x07\x01" + encode_idx(np.zeros(6, np.uint8))[4:]}, LABELS, "wrong magic number"),
        ({IMAGES: encode_idx(np.zeros((6, 28, 27), dtype=np.uint8))}, IMAGES, "wrong dimensions"),
        ({IMAGES: encode_idx(np.zeros((6, 784), dtype=np.uint8))}, IMAGES, "wrong dimensions"),
        ({IMAGES: encode_idx(np.zeros((6, 28, 28), dtype=np.float32))}, IMAGES, "wrong dimensions"),
        ({LABELS: encode_idx(np.zeros((6, 1), dtype=np.uint8))}, LABELS, "wrong dimensions"),
        ({LABELS: encode_idx(np.zeros(6, dtype=">i4"))}, LABELS, "wrong dimensions"),
        ({LABELS: encode_idx(np.zeros(5, dtype=np.uint8))}, IMAGES, "image/label count mismatch"),
        ({LABELS: encode_idx(np.array([0, 1, 2, 3, 4, 10], np.uint8))}, LABELS, "label 10 out of range"),
    ],
    ids=[
        "truncated-data",
        "truncated-header",
        "wrong-magic",
        "unknown-type-code",
        "images-wrong-size",
        "images-flat",
        "images-wrong-dtype",
        "labels-2d",
        "labels-wrong-dtype",
        "count-mismatch",
        "label-out-of-range",
    ],
)
def test_bad_user_data_gets_an_error_naming_the_file_and_the_fault(
    tmp_path: Path, replace: dict[str, bytes], bad_file: str, fault: str
) -> None:
    folder = write_set(tmp_path / "mine", user_set(), replace=replace)
    with pytest.raises(DataError) as caught:
        load_split("train", DataConfig(data_dir=folder, **UNVERIFIED))
    message = str(caught.value)
    assert fault in message
    assert str(folder / f"{bad_file}.gz") in message


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_corrupt_gzip_is_a_data_error_naming_the_file(tmp_path: Path, verify: bool) -> None:
    folder = write_set(tmp_path / "mine", user_set())
    path = folder / f"{IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:-20])  # cut into the deflate stream and trailer
    with pytest.raises(DataError) as caught:
        load_split("train", DataConfig(data_dir=folder, verify_checksums=verify))
    assert str(caught.value).startswith(f"{path}: truncated or corrupt gzip data")


def test_count_mismatch_names_both_files_and_both_counts(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "mine", user_set(), replace={LABELS: encode_idx(np.zeros(5, np.uint8))})
    with pytest.raises(DataError) as caught:
        load_split("train", DataConfig(data_dir=folder, **UNVERIFIED))
    assert str(caught.value) == (
        f"image/label count mismatch: {folder / (IMAGES + '.gz')} holds 6 images,"
        f" {folder / (LABELS + '.gz')} holds 5 labels"
    )


def test_truncated_canonical_file_is_reported_as_truncated(mnist_dir: Path, tmp_path: Path) -> None:
    # With checksums on (the default), a cut-short MNIST file should still say what is wrong with it.
    folder = link_mnist(tmp_path / "cut", mnist_dir, names=ALL_BUT_TEST_LABELS)
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels[:5000])
    with pytest.raises(DataError, match="truncated") as caught:
        load_split("test", DataConfig(data_dir=folder))
    assert str(caught.value).startswith(f"{folder / 't10k-labels-idx1-ubyte'}: truncated")


def test_corrupted_canonical_file_fails_the_checksum(mnist_dir: Path, tmp_path: Path) -> None:
    folder = link_mnist(tmp_path / "flipped", mnist_dir, names=ALL_BUT_TEST_LABELS)
    labels = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10  # still a valid IDX file with labels in range: only the MD5 can tell
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(DataError, match="checksum mismatch") as caught:
        load_split("test", DataConfig(data_dir=folder))
    assert str(caught.value).startswith(str(folder / "t10k-labels-idx1-ubyte"))
    # The same bytes load once checksums are off: the check was the only thing that stopped them.
    assert load_split("test", DataConfig(data_dir=folder, **UNVERIFIED)).labels[-1] == labels[-1]


def test_data_error_is_a_value_error() -> None:
    # The CLI reports ValueError subclasses as user-facing errors; DataError must stay one of them.
    assert issubclass(DataError, ValueError)


def test_to_model_input_scales_to_unit_floats_with_a_channel() -> None:
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    model_input = to_model_input(images)
    assert model_input.shape == (1, 2, 2, 1)
    assert model_input.dtype == np.float32
    np.testing.assert_allclose(model_input[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]])


def _gzip_bomb(payload: bytes, inflated_bytes: int) -> bytes:
    """`payload` gzipped, then gzip members of zeros inflating to `inflated_bytes` more (64 MB each, 65 kB
    compressed): gzip readers concatenate members, so a 3 MB file inflates to 3 GB."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = zeros.compress(bytes(64 << 20)) + zeros.flush()
    return gzip.compress(payload, mtime=0) + member * (inflated_bytes // (64 << 20))


def test_gzip_bomb_in_the_data_folder_is_one_error_in_bounded_memory(tmp_path: Path, mnist_dir: Path) -> None:
    """The real test labels followed by 3 GB of zeros, in 3 MB: reading stops where the IDX header's shape
    ends. The command runs with 1.5 GB of address space, which inflating the whole file would exceed."""
    import resource
    import subprocess

    folder = link_mnist(tmp_path / "data", mnist_dir, names=[n for n in MNIST_FILES if n != "t10k-labels-idx1-ubyte"])
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bomb = folder / "t10k-labels-idx1-ubyte.gz"
    bomb.write_bytes(_gzip_bomb(labels, 3 << 30))
    assert bomb.stat().st_size < 4 << 20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    result = subprocess.run([sys.executable, "-m", "digitrec", "evaluate", "--data-dir", str(folder)],
                            preexec_fn=limit_memory, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"digitrec evaluate: error: {bomb}: over 1,048,576 unexpected bytes after"
                                     " the data of shape (10000,)")


def test_an_idx_header_claiming_more_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    from digitrec.idx import IdxError, read_bytes

    path = tmp_path / "huge-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 28, 28))))
    with pytest.raises(IdxError, match=r"shape \(1000000, 28, 28\) needs 784,000,000 bytes of data, over the limit"):
        read_bytes(path, max_bytes=100 << 20)
