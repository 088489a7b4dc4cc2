"""What overload, slow clients and costly files do to a real server on 127.0.0.1: each is refused at once,
bounded, or timed out, and the server keeps answering."""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from bombs import many_page_tiff, progressive_jpeg_bomb, tiny_jpeg_declaring
from PIL import Image

from digitrec.imageio import NotAnImageError, decode_image
from digitrec.runtime import load_classifier
from digitrec.server.settings import ServerSettings

PREDICT = "/api/v1/predict"


class SlowClassifier:
    """The real classifier, slowed down, counting how many run at once (the bound under test)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.source, self.inner, self.seconds = inner.source, inner, seconds
        self.running = self.most_running = self.finished = 0
        self.slow = False  # warm-up runs at full speed
        self._lock = threading.Lock()

    def predict_proba(self, images: Any) -> Any:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.slow:
                time.sleep(self.seconds)
            return self.inner.predict_proba(images)
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1


@pytest.fixture
def slow_server(model_path: Path,
                server_runner: Callable[..., Any]) -> Iterator[Callable[..., tuple[str, SlowClassifier]]]:
    """slow_server(seconds, **settings) -> (base URL, the SlowClassifier) of a live server."""
    stack: list[Any] = []

    def start(seconds: float, **overrides: Any) -> tuple[str, SlowClassifier]:
        classifier = SlowClassifier(load_classifier(model_path), seconds)
        server = server_runner(ServerSettings(model_path=model_path, **overrides), lambda path: classifier)
        url = server.__enter__()
        stack.append(server)
        classifier.slow = True
        return url, classifier

    yield start
    for server in stack:
        server.__exit__(None, None, None)


def post_digit(url: str, digit: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + PREDICT, files={"file": ("d.png", digit, "image/png")}, timeout=timeout)


def in_background(function: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


# --- Costly files: refused from their bytes, before decoding --------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def pillow_loaded() -> None:
    """Load Pillow's plugins (first decode only) before the tests that time a decode."""
    decode_image(encoded_png())


def encoded_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (2, 2)).save(buffer, "PNG")
    return buffer.getvalue()


def test_progressive_jpeg_with_a_thousand_scans_is_refused_at_once() -> None:
    bomb = progressive_jpeg_bomb(1000)  # ~30 kB; decoding it took 2.5 s of CPU here
    started = time.thread_time()
    with pytest.raises(NotAnImageError, match="1000 scans"):
        decode_image(bomb)
    assert time.thread_time() - started < 0.1


def test_normal_progressive_jpeg_still_decodes() -> None:
    buffer = io.BytesIO()
    Image.new("L", (300, 200), 90).save(buffer, "JPEG", progressive=True)
    assert decode_image(buffer.getvalue()).shape == (200, 300)


def test_many_page_tiff_reads_the_first_page_without_walking_the_rest() -> None:
    tiff = many_page_tiff(20_000)  # counting its frames took ~6 s of CPU (quadratic in pages)
    started = time.thread_time()
    grey = decode_image(tiff)
    assert grey.shape == (1, 1)
    assert time.thread_time() - started < 0.5


def test_tiny_jpeg_declaring_a_huge_image_is_refused_before_decoding() -> None:
    bomb = tiny_jpeg_declaring(6000, 6000)  # 332 bytes that would decode to 36 megapixels
    assert len(bomb) < 400
    started = time.thread_time()
    with pytest.raises(NotAnImageError, match="truncated JPEG"):
        decode_image(bomb)
    assert time.thread_time() - started < 0.1


def test_truncated_png_declaring_a_huge_image_is_refused(png_bomb: Callable[[int, int], bytes]) -> None:
    with pytest.raises(NotAnImageError, match="truncated PNG"):
        decode_image(png_bomb(6000, 6000))


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "PPM", "PCX", "TGA", "SGI", "DDS"])
def test_only_the_documented_formats_are_even_tried(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 255, 255)).save(buffer, fmt)
    with pytest.raises(NotAnImageError, match="PNG, JPEG, GIF, BMP, TIFF, WebP or HEIC"):
        decode_image(buffer.getvalue())


def test_bombs_get_415_from_the_api_quickly(client: Any) -> None:
    for name, bomb in [("scans.jpg", progressive_jpeg_bomb(1000)), ("tiny.jpg", tiny_jpeg_declaring(6000, 6000))]:
        started = time.monotonic()
        response = client.post(PREDICT, files={"file": (name, bomb, "image/jpeg")})
        assert response.status_code == 415, response.text
        assert time.monotonic() - started < 2  # the progressive bomb alone decoded for 2.5 s of CPU


