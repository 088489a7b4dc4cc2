"""The accepting thread: /healthz answered while the event loop is busy; everything else served by uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from digitrec.server import acceptor
from digitrec.server.acceptor import HealthFirstServer, health_request
from digitrec.server.app import create_app
from digitrec.server.connections import uvicorn_options
from digitrec.server.settings import ServerSettings


@pytest.mark.parametrize(("head", "expected"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", (False, False)),
    (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", (True, False)),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", (False, True)),
    (b"GET /healthz HTTP/1.0\r\n\r\n", (False, True)),
    (b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", (False, False)),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /next", (False, False)),  # pipelined: only the first
], ids=["get", "head", "close", "http10", "http10-keep-alive", "pipelined"])
def test_a_bodiless_health_probe_is_recognised(head: bytes, expected: tuple[bool, bool]) -> None:
    """(bytes of the request head, HEAD?, close after?)"""
    assert health_request(head) == (head.index(b"\r\n\r\n") + 4, *expected)


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # the head is not all in yet
    b"GET /healthz?verbose=1 HTTP/1.1\r\n\r\n",
    b"GET /healthzz HTTP/1.1\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /healthz HTTP/2.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
], ids=["partial", "query", "other-path", "post", "body", "chunked", "version", "page"])
def test_anything_else_is_left_to_uvicorn(head: bytes) -> None:
    assert health_request(head) is None


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send `request`, read one whole answer (head and Content-Length body)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = 0 if request.startswith(b"HEAD ") else lengths[0] if lengths else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture
def blocking_server(model_path: Path) -> Iterator[str]:
    """A live server (as `digitrec serve` runs it) with an extra route that blocks its event loop for 1.5 s,
    as a flood of requests does."""
    settings = ServerSettings(model_path=model_path)
    app = create_app(settings)

    @app.get("/test-block")
    async def block() -> dict[str, str]:
        time.sleep(1.5)  # on the event loop, on purpose
        return {"blocked": "yes"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = HealthFirstServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                              access_log=False, **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_healthz_is_answered_while_the_event_loop_is_blocked(blocking_server: str) -> None:
    port = int(blocking_server.rsplit(":", 1)[1])

    def block_the_loop() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            exchange(sock, b"GET /test-block HTTP/1.1\r\nHost: x\r\n\r\n")

    blocker = threading.Thread(target=block_the_loop)
    blocker.start()
    time.sleep(0.3)  # the loop is inside the blocking route now
    took = []
    for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            answer = exchange(sock, request)
        took.append(time.monotonic() - started)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"x-content-type-options: nosniff" in answer
        assert answer.endswith(b'{"status":"ok"}') == request.startswith(b"GET")
    blocker.join()
    assert max(took) < 0.5  # the event loop was blocked for 1.5 s: only the accepting thread could answer


def test_a_stuck_event_loop_fails_its_probes(blocking_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread vouches for the loop only while it turns: a loop stuck past LOOP_STALL_S gets the probe."""
    monkeypatch.setattr(acceptor, "LOOP_STALL_S", 0.5)
    port = int(blocking_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as blocker:
        blocker.sendall(b"GET /test-block HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)  # the loop has been stuck for ~1 s of its 1.5 s
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answer = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        waited = time.monotonic() - started
        exchange(blocker, b"")  # the blocking route's own answer
    assert answer.startswith(b"HTTP/1.1 200 ")  # answered by the loop, once it was free again
    assert waited > 0.2


def test_a_bug_in_the_fast_path_leaves_the_port_working(live_server: str, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken_once(peeked: bytes) -> tuple[int, bool, bool] | None:
        calls.append(peeked)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return health_request(peeked)

    monkeypatch.setattr(acceptor, "health_request", broken_once)
    port = int(live_server.rsplit(":", 1)[1])
    for _ in range(2):  # the first meets the bug (uvicorn answers it), the second the thread
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answer = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')
    assert len(calls) == 2
    assert "handed to the event loop" in caplog.text


def test_a_keep_alive_connection_goes_on_to_uvicorn_after_a_probe(live_server: str) -> None:
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        first = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        model = exchange(sock, b"GET /api/v1/model HTTP/1.1\r\nHost: x\r\n\r\n")
        again = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b'{"status":"ok"}')
    assert model.startswith(b"HTTP/1.1 200 ") and b'"architecture"' in model
    assert again.startswith(b"HTTP/1.1 200 ") and again.endswith(b'{"status":"ok"}')


def test_a_request_trickling_in_is_still_served(live_server: str) -> None:
    """First bytes that come late, or a probe split across packets, go to uvicorn, which answers them."""
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        time.sleep(0.2)  # past the accepting thread's wait for first bytes
        sock.sendall(b"GET /heal")
        time.sleep(0.1)
        answer = exchange(sock, b"thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')
