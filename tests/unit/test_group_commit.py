"""Group commit: callers that arrive while a commit runs are committed together, each answered
with its own outcome once its batch is done."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from storage.group_commit import GroupCommit
from tests.support import wait_for


class _Refused(Exception):
    pass


def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    """One caller commits alone; the five that queue meanwhile are committed in one batch."""
    release = threading.Event()
    batches: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if len(batches) == 1:
            assert release.wait(10)
        return [_Refused(f"item {i}") if i == 3 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            results[i] = group.submit(i)
        except _Refused as exc:
            results[i] = exc

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    wait_for(lambda: len(batches) == 1, timeout=10, what="the first commit to start")
    others = [threading.Thread(target=submit, args=(i,)) for i in range(1, 6)]
    for t in others:
        t.start()
    wait_for(lambda: len(group._pending) == 5, timeout=10, what="five callers to queue")
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert {i: r for i, r in results.items() if not isinstance(r, BaseException)} == {
        0: 0, 1: 10, 2: 20, 4: 40, 5: 50}
    assert isinstance(results[3], _Refused) and str(results[3]) == "item 3"


def test_a_batch_that_fails_is_raised_to_its_caller_and_the_next_caller_commits() -> None:
    """A commit that raises reaches its caller; the group is free for the next one."""
    calls: list[int] = []

    def commit(items: Sequence[int]) -> list[int | BaseException]:
        calls.extend(items)
        if items[0] == 1:
            raise RuntimeError("database gone")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit)
    with pytest.raises(RuntimeError, match="database gone"):
        group.submit(1)
    assert group.submit(2) == 2
    assert calls == [1, 2]


def test_many_callers_each_get_their_own_result_once_in_batches_of_at_most_the_bound() -> None:
    """Thirty-two threads submitting in turn: every item committed once, each caller answered
    with its own result, no batch above `max_batch`, the group free at the end."""
    batches: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        return [i * 2 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=4)
    wrong: list[int] = []

    def submit(base: int) -> None:
        for i in range(base, base + 50):
            if group.submit(i) != i * 2:
                wrong.append(i)

    threads = [threading.Thread(target=submit, args=(n * 1000,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads) and not wrong
    committed = [i for batch in batches for i in batch]
    assert sorted(committed) == sorted(n * 1000 + i for n in range(32) for i in range(50))
    assert max(len(b) for b in batches) <= 4
    assert not group._pending and not group._busy
