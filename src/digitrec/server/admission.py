"""Admission control: a bounded amount of work in flight, and a refusal at once (503) when it is all taken.

Three budgets, each checked without waiting:

- upload bytes: taken before a body is read (from its Content-Length), so a flood of big uploads is refused
  before it costs memory;
- recognitions queued or running: a fixed thread pool with a short queue in front of it;
- decoded pixels: taken inside the worker when the image's header has been read and before its pixels are
  decoded (`imageio.decode_admission`), so two 40-megapixel images are never in memory together.

A budget stays taken until the work that uses it has *really* finished. Python threads cannot be killed,
so when a request runs out of time its answer (503) goes at once, but its thread, and everything it holds,
keeps counting until it returns. That is what makes the bound a bound. Big images are read in child
processes (`readers`), which are killed at their request's deadline; a small image's thread runs for
milliseconds, and `imageio` refuses files whose decoding would cost far more than their size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from digitrec.bundle import ModelSource
from digitrec.imageio import decode_admission
from digitrec.server.readers import ReaderBusy, ReaderPool, ReaderTimedOut

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_AFTER_S = 1  # what a refused client is told; the work in flight turns over in well under a second
# Reading an image costs up to ~40 ns per pixel here (a 40 MP RGBA PNG: 1.6 s of CPU). A big image that
# cannot be read before its request's deadline is refused instead of started: its CPU would outlive the
# request by seconds.
SECONDS_PER_PIXEL = 50e-9


WORKER_NICENESS = 2  # added to the recognition threads' nice value (Linux schedules threads one by one); more
# starved them when other processes shared the CPU (each nice step is ~1.25x less CPU)


def lower_thread_priority() -> None:
    """Run the calling thread at a lower CPU priority than the event loop's.

    When recognitions use every core, the event loop (which answers /healthz and refuses what does not
    fit) still gets the CPU first, so those answers stay immediate under load.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the loop, still correct
        log.debug("could not lower the recognition threads' priority")


MMAP_THRESHOLD_BYTES = 4 << 20
BIG_UPLOAD_BYTES = 1_000_000
BIG_PIXELS = 4_000_000
# Big images waiting per big-lane thread before more are refused, before their bodies are read: each takes
# ~0.2-2 s, so a longer queue only holds uploads in memory until they time out.
BIG_WAITING_PER_THREAD = 2


def return_big_buffers_to_the_os() -> None:
    """Make glibc give every freed buffer over 4 MB back to the OS at once (Linux/glibc only; else nothing).

    glibc raises its mmap threshold each time a big buffer is freed, up to 32 MB, so the next image's
    16 MB Pillow blocks come from per-thread heaps that keep their pages after free: the server then held
    ~300 MB after reading a few 40 MP images, and peaked at ~890 MB instead of ~450. A fixed threshold
    keeps the budgets above honest.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD_BYTES)  # -3: M_MMAP_THRESHOLD (a fixed value disables the raising)
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator's defaults stay")


class ServerBusy(Exception):
    """A budget is taken: answer 503 with Retry-After now, rather than queue until the deadline."""

    def __init__(self, detail: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class Budget:
    """A count that work takes from and gives back, from any thread; taking never waits."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def try_take(self, amount: int) -> bool:
        with self._lock:
            # One piece of work bigger than the whole budget may still run, alone.
            if self.used and self.used + amount > self.capacity:
                return False
            self.used += amount
            return True

    def give(self, amount: int) -> None:
        with self._lock:
            self.used -= amount


class Reservation:
    """Budget taken for one request, given back when its last holder (the request, then its worker) lets go."""

    def __init__(self, budget: Budget, amount: int) -> None:
        self.budget = budget
        self.amount = amount
        self._holders = 1
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            done = self._holders == 0
        if done:
            self.budget.give(self.amount)


