"""IDX format: exact encoding, read/write round trips (raw and gzipped), and an error for every fault."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitrec.idx import IdxError, encode_idx, parse_idx, read_bytes, read_idx, write_idx


def idx_header(type_code: int, *shape: int) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def test_encode_idx_writes_the_published_layout() -> None:
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert encode_idx(array) == idx_header(0x08, 2, 3) + bytes(range(6))


def test_encode_idx_stores_multibyte_values_big_endian() -> None:
    array = np.array([1, -2], dtype="<i2")
    assert encode_idx(array) == idx_header(0x0B, 2) + b"\x00\x01\xff\xfe"


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[-300, 300]], dtype=">i2"),
        np.array([-(2**31), 2**31 - 1], dtype="<i4"),
        np.array([0.5, -1.25, np.inf], dtype=np.float32),
        np.array([[np.pi]], dtype=">f8"),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["uint8-3d", "int8", "int16-big-endian", "int32-little-endian", "float32", "float64", "empty"],
)
@pytest.mark.parametrize(
    ("filename", "compress", "gzipped"),
    [("a.gz", None, True), ("a", None, False), ("a", True, True), ("a.gz", False, False)],
    ids=["gz-suffix", "raw-suffix", "forced-gzip", "forced-raw"],
)
def test_write_then_read_round_trips(
    tmp_path: Path, array: np.ndarray, filename: str, compress: bool | None, gzipped: bool
) -> None:
    path = tmp_path / filename
    write_idx(path, array, compress=compress)

    assert (path.read_bytes()[:2] == b"\x1f\x8b") is gzipped
    loaded = read_idx(path)
    assert loaded.shape == array.shape
    assert loaded.dtype == array.dtype.newbyteorder("=")
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    assert sorted(p.name for p in tmp_path.iterdir()) == [filename]  # no temporary file left behind


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.dtype(">i2"), np.dtype("<i4"), np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_parse_inverts_encode_for_any_array(array: np.ndarray) -> None:
    parsed = parse_idx(encode_idx(array))
    assert parsed.shape == array.shape
    np.testing.assert_array_equal(parsed, array)


def test_read_idx_reads_real_mnist_labels(mnist_dir: Path) -> None:
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))


def test_read_bytes_detects_gzip_by_content_not_name(tmp_path: Path) -> None:
    data = idx_header(0x08, 3) + b"\x01\x02\x03"
    misnamed_gzip = tmp_path / "labels"  # gzipped, but no .gz suffix
    misnamed_gzip.write_bytes(gzip.compress(data))
    misnamed_raw = tmp_path / "labels.gz"  # raw, but a .gz suffix
    misnamed_raw.write_bytes(data)

    assert read_bytes(misnamed_gzip) == data
    assert read_bytes(misnamed_raw) == data


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"", "truncated"),
        (b"\x00\x00\x08", "truncated"),
        (bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big"), "truncated: header needs 16 bytes"),
        (idx_header(0x08, 2, 3) + bytes(5), "truncated: shape (2, 3) needs 18 bytes, file has 17"),
        (idx_header(0x0C, 2) + bytes(7), "truncated"),  # int32 data counts 4 bytes per value
        (idx_header(0x08, 2) + bytes(3), "1 unexpected bytes after the data of shape (2,)"),
        (b"\x1f\x8b\x08\x00" + bytes(8), "wrong magic number 0x1f8b0800"),
        (b"\x01\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x00", "wrong magic number"),
        (idx_header(0x0A, 1) + b"\x00", "wrong magic number 0x00000a01"),
        (b"\x00\x00\x08\x00", "wrong magic number"),
        (b"P5\n28 28\n255\n" + bytes(784), "wrong magic number"),
        # 65536**4 overflows int64: the size check must not wrap around to 0 and accept a 20-byte file.
        (idx_header(0x08, 65536, 65536, 65536, 65536), "truncated"),
    ],
    ids=[
        "empty",
        "short-magic",
        "short-header",
        "short-data",
        "short-multibyte-data",
        "trailing-bytes",
        "gzip-magic",
        "nonzero-leading-bytes",
        "unknown-type-code",
        "zero-dimensions",
        "not-idx-at-all",
        "dimensions-overflow",
    ],
)
def test_parse_idx_names_the_file_and_the_fault(data: bytes, fault: str) -> None:
    with pytest.raises(IdxError) as caught:
        parse_idx(data, name="digits.idx")
    message = str(caught.value)
    assert message.startswith("digits.idx: ")
    assert fault in message


@pytest.mark.parametrize(
    "corrupt",
    [lambda gz: gz[: len(gz) // 2], lambda gz: gz[:-8] + bytes(8)],
    ids=["truncated-gzip", "bad-gzip-trailer"],
)
def test_read_idx_reports_corrupt_gzip_with_the_path(tmp_path: Path, corrupt) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(corrupt(gzip.compress(encode_idx(np.arange(200, dtype=np.uint8)))))
    with pytest.raises(IdxError, match="truncated or corrupt gzip") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_read_idx_of_a_truncated_raw_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(encode_idx(np.zeros((3, 28, 28), dtype=np.uint8))[:-1])
    with pytest.raises(IdxError, match="truncated") as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "dtype", [np.int64, np.bool_, np.float16, np.uint16], ids=["int64", "bool", "float16", "uint16"]
)
def test_encode_idx_rejects_dtypes_the_format_lacks(dtype: type) -> None:
    with pytest.raises(IdxError, match="has no IDX type code"):
        encode_idx(np.zeros(3, dtype=dtype))
