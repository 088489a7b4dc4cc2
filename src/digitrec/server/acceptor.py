"""Connections accepted on a thread of their own, which answers `/healthz` itself and hands the rest to uvicorn.

Under a flood the event loop is the bottleneck, and it serves in turns: each turn of the loop accepts every
waiting connection, reads every socket that has data and runs every request that is ready, so a probe waits
one whole turn to be accepted, another to be read and a third to be answered. With 256 clients that come
straight back after each 503 a turn took ~100 ms, and `/healthz` p99 was 0.25-1.2 s (benchmarks/overload.py)
however cheap its own answer was. A load balancer then takes a healthy replica out of rotation.

So the listening socket is not given to the event loop. A thread accepts, looks at each connection's first
bytes without taking them (MSG_PEEK), and:

- a bodiless `GET`/`HEAD /healthz` is answered right there, in microseconds, and the connection goes on to
  the loop for whatever it sends next (or is closed, when the client asked for that) -- as long as the loop
  has turned within `LOOP_STALL_S`: a stuck loop's probes go to it, and wait;
- anything else, including bytes that have not arrived within `FIRST_BYTES_WAIT_S`, goes to the loop
  untouched (`loop.connect_accepted_socket`), where uvicorn reads it as if it had accepted it.

The thread runs Python only per connection (accept, one peek, one hand-over), never per byte, and blocks in
`select` with the GIL released otherwise. uvicorn keeps everything else: its protocol (with our connection
guards), graceful shutdown, `--workers` (each worker runs its own acceptor on the shared socket).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from uvicorn.server import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess
from uvicorn.supervisors.multiprocess import Process

from digitrec.server.middleware import COMMON_HEADERS, HEALTH_BODY, PAGE_CSP

log = logging.getLogger(__name__)

FIRST_BYTES_WAIT_S = 0.05  # a connection whose first bytes take longer is handed over unread
PEEK_BYTES = 2048  # a probe's whole request head fits; a longer one is left to uvicorn
ACCEPT_BURST = 64  # connections accepted per wake-up before the waiting ones are looked at again
OUT_OF_FILES_PAUSE_S = 0.1  # EMFILE: pause accepting for this long (the connection guard frees descriptors)
OUT_OF_FILES_LOG_EVERY_S = 10.0
HEALTH_REQUESTS = (b"GET /healthz ", b"HEAD /healthz ")
# The thread answers a probe only while the event loop is alive: uvicorn's loop ticks every 0.1 s (one turn
# under a flood takes ~0.1-1 s). A loop silent this long is stuck, and the probe goes to it and waits, as it
# should: a health check that a wedged server still passed would keep it in rotation.
LOOP_STALL_S = 5.0


def health_response(head_only: bool, close: bool) -> bytes:
    """The bytes of `/healthz`'s 200, as `middleware.HealthFirstMiddleware` answers it."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(HEALTH_BODY)).encode()),
               (b"cache-control", b"no-store"), *COMMON_HEADERS, (b"content-security-policy", PAGE_CSP.encode())]
    if close:
        headers.append((b"connection", b"close"))
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n" + (b"" if head_only else HEALTH_BODY)


RESPONSES = {(head_only, close): health_response(head_only, close) for head_only in (False, True)
             for close in (False, True)}


def health_request(peeked: bytes) -> tuple[int, bool, bool] | None:
    """(length of the request head, HEAD?, close after?) when `peeked` starts with a whole bodiless
    `GET`/`HEAD /healthz` request; None for anything else (uvicorn reads it)."""
    if not peeked.startswith(HEALTH_REQUESTS):
        return None
    end = peeked.find(b"\r\n\r\n")
    if end < 0:
        return None  # the head is not all here: uvicorn reads it as it comes
    head = peeked[:end].lower()
    request_line, _, headers = head.partition(b"\r\n")
    if b"content-length:" in headers or b"transfer-encoding:" in headers or b"upgrade:" in headers:
        return None  # a body or a protocol switch: uvicorn's rules apply
    if request_line.split(b" ")[1] != b"/healthz":
        return None  # a query string, or more path
    version = request_line.rsplit(b" ", 1)[-1]
    if version not in (b"http/1.1", b"http/1.0"):
        return None
    connection = b"".join(line.split(b":", 1)[1] for line in headers.split(b"\r\n")
                          if line.startswith(b"connection:"))
    close = b"close" in connection or (version == b"http/1.0" and b"keep-alive" not in connection)
    return end + 4, request_line.startswith(b"head "), close