class TwoLanePool:
    """Recognition threads fed from two queues: small images first, and big ones on at most `threads - 1`
    threads, so that a flood of big images never leaves a small one waiting behind them (one FIFO queue
    did: a 28x28 digit waited seconds behind 10 MB photos)."""

    def __init__(self, threads: int) -> None:
        self._cond = threading.Condition()
        self._lanes: tuple[deque[Any], deque[Any]] = (deque(), deque())  # small, big
        self.big_limit = max(1, threads - 1)
        self._big_running = 0
        self._closed = False
        for index in range(threads):
            threading.Thread(target=self._serve, name=f"digitrec-recognize-{index}", daemon=True).start()

    def submit(self, big: bool, function: Callable[..., T], *args: Any,
               on_done: Callable[[Future[T]], object] | None = None) -> Future[T]:
        """Queue `function(*args)`; `on_done(future)` is attached before any thread can see the work (a
        callback added later waited on the future's lock while a thread was starting it)."""
        future: Future[T] = Future()
        if on_done is not None:
            future.add_done_callback(on_done)
        with self._cond:
            if self._closed:
                raise RuntimeError("the recognition threads are shut down")
            self._lanes[big].append((future, function, args))
            # One thread for one job: notify_all woke every idle thread, all but one only to find the queue
            # empty and sleep again (a wake-up, a switch and a turn at the GIL each, per request). A thread
            # woken for a big job it may not take yet is woken again when a big one ends (`_serve`).
            self._cond.notify()
        return future

    def _next(self) -> tuple[Any, bool] | None:
        with self._cond:
            while not self._closed:
                if self._lanes[0]:
                    return self._lanes[0].popleft(), False
                if self._lanes[1] and self._big_running < self.big_limit:
                    self._big_running += 1
                    return self._lanes[1].popleft(), True
                self._cond.wait()
            return None

    def _serve(self) -> None:
        lower_thread_priority()
        while (item := self._next()) is not None:
            (future, function, args), big = item
            try:
                if future.set_running_or_notify_cancel():  # False: cancelled while it waited
                    try:
                        future.set_result(function(*args))
                    except BaseException as error:  # handed to the waiting request, as an executor does
                        future.set_exception(error)
            finally:
                if big:
                    with self._cond:
                        self._big_running -= 1
                        self._cond.notify_all()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            pending = [item for lane in self._lanes for item in lane]
            for lane in self._lanes:
                lane.clear()
            self._cond.notify_all()
        for future, _, _ in pending:
            future.cancel()


def is_big(data: bytes | memoryview) -> bool:
    """Whether an upload goes to the big lane: over 1 MB, or a PNG whose header declares over 4 megapixels
    (a 39 MP mostly white PNG is ~150 kB). Read from the bytes, without opening the image."""
    if len(data) > BIG_UPLOAD_BYTES:
        return True
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width * height > BIG_PIXELS
    return False


class Handoff:
    """Results from the recognition threads to the event loop, through a pipe the threads write with the GIL
    released.

    `asyncio.wrap_future` wakes the loop with `call_soon_threadsafe`, whose wake-up (uvloop's eventfd write)
    runs with the GIL held. The woken loop, at a higher priority than the threads (WORKER_NICENESS), took the
    core at once, and the thread, preempted inside that call, kept the GIL while the loop waited for it:
    py-spy --gil under small-16 found 18% of all the GIL's time there. `os.write` releases the GIL around the
    syscall, so a preempted thread leaves the GIL to the loop it woke; and a wake-up already on its way is not
    sent again (several results in one loop turn cost one).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._results: deque[tuple[asyncio.Future[Any], Future[Any]]] = deque()
        self._signalled = False  # a byte is in the pipe, or about to be: the loop will drain `_results`
        self._closed = False
        self._lock = threading.Lock()  # a closed pipe's descriptor may be reused by then: never write to it
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        loop.add_reader(self._read, self._drain)

    def deliver(self, waiting: asyncio.Future[Any], done: Future[Any]) -> None:
        """`done`'s outcome into `waiting` on the loop; from any thread (a done-callback of `done`)."""
        self._results.append((waiting, done))
        if not self._signalled:
            self._signalled = True
            with self._lock:
                if self._closed:  # the app has shut down: nobody waits any more
                    return
                with contextlib.suppress(BlockingIOError):  # a full pipe: the loop is due to drain it anyway
                    os.write(self._write, b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._read, 4096)
        # Cleared after the read and before the results are taken: a result added from here on sends a
        # wake-up of its own, and one added before is taken below.
        self._signalled = False
        while self._results:
            waiting, done = self._results.popleft()
            if waiting.done():  # cancelled (its request ended) or refused at the queue's time limit
                continue
            if done.cancelled():
                waiting.cancel()
            elif (error := done.exception()) is not None:
                waiting.set_exception(error)
            else:
                waiting.set_result(done.result())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.loop.is_closed():
                self.loop.remove_reader(self._read)
            os.close(self._read)
            os.close(self._write)


