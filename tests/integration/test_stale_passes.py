"""A pass whose job lease ran out and was taken again never changes what the newer pass does
(issue 10, item 4), but the calls it made are counted all the same: the delivery's `attempts`
is every call made for it. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from structlog.testing import capture_logs

from service.ports import AttemptRecord, Completion
from storage.store import SqlStore
from storage.tables import attempts
from tests.integration.test_store import Clock, _new, _planner, clock, store  # noqa: F401 - fixtures


def _attempt(result: str = "ok", *, number: int = 1, ago: float = 0.0) -> list[AttemptRecord]:
    return [AttemptRecord(number, datetime.now(timezone.utc) - timedelta(seconds=ago), 10.0, result)]


def _trickled_twice() -> list[AttemptRecord]:
    """Two tries cut at the call deadline (outcome unknown), as the trickling agency gives."""
    return _attempt("transient", ago=3.2) + _attempt("transient", number=2, ago=1.6)


def _calls_recorded(store: SqlStore, delivery_id: str) -> int:
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return conn.execute(select(func.count()).select_from(attempts)
                            .where(attempts.c.delivery_id == delivery_id)).scalar_one()


def _retaken(store: SqlStore, clock: Clock, owner: str = "w1"):  # type: ignore[no-untyped-def]
    """The same worker takes its own running job again once the lease ran out (the bug)."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    [stale] = store.claim_jobs(owner, None, 1, lease_seconds=5)
    clock.now += 6
    [fresh] = store.claim_jobs(owner, None, 1, lease_seconds=5)
    assert fresh.job_id == stale.job_id
    return ref, stale, fresh


def test_a_stale_pass_finishing_after_the_fresh_one_changes_nothing_but_the_calls(
    store: SqlStore, clock: Clock
) -> None:
    """The retaken pass protocols; the stale pass's later outcome is dropped and logged, its
    call counted."""
    ref, stale, fresh = _retaken(store, clock)
    store.complete_jobs([Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH",
                                    outcome="ACQUISITA")])
    with capture_logs() as logs:
        store.complete_jobs([Completion(stale, "w1", "retrying", _attempt("transient"), last_error="late",
                                        next_attempt_at=clock.now)])
    view = store.get_filing(ref, "test")
    assert view is not None and view.state == "protocolled"
    assert view.deliveries[0].protocol_number == "P-FRESH" and view.deliveries[0].attempts == 2
    assert store.pending_jobs() == 0  # the stale pass scheduled no retry
    assert [e["reason"] for e in logs if e["event"] == "stale_pass_dropped"] == ["job_already_closed"]


def test_a_stale_pass_finishing_first_leaves_the_job_to_the_fresh_one(store: SqlStore, clock: Clock) -> None:
    """The stale pass ends while the retaken one still runs: it neither records its outcome
    nor closes the job (only its call), so the fresh pass's outcome is the one kept."""
    ref, stale, fresh = _retaken(store, clock)
    with capture_logs() as logs:
        store.complete_jobs([Completion(stale, "w1", "protocolled", _attempt(), protocol_number="P-STALE",
                                        outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "pending" and view.deliveries[0].attempts == 1
    assert [e["reason"] for e in logs if e["event"] == "stale_pass_dropped"] == ["job_claimed_again"]
    store.complete_jobs([Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH",
                                    outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].protocol_number == "P-FRESH"
    assert view.deliveries[0].attempts == 2 and store.pending_jobs() == 0


def test_both_passes_in_one_batch_keep_only_the_fresh_outcome(store: SqlStore, clock: Clock) -> None:
    """One commit batch holding both passes of the job, stale one first, applies the fresh one."""
    ref, stale, fresh = _retaken(store, clock)
    store.complete_jobs([
        Completion(stale, "w1", "rejected", _attempt("permanent"), outcome_code="R1", outcome_text="stale"),
        Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH", outcome="ACQUISITA"),
    ])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "protocolled"
    assert view.deliveries[0].protocol_number == "P-FRESH" and view.deliveries[0].attempts == 2


def test_a_trickled_pass_retaken_keeps_all_three_calls_with_the_one_protocol(store: SqlStore, clock: Clock) -> None:
    """The trickling agency's race: a pass's two tries run to their deadlines, its lease runs
    out meanwhile and the retaken pass's one call protocols. Whichever commits first, the
    delivery is protocolled once, with 3 attempts; the stale pass schedules no retry."""
    for stale_first in (True, False):
        ref, stale, fresh = _retaken(store, clock)
        trickled = Completion(stale, "w1", "retrying", _trickled_twice(), last_error="deadline",
                              next_attempt_at=clock.now)
        protocolled = Completion(fresh, "w1", "protocolled", _attempt(), protocol_number=f"P-{ref}",
                                 outcome="ACQUISITA")
        for c in ([trickled, protocolled] if stale_first else [protocolled, trickled]):
            store.complete_jobs([c])
        view = store.get_filing(ref, "test")
        assert view is not None and view.state == "protocolled", stale_first
        [delivery] = view.deliveries
        assert delivery.protocol_number == f"P-{ref}" and delivery.attempts == 3, stale_first
        assert _calls_recorded(store, delivery.delivery_id) == 3
        assert store.pending_jobs() == 0 and store.claim_jobs("w1", None, 5, lease_seconds=5) == []


def test_a_stale_pass_offered_again_counts_its_calls_once(store: SqlStore, clock: Clock) -> None:
    """A batch committed again (its commit's answer was lost) finds its passes stale: their
    calls are not counted twice."""
    ref, stale, fresh = _retaken(store, clock)
    trickled = Completion(stale, "w1", "retrying", _trickled_twice(), last_error="deadline", next_attempt_at=clock.now)
    protocolled = Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P1", outcome="ACQUISITA")
    store.complete_jobs([trickled, protocolled])
    store.complete_jobs([trickled, protocolled])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].attempts == 3
    assert _calls_recorded(store, view.deliveries[0].delivery_id) == 3


def test_a_pass_the_transport_found_stale_counts_only_its_calls(store: SqlStore, clock: Clock) -> None:
    """RabbitMQ requeued the message under the pass: the store counts its calls and leaves
    its outcome and its job to the pass that holds the message now."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    [job] = store.claim_jobs("w1", None, 1, lease_seconds=5)
    store.complete_jobs([Completion(job, "w1", "rejected", _attempt("permanent"), outcome_code="R1", stale=True)])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "pending" and view.deliveries[0].attempts == 1
    store.complete_jobs([Completion(job, "w2", "protocolled", _attempt(), protocol_number="P1", outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "protocolled" and view.deliveries[0].attempts == 2
    assert store.pending_jobs() == 0


def test_a_pass_whose_lease_lapsed_unclaimed_still_counts(store: SqlStore, clock: Clock) -> None:
    """A lease that ran out with nobody taking the job again leaves the pass its own."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    [job] = store.claim_jobs("w1", None, 1, lease_seconds=5)
    clock.now += 6
    store.complete_jobs([Completion(job, "w1", "protocolled", _attempt(), protocol_number="P1", outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].protocol_number == "P1" and store.pending_jobs() == 0