class Acceptor:
    """One thread accepting on `listener` for the event loop `loop`, whose connections `protocol_factory`
    serves."""

    def __init__(self, listener: socket.socket, loop: asyncio.AbstractEventLoop,
                 protocol_factory: Callable[[], asyncio.Protocol], backlog: int,
                 last_tick: Callable[[], float] = time.monotonic) -> None:
        self.listener = listener
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.last_tick = last_tick  # time.monotonic() of the event loop's last turn
        self.answered = 0  # /healthz requests answered here (for tests and logs)
        listener.listen(backlog)
        listener.setblocking(False)
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self._paused_until = 0.0  # out of file descriptors: not accepting until then
        self._last_out_of_files_log = self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._run, name="digitrec-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting (the listener stays open: uvicorn closes the sockets it was given)."""
        self._stopping = True
        self._wake_write.send(b"x")
        self._thread.join(timeout=5)
        self._wake_read.close()
        self._wake_write.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_read, selectors.EVENT_READ, "stop")
        waiting: dict[socket.socket, float] = {}  # accepted, first bytes not yet in -> when to give up on them
        last_error_log = 0.0
        try:
            while not self._stopping:
                try:
                    if self._turn(selector, waiting):
                        return
                except Exception:  # a bug here must not leave the port deaf: log it (now and then), go on
                    if time.monotonic() - last_error_log > OUT_OF_FILES_LOG_EVERY_S:
                        last_error_log = time.monotonic()
                        log.exception("error in the accepting thread; it goes on")
                    time.sleep(OUT_OF_FILES_PAUSE_S)
        finally:
            for connection in waiting:
                connection.close()
            selector.close()

    def _turn(self, selector: selectors.BaseSelector, waiting: dict[socket.socket, float]) -> bool:
        """Wait for connections or first bytes, and deal with them; True when asked to stop."""
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            selector.register(self.listener, selectors.EVENT_READ, "accept")
        wake = min([*waiting.values(), *([self._paused_until] if self._paused_until else [])], default=None)
        for key, _ in selector.select(None if wake is None else max(0.0, wake - now)):
            if key.data == "stop":
                return True
            if key.data == "accept":
                if not self._accept_burst(selector, waiting):
                    selector.unregister(self.listener)
                    self._paused_until = time.monotonic() + OUT_OF_FILES_PAUSE_S
                continue
            connection = key.fileobj
            selector.unregister(connection)
            del waiting[connection]  # type: ignore[arg-type]
            self._first_look(connection, selector, waiting, waited=True)  # type: ignore[arg-type]
        now = time.monotonic()
        for connection in [each for each, give_up in waiting.items() if give_up <= now]:
            selector.unregister(connection)
            del waiting[connection]
            self._hand_over(connection)
        return False

    def _accept_burst(self, selector: selectors.BaseSelector, waiting: dict[socket.socket, float]) -> bool:
        """Accept what is waiting (up to ACCEPT_BURST); False when out of file descriptors."""
        for _ in range(ACCEPT_BURST):
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    now = time.monotonic()
                    if now - self._last_out_of_files_log > OUT_OF_FILES_LOG_EVERY_S:
                        self._last_out_of_files_log = now
                        log.warning("out of file descriptors accepting connections (%s); retrying in %g s",
                                    error.strerror, OUT_OF_FILES_PAUSE_S)
                    return False
                if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while in the queue
                raise
            connection.setblocking(False)
            self._first_look(connection, selector, waiting, waited=False)
        return True

    def _first_look(self, connection: socket.socket, selector: selectors.BaseSelector,
                    waiting: dict[socket.socket, float], *, waited: bool) -> None:
        try:
            self._look(connection, selector, waiting, waited=waited)
        except Exception:  # a bug in the fast path: uvicorn serves this one, and the thread goes on
            if time.monotonic() - self._last_error_log > OUT_OF_FILES_LOG_EVERY_S:
                self._last_error_log = time.monotonic()
                log.exception("error looking at a new connection; handed to the event loop")
            if connection in waiting:
                del waiting[connection]
                selector.unregister(connection)
            self._hand_over(connection)

    def _look(self, connection: socket.socket, selector: selectors.BaseSelector,
              waiting: dict[socket.socket, float], *, waited: bool) -> None:
        try:
            peeked = connection.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if waited:
                self._hand_over(connection)
                return
            waiting[connection] = time.monotonic() + FIRST_BYTES_WAIT_S
            selector.register(connection, selectors.EVENT_READ)
            return
        except OSError:
            connection.close()  # reset before a byte came
            return
        request = health_request(peeked)
        if request is None or time.monotonic() - self.last_tick() > LOOP_STALL_S:
            self._hand_over(connection)
            return
        length, head_only, close = request
        try:
            connection.recv(length)  # take the request head: the answer is ours
            response = RESPONSES[head_only, close]
            if connection.send(response) != len(response):  # an empty send buffer takes ~400 bytes at once
                raise OSError("short send")
        except OSError:
            connection.close()
            return
        self.answered += 1
        if close:
            connection.close()
        else:
            self._hand_over(connection)  # whatever it asks next (another probe, too) is uvicorn's

    def _hand_over(self, connection: socket.socket) -> None:
        try:
            self.loop.call_soon_threadsafe(self._adopt, connection)
        except RuntimeError:  # the loop is closed: shutting down
            connection.close()

    def _adopt(self, connection: socket.socket) -> None:
        """On the event loop: serve `connection` as if the loop had accepted it."""
        if self._stopping:
            connection.close()
            return
        task = self.loop.create_task(self.loop.connect_accepted_socket(self.protocol_factory, connection))
        task.add_done_callback(adopted)


