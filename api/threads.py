"""The intake's blocking work (signatures, parse, store) in a thread pool of its own.

Starlette's `run_in_threadpool` goes through anyio: a capacity limiter taken and given back,
run-variable lookups and a Python `queue.Queue` per worker, ~80 µs of CPU per call against
~35 µs for asyncio's `run_in_executor` over a `ThreadPoolExecutor` (whose queue is C). The
intake hands one call per filing to a thread, so it uses the cheaper path, keeping what
anyio gives: the caller's context variables (its log context) and, when the awaiting task
is cancelled, waiting for the thread to finish before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["IntakeThreads"]

P = ParamSpec("P")
T = TypeVar("T")


class IntakeThreads:
    """Runs blocking calls in at most `max_workers` threads, started as needed.

    Args:
        max_workers: the most calls running at once; more wait for a free thread.
    """

    def __init__(self, max_workers: int) -> None:
        # No thread starts here: the executor starts them on demand.
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="intake")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a thread, in a copy of the caller's context."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        cancelled = False
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled = True  # the thread cannot be stopped: wait for it, then cancel
        if cancelled:
            raise asyncio.CancelledError
        return future.result()

    def close(self) -> None:
        """End the threads once the calls already handed over are done; later calls fail.

        A service makes one pool for its life, but a process that builds and stops hubs in
        turn (a test session, an embedding application) would otherwise keep every pool's
        idle threads until exit.
        """
        self._pool.shutdown(wait=True)
