"""An agency paused by an operator, in the store on SQLite and PostgreSQL: every worker process
(here: a second store on its own engine) sees it; resuming makes the held job due; a store
that cannot be read leaves the last answer standing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from service.operations import PAUSED_REASON, PauseBoard
from service.ports import Completion, StoreUnavailable
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from storage.tables import audit_log, outbox
from tests.integration.test_store import Clock, _new, _planner


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[SqlStore, SqlStore, Clock]]:
    """Two stores over two engines (two processes' views of one database), one clock."""
    clock = Clock()
    api, worker = build_engine(database_url), build_engine(database_url)
    upgrade_to_head(api)
    yield SqlStore(api, clock=clock), SqlStore(worker, clock=clock), clock
    api.dispose()
    worker.dispose()


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_pause_is_seen_by_another_process_and_resume_makes_the_held_job_due(stores) -> None:  # type: ignore[no-untyped-def]
    api, worker, clock = stores
    ticks = _Ticks()
    board = PauseBoard(worker.paused_agencies, ttl=1.0, clock=ticks)
    assert asyncio.run(board.is_paused("inps")) is False

    assert api.pause_agency("inps", actor="operator:alice", reason="maintenance") is True
    assert api.pause_agency("inps", actor="operator:alice", reason="again") is False
    ticks.now += 0.5  # a cached "no" may be up to `ttl` old
    assert asyncio.run(board.is_paused("inps")) is False
    ticks.now += 1.0
    assert asyncio.run(board.is_paused("inps")) is True
    assert asyncio.run(board.is_paused("runts")) is False

    # The worker meets a job of the paused agency and defers it (no call, no pass counted).
    api.accept_filing(_new(), _planner(["inps"]))
    (job,) = worker.claim_jobs("w1", ["inps"], 10, 30)
    worker.complete_jobs([Completion(job=job, owner="w1", new_state=job.state, deferred=True,
                                     next_attempt_at=clock() + 300, last_error=PAUSED_REASON)])
    assert worker.claim_jobs("w1", ["inps"], 10, 30) == []

    assert api.resume_agency("inps", actor="operator:alice") == 1
    assert api.resume_agency("inps", actor="operator:alice") is None  # not paused: nothing to do
    # A "yes" is read afresh: the resumed agency is not deferred again on a stale answer.
    assert asyncio.run(board.is_paused("inps")) is False
    (again,) = worker.claim_jobs("w1", ["inps"], 10, 30)
    assert again.delivery_id == job.delivery_id and again.rounds == 0
    with api._engine.connect() as conn:  # noqa: SLF001 - test inspection
        lines = conn.execute(select(audit_log.c.action, audit_log.c.outcome, audit_log.c.actor)
                             .where(audit_log.c.action.in_(["agency_paused", "agency_resumed"]))
                             .order_by(audit_log.c.id)).all()
        open_jobs = conn.execute(select(outbox.c.id).where(outbox.c.done_at.is_(None))).all()
    assert [tuple(line) for line in lines] == [
        ("agency_paused", "paused", "operator:alice"), ("agency_paused", "already_paused", "operator:alice"),
        ("agency_resumed", "resumed", "operator:alice"), ("agency_resumed", "not_paused", "operator:alice")]
    assert len(open_jobs) == 1


def test_an_unreadable_store_leaves_the_last_answer_standing() -> None:
    answers: list[object] = [{"inps"}, StoreUnavailable("connection refused")]

    def read() -> set[str]:
        answer = answers.pop(0) if answers else set()
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    board = PauseBoard(read, ttl=0.0)
    assert asyncio.run(board.is_paused("inps")) is True
    assert asyncio.run(board.is_paused("inps")) is True  # the outage: still paused, nothing resumed
    assert asyncio.run(board.is_paused("inps")) is False  # readable again: resumed
