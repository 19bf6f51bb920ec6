"""The store's side of the outbox relay and the RabbitMQ workers, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update

from service.ports import Completion
from storage.store import SqlStore
from storage.tables import outbox
from tests.integration.test_store import Clock, _new, _planner, clock, store  # noqa: F401 - fixtures


def test_a_relay_claims_due_unpublished_jobs_once_until_its_lease_runs_out(store: SqlStore, clock: Clock) -> None:
    """Claimed rows are invisible to another relay; after the lease they come back; marked rows never."""
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    first = store.claim_unpublished("relay-a", 10, lease_seconds=5)
    assert sorted(j.agency for j in first) == ["inail", "inps"]
    assert store.claim_unpublished("relay-b", 10, lease_seconds=5) == []
    clock.now += 6  # relay-a died between publish and mark: its lease runs out
    again = store.claim_unpublished("relay-b", 10, lease_seconds=5)
    assert sorted(j.job_id for j in again) == sorted(j.job_id for j in first)
    store.mark_published([j.job_id for j in again])
    clock.now += 60
    assert store.claim_unpublished("relay-c", 10, lease_seconds=5) == []


def test_a_pass_marks_the_previous_batch_and_leases_the_next_at_once(store: SqlStore, clock: Clock) -> None:
    """The confirmed jobs handed back are marked, never leased again, even if their lease ran out."""
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    first = store.claim_unpublished("relay", 10, lease_seconds=5)
    store.accept_filing(_new(), _planner(["runts"]))
    clock.now += 6  # the confirms came after the lease ran out
    [second] = store.claim_unpublished("relay", 10, lease_seconds=5, published=[j.job_id for j in first])
    assert second.agency == "runts"
    assert store.claim_unpublished("relay", 0, lease_seconds=5, published=[second.job_id]) == []
    clock.now += 60
    assert store.claim_unpublished("relay-b", 10, lease_seconds=5) == []


def test_marking_jobs_published_never_waits_for_a_worker_closing_one_of_them(store: SqlStore, clock: Clock) -> None:
    """PostgreSQL: while a worker's transaction holds a job it is closing, the relay's next pass
    marks the others and leases on at once. It used to wait for that row, while the worker
    went on to lock another row the mark held: a deadlock that PostgreSQL broke after a
    second, with every delivery in flight standing still meanwhile."""
    if store._engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: there are no row locks to wait for")
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    published = store.claim_unpublished("relay", 10, lease_seconds=5)
    closing, other = published
    store.accept_filing(_new(digest="b" * 64), _planner(["runts"]))
    passes: list[list[int]] = []
    with store._engine.connect() as worker, worker.begin():
        worker.execute(update(outbox).where(outbox.c.id == closing.job_id).values(done_at=clock.now))
        relay = threading.Thread(target=lambda: passes.append([j.job_id for j in store.claim_unpublished(
            "relay", 10, lease_seconds=5, published=[j.job_id for j in published])]))
        relay.start()
        relay.join(10)
        assert not relay.is_alive(), "the relay's pass waited for the worker's transaction"
    [leased] = passes[0]
    with store._engine.connect() as conn:
        marks = dict(conn.execute(select(outbox.c.id, outbox.c.published_at)).all())
    assert marks[other.job_id] == clock.now and marks[closing.job_id] is None and marks[leased] is None
    # The job left unmarked was closed by its worker: no relay ever publishes it again.
    clock.now += 60
    store.mark_published([leased])
    assert store.claim_unpublished("relay-b", 10, lease_seconds=5) == []


def test_a_retry_is_published_only_when_due(store: SqlStore, clock: Clock) -> None:
    """The persisted schedule: the retry row waits in the database until its time."""
    store.accept_filing(_new(), _planner(["inps"]))
    [job] = store.claim_unpublished("relay", 10, lease_seconds=5)
    store.mark_published([job.job_id])
    [claimed], done = store.load_jobs([job.job_id])
    assert done == set()
    store.complete_jobs([Completion(job=claimed, owner="w", new_state="retrying", next_attempt_at=clock.now + 3600)])
    assert store.claim_unpublished("relay", 10, lease_seconds=5) == []
    clock.now += 3601
    [retry] = store.claim_unpublished("relay", 10, lease_seconds=5)
    assert retry.delivery_id == job.delivery_id and retry.job_id != job.job_id


def test_load_jobs_tells_open_done_and_unknown_jobs_apart(store: SqlStore, clock: Clock) -> None:
    """A broker hands over ids: open jobs come back whole, done ones as ids, unknown ones not at all."""
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    jobs = store.claim_unpublished("relay", 10, lease_seconds=5)
    loaded, done = store.load_jobs([j.job_id for j in jobs] + [999_999])
    assert sorted(j.job_id for j in loaded) == sorted(j.job_id for j in jobs) and done == set()
    store.complete_jobs([Completion(job=loaded[0], owner="w", new_state="protocolled", protocol_number="P1")])
    still_open, done = store.load_jobs([j.job_id for j in jobs])
    assert done == {loaded[0].job_id}
    assert [j.job_id for j in still_open] == [loaded[1].job_id]
    # The marks were lost (a relay died): after the lease only the open job is published again.
    clock.now += 10
    assert [j.job_id for j in store.claim_unpublished("relay-2", 10, lease_seconds=5)] == [loaded[1].job_id]


def test_concurrent_relays_never_claim_the_same_row(store: SqlStore) -> None:
    """Eight relays claiming at once share the rows without overlap (SKIP LOCKED on PostgreSQL)."""
    for _ in range(25):
        store.accept_filing(_new(), _planner(["inps", "inail"]))
    claimed: list[list[int]] = []
    lock = threading.Lock()

    def relay(name: str) -> None:
        mine: list[int] = []
        while batch := store.claim_unpublished(name, 3, lease_seconds=60):
            mine.extend(j.job_id for j in batch)
        with lock:
            claimed.append(mine)

    threads = [threading.Thread(target=relay, args=(f"relay-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [job for mine in claimed for job in mine]
    assert len(every) == 50 and len(set(every)) == 50
