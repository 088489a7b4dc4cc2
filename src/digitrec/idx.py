"""The IDX file format MNIST is published in: read and write, gzipped or raw, with precise errors.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order. MNIST uses type 0x08 (unsigned byte).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

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


class IdxError(ValueError):
    """A file is not a valid IDX file; the message names the file and the fault."""


def read_bytes(path: Path) -> bytes:
    """Return the uncompressed bytes of `path`, transparently gunzipping a `.gz` (detected by content)."""
    raw = Path(path).read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise IdxError(f"{path}: truncated or corrupt gzip data ({error})") from error


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
