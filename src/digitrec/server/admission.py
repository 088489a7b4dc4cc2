"""Admission control: a bounded amount of work in flight, and a refusal at once (503) when it is all taken.

Three budgets, each checked without waiting:

- upload bytes: taken before a body is read (from its Content-Length), so a flood of big uploads is refused
  before it costs memory;
- recognitions queued or running: a fixed thread pool with a short queue in front of it;
- decoded pixels: taken inside the worker when the image's header has been read and before its pixels are
  decoded (`imageio.decode_admission`), so two 40-megapixel images are never in memory together.

A budget stays taken until the work that uses it has *really* finished. Python threads cannot be killed,
so when a request runs out of time its answer (503) goes at once, but its thread, and everything it holds,
keeps counting until it returns. That is what makes the bound a bound; `imageio` refuses files whose
decoding would cost far more than their size, so no single piece of work runs long past its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from digitrec.imageio import decode_admission

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


class Admission:
    """The server's budgets and its recognition threads; one per app, made in lifespan."""

    def __init__(self, *, threads: int, max_queued: int, upload_bytes: int, pixels: int,
                 max_queue_wait_s: float = 4.0) -> None:
        self.threads = threads
        # A short queue in count can still be a long one in time (64 small digits wait ~0.1 s, 64 big
        # photos minutes). When the oldest waiting recognition has waited this long, the queue is not
        # moving: refuse new work rather than queue it until its deadline.
        self.max_queue_wait_s = max_queue_wait_s
        self.upload_bytes = Budget("upload bytes", upload_bytes)
        self.pixels = Budget("pixels", pixels)
        self.work = Budget("recognitions", threads + max_queued)
        self._waiting: dict[int, float] = {}  # job id -> when it was queued (oldest first), until it starts
        self._next_job = 0
        self._waiting_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="digitrec-recognize",
                                           initializer=lower_thread_priority)

    def reserve_upload(self, nbytes: int) -> Reservation:
        """Take `nbytes` of the upload budget for a body about to be read, or raise `ServerBusy`."""
        if not self.upload_bytes.try_take(nbytes):
            raise ServerBusy(f"the server is busy reading other uploads ({self.upload_bytes.used / 1e6:.0f} MB"
                             f" in flight); retry in {RETRY_AFTER_S} s")
        return Reservation(self.upload_bytes, nbytes)

    async def run(self, work: Callable[[], T], *, deadline: float, holding: Reservation | None = None) -> T:
        """Run `work` on a recognition thread by `deadline` (time.monotonic()), or raise `ServerBusy`.

        `holding` (the upload's bytes) stays taken until the thread is done with them. Cancelling the
        caller (its request timed out) drops the work if it has not started; if it has, the work finishes
        on its thread and its budgets are given back then.
        """
        now = time.monotonic()
        with self._waiting_lock:
            oldest = next(iter(self._waiting.values()), now)
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
            self._waiting[job] = now
        try:
            future = self.executor.submit(self._in_worker, work, deadline, job)
        except RuntimeError:  # shutting down
            self._done(holding, job)
            raise ServerBusy("the server is shutting down") from None
        future.add_done_callback(lambda _: self._done(holding, job))
        waiting = asyncio.wrap_future(future)
        try:
            # shield: the timeout must not cancel work that has started (a thread cannot be stopped).
            return await asyncio.wait_for(asyncio.shield(waiting), self.max_queue_wait_s)
        except TimeoutError:
            if future.cancel():  # still queued: drop it, rather than let it wait until the deadline
                raise ServerBusy(f"the server is busy (no thread free within {self.max_queue_wait_s:g} s);"
                                 f" retry in {RETRY_AFTER_S} s") from None
            return await waiting

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

        def admit(image_format: str, width: int, height: int) -> None:
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
        finally:
            decode_admission.reset(token)
            for pixels in taken:
                self.pixels.give(pixels)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

