"""A connection's writes in one event-loop turn leave as one (`connections.CoalescingTransport`): a small
answer's headers and body are one send, in order, and nothing is held past the turn, a close or an EOF."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
import uvloop

from digitrec.server.connections import COALESCE_BYTES, CoalescingTransport


def in_a_thread(loop: asyncio.AbstractEventLoop, main: Any) -> None:
    """Run main() on `loop` in a thread of its own (this one may have a loop running: Playwright's sync API
    leaves one in the main thread)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]


class Recorder:
    """The transport underneath: what was written, and when it was closed."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.events: list[Any] = []
        self.sock = sock
        self.buffered = 0

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def write(self, data: bytes) -> None:
        self.events.append(bytes(data))

    def write_eof(self) -> None:
        self.events.append("eof")

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_writes_of_one_turn_leave_as_one(new_loop: Any) -> None:
    loop = new_loop()
    try:
        inner = Recorder()
        transport = CoalescingTransport(inner, loop)  # type: ignore[arg-type]

        async def answer() -> None:
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            transport.write(bytearray(b"{}"))
            assert inner.events == []  # held until the turn ends
            assert transport.get_write_buffer_size() == 40
            await asyncio.sleep(0)
            assert inner.events == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
            transport.write(b"next")  # a later turn: its own write
            await asyncio.sleep(0)
            big = b"x" * COALESCE_BYTES
            transport.write(big)  # big writes are not held
            assert inner.events[-2:] == [b"next", big]
            transport.write(b"held")
            transport.write(b"x" * COALESCE_BYTES)  # past the limit: out at once, in order
            assert inner.events[-1] == b"held" + b"x" * COALESCE_BYTES
            transport.write(b"last")
            transport.close()  # what is held goes first
            assert inner.events[-2:] == [b"last", "close"]
            transport.write(b"bye")
            transport.write_eof()
            assert inner.events[-2:] == [b"bye", "eof"]
            transport.write(b"dropped")
            transport.abort()  # an abort drops what is held, as the transport drops its buffer
            assert inner.events[-1] == "abort"
            await asyncio.sleep(0)
            assert b"dropped" not in inner.events
            assert transport.is_closing() is False  # the rest is the transport's own

        in_a_thread(loop, answer)
    finally:
        loop.close()



def test_a_plain_socket_is_written_directly_when_nothing_is_queued() -> None:
    """The held bytes go to the socket by os.write (the GIL released) when the transport has nothing queued;
    when it has, or the socket would block or is broken, through the transport, so order is kept."""
    loop = uvloop.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        inner = Recorder(ours)
        transport = CoalescingTransport(inner, loop)  # type: ignore[arg-type]

        async def answer() -> None:
            transport.write(b"head ")
            transport.write(b"body")
            await asyncio.sleep(0)
            assert inner.events == [] and theirs.recv(100) == b"head body"
            inner.buffered = 10  # the transport still has bytes of its own to send: after them, through it
            transport.write(b"queued")
            await asyncio.sleep(0)
            assert inner.events == [b"queued"]
            inner.buffered = 0
            theirs.close()  # the client is gone: the transport is left to find out
            for _ in range(2):
                transport.write(b"lost")
                await asyncio.sleep(0)
            assert inner.events[-1] == b"lost"

        in_a_thread(loop, answer)
    finally:
        ours.close()
        loop.close()
