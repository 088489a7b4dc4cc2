"""The IDX file format MNIST is published in: read and write, gzipped or raw, with precise errors.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order. MNIST uses type 0x08 (unsigned byte).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitrec.atomic import atomic_write_bytes

# IDX type code -> numpy dtype (big-endian where it matters, as the format specifies).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# MNIST's largest file holds 47 MB; EMNIST's largest about 0.6 GB. Beyond this a file is refused unread.
MAX_IDX_BYTES = 2 * 1024**3
_CHUNK = 1 << 20
_NON_IDX_SAMPLE = 1024  # bytes read from a file that is not IDX, for the error message
_TRAILING_SAMPLE = 1 << 20  # trailing bytes counted before giving up counting
Stream = BinaryIO | gzip.GzipFile  # a plain file, or the inflating reader over one


class IdxError(ValueError):
    """A file is not a valid IDX file; the message names the file and the fault."""


def read_bytes(path: Path, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """Return the uncompressed bytes of `path`, transparently gunzipping a `.gz` (detected by content).

    Decompressed as a stream and never past what the IDX header's shape needs (plus one byte, to notice
    trailing data): a gzip bomb (3 MB inflating to 3 GB) costs a few reads, not all memory. A shape
    needing more than `max_bytes` is refused before its data is read.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raw.seek(0)
            return _read_capped(raw, str(path), max_bytes)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                return _read_capped(stream, str(path), max_bytes)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise IdxError(f"{path}: truncated or corrupt gzip data ({error})") from error


def _read_capped(stream: Stream, name: str, max_bytes: int) -> bytes:
    """The IDX bytes of `stream`: header, then exactly the data the header's shape needs (+1 to detect more)."""
    head = stream.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES or head[3] == 0:
        return head + stream.read(_NON_IDX_SAMPLE)  # not IDX: enough for parse_idx to say what is wrong
    dims = stream.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return head + dims  # parse_idx reports the truncated header
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(len(dims) // 4))
    needed = math.prod(shape) * IDX_DTYPES[head[2]].itemsize
    if needed > max_bytes:
        raise IdxError(f"{name}: shape {shape} needs {needed:,} bytes of data, over the limit of {max_bytes:,}")
    data = _read_exactly(stream, needed + 1)
    if len(data) > needed:
        rest = len(_read_exactly(stream, _TRAILING_SAMPLE))
        more = f"{rest + 1}" if rest < _TRAILING_SAMPLE else f"over {_TRAILING_SAMPLE:,}"
        raise IdxError(f"{name}: {more} unexpected bytes after the data of shape {shape}")
    return head + dims + data


def _read_exactly(stream: Stream, size: int) -> bytes:
    """Up to `size` bytes (fewer only at the end of the stream), read in bounded chunks."""
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array with the file's dtype and shape."""
    if len(data) < 4:
        raise IdxError(f"{name}: truncated: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = int.from_bytes(data[0:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise IdxError(f"{name}: wrong magic number 0x{data[:4].hex()} (not an IDX file)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxError(f"{name}: truncated: header needs {header_size} bytes, file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    # Python ints: np.prod in int64 wraps for huge claimed shapes and would accept a short file.
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) < expected:
        raise IdxError(f"{name}: truncated: shape {shape} needs {expected} bytes, file has {len(data)}")
    if len(data) > expected:
        raise IdxError(f"{name}: {len(data) - expected} unexpected bytes after the data of shape {shape}")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into an array."""
    return parse_idx(read_bytes(path), name=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Return the IDX bytes of `array` (dtype must be one the format knows)."""
    for type_code, dtype in IDX_DTYPES.items():
        if np.dtype(array.dtype).newbyteorder(">") == dtype.newbyteorder(">"):
            header = bytes([0, 0, type_code, array.ndim])
            header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    raise IdxError(f"dtype {array.dtype} has no IDX type code")


def write_idx(path: Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write `array` as an IDX file atomically; gzipped when `compress` (default: path ends in .gz)."""
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
