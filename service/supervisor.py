"""Who watches a process's background tasks: the first one to die stops the process, loudly.

A long-running process (`hub.py serve`, `worker`, `relay`) runs its loops as asyncio tasks
beside each other. Gathered with `return_exceptions=True`, a loop that died went unseen while
the rest (an API accepting filings, say) carried on. The supervisor logs a dead task with its
traceback, names it to readiness (`/readyz`), sets the process's `stop` so that everything
else drains as on SIGTERM, and `raise_if_failed` turns the death into the process's exit code
(`hub.py` exits non-zero; the orchestrator restarts the process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

__all__ = ["BackgroundTaskDied", "InjectedTaskFailure", "Supervisor"]

log = structlog.get_logger("crocevia.supervisor")


class BackgroundTaskDied(RuntimeError):
    """A background task ended (raised, or returned before stop) while its process ran."""

    def __init__(self, task: str, reason: str) -> None:
        super().__init__(f"background task {task!r} died: {reason}")
        self.task = task
        self.reason = reason


class InjectedTaskFailure(RuntimeError):
    """Raised in place of a task named by `supervision.fail_task_for_tests` (tests only)."""


class Supervisor:
    """Watches named tasks; the first death is logged, recorded and stops the process.

    Args:
        stop: the process's stop event (the one SIGTERM sets); set when a task dies.
        fail_for_tests: fault injection for tests only: the task of this name raises
            `InjectedTaskFailure` instead of running.
    """

    def __init__(self, stop: asyncio.Event, *, fail_for_tests: str = "") -> None:
        self._stop = stop
        self._fail_for_tests = fail_for_tests
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # those that end on stop
        self._dead: dict[str, str] = {}
        self._first: BackgroundTaskDied | None = None
        self._beats: dict[str, float] = {}

    def beat(self, name: str) -> None:
        """Loop `name` came round (called once per iteration): it is alive and working."""
        self._beats[name] = time.monotonic()

    def stalled(self, after: float) -> dict[str, str]:
        """Loops that beat once but not for `after` seconds: name → why, for readiness."""
        now = time.monotonic()
        return {name: f"no progress for {now - at:.0f}s" for name, at in self._beats.items()
                if now - at > after and name not in self._dead}

    def watch(self, name: str, work: Coroutine[Any, Any, Any] | asyncio.Task[Any], *,
              may_return: bool = False, ends_on_stop: bool = True) -> asyncio.Task[Any]:
        """Run `work` (or watch the task) as background task `name`.

        `may_return`: the task may finish early on its own (the notifier, when no portal has a
        callback address); otherwise returning before stop is a death too. `ends_on_stop`:
        False for a task its owner ends after the others drained (the RabbitMQ consumer, which
        its source's `close` ends): `join` does not wait for it.
        """
        if name == self._fail_for_tests:
            if isinstance(work, asyncio.Task):
                work.cancel()
            else:
                work.close()
            work = _injected_failure(name)
        task = work if isinstance(work, asyncio.Task) else asyncio.create_task(work, name=name)
        if ends_on_stop:
            self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done, may_return))
        return task

    @property
    def dead(self) -> Mapping[str, str]:
        """Dead task name → why (the exception's class), for readiness."""
        return dict(self._dead)

    def raise_if_failed(self) -> None:
        """Raises:
            BackgroundTaskDied: naming the first task that died.
        """
        if self._first is not None:
            raise self._first

    async def join(self) -> None:
        """Wait for the watched tasks that end on stop; their errors were logged already."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _ended(self, name: str, task: asyncio.Task[Any], may_return: bool) -> None:
        if task.cancelled():
            if self._stop.is_set():
                return  # cancelled as part of the shutdown
            reason = "cancelled"
            log.error("background_task_died", task=name, reason=reason)
        elif (exc := task.exception()) is not None:
            reason = type(exc).__name__
            log.error("background_task_died", task=name, reason=reason, exc_info=exc)
        elif may_return or self._stop.is_set():
            return
        else:
            reason = "returned before stop"
            log.error("background_task_died", task=name, reason=reason)
        self._dead[name] = reason
        if self._first is None:
            self._first = BackgroundTaskDied(name, reason)
        self._stop.set()


async def _injected_failure(name: str) -> None:
    await asyncio.sleep(0)  # start like any task: the failure happens in the running loop
    raise InjectedTaskFailure(f"fault injected into {name!r} (supervision.fail_task_for_tests)")
