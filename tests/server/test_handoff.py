"""Recognition results reach the event loop through `admission.Handoff`: every result and error arrives, a
cancelled request leaves its started work to finish (and give its budgets back), and the threads never wake
the loop through `call_soon_threadsafe`, which holds the GIL across uvloop's wake-up syscall."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import pytest
import uvloop

from digitrec.server.admission import Admission

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop,
                                                              "uvloop": uvloop.new_event_loop}


def run_on(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """main() on a new loop of `kind`, in a thread of its own (this one may have a loop running already:
    Playwright's sync API leaves one in the main thread)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        loop = LOOPS[kind]()
        try:
            outcome["result"] = loop.run_until_complete(main())
        except BaseException as error:
            outcome["error"] = error
        finally:
            loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def admission(threads: int = 2) -> Admission:
    return Admission(threads=threads, max_queued=256, upload_bytes=1 << 30, pixels=1 << 30, max_queue_wait_s=30)


def square(value: int) -> int:
    time.sleep(0.001 * (value % 3))  # finish out of order
    return value * value


def fail(value: int) -> int:
    raise ValueError(f"bad {value}")


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_every_result_and_error_reaches_its_request(kind: str) -> None:
    admit = admission()

    async def main() -> list[Any]:
        deadline = time.monotonic() + 30
        jobs = [admit.run(partial(fail if value % 7 == 0 else square, value), deadline=deadline)
                for value in range(200)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = run_on(kind, main)
    finally:
        admit.shutdown()
    for value, result in enumerate(results):
        if value % 7 == 0:
            assert isinstance(result, ValueError) and str(result) == f"bad {value}"
        else:
            assert result == value * value
    assert admit.work.used == 0


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_threads_do_not_wake_the_loop_with_call_soon_threadsafe(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio.wrap_future woke the loop this way: from a recognition thread, with the GIL held through uvloop's
    eventfd write; the loop, woken at a higher priority, preempted the thread and then waited for its GIL
    (18% of the GIL's time under small-16)."""
    admit = admission()
    from_threads: list[str] = []
    loop_thread: threading.Thread | None = None

    async def main() -> list[int]:
        nonlocal loop_thread
        loop_thread = threading.current_thread()
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def spy(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not loop_thread:
                from_threads.append(threading.current_thread().name)
            return original(*args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", spy)
        deadline = time.monotonic() + 30
        return await asyncio.gather(*(admit.run(partial(square, value), deadline=deadline) for value in range(50)))

    try:
        assert run_on(kind, main) == [value * value for value in range(50)]
    finally:
        admit.shutdown()
    assert from_threads == []


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_a_cancelled_request_leaves_started_work_to_finish(kind: str) -> None:
    admit = admission(threads=1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    async def main() -> str:
        deadline = time.monotonic() + 30
        request = asyncio.ensure_future(admit.run(work, deadline=deadline))
        while not started.is_set():
            await asyncio.sleep(0.001)
        request.cancel()  # its deadline passed: the request answers 503, the thread goes on
        with pytest.raises(asyncio.CancelledError):
            await request
        assert admit.work.used == 1  # still held by the running work
        release.set()
        # The next request runs on the same thread once it is free, and is answered through the same pipe.
        return await admit.run(lambda: "next", deadline=deadline)

    try:
        assert run_on(kind, main) == "next"
    finally:
        admit.shutdown()
    assert finished.is_set() and admit.work.used == 0


def test_results_after_shutdown_are_dropped_quietly() -> None:
    """A thread finishing after the app shut down (its pipe closed) neither raises nor writes anywhere."""
    admit = admission(threads=1)
    release = threading.Event()
    outcome: list[BaseException | None] = []

    async def main() -> None:
        request = asyncio.ensure_future(admit.run(lambda: release.wait(10), deadline=time.monotonic() + 30))
        await asyncio.sleep(0.05)
        request.cancel()
        admit.shutdown()

    run_on("uvloop", main)
    original = threading.excepthook
    threading.excepthook = lambda args: outcome.append(args.exc_value)
    try:
        release.set()
        time.sleep(0.2)
    finally:
        threading.excepthook = original
    assert outcome == []


def test_one_job_wakes_one_thread() -> None:
    """Each job wakes one idle recognition thread, not all of them (each needless wake-up is a context switch
    and a turn at the GIL). Counted from the threads' voluntary context switches in /proc."""
    admit = admission(threads=8)
    names = {f"digitrec-recognize-{index}" for index in range(8)}

    def switches() -> int:
        total = 0
        for thread in threading.enumerate():
            if thread.name in names and thread.native_id is not None:
                with open(f"/proc/self/task/{thread.native_id}/status") as file:
                    status = file.read()
                total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        return total

    async def main() -> None:
        deadline = time.monotonic() + 30
        for value in range(200):  # one at a time: every other thread is idle, waiting
            await admit.run(partial(abs, -value), deadline=deadline)
            assert value >= 0

    try:
        time.sleep(0.1)  # the threads are up and waiting
        before = switches()
        run_on("uvloop", main)
        woken = switches() - before
    finally:
        admit.shutdown()
    # ~2-4 per job (its thread's wake-up, turns at the GIL with the loop); with notify_all 8 or more: all 8 woke
    assert woken < 5.5 * 200, woken