# --- Admission: refused at once when full, and a slot is held until its work really ends ----------------


def test_a_full_server_answers_503_at_once_with_retry_after(slow_server: Any, digit_png: Any) -> None:
    url, classifier = slow_server(1.5, inference_threads=1, max_queued=0)
    thread, first = in_background(lambda: post_digit(url, digit_png(1)))
    while classifier.running == 0:
        time.sleep(0.01)
    started = time.monotonic()
    refused = post_digit(url, digit_png(2))
    assert time.monotonic() - started < 1.0  # not queued until the deadline (10 s); generous for a loaded CI
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["detail"]
    health_started = time.monotonic()
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    assert time.monotonic() - health_started < 1.0
    thread.join(10)
    assert first[0].status_code == 200


def test_a_timed_out_request_holds_its_thread_until_the_work_ends(slow_server: Any, digit_png: Any) -> None:
    """The 503 goes at the deadline, but the work goes on in its thread: it must keep counting, or the
    limit bounds nothing (threads piled up to 7 GB before)."""
    url, classifier = slow_server(1.2, inference_threads=1, max_queued=0, request_timeout_s=0.3)
    timed_out = post_digit(url, digit_png(1))
    assert timed_out.status_code == 503 and "longer than 0.3 s" in timed_out.json()["detail"]
    assert classifier.running == 1  # still working after the answer
    refused = post_digit(url, digit_png(2))
    assert refused.status_code == 503 and "busy" in refused.json()["detail"]
    assert classifier.most_running == 1
    while classifier.running:
        time.sleep(0.02)
    classifier.slow = False
    assert post_digit(url, digit_png(3)).status_code == 200


def test_a_queue_that_has_not_moved_for_a_second_refuses_at_once(slow_server: Any, digit_png: Any) -> None:
    """Counting queued requests is not enough: 64 slow ones would wait minutes. Past 1 s without the oldest
    starting, new work is refused instead of queued until its deadline, and queued work that gets no thread
    within 1 s is dropped with a 503."""
    url, classifier = slow_server(5.0, inference_threads=1, max_queued=10, max_queue_wait_s=1.0)
    running, _ = in_background(lambda: post_digit(url, digit_png(1)))
    while classifier.running == 0:
        time.sleep(0.01)
    queued, queued_answer = in_background(lambda: post_digit(url, digit_png(2)))
    time.sleep(1.3)
    started = time.monotonic()
    refused = post_digit(url, digit_png(3))
    assert refused.status_code == 503 and "busy" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert time.monotonic() - started < 2.0  # at most the 1 s queue bound, never the 10 s deadline
    classifier.slow = False
    running.join(10)
    queued.join(10)
    assert queued_answer[0].status_code == 503  # and what was queued got no thread within 1 s: refused then
    assert "no thread free" in queued_answer[0].json()["detail"]


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    sock.sendall(head.encode() + body)
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head + b"\r\n\r\n" + rest


