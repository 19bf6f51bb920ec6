"""The intake's commits batched from the event loop (`api.commit_batches`): what arrives while
a batch commits is committed together next, each caller gets its own outcome, and no caller
is told anything before its batch's commit has returned."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from api.commit_batches import CommitBatches
from tests.support import wait_for


class _Refused(Exception):
    pass


class _HeldFirst:
    """A commit function whose first batch waits until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            assert self.release.wait(10)
        return [_Refused(f"item {i}") if i == 3 else i * 10 for i in items]


async def _outcome(commits: CommitBatches[int, int], item: int) -> object:
    try:
        return await commits.submit(item)
    except _Refused as exc:
        return exc


def test_items_awaited_during_a_commit_share_the_next_one_each_with_its_own_outcome() -> None:
    commit = _HeldFirst()
    commits: CommitBatches[int, int] = CommitBatches(commit)

    async def main() -> list[object]:
        first = asyncio.create_task(_outcome(commits, 0))
        await asyncio.to_thread(wait_for, lambda: commit.batches, timeout=10, what="the first commit")
        others = [asyncio.create_task(_outcome(commits, i)) for i in range(1, 6)]
        await asyncio.to_thread(wait_for, lambda: len(commits._pending) == 5, timeout=10,
                                what="five items to wait")
        commit.release.set()
        return await asyncio.gather(first, *others)

    try:
        results = asyncio.run(main())
    finally:
        commits.close()
    assert commit.batches == [[0], [1, 2, 3, 4, 5]]
    assert [r for r in results if not isinstance(r, _Refused)] == [0, 10, 20, 40, 50]
    assert isinstance(results[3], _Refused) and str(results[3]) == "item 3"


def test_a_batch_that_raises_reaches_each_of_its_callers_and_the_next_batch_commits() -> None:
    calls: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(items))
        if len(calls) == 1:
            raise _Refused("the database went away")
        return [i for i in items]

    commits: CommitBatches[int, int] = CommitBatches(commit)

    async def main() -> tuple[object, object]:
        failed = await _outcome(commits, 1)
        return failed, await commits.submit(2)

    try:
        failed, committed = asyncio.run(main())
    finally:
        commits.close()
    assert isinstance(failed, _Refused) and str(failed) == "the database went away"
    assert committed == 2 and calls == [[1], [2]]


def test_a_commit_that_answers_for_too_few_items_is_an_error_for_every_caller() -> None:
    commits: CommitBatches[int, int] = CommitBatches(lambda items: [])
    try:
        with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
            asyncio.run(commits.submit(7))
    finally:
        commits.close()


def test_a_cancelled_caller_waits_for_its_commit_then_is_cancelled() -> None:
    """The commit cannot be stopped: the caller learns of the cancellation only once its item
    is stored, never while the store may still take it."""
    commit = _HeldFirst()
    commits: CommitBatches[int, int] = CommitBatches(commit)

    async def main() -> bool:
        task = asyncio.create_task(commits.submit(1))
        await asyncio.to_thread(wait_for, lambda: commit.batches, timeout=10, what="the commit")
        task.cancel()
        await asyncio.sleep(0)  # let the cancellation land while the commit is held
        still_waiting = not task.done()
        commit.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return still_waiting

    try:
        assert asyncio.run(main()) is True
    finally:
        commits.close()
    assert commit.batches == [[1]]


def test_callers_on_two_event_loops_are_answered_each_on_its_own() -> None:
    commit = _HeldFirst()
    commits: CommitBatches[int, int] = CommitBatches(commit)
    results: dict[int, object] = {}

    def on_own_loop(item: int) -> None:
        results[item] = asyncio.run(_outcome(commits, item))

    first = threading.Thread(target=on_own_loop, args=(1,))
    first.start()
    wait_for(lambda: commit.batches, timeout=10, what="the first commit")
    second = threading.Thread(target=on_own_loop, args=(2,))
    second.start()
    wait_for(lambda: len(commits._pending) == 1, timeout=10, what="the second item to wait")
    commit.release.set()
    first.join(10)
    second.join(10)
    commits.close()
    assert results == {1: 10, 2: 20}


def test_closing_waits_for_the_batch_in_hand_and_refuses_later_items() -> None:
    commit = _HeldFirst()
    commits: CommitBatches[int, int] = CommitBatches(commit)
    results: dict[int, object] = {}
    caller = threading.Thread(target=lambda: results.update({1: asyncio.run(_outcome(commits, 1))}))
    caller.start()
    wait_for(lambda: commit.batches, timeout=10, what="the commit")
    closer = threading.Thread(target=commits.close)
    closer.start()
    assert closer.is_alive()  # held by the batch in hand
    commit.release.set()
    closer.join(10)
    caller.join(10)
    assert results == {1: 10}
    with pytest.raises(RuntimeError):
        asyncio.run(commits.submit(2))
