"""Verified downloads: try mirrors in order, keep a file only once its checksum matches.

The body goes to a temporary file beside the destination and is renamed into place only after the MD5
of its uncompressed content matches, so a failed, partial or corrupt download leaves nothing behind
under the real name and the next mirror is tried.

Each mirror gets an overall deadline as well as a per-read timeout: a mirror that drips a byte every
few seconds satisfies any per-read timeout forever. When the deadline passes, a watchdog shuts the
connection's socket down, which ends a read blocked anywhere (in the headers or the body).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from digitrec.atomic import dead_siblings

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 16
TIMEOUT_S = 30.0  # per connect and per read
DEADLINE_S = 600.0  # per mirror, whole download: MNIST's largest file is 9.9 MB, 17 kB/s finishes it
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


class _Watchdog:
    """Shuts down the sockets of one download once its deadline passes (a blocked read then returns)."""

    def __init__(self, seconds: float) -> None:
        self.sockets: list[socket.socket] = []
        self.expired = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self.sockets.append(sock)
            if self.expired:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener, with every connection's socket handed to `watchdog` as soon as it connects."""

    def watched(connection_class: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Watched(connection_class):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                watchdog.watch(self.sock)

        return Watched

    class HTTPHandler(urllib.request.HTTPHandler):
        def do_open(self, http_class, request, **kwargs):  # type: ignore[no-untyped-def,override]
            return super().do_open(watched(http_class), request, **kwargs)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def do_open(self, http_class, request, **kwargs):  # type: ignore[no-untyped-def,override]
            return super().do_open(watched(http_class), request, **kwargs)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _fetch(url: str, destination: Path, progress: ProgressFactory, deadline_s: float = DEADLINE_S) -> None:
    started = time.monotonic()
    with _Watchdog(deadline_s) as watchdog:
        try:
            _fetch_watched(url, destination, progress, watchdog)
        except (OSError, http.client.HTTPException, ValueError) as error:
            if watchdog.expired:
                raise DownloadError(f"not finished within the deadline of {deadline_s:g} s") from error
            raise
        if watchdog.expired or time.monotonic() - started > deadline_s:
            raise DownloadError(f"not finished within the deadline of {deadline_s:g} s")


def _fetch_watched(url: str, destination: Path, progress: ProgressFactory, watchdog: _Watchdog) -> None:
    with _opener(watchdog).open(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with open(destination, "wb") as out, progress(url, total) as bar:
            # read1: one socket read at most. read(n) loops until n bytes arrive, however slowly.
            while chunk := response.read1(CHUNK_SIZE):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"more than {MAX_DOWNLOAD_BYTES} bytes, refusing")
                out.write(chunk)
                bar.advance(len(chunk))
                if watchdog.expired:
                    break
            out.flush()
            os.fsync(out.fileno())
        if not watchdog.expired and total is not None and received != total:
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
                      progress: ProgressFactory | None = None, deadline_s: float = DEADLINE_S) -> Path:
    """Download the first of `urls` whose content has `expected_md5` to `destination`; return it.

    Each mirror has `deadline_s` seconds for the whole file before the next one is tried.
    """
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
            _fetch(url, tmp, progress or _no_progress, deadline_s)
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