def upload_head(length: int) -> str:
    return (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n")


def test_an_upload_is_refused_before_its_body_is_read_when_uploads_fill_the_budget(
        slow_server: Any, digit_png: Any) -> None:
    url, _ = slow_server(0.0, max_inflight_upload_bytes=4_000_000)
    # Two uploads of 1.5 MB each take 2 x 3 MB: the first half-sent one holds its share...
    with raw_request(url, upload_head(1_500_000), b"\x89PNG" * 1000):
        time.sleep(0.3)
        # ...so the second is answered before it sends a byte of its body.
        with raw_request(url, upload_head(1_500_000)) as second:
            status, head = read_status(second)
    assert status == 503 and b"retry-after: 1" in head.lower()
    assert post_digit(url, digit_png(4)).status_code == 200  # the budget came back


# --- Connections: slow and idle clients, disconnects, HEAD -------------------------------------------------


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (reading and discarding what it sends)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


def test_idle_and_slow_header_connections_are_closed(slow_server: Any) -> None:
    url, _ = slow_server(0.0, header_timeout_s=0.5)
    address = urlsplit(url)
    idle = socket.create_connection((address.hostname, address.port))
    slow = socket.create_connection((address.hostname, address.port))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    started = time.monotonic()
    with idle, slow:
        assert closed_within(idle, 4) and closed_within(slow, 4)
    assert time.monotonic() - started < 4  # 0.5 s configured; never the default 10 s


def test_a_slow_body_gets_503_and_its_connection_is_closed(slow_server: Any) -> None:
    url, _ = slow_server(0.0, request_timeout_s=0.5)
    started = time.monotonic()
    with raw_request(url, upload_head(100_000), b"x" * 1000) as sock:
        status, _ = read_status(sock)
        assert status == 503
        for _ in range(20):  # keep trickling: the connection must still be cut
            try:
                sock.sendall(b"x" * 100)
            except OSError:
                break
            if closed_within(sock, 0.3):
                break
        assert closed_within(sock, 8)
    assert time.monotonic() - started < 10  # 503 at 0.5 s, then at most 5 s of reading and dropping the rest


def test_past_the_connection_limit_the_longest_idle_connection_makes_room(slow_server: Any) -> None:
    url, _ = slow_server(0.0, max_connections=20, header_timeout_s=60)
    address = urlsplit(url)
    idle = [socket.create_connection((address.hostname, address.port)) for _ in range(30)]
    try:
        started = time.monotonic()
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 5
        assert closed_within(idle[0], 2)  # the oldest made room
    finally:
        for sock in idle:
            sock.close()


def test_a_client_disconnect_is_one_info_line(slow_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = slow_server(0.0)
    with caplog.at_level(logging.INFO):
        with raw_request(url, upload_head(100_000), b"x" * 1000):
            time.sleep(0.3)
        time.sleep(0.5)
    disconnects = [record for record in caplog.records if "disconnected" in record.getMessage()]
    assert len(disconnects) == 1 and disconnects[0].levelno == logging.INFO
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/", "/healthz", "/api/v1/model", "/openapi.json"])
def test_head_works_wherever_get_does(live_server: str, path: str) -> None:
    get = httpx.get(live_server + path, timeout=10)
    head = httpx.head(live_server + path, timeout=10)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_on_a_post_only_route_is_405(live_server: str) -> None:
    assert httpx.head(live_server + PREDICT, timeout=10).status_code == 405


# --- The open-file limit --------------------------------------------------------------------------------


def test_more_idle_sockets_than_the_open_file_limit_do_not_lock_clients_out(model_path: Path,
                                                                           tmp_path: Path) -> None:
    """1,100 idle sockets at `ulimit -n 1024` made the server unreachable; scaled down: 300 at 256."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    log_path = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server
    log_file = log_path.open("wb")
    server = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--model",
                               str(model_path), "--no-access-log"], preexec_fn=limit_files,
                              stdout=subprocess.DEVNULL, stderr=log_file,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    sockets: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        for _ in range(300):
            sockets.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        started = time.monotonic()
        response = httpx.get(url + "/api/v1/model", timeout=5)
        assert response.status_code == 200 and json.loads(response.text)["version"]
        assert time.monotonic() - started < 5
    finally:
        for sock in sockets:
            sock.close()
        server.terminate()
        server.wait(timeout=20)
        log_file.close()
    errors = log_path.read_text()
    assert "Traceback" not in errors and "ERROR" not in errors
    assert errors.count("out of file descriptors") <= 2  # one warning line, not a traceback per accept


def test_a_big_upload_arriving_in_one_read_is_served(live_server: str) -> None:
    """Headers and a 1 MB body can arrive in one read; only header bytes count against the header limit."""
    noise = Image.effect_noise((1000, 1000), 60).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    assert len(buffer.getvalue()) > 500_000
    response = httpx.post(live_server + PREDICT, files={"file": ("big.png", buffer.getvalue(), "image/png")},
                          timeout=30)
    assert response.status_code == 200, response.text


def test_oversized_headers_are_refused(live_server: str) -> None:
    with raw_request(live_server, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {'a' * 40_000}\r\n\r\n") as sock:
        try:
            status, _ = read_status(sock)
            assert status in (400, 431)
        except (ValueError, IndexError, ConnectionError):
            pass  # closed without an answer: also refused
        assert closed_within(sock, 2)


def test_small_images_are_not_queued_behind_big_ones(slow_server: Any, digit_png: Any) -> None:
    """Big uploads run on at most threads - 1 threads and wait in their own queue: a digit drawn on the
    page is read at once while photos keep the other thread busy."""
    url, classifier = slow_server(1.5, inference_threads=2)
    photo = Image.open(io.BytesIO(digit_png(1))).convert("RGB").resize((1200, 1000))
    buffer = io.BytesIO()
    photo.save(buffer, "BMP")  # ~3.6 MB: the big lane
    big = buffer.getvalue()
    floods = [in_background(lambda: httpx.post(url + PREDICT, files={"file": ("b.bmp", big)}, timeout=30))
              for _ in range(3)]
    time.sleep(0.5)
    assert classifier.running == 1  # three big ones queued, one running: the other thread stays free
    started = time.monotonic()
    classifier.slow = False
    assert post_digit(url, digit_png(7)).status_code == 200
    assert time.monotonic() - started < 1.0
    for thread, _ in floods:
        thread.join(30)
