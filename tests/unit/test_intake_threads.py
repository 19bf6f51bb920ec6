"""The intake's threads: results, errors and context variables come back; a cancelled caller
still waits for its thread, as with anyio's threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from api.threads import IntakeThreads

REQUEST = contextvars.ContextVar("request", default="none")


def test_a_call_returns_its_result_in_another_thread_with_the_callers_context() -> None:
    threads = IntakeThreads(2)

    def work(x: int) -> tuple[int, str, str]:
        seen = REQUEST.get()
        REQUEST.set("changed in the thread")  # in a copy: the caller's value stays
        return x * 2, seen, threading.current_thread().name

    async def main() -> tuple[tuple[int, str, str], str]:
        REQUEST.set("req-1")
        return await threads.run(work, 21), REQUEST.get()

    (doubled, seen, name), after = asyncio.run(main())
    assert doubled == 42 and seen == "req-1" and after == "req-1"
    assert name.startswith("intake")


def test_an_error_in_the_thread_reaches_the_caller() -> None:
    threads = IntakeThreads(1)

    def fail() -> None:
        raise ValueError("bad filing")

    with pytest.raises(ValueError, match="bad filing"):
        asyncio.run(threads.run(fail))


def test_a_cancelled_caller_waits_for_its_thread_then_is_cancelled() -> None:
    threads = IntakeThreads(1)
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def work() -> None:
        started.set()
        assert release.wait(10)
        finished.append(True)

    async def main() -> None:
        task = asyncio.ensure_future(threads.run(work))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == [True]

    asyncio.run(main())


def test_closing_waits_for_the_calls_in_hand_then_ends_the_threads_and_refuses_more() -> None:
    threads = IntakeThreads(2)
    started, release = threading.Event(), threading.Event()

    def work() -> threading.Thread:
        started.set()
        assert release.wait(10)
        return threading.current_thread()

    async def main() -> None:
        task = asyncio.ensure_future(threads.run(work))
        await asyncio.to_thread(started.wait, 10)
        release.set()
        await asyncio.to_thread(threads.close)
        thread = await task  # handed over before the close: finished
        assert not thread.is_alive()
        with pytest.raises(RuntimeError):
            await threads.run(work)

    asyncio.run(main())