class Admission:
    """The server's budgets and its recognition threads; one per app, made in lifespan."""

    def __init__(self, *, threads: int, max_queued: int, upload_bytes: int, pixels: int,
                 max_queue_wait_s: float = 4.0, reader_source: ModelSource | None = None) -> None:
        self.threads = threads
        # A short queue in count can still be a long one in time (64 small digits wait ~0.1 s, 64 big
        # photos minutes). When the oldest waiting recognition has waited this long, the queue is not
        # moving: refuse new work rather than queue it until its deadline.
        self.max_queue_wait_s = max_queue_wait_s
        self.upload_bytes = Budget("upload bytes", upload_bytes)
        self.pixels = Budget("pixels", pixels)
        self.work = Budget("recognitions", threads + max_queued)
        self._waiting: dict[int, tuple[float, bool]] = {}  # job -> (when queued, big), until it starts
        self._next_job = 0
        self._waiting_lock = threading.Lock()
        self.pool = TwoLanePool(threads)
        self._handoff: Handoff | None = None  # made on the first `run`, on the loop that awaits
        # The big lane's threads hand their image to a child process that can be killed (see readers), which
        # starts with `reader_source`'s model loaded; None: the threads read big images themselves.
        self.readers = ReaderPool(self.pool.big_limit, reader_source) if reader_source is not None else None

    def reserve_upload(self, nbytes: int) -> Reservation:
        """Take `nbytes` of the upload budget for a body about to be read, or raise `ServerBusy`."""
        if not self.upload_bytes.try_take(nbytes):
            raise ServerBusy(f"the server is busy reading other uploads ({self.upload_bytes.used / 1e6:.0f} MB"
                             f" in flight); retry in {RETRY_AFTER_S} s")
        return Reservation(self.upload_bytes, nbytes)

    def refuse_if_full(self, nbytes: int) -> None:
        """Raise `ServerBusy` when `reserve_upload(nbytes)` would (without taking anything)."""
        used = self.upload_bytes.used
        if used and used + nbytes > self.upload_bytes.capacity:
            raise ServerBusy(f"the server is busy reading other uploads ({used / 1e6:.0f} MB in flight); retry"
                             f" in {RETRY_AFTER_S} s")

    def refuse_if_busy(self, *, big: bool) -> None:
        """Raise `ServerBusy` when a request for this lane would be refused once its body is read: so a 10 MB
        upload is not read (event loop time, memory) only to be turned away."""
        now = time.monotonic()
        with self._waiting_lock:  # the oldest waiting in this lane (dicts keep the order jobs were queued in)
            lane = [queued for queued, in_big in self._waiting.values() if in_big == big]
        if lane and now - lane[0] > self.max_queue_wait_s:
            raise ServerBusy(f"the server is busy (its queue has not moved for {now - lane[0]:.1f} s);"
                             f" retry in {RETRY_AFTER_S} s")
        if big and len(lane) >= BIG_WAITING_PER_THREAD * self.pool.big_limit:
            raise ServerBusy(f"the server is busy reading other large images ({len(lane)} waiting);"
                             f" retry in {RETRY_AFTER_S} s")
        if not big and self.work.used >= self.work.capacity:
            raise ServerBusy(f"the server is busy ({self.work.used} recognitions waiting or running);"
                             f" retry in {RETRY_AFTER_S} s")

    async def run(self, work: Callable[[], T], *, deadline: float, holding: Reservation | None = None,
                  big: bool = False) -> T:
        """Run `work` on a recognition thread by `deadline` (time.monotonic()), or raise `ServerBusy`.

        `big` (see `is_big`) puts it in the big images' lane.

        `holding` (the upload's bytes) stays taken until the thread is done with them. Cancelling the
        caller (its request timed out) drops the work if it has not started; if it has, the work finishes
        on its thread and its budgets are given back then.
        """
        # Only the queue's age here, not refuse_if_busy's count of big images waiting: that count is for
        # bodies over 1 MB, refused before they are read. A small file found big from its header (a 39 MP
        # PNG of 280 kB) waits its turn within max_queue_wait_s: refused at once, such uploads came straight
        # back (clients that ignore Retry-After), 40x as many, and the event loop that answers /healthz did
        # little else (p99 0.23-0.54 s against 0.08-0.16 s under the 39 MP PNG floods, back to back).
        now = time.monotonic()
        with self._waiting_lock:  # the oldest waiting in this lane (dicts keep the order jobs were queued in)
            oldest = next((queued for queued, lane in self._waiting.values() if lane == big), now)
            job = self._next_job
            self._next_job += 1
        if now - oldest > self.max_queue_wait_s:
            raise ServerBusy(f"the server is busy (its queue has not moved for {now - oldest:.1f} s);"
                             f" retry in {RETRY_AFTER_S} s")
        if not self.work.try_take(1):
            raise ServerBusy(f"the server is busy ({self.work.used} recognitions waiting or running);"
                             f" retry in {RETRY_AFTER_S} s")
        if holding is not None:
            holding.hold()
        with self._waiting_lock:
            self._waiting[job] = (now, big)
        # Not chained to the work's future (as asyncio.wrap_future would): cancelling the request cancels only
        # this wait; work that has started finishes on its thread (a thread cannot be stopped), its budgets
        # then given back.
        handoff = self._loop_handoff()
        waiting = handoff.loop.create_future()

        def finished(done: Future[T]) -> None:  # on the thread that ran it (or the loop, when cancelled)
            try:
                self._done(holding, job)
            finally:
                handoff.deliver(waiting, done)

        try:
            future = self.pool.submit(big, self._in_worker, work, deadline, job, on_done=finished)
        except RuntimeError:  # shutting down
            self._done(holding, job)
            raise ServerBusy("the server is shutting down") from None
        timer = handoff.loop.call_later(self.max_queue_wait_s, self._queue_timed_out, future, waiting)
        try:
            return await waiting
        finally:
            timer.cancel()

    def _queue_timed_out(self, future: Future[Any], waiting: asyncio.Future[Any]) -> None:
        """`max_queue_wait_s` after a recognition was queued: if it is still queued, drop it and refuse."""
        if future.cancel() and not waiting.done():  # started work is waited for, until the request's deadline
            waiting.set_exception(ServerBusy(f"the server is busy (no thread free within {self.max_queue_wait_s:g}"
                                             f" s); retry in {RETRY_AFTER_S} s"))

    def _loop_handoff(self) -> Handoff:
        """The `Handoff` for the running loop (a new one if the loop changed: tests run apps on several)."""
        loop = asyncio.get_running_loop()
        if self._handoff is None or self._handoff.loop is not loop:
            if self._handoff is not None:
                self._handoff.close()
            self._handoff = Handoff(loop)
        return self._handoff

    def _started(self, job: int) -> None:
        with self._waiting_lock:
            self._waiting.pop(job, None)

    def _done(self, holding: Reservation | None, job: int) -> None:
        self._started(job)  # a job cancelled while it waited never started
        self.work.give(1)
        if holding is not None:
            holding.release()

    def _in_worker(self, work: Callable[[], T], deadline: float, job: int) -> T:
        self._started(job)
        if time.monotonic() >= deadline:  # waited out its time in the queue: nobody is waiting for it
            raise ServerBusy("the server was too busy to start this request in time")
        taken: list[int] = []

        def admit(image_format: str | None, width: int, height: int) -> None:
            pixels = width * height
            if time.monotonic() + pixels * SECONDS_PER_PIXEL > deadline:
                raise ServerBusy(f"too little time left to read a {width}x{height} image; retry"
                                 f" in {RETRY_AFTER_S} s")
            if not self.pixels.try_take(pixels):
                raise ServerBusy(f"the server is busy reading other large images; retry in {RETRY_AFTER_S} s")
            taken.append(pixels)

        token = decode_admission.set(admit)
        try:
            return work()
        except ReaderBusy as refusal:
            raise ServerBusy(str(refusal)) from None
        except ReaderTimedOut:
            raise ServerBusy("the request took longer than the server's time limit; its reading was stopped")\
                from None
        finally:
            decode_admission.reset(token)
            for pixels in taken:
                self.pixels.give(pixels)

    def shutdown(self) -> None:
        self.pool.shutdown()
        if self.readers is not None:
            self.readers.shutdown()
        if self._handoff is not None:
            self._handoff.close()
            self._handoff = None

