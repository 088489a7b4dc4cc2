"""Verified downloads: try mirrors in order, keep a file only once its checksum matches.

The body goes to a temporary file beside the destination and is renamed into place only after the MD5
of its uncompressed content matches, so a failed, partial or corrupt download leaves nothing behind
under the real name and the next mirror is tried.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from digitrec.atomic import dead_siblings

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 16
TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024  # MNIST's largest file is under 10 MB gzipped


class DownloadError(OSError):
    """Every mirror failed; the message lists each one and why."""


class Progress(Protocol):
    def advance(self, nbytes: int) -> None: ...


# Called with (description, total bytes or None); returns a context manager yielding a Progress.
ProgressFactory = Callable[[str, int | None], contextlib.AbstractContextManager[Progress]]


class _NoProgress:
    def advance(self, nbytes: int) -> None:
        pass


@contextlib.contextmanager
def _no_progress(description: str, total: int | None) -> Iterator[Progress]:
    yield _NoProgress()


def uncompressed_md5(path: Path) -> str:
    """MD5 of the file's content, gunzipped first if it is gzip."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    with opener(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, destination: Path, progress: ProgressFactory) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with open(destination, "wb") as out, progress(url, total) as bar:
            while chunk := response.read(CHUNK_SIZE):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"more than {MAX_DOWNLOAD_BYTES} bytes, refusing")
                out.write(chunk)
                bar.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise DownloadError(f"connection closed after {received} of {total} bytes")


def remove_abandoned_parts(destination: Path) -> list[Path]:
    """Delete `.part` files of `destination` left by downloads whose process died (kill -9, power loss).

    A part file is named `.<name>.<pid>.<random>.part`; one whose pid no longer runs is garbage, one whose
    pid runs may be a concurrent download and is left alone.
    """
    removed = dead_siblings(destination, ".part")
    for part in removed:
        part.unlink(missing_ok=True)
    return removed


def download_verified(urls: Sequence[str], destination: Path, *, expected_md5: str,
                      progress: ProgressFactory | None = None) -> Path:
    """Download the first of `urls` whose content has `expected_md5` to `destination`; return it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_parts(destination)
    failures: list[str] = []
    for url in urls:
        if not url.startswith(("http://", "https://")):
            failures.append(f"{url}: not an http(s) URL")
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.{os.getpid()}.", suffix=".part",
                                        dir=destination.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _fetch(url, tmp, progress or _no_progress)
            actual = uncompressed_md5(tmp)
            if actual != expected_md5:
                raise DownloadError(f"checksum mismatch (MD5 {actual}, expected {expected_md5})")
            os.replace(tmp, destination)
            log.info("downloaded %s from %s", destination.name, url)
            return destination
        # http.client.HTTPException is not an OSError: a mirror that answers with something other than
        # HTTP (BadStatusLine) or cuts a chunked body short (IncompleteRead) must not stop the fallback.
        except (OSError, EOFError, zlib.error, ValueError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            failures.append(f"{url}: {reason}")
            log.warning("download of %s failed: %s", url, reason)
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {destination.name}; every mirror failed:\n  " + "\n  ".join(failures))
