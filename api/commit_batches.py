"""The intake's commits, batched from the event loop: one thread hand-off per batch.

A checked filing is awaited here, holding no thread, while one commit thread stores whatever
has gathered meanwhile in a single call of the store's `accept_filings` (one transaction for
the batch where it can). When each filing's thread waited in the store's own group commit
(`storage.group_commit`), a batch could hold no more filings than the intake had threads, and
every filing waiting for its commit kept one of them: with the intake's 8 threads a batch
held at most 8 filings, and a commit costs about as much for one as for dozens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import structlog

__all__ = ["CommitBatches"]

T = TypeVar("T")
R = TypeVar("R")

log = structlog.get_logger("crocevia.api")

#: An awaiting caller's future and the outcome to give it.
_Answer = tuple[asyncio.Future[R], R | BaseException]


class CommitBatches(Generic[T, R]):
    """Commits items awaited on any event loop in batches, on one thread of its own.

    The thread starts with the first item and commits batch after batch while items keep
    arriving; an item arriving while a batch commits joins the next one, whatever its size.

    Args:
        commit: commits a batch and returns, per item in order, its result or the exception
            to raise in that item's caller; it must not return before the batch is durable.
            If it raises, every item of the batch raises that exception.
        max_batch: the most items in one call of `commit`.
    """

    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R | BaseException]], *,
                 max_batch: int = 64, thread_name: str = "intake-commit") -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False  # a drain is running or handed to the thread; False: nothing pending
        # Started on the first submission, not here.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    async def submit(self, item: T) -> R:
        """Commit `item` with whatever else is waiting; its result once committed.

        A cancelled caller waits for its batch's commit before the cancellation goes on (the
        commit cannot be stopped, and its caller must not believe nothing was stored).

        Raises:
            the exception `commit` gave for this item, or raised for its batch.
        """
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._mutex:
            self._pending.append((item, answer))
            start = not self._busy
            self._busy = True
        if start:
            try:
                self._thread.submit(self._drain)
            except BaseException:
                with self._mutex:
                    self._busy = False
                    self._pending = [p for p in self._pending if p[1] is not answer]
                raise
        cancelled = False
        while not answer.done():
            try:
                await asyncio.shield(answer)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return answer.result()

    def _drain(self) -> None:
        """In the commit thread: commit batches until nothing is pending."""
        while True:
            with self._mutex:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                if not batch:
                    self._busy = False
                    return
            outcomes: list[R | BaseException]
            try:
                outcomes = list(self._commit([item for item, _ in batch]))
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"commit batch: {len(outcomes)} outcomes for {len(batch)} items")
            except BaseException as exc:  # not swallowed: every caller of the batch raises it
                outcomes = [exc] * len(batch)
            self._answer([(answer, outcome) for (_, answer), outcome in zip(batch, outcomes, strict=True)])

    @staticmethod
    def _answer(answers: list[_Answer[R]]) -> None:
        """Hand each outcome to its caller's loop: one wake-up per loop, not one per item."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer[R]]] = {}
        for answer, outcome in answers:
            by_loop.setdefault(answer.get_loop(), []).append((answer, outcome))
        for loop, own in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, own)
            except RuntimeError:  # the loop is closed: its callers are gone with it
                log.warning("commit_answers_undelivered", count=len(own))

    def close(self) -> None:
        """End the commit thread once the batches in hand are committed; later calls fail."""
        self._thread.shutdown(wait=True)


def _settle(answers: list[_Answer[R]]) -> None:
    for answer, outcome in answers:
        if answer.done():
            continue
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
