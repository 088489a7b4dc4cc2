"""Big images read in child processes, which are killed when their request's time is up.

A thread cannot be stopped: a legitimate but costly image (a 40-megapixel PNG takes ~1.6 s of CPU) kept
burning its CPU long after its request had been answered 503. And threads share the GIL with the event
loop: while a big image was read, its Python parts (Pillow's block loop, copies, the reading pipeline) took
turns at the GIL with the loop, which waited for it at every step. So the big lane's threads (see
`admission.TwoLanePool`) each hand their image to a child process of their own and only wait:

- the child decodes and recognises, with the same `recognize` the threads run, and sends the small
  `Recognition` back;
- before decoding a big image it asks its thread for the decoded-pixel budget (`imageio.decode_admission`),
  so the server's budgets hold across processes;
- at the request's deadline (plus `KILL_GRACE_S`) the thread kills the child and a fresh one takes its
  place: the CPU stops within about a second of the deadline, whatever the image.

Small images stay in threads: a child's round trip costs ~0.2 ms of the server's CPU and two more process
wake-ups, and on this shared 2-core machine that halved small-image throughput (178 against 310 requests/s
with 16 clients, load 9, back to back), while a small image's thread runs for milliseconds.

Children start from a forkserver (forking the server itself, which runs threads, can copy a held lock and
hang) with the served model loaded; they run at a lower priority than the event loop, load a new model when
a hot swap sends it, and exit when the server goes away.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from digitrec.bundle import ModelSource

log = logging.getLogger(__name__)

KILL_GRACE_S = 0.5  # past the request's deadline, before its child is killed
ADMIT_PIXELS = 1_000_000  # images this big ask their thread for the pixel budget before decoding
INLINE_BYTES = 1 << 20  # images up to this size travel in the same message as their request
START_DELAY_S = 5.0  # after the server starts, before the children are
CHILD_NICENESS = 2  # as the recognition threads (admission.WORKER_NICENESS): the event loop comes first


class ReaderBusy(Exception):
    """The child was refused the pixel budget (or time): the thread answers 503 (`admission.ServerBusy`)."""


class ReaderCrashed(RuntimeError):
    """The child died while reading (killed by the OS, a decoder crash)."""


class ReaderTimedOut(Exception):
    """The request's deadline passed while its child was still reading; the child was killed."""


def child_main(connection: Connection, warm_source: ModelSource | None = None) -> None:
    """A reader process: read the images its thread sends, one at a time, until the server goes away."""
    with contextlib.suppress(OSError):  # first, so that its start-up (~1 s of imports) never delays an answer
        os.nice(CHILD_NICENESS)
    from digitrec.imageio import allowed_formats, decode_admission
    from digitrec.recognize import recognize
    from digitrec.runtime import LiteRTClassifier

    classifier = None if warm_source is None else LiteRTClassifier(warm_source)
    allowed_formats()  # Pillow's plugins load on first use: ~1 s here, better spent before the first image

    def admit(image_format: str | None, width: int, height: int) -> None:
        if width * height < ADMIT_PIXELS:  # small: not worth a round trip (the threads bound how many run)
            return
        connection.send(("admit", image_format, width, height))
        refusal = connection.recv()
        if refusal is not None:
            raise ReaderBusy(refusal)

    decode_admission.set(admit)
    while True:
        try:
            source, mode, max_pixels, data = connection.recv()
            if data is None:
                data = connection.recv_bytes()
        except (EOFError, OSError):  # the server is gone
            return
        try:
            if source is not None:  # sent with the first image, and after a hot swap
                classifier = LiteRTClassifier(source)
            if classifier is None:
                raise RuntimeError("no model was sent to this reader before its first image")
            answer: tuple[str, Any] = ("done", recognize(data, classifier, mode, max_pixels=max_pixels))
        except ReaderBusy as refusal:
            answer = ("busy", str(refusal))
        except Exception as error:  # handed to the request, as a thread's exception is
            answer = ("error", error)
        del data
        try:
            connection.send(answer)
        except (EOFError, OSError):
            return
        except Exception as error:  # an exception that does not pickle
            connection.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))


