"""Verified downloads from mirrors, against a local HTTP server on 127.0.0.1 (never the internet).

The server serves real MNIST under /good/ and damaged copies under other prefixes, one prefix per way a
mirror can fail; a test lists the mirrors it wants in order. Every failure must leave nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import digitrec.download
from digitrec.data import MNIST_FILES, DataConfig, DataError, ensure_files, load_split
from digitrec.download import DownloadError, download_verified, uncompressed_md5

LABELS = "t10k-labels-idx1-ubyte"  # the smallest file (4.5 kB gzipped): most tests fetch only this one
LABELS_MD5 = MNIST_FILES[LABELS]


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder, plus prefixes whose responses are broken at the HTTP level."""

    good_dir: Path

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        prefix, _, name = self.path.lstrip("/").partition("/")
        if prefix == "partial":
            # Announce the whole file and more, send half, hang up: a connection dropped mid-body.
            body = (self.good_dir / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif prefix == "chunked":
            # A chunked response cut short inside a chunk: http.client raises IncompleteRead.
            body = (self.good_dir / name).read_bytes()
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
            self.close_connection = True
        elif prefix == "drip":
            # The real file, one byte every 50 ms: each read is quick, the whole would take minutes.
            body = (self.good_dir / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._drip(body)
        elif prefix == "drip-headers":
            # Headers that never end: the status line, then one header byte every 50 ms.
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self._drip(b"X-Slow: " + b"a" * 10_000)
        elif prefix == "missing":
            self.send_error(404)  # "Not Found", whatever the folder holds
        elif prefix == "garbage":
            # Not HTTP at all (a captive portal, a wrong port): http.client raises BadStatusLine.
            self.wfile.write(b"hello, this is not HTTP\r\n\r\n")
            self.close_connection = True
        else:
            super().do_GET()

    def _drip(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the client hangs up at its deadline
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean; the request log on the server is what tests read


@dataclass
class Mirrors:
    """The running server: `url(prefix)` is a mirror base URL; `requests` lists the paths asked for."""

    base: str
    refused: str  # a port nothing listens on
    requests: list[str] = field(default_factory=list)

    def url(self, prefix: str) -> str:
        return self.refused if prefix == "refused" else f"{self.base}/{prefix}/"

    def fetched(self) -> list[str]:
        return [path.strip("/").split("/")[0] for path in self.requests]


def _flip_last_label(gz_bytes: bytes) -> bytes:
    """Still gzip, still IDX, labels still 0-9: only the MD5 reveals the damage."""
    data = bytearray(gzip.decompress(gz_bytes))
    data[-1] = (data[-1] + 1) % 10
    return gzip.compress(bytes(data), compresslevel=1)


@pytest.fixture(scope="module")
def mirror_server(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Iterator[Mirrors]:
    root = tmp_path_factory.mktemp("mirrors")
    good, corrupt, cut = root / "good", root / "corrupt", root / "truncated-gzip"
    for folder in (good, corrupt, cut):
        folder.mkdir()
    for name in MNIST_FILES:
        original = (mnist_dir / f"{name}.gz").read_bytes()
        (good / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
        damaged = _flip_last_label(original) if "labels" in name else original[: len(original) // 2]
        (corrupt / f"{name}.gz").write_bytes(damaged)
        (cut / f"{name}.gz").write_bytes(original[: len(original) // 2])

    handler = functools.partial(type("Handler", (MirrorHandler,), {"good_dir": good}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        refused_port = probe.getsockname()[1]
    mirrors = Mirrors(
        base=f"http://127.0.0.1:{server.server_port}", refused=f"http://127.0.0.1:{refused_port}/"
    )
    server.requests = mirrors.requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirrors
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def mirrors(mirror_server: Mirrors, monkeypatch: pytest.MonkeyPatch) -> Mirrors:
    mirror_server.requests.clear()
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment must not see these requests
    return mirror_server


def names(folder: Path) -> list[str]:
    """Every entry in `folder`, hidden temporaries included."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# How each kind of broken mirror fails, as the error message should say.
FAILURES = {
    "corrupt": "checksum mismatch",
    "truncated-gzip": "Compressed file ended before the end-of-stream marker",
    "partial": "connection closed after",
    "chunked": "IncompleteRead",
    "missing": "Not Found",
    "garbage": "not HTTP",
    "refused": "Connection refused",
}


# --- download_verified --------------------------------------------------------------------------------


def test_download_from_a_good_mirror(mirrors: Mirrors, mnist_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "cache" / f"{LABELS}.gz"
    result = download_verified([f"{mirrors.url('good')}{LABELS}.gz"], destination, expected_md5=LABELS_MD5)
    assert result == destination
    assert destination.read_bytes() == (mnist_dir / f"{LABELS}.gz").read_bytes()
    assert names(destination.parent) == [destination.name]


@pytest.mark.parametrize("broken", list(FAILURES), ids=list(FAILURES))
def test_a_broken_first_mirror_falls_back_to_the_next(
    mirrors: Mirrors, tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    destination = tmp_path / f"{LABELS}.gz"
    broken_url, good_url = (f"{mirrors.url(prefix)}{LABELS}.gz" for prefix in (broken, "good"))
    with caplog.at_level(logging.WARNING, logger="digitrec.download"):
        download_verified([broken_url, good_url], destination, expected_md5=LABELS_MD5)

    assert uncompressed_md5(destination) == LABELS_MD5
    assert names(tmp_path) == [destination.name]  # the failed attempt's temporary file is gone
    assert mirrors.fetched() == ([] if broken == "refused" else [broken]) + ["good"]
    assert any(broken_url in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("broken", list(FAILURES), ids=list(FAILURES))
def test_a_failed_download_leaves_nothing_behind(mirrors: Mirrors, tmp_path: Path, broken: str) -> None:
    destination = tmp_path / f"{LABELS}.gz"
    url = f"{mirrors.url(broken)}{LABELS}.gz"
    with pytest.raises(DownloadError) as caught:
        download_verified([url], destination, expected_md5=LABELS_MD5)
    assert names(tmp_path) == []
    assert f"{url}: " in str(caught.value)
    assert FAILURES[broken] in str(caught.value)


def test_every_mirror_failing_lists_each_one_with_its_reason(mirrors: Mirrors, tmp_path: Path) -> None:
    urls = [f"{mirrors.url(prefix)}{LABELS}.gz" for prefix in FAILURES] + [f"ftp://example.org/{LABELS}.gz"]
    with pytest.raises(DownloadError) as caught:
        download_verified(urls, tmp_path / f"{LABELS}.gz", expected_md5=LABELS_MD5)
    message = str(caught.value)
    assert message.startswith(f"could not download {LABELS}.gz; every mirror failed:\n")
    positions = [message.find(f"\n  {url}: ") for url in urls]
    assert -1 not in positions and positions == sorted(positions)  # each mirror on its own line, in order
    for (prefix, reason), start, end in zip(FAILURES.items(), positions, positions[1:], strict=False):
        assert reason in message[start:end], prefix  # each reason sits with its own mirror
    assert message.endswith(f"ftp://example.org/{LABELS}.gz: not an http(s) URL")
    assert names(tmp_path) == []


def test_mirrors_after_the_first_good_one_are_not_contacted(mirrors: Mirrors, tmp_path: Path) -> None:
    urls = [f"{mirrors.url(prefix)}{LABELS}.gz" for prefix in ("good", "corrupt")]
    download_verified(urls, tmp_path / f"{LABELS}.gz", expected_md5=LABELS_MD5)
    assert mirrors.fetched() == ["good"]


def test_progress_reports_each_attempt_with_its_size(
    mirrors: Mirrors, mnist_dir: Path, tmp_path: Path
) -> None:
    events: list[tuple] = []

    @contextlib.contextmanager
    def progress(description: str, total: int | None):
        events.append(("start", description, total))
        received = []

        class Bar:
            def advance(self, nbytes: int) -> None:
                received.append(nbytes)

        yield Bar()
        events.append(("end", sum(received)))

    corrupt_url, good_url = (f"{mirrors.url(prefix)}{LABELS}.gz" for prefix in ("corrupt", "good"))
    download_verified(
        [corrupt_url, good_url], tmp_path / f"{LABELS}.gz", expected_md5=LABELS_MD5, progress=progress
    )
    corrupt_size = len(_flip_last_label((mnist_dir / f"{LABELS}.gz").read_bytes()))
    good_size = (mnist_dir / f"{LABELS}.gz").stat().st_size
    assert events == [
        ("start", corrupt_url, corrupt_size),
        ("end", corrupt_size),
        ("start", good_url, good_size),
        ("end", good_size),
    ]


def test_an_oversized_download_is_refused(
    mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digitrec.download, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(DownloadError, match="more than 1000 bytes, refusing"):
        download_verified(
            [f"{mirrors.url('good')}{LABELS}.gz"], tmp_path / f"{LABELS}.gz", expected_md5=LABELS_MD5
        )
    assert names(tmp_path) == []


def test_uncompressed_md5_is_the_same_for_raw_and_gzipped(mnist_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / LABELS
    raw.write_bytes(gzip.decompress((mnist_dir / f"{LABELS}.gz").read_bytes()))
    assert uncompressed_md5(raw) == uncompressed_md5(mnist_dir / f"{LABELS}.gz") == LABELS_MD5


# --- ensure_files: filling the per-user cache ---------------------------------------------------------


def test_ensure_files_fills_the_cache_from_the_second_mirror(mirrors: Mirrors, isolated_cache: Path) -> None:
    config = DataConfig(mirrors=(mirrors.url("corrupt"), mirrors.url("good")))
    paths = ensure_files(config)

    assert paths == {name: isolated_cache / f"{name}.gz" for name in MNIST_FILES}
    assert names(isolated_cache) == sorted(f"{name}.gz" for name in MNIST_FILES)  # no .part files
    assert {name: uncompressed_md5(path) for name, path in paths.items()} == MNIST_FILES
    assert mirrors.fetched() == ["corrupt", "good"] * 4

    # Once cached, loading needs no network at all.
    mirrors.requests.clear()
    assert load_split("test", config).images.shape == (10_000, 28, 28)
    assert mirrors.requests == []


def test_ensure_files_downloads_only_what_the_cache_lacks(
    mirrors: Mirrors, mnist_dir: Path, isolated_cache: Path
) -> None:
    isolated_cache.mkdir(parents=True)
    for name in MNIST_FILES:
        if name != LABELS:
            (isolated_cache / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    paths = ensure_files(DataConfig(mirrors=(mirrors.url("good"),)))
    assert mirrors.requests == [f"/good/{LABELS}.gz"]
    assert uncompressed_md5(paths[LABELS]) == LABELS_MD5


def test_ensure_files_with_every_mirror_failing_names_them_and_data_dir(
    mirrors: Mirrors, isolated_cache: Path
) -> None:
    broken = tuple(mirrors.url(prefix) for prefix in ("missing", "corrupt", "partial", "refused"))
    with pytest.raises(DataError) as caught:
        ensure_files(DataConfig(mirrors=broken))
    message = str(caught.value)
    assert isinstance(caught.value.__cause__, DownloadError)
    for mirror in broken:
        assert mirror in message
    assert "--data-dir" in message
    assert names(isolated_cache) == []  # a failed download never leaves anything in the cache


@pytest.mark.usefixtures("isolated_cache")
def test_an_explicit_data_dir_is_never_downloaded_into(mirrors: Mirrors, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError, match="not found"):
        ensure_files(DataConfig(data_dir=folder, mirrors=(mirrors.url("good"),)))
    assert mirrors.requests == []
    assert names(folder) == []


# --- an overall deadline against slow mirrors ------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["drip", "drip-headers"], ids=["slow-body", "slow-headers"])
def test_a_mirror_that_drips_bytes_is_abandoned_at_the_deadline_for_the_next(
    mirrors: Mirrors, mnist_dir: Path, tmp_path: Path, prefix: str
) -> None:
    """A byte every 50 ms never trips a 30 s read timeout; the 2 s overall deadline ends it."""
    destination = tmp_path / "cache" / f"{LABELS}.gz"
    started = time.monotonic()
    result = download_verified([f"{mirrors.url(prefix)}{LABELS}.gz", f"{mirrors.url('good')}{LABELS}.gz"],
                               destination, expected_md5=LABELS_MD5, deadline_s=2.0)
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 10.0
    assert result == destination and destination.read_bytes() == (mnist_dir / f"{LABELS}.gz").read_bytes()
    assert names(destination.parent) == [destination.name]  # no part file left
    assert mirrors.fetched() == [prefix, "good"]


def test_the_deadline_is_named_when_every_mirror_is_slow(mirrors: Mirrors, tmp_path: Path) -> None:
    destination = tmp_path / "cache" / f"{LABELS}.gz"
    with pytest.raises(DownloadError, match="not finished within the deadline of 1 s"):
        download_verified([f"{mirrors.url('drip')}{LABELS}.gz"], destination, expected_md5=LABELS_MD5,
                          deadline_s=1.0)
    assert names(destination.parent) == []
