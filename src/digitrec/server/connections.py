"""Connection limits uvicorn does not have: a header timeout, a header size cap, and a connection cap.

uvicorn closes a keep-alive connection that stays idle *after* a response, but a connection that never
sends a request (or sends its headers a byte at a time) stays open for ever, and each open connection is a
file descriptor: at `ulimit -n 1024`, 1,100 idle sockets made the server unreachable. So each connection
gets a guard timer:

- from the moment it opens (and after each response) until its request's headers are in: `header_timeout_s`;
- while a request runs: the request's time limit plus a grace period (the app answers 503 at the limit; this
  catches a client that stops reading the answer, or keeps trickling a body nobody waits for);

and when the server holds `connection_limit` connections, a new one closes the one idle the longest, so the
process never runs out of descriptors and a real client always gets in. Request bodies are bounded by the
app (size and time limits); the header size by h11's incomplete-event limit or, for httptools, here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from digitrec.server.settings import SETTINGS_ENV, ServerSettings

log = logging.getLogger(__name__)

REQUEST_GRACE_S = 5.0  # past the request's own time limit, before its connection is cut
LINGER_S = 5.0  # after answering before a body was all read: how long its rest is read and dropped
LINGER_BYTES = 2 << 20  # ... and how much of it (draining 192 refused 10 MB uploads starved the event loop)
EVICTION_LOG_EVERY_S = 10.0  # one warning per this much time while connections are being evicted
COALESCE_BYTES = 64 * 1024  # writes this big are not held back to go out with the next (`CoalescingTransport`)


def base_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol: httptools when installed (faster), else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


class ConnectionTable:
    """The live connections of one server, oldest-idle first, and the cap on their number."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: OrderedDict[Any, None] = OrderedDict()  # guarded protocols waiting for a request
        self.live = 0
        self.evicted = 0
        self._last_log = 0.0

    def opened(self, protocol: Any) -> bool:
        """Count a new connection; False when it must be closed at once (every other one is busy)."""
        self.live += 1
        if self.live <= self.limit:
            return True
        victim = next(iter(self.idle), None)
        self.evicted += 1
        now = time.monotonic()
        if now - self._last_log > EVICTION_LOG_EVERY_S:
            self._last_log = now
            log.warning("%d connections open (limit %d): closing the longest-idle ones (%d so far)",
                        self.live, self.limit, self.evicted)
        if victim is None:
            return False
        victim.close_guarded()
        return True

    def closed(self, protocol: Any) -> None:
        self.live -= 1
        self.idle.pop(protocol, None)