class ReaderProcess:
    """One child process and the pipe to it; used by one thread at a time."""

    def __init__(self, context: Any, warm_source: ModelSource | None) -> None:
        self.connection, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=child_main, args=(child_end, warm_source), name="digitrec-reader",
                                       daemon=True)
        self.process.start()
        child_end.close()
        self.source = warm_source  # the model the child has loaded: sent again only when it changes
        # One poller for the child's life: Connection.poll builds a selector per call (~0.1 ms a request).
        self.poller = select.poll()
        self.poller.register(self.connection.fileno(), select.POLLIN)

    def read(self, data: bytes | memoryview, source: ModelSource, mode: str, max_pixels: int, deadline: float,
             admit: Callable[[str, int, int], None] | None) -> Any:
        """The child's `Recognition` of `data`; raises what `recognize` raised, or a Reader* exception."""
        try:
            new_source = None if source is self.source else source
            self.source = source
            if len(data) <= INLINE_BYTES:  # one message: a small image's whole round trip is two
                self.connection.send((new_source, mode, max_pixels, bytes(data)))
            else:
                self.connection.send((new_source, mode, max_pixels, None))
                self.connection.send_bytes(data)  # not pickled: no copy of a 10 MB upload
            while True:
                left = deadline + KILL_GRACE_S - time.monotonic()
                if left <= 0 or not self.poller.poll(max(1, int(left * 1000))):
                    raise ReaderTimedOut()
                kind, *payload = self.connection.recv()
                if kind == "admit":
                    try:
                        if admit is not None:
                            admit(*payload)
                    except Exception as refusal:  # ServerBusy: the child stops before decoding
                        self.connection.send(getattr(refusal, "detail", str(refusal)))
                    else:
                        self.connection.send(None)
                    continue
                if kind == "done":
                    return payload[0]
                if kind == "busy":
                    raise ReaderBusy(payload[0])
                raise payload[0]
        except (EOFError, OSError, BrokenPipeError) as error:
            raise ReaderCrashed(f"the image reader process died ({error or 'no answer'})") from None

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class ReaderPool:
    """Child processes for the big lane: one per thread that may read a big image at once."""

    def __init__(self, size: int, warm_source: ModelSource | None = None) -> None:
        self.size = size
        self.warm_source = warm_source  # loaded by each child as it starts, so the first image waits for nothing
        self._context = multiprocessing.get_context("forkserver")
        self._idle: list[ReaderProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self.killed = 0  # children killed at a deadline (for tests and logs)
        # Started in the background a few seconds after the server (their imports cost ~1 s of CPU each, which
        # the server's first answers should not share); a big image before that starts its own.
        starter = threading.Timer(START_DELAY_S, self._fill)
        starter.name, starter.daemon = "digitrec-reader-start", True
        starter.start()

    def _fill(self) -> None:
        for _ in range(self.size):
            reader = self._start()
            with self._lock:
                if self._closed:
                    reader.kill()
                    return
                self._idle.append(reader)

    def _start(self) -> ReaderProcess:
        return ReaderProcess(self._context, self.warm_source)

    def recognize(self, data: bytes, source: ModelSource, mode: str, *, max_pixels: int, deadline: float) -> Any:
        """`recognize(data, <the model at source>, mode)` in a child, killed at `deadline` + KILL_GRACE_S.

        Runs on a recognition thread, whose `decode_admission` (the pixel budget) the child asks.
        """
        from digitrec.imageio import decode_admission

        with self._lock:
            if self._closed:
                raise ReaderCrashed("the server is shutting down")
            reader = self._idle.pop() if self._idle else None
        if reader is None or not reader.alive():
            reader = self._start()
        try:
            return reader.read(data, source, mode, max_pixels, deadline, decode_admission.get())
        except (ReaderTimedOut, ReaderCrashed):
            reader.kill()
            self.killed += 1
            threading.Thread(target=self._replace, name="digitrec-reader-start", daemon=True).start()
            reader = None
            raise
        finally:
            if reader is not None:  # answered, or refused (a bad image, no pixel budget): it reads the next one
                self._give_back(reader)

    def _give_back(self, reader: ReaderProcess) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(reader)
                return
        reader.kill()

    def _replace(self) -> None:
        self._give_back(self._start())

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.kill()
