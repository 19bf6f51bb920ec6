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
    __slots__ = ("done", "item", "outcome", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.outcome: R | BaseException | None = None
        # Held until its caller is to wake up: answered, or handed the lead.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[T, R]):
    """Batches `submit` calls from many threads into calls of `commit`.

    Each waiting caller sleeps on a lock of its own: a commit wakes the callers it answered
    and the one that leads next, not every caller waiting (a condition's `notify_all` woke
    them all after every commit, to find most of them still waiting).

    Args:
        commit: commits a batch and returns, per item in order, its result or the exception
            to raise in that item's caller; it must not return before the batch is durable.
        max_batch: the most items in one commit.
    """

    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R | BaseException]], *,
                 max_batch: int = 64) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._pending: list[_Slot[T, R]] = []
        # True while a caller leads; while False, nothing is pending.
        self._busy = False

    def submit(self, item: T) -> R:
        """Commit `item` (with whatever else is queued); its result once committed.

        Raises:
            the exception `commit` gave for this item (or raised for its batch).
        """
        slot: _Slot[T, R] = _Slot(item)
        with self._mutex:
            self._pending.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.wake.acquire()
        if not slot.done:
            # Leading: this slot is the first pending one, so the batch answers it too.
            with self._mutex:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
            self._lead(batch, slot)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]  # done and not an exception: an R

    def _lead(self, batch: list[_Slot[T, R]], own: _Slot[T, R]) -> None:
        outcomes: list[R | BaseException]
        try:
            outcomes = list(self._commit([s.item for s in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"group commit: {len(outcomes)} outcomes for {len(batch)} items")
        except BaseException as exc:  # not swallowed: every caller of the batch raises it
            outcomes = [exc] * len(batch)
        finally:
            self._hand_over()
        for s, outcome in zip(batch, outcomes, strict=True):
            s.outcome = outcome
            s.done = True
            if s is not own:
                s.wake.release()

    def _hand_over(self) -> None:
        """Wake the first caller still pending to lead the next commit, or free the group."""
        with self._mutex:
            if self._pending:
                self._pending[0].wake.release()
            else:
                self._busy = False
