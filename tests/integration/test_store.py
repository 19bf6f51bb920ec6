"""The store on SQLite and PostgreSQL: atomic intake, leased claims, batched completions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select, text

from routing.plan import PlannedDelivery
from service.ports import AttemptRecord, Completion, IdempotencyConflict, NewFiling
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from storage.tables import attempts, deliveries, filings, outbox


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url: str, clock: Clock) -> Iterator[SqlStore]:
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    upgrade_to_head(engine)  # a second upgrade is a no-op
    yield SqlStore(engine, clock=clock)
    engine.dispose()


def _new(key: str | None = None, digest: str = "a" * 64) -> NewFiling:
    return NewFiling("durc_request", "test", "09182730581", "Alfa", "FTTMRC85C14H501X", "legal_representative",
                     b"<filing/>", "b" * 64, datetime.now(timezone.utc), key, digest if key else None)


def _planner(agencies: list[str]):  # type: ignore[no-untyped-def]
    def plan(reference: str) -> list[PlannedDelivery]:
        return [PlannedDelivery(f"{reference[-6:]}{a:>26}".replace(" ", "0")[:32], f"{a}{reference}".ljust(32, "0")[:32],
                                a, "Op", {"messageHeader": {"filingReference": reference}}) for a in agencies]
    return plan


def _count(store: SqlStore, table) -> int:  # type: ignore[no-untyped-def]
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_accepting_a_filing_writes_filing_deliveries_and_jobs_together(store: SqlStore) -> None:
    """One transaction: a reference in the CRV-YYYY-NNNNNN form, a job per recipient."""
    accepted = store.accept_filing(_new(), _planner(["inps", "inail"]))
    assert accepted.reference.startswith(f"CRV-{datetime.now(timezone.utc).year}-")
    assert [r["agency"] for r in accepted.recipients] == ["inps", "inail"]
    assert (_count(store, filings), _count(store, deliveries), _count(store, outbox)) == (1, 2, 2)


def test_a_failure_while_planning_leaves_nothing_behind(store: SqlStore) -> None:
    """If planning fails inside the transaction, no filing, delivery or job remains."""
    def broken(reference: str) -> list[PlannedDelivery]:
        raise RuntimeError("mapping exploded")
    with pytest.raises(RuntimeError):
        store.accept_filing(_new(), broken)
    assert (_count(store, filings), _count(store, deliveries), _count(store, outbox)) == (0, 0, 0)


def test_idempotency_key_replays_the_first_answer(store: SqlStore) -> None:
    """Same key, same body: the same reference, and nothing stored twice."""
    first = store.accept_filing(_new("k1"), _planner(["inps"]))
    again = store.accept_filing(_new("k1"), _planner(["inps"]))
    assert again.reference == first.reference and again.replayed and not first.replayed
    assert _count(store, filings) == 1


def test_idempotency_key_with_another_body_is_a_conflict(store: SqlStore) -> None:
    """Same key, different body: refused, naming the first filing."""
    first = store.accept_filing(_new("k2", "a" * 64), _planner(["inps"]))
    with pytest.raises(IdempotencyConflict) as info:
        store.accept_filing(_new("k2", "c" * 64), _planner(["inps"]))
    assert info.value.reference == first.reference


def test_a_claimed_job_is_not_claimed_again_until_its_lease_expires(store: SqlStore, clock: Clock) -> None:
    """A lease hides the job from other workers; once it expires the job is taken again."""
    store.accept_filing(_new(), _planner(["inps"]))
    first = store.claim_jobs("w1", ["inps"], 10, lease_seconds=30)
    assert len(first) == 1
    assert store.claim_jobs("w2", ["inps"], 10, lease_seconds=30) == []
    clock.now += 31
    retaken = store.claim_jobs("w2", ["inps"], 10, lease_seconds=30)
    assert [j.delivery_id for j in retaken] == [first[0].delivery_id]


def test_concurrent_workers_never_share_a_job(store: SqlStore) -> None:
    """Four threads claiming at once get disjoint sets that cover every job."""
    for _ in range(10):
        store.accept_filing(_new(), _planner(["inps", "inail", "cciaa"]))
    got: dict[str, list[int]] = {}

    def claim(owner: str) -> None:
        mine: list[int] = []
        while batch := store.claim_jobs(owner, None, 3, lease_seconds=60):
            mine += [j.job_id for j in batch]
        got[owner] = mine

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [j for jobs in got.values() for j in jobs]
    assert len(every) == len(set(every)) == 30


def test_completing_a_job_records_the_outcome_and_the_filing_state(store: SqlStore) -> None:
    """A protocolled delivery closes its job, keeps its attempts and settles the filing."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    job = store.claim_jobs("w1", None, 1, lease_seconds=30)[0]
    store.complete_jobs([Completion(job, "w1", "protocolled",
                                    [AttemptRecord(1, datetime.now(timezone.utc), 12.0, "ok")],
                                    protocol_number="INPS.0001.2026.0000001", outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.state == "protocolled"
    assert view.deliveries[0].protocol_number == "INPS.0001.2026.0000001"
    assert view.deliveries[0].attempts == 1 and _count(store, attempts) == 1
    assert store.pending_jobs() == 0


def test_a_retry_becomes_a_new_job_available_later(store: SqlStore, clock: Clock) -> None:
    """A transient failure closes the job and schedules another one in the database."""
    store.accept_filing(_new(), _planner(["inps"]))
    job = store.claim_jobs("w1", None, 1, lease_seconds=30)[0]
    store.complete_jobs([Completion(job, "w1", "retrying", last_error="503", next_attempt_at=clock.now + 60)])
    assert store.claim_jobs("w1", None, 5, lease_seconds=30) == []
    clock.now += 61
    again = store.claim_jobs("w1", None, 5, lease_seconds=30)
    assert [j.delivery_id for j in again] == [job.delivery_id] and again[0].rounds == 1


def test_a_settled_delivery_is_never_changed_by_a_late_pass(store: SqlStore, clock: Clock) -> None:
    """A duplicate pass after protocolling cannot downgrade the delivery."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    job = store.claim_jobs("w1", None, 1, lease_seconds=1)[0]
    store.complete_jobs([Completion(job, "w1", "protocolled", protocol_number="P1", outcome="ACQUISITA")])
    store.complete_jobs([Completion(job, "w2", "retrying", last_error="late", next_attempt_at=clock.now)])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "protocolled" and store.pending_jobs() == 0


def test_another_portal_cannot_read_the_filing(store: SqlStore) -> None:
    """Filings are scoped to the portal that sent them."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    assert store.get_filing(ref, "other") is None and store.get_filing(ref, "test") is not None


def test_processes_starting_together_migrate_an_empty_database_once(database_url: str) -> None:
    """An API, a relay and workers started at once on an empty database all come up: the
    migrations run once, the others wait and find the schema at head."""
    import os
    import subprocess
    import sys

    from config.settings import PROJECT_ROOT

    env = {**os.environ, "DATABASE__URL": database_url}
    procs = [
        subprocess.Popen([sys.executable, str(PROJECT_ROOT / "hub.py"), "migrate"], env=env, cwd=PROJECT_ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(p.wait(60), p.communicate()) for p in procs]
    assert [code for code, _ in results] == [0] * 4, [err.decode()[-800:] for _, (_, err) in results]
    engine = build_engine(database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    assert len(versions) == 1