class CoalescingTransport:
    """A connection's transport whose writes in one event-loop turn go out as one write.

    uvicorn writes a response's status line and headers, then its body: two sends, and with TCP_NODELAY two
    segments and two wake-ups of the client, for every small answer. Here the first write of a turn is held
    (a list append) and sent with whatever follows it in that turn, from a `call_soon`; order is kept,
    since every write of the connection comes through here. Big writes (COALESCE_BYTES) go out at once;
    `close` and `write_eof` send what is held first. Everything else is the transport's own.
    """

    __slots__ = ("_fd", "_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        # A plain TCP socket's descriptor: `flush` writes to it itself, with the GIL released (see there).
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None and transport.get_extra_info("sslcontext") is None else -1

    def write(self, data: bytes | bytearray | memoryview) -> None:
        chunk = data if isinstance(data, bytes) else bytes(data)  # held: a caller's buffer may change
        if self._held is None:
            if len(chunk) >= COALESCE_BYTES:
                self._transport.write(chunk)
                return
            self._held, self._held_bytes = [chunk], len(chunk)
            self._loop.call_soon(self.flush)
            return
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        if self._held_bytes >= COALESCE_BYTES:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        held, self._held = self._held, None
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        # uvloop sends with the GIL held, and a send that wakes the client (on this machine: the benchmark's)
        # often has this thread preempted inside it, holding the GIL the recognition threads need (py-spy
        # --gil, small-16: 4% of all GIL time in this one write). os.write releases the GIL around the
        # syscall. Only when the transport has nothing queued (else order would break) and is open (its
        # descriptor still ours); whatever is not sent at once, or any error, is the transport's to handle.
        if self._fd >= 0 and not self._transport.get_write_buffer_size() and not self._transport.is_closing():
            try:
                sent = os.write(self._fd, data)
            except OSError:  # would block, or the connection broke: the transport finds out and handles it
                sent = 0
            if sent >= len(data):
                return
            data = data[sent:]
        self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + (self._held_bytes if self._held else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(settings: ServerSettings, table: ConnectionTable | None = None) -> type[asyncio.Protocol]:
    """An HTTP protocol class for uvicorn's `http=` option, enforcing `settings`' connection limits."""
    base: Any = base_protocol()
    shared = table if table is not None else ConnectionTable(settings.connection_limit)
    header_timeout = settings.header_timeout_s
    request_timeout = settings.request_timeout_s + REQUEST_GRACE_S
    max_header_bytes = settings.max_header_bytes

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        connections_table = shared

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._guard: asyncio.TimerHandle | None = None
            self._guard_closed = False
            self._lingering = False
            self._lingered = 0
            self._header_bytes = self._parsed_header_bytes = 0
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
            if not shared.opened(self):
                self.close_guarded()
                return
            self._wait_for_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._guard_closed:
                self._guard_closed = True
                shared.closed(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:  # the rest of a body already answered: dropped, up to a point
                self._lingered += len(data)
                if self._lingered > LINGER_BYTES:
                    self.close_guarded()
                return
            in_request = self._in_request()
            super().data_received(data)
            if in_request or self.transport.is_closing():
                return
            if self._in_request():  # this data completed a request's headers (and may hold body too)
                self._header_bytes = self._parsed_header_bytes = 0
                shared.idle.pop(self, None)
                self._arm(request_timeout)
                return
            self._header_bytes += len(data)
            if self._header_bytes > max_header_bytes:  # h11 refuses this itself; httptools has no limit
                self.close_guarded()

        # httptools parses a whole read at once, headers and all, with no size limit of its own: count them
        # as they are parsed (h11 has its own limit). An exception here is a parser error: uvicorn answers 400.
        def on_url(self, url: bytes) -> None:
            self._count_header_bytes(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header_bytes(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_header_bytes(self, size: int) -> None:
            self._parsed_header_bytes += size
            if self._parsed_header_bytes > max_header_bytes:
                raise ValueError(f"request headers over {max_header_bytes} bytes")

        def on_response_complete(self) -> None:
            unread_body = self.cycle is not None and self.cycle.more_body
            super().on_response_complete()
            if unread_body and not self.transport.is_closing():
                self._linger()
                return
            if not self.transport.is_closing() and not self._in_request():
                self._wait_for_request()

        def _linger(self) -> None:
            """Answered before the body was all in (413, a refusal, 503 at the time limit): close, gently.

            Closing with unread data makes the kernel reset the connection, and a client still sending
            would see "connection reset" instead of the answer. So: end our side (the answer goes out
            first), read and drop what still comes for a moment (at most LINGER_BYTES), then close.
            """
            self._lingering = True
            self._disarm()
            shared.idle.pop(self, None)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.transport.resume_reading()
            self._guard = self.loop.call_later(LINGER_S, self.close_guarded)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _wait_for_request(self) -> None:
            shared.idle[self] = None
            shared.idle.move_to_end(self)
            self._arm(header_timeout)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._guard = self.loop.call_later(seconds, self.close_guarded)

        def _disarm(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None

        def close_guarded(self) -> None:
            """Close this connection now (timed out, or evicted for a newer one)."""
            self._disarm()
            shared.idle.pop(self, None)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app sees http.disconnect, not a hang
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log "out of file descriptors" on accept as one warning line a few seconds apart, not a traceback each.

    asyncio accepts a burst of connections before any of them reaches the protocol (where the connection
    cap evicts idle ones), so a flood can still run the process out of descriptors for a moment; asyncio
    then pauses accepting for a second and retries, which is the right thing, but logs a traceback at
    ERROR each time.
    """
    default = loop.get_exception_handler()
    last = [0.0]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            now = time.monotonic()
            if now - last[0] > EVICTION_LOG_EVERY_S:
                last[0] = now
                log.warning("out of file descriptors accepting connections (%s); retrying in 1 s", error.strerror)
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """The uvicorn.run / uvicorn.Config options that bound connections, for one server process."""
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "backlog": 1024,  # also asyncio's accept burst: smaller bursts give evictions time to free descriptors
        "server_header": False,
    }


_environment_protocol: type[asyncio.Protocol] | None = None


def environment_protocol(**kwargs: Any) -> asyncio.Protocol:
    """uvicorn `http=` target for worker processes (`--workers N`), which get their settings from the environment.

    uvicorn imports this by name in each worker (a class made at run time cannot cross to a spawned
    process), and calls it as it would a protocol class.
    """
    global _environment_protocol
    if _environment_protocol is None:
        _environment_protocol = guarded_protocol(ServerSettings.from_env(os.environ[SETTINGS_ENV]))
    return _environment_protocol(**kwargs)
