"""Group commit: concurrent callers' writes committed together, each answered after its commit.

Leader/follower, with no thread of its own: the first caller to find no commit in progress
commits everything queued (its own item included) in one call; callers arriving meanwhile
wait on a condition and the next of them commits the next batch. A caller alone commits at
once, so a quiet hub pays no wait, and a busy one pays one transaction for many requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.outcome: R | BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Batches `submit` calls from many threads into calls of `commit`.

    Args:
        commit: commits a batch and returns, per item in order, its result or the exception
            to raise in that item's caller; it must not return before the batch is durable.
        max_batch: the most items in one commit.
    """

    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R | BaseException]], *,
                 max_batch: int = 64) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._cv = threading.Condition()
        self._pending: list[_Slot[T, R]] = []
        self._busy = False

    def submit(self, item: T) -> R:
        """Commit `item` (with whatever else is queued); its result once committed.

        Raises:
            the exception `commit` gave for this item (or raised for its batch).
        """
        slot: _Slot[T, R] = _Slot(item)
        with self._cv:
            self._pending.append(slot)
        while True:
            with self._cv:
                while self._busy and not slot.done:
                    self._cv.wait()
                if slot.done:
                    break
                self._busy = True
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
            self._lead(batch)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]  # done and not an exception: an R

    def _lead(self, batch: list[_Slot[T, R]]) -> None:
        outcomes: list[R | BaseException]
        try:
            outcomes = list(self._commit([s.item for s in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"group commit: {len(outcomes)} outcomes for {len(batch)} items")
        except BaseException as exc:  # not swallowed: every caller of the batch raises it
            outcomes = [exc] * len(batch)
        with self._cv:
            for s, outcome in zip(batch, outcomes, strict=True):
                s.outcome = outcome
                s.done = True
            self._busy = False
            self._cv.notify_all()