def adopted(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a handed-over connection could not be set up: %s", task.exception())


class HealthFirstServer(uvicorn.Server):
    """uvicorn's server, with connections accepted by an `Acceptor` thread instead of the event loop."""

    async def startup(self, sockets: Sequence[socket.socket] | None = None) -> None:
        listeners = list(sockets) if sockets is not None else [self.config.bind_socket()]
        await super().startup(sockets=[])  # the lifespan (the model is loaded), and no listener on the loop
        if self.should_exit:
            return
        loop = asyncio.get_running_loop()

        def protocol_factory() -> asyncio.Protocol:
            # As uvicorn's own factory (Server.startup); its protocol classes are typed as asyncio.Protocol.
            return self.config.http_protocol_class(config=self.config,  # type: ignore[call-arg]
                                                   server_state=self.server_state, app_state=self.lifespan.state,
                                                   _loop=loop)

        self.listeners = listeners
        self.last_tick = time.monotonic()
        self.acceptors = [Acceptor(listener, loop, protocol_factory, self.config.backlog, lambda: self.last_tick)
                          for listener in listeners]

    last_tick = 0.0  # set on every turn of uvicorn's main loop (every 0.1 s), read by the acceptors

    async def on_tick(self, counter: int) -> bool:
        self.last_tick = time.monotonic()
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Sequence[socket.socket] | None = None) -> None:
        for acceptor in getattr(self, "acceptors", []):
            acceptor.stop()
        for listener in getattr(self, "listeners", []):
            if sockets is None:  # ours (bound in startup); given sockets are closed by uvicorn
                listener.close()
        await super().shutdown(sockets=list(sockets) if sockets is not None else None)


class HealthFirstWorker(Process):
    """A `--workers` process running `HealthFirstServer` (uvicorn's runs `uvicorn.Server`)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = HealthFirstServer(config=self.config)
        return self._server


def run(config: uvicorn.Config) -> None:
    """`uvicorn.run` with `HealthFirstServer`: in this process, or in `config.workers` processes sharing one
    socket."""
    if config.workers <= 1:
        server = HealthFirstServer(config)
        server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)  # as uvicorn.run: the lifespan failed (it logged why)
        return
    listener = config.bind_socket()
    # uvicorn's supervisor makes its worker processes by this module-level name (in 4 places, with no hook):
    # pointed at our subclass here, in the supervising process only, which serves nothing itself.
    multiprocess.Process = HealthFirstWorker  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[listener]).run()
    finally:
        listener.close()
