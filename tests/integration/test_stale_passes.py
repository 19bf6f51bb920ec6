"""A pass whose job lease ran out and was taken again never changes what the newer pass does
(issue 10, item 4), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from structlog.testing import capture_logs

from service.ports import AttemptRecord, Completion
from storage.store import SqlStore
from tests.integration.test_store import Clock, _new, _planner, clock, store  # noqa: F401 - fixtures


def _attempt(result: str = "ok") -> list[AttemptRecord]:
    return [AttemptRecord(1, datetime.now(timezone.utc), 10.0, result)]


def _retaken(store: SqlStore, clock: Clock, owner: str = "w1"):  # type: ignore[no-untyped-def]
    """The same worker takes its own running job again once the lease ran out (the bug)."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    [stale] = store.claim_jobs(owner, None, 1, lease_seconds=5)
    clock.now += 6
    [fresh] = store.claim_jobs(owner, None, 1, lease_seconds=5)
    assert fresh.job_id == stale.job_id
    return ref, stale, fresh


def test_a_stale_pass_finishing_after_the_fresh_one_changes_nothing(store: SqlStore, clock: Clock) -> None:
    """The retaken pass protocols; the stale pass's later outcome is dropped and logged."""
    ref, stale, fresh = _retaken(store, clock)
    store.complete_jobs([Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH",
                                    outcome="ACQUISITA")])
    with capture_logs() as logs:
        store.complete_jobs([Completion(stale, "w1", "retrying", _attempt("transient"), last_error="late",
                                        next_attempt_at=clock.now)])
    view = store.get_filing(ref, "test")
    assert view is not None and view.state == "protocolled"
    assert view.deliveries[0].protocol_number == "P-FRESH" and view.deliveries[0].attempts == 1
    assert store.pending_jobs() == 0  # the stale pass scheduled no retry
    assert [e["reason"] for e in logs if e["event"] == "stale_pass_dropped"] == ["job_already_closed"]


def test_a_stale_pass_finishing_first_leaves_the_job_to_the_fresh_one(store: SqlStore, clock: Clock) -> None:
    """The stale pass ends while the retaken one still runs: it neither records its outcome
    nor closes the job, so the fresh pass's outcome is the one kept."""
    ref, stale, fresh = _retaken(store, clock)
    with capture_logs() as logs:
        store.complete_jobs([Completion(stale, "w1", "protocolled", _attempt(), protocol_number="P-STALE",
                                        outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "pending" and view.deliveries[0].attempts == 0
    assert [e["reason"] for e in logs if e["event"] == "stale_pass_dropped"] == ["job_claimed_again"]
    store.complete_jobs([Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH",
                                    outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].protocol_number == "P-FRESH"
    assert view.deliveries[0].attempts == 1 and store.pending_jobs() == 0


def test_both_passes_in_one_batch_keep_only_the_fresh_outcome(store: SqlStore, clock: Clock) -> None:
    """One commit batch holding both passes of the job, stale one first, applies the fresh one."""
    ref, stale, fresh = _retaken(store, clock)
    store.complete_jobs([
        Completion(stale, "w1", "rejected", _attempt("permanent"), outcome_code="R1", outcome_text="stale"),
        Completion(fresh, "w1", "protocolled", _attempt(), protocol_number="P-FRESH", outcome="ACQUISITA"),
    ])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].state == "protocolled"
    assert view.deliveries[0].protocol_number == "P-FRESH" and view.deliveries[0].attempts == 1


def test_a_pass_whose_lease_lapsed_unclaimed_still_counts(store: SqlStore, clock: Clock) -> None:
    """A lease that ran out with nobody taking the job again leaves the pass its own."""
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    [job] = store.claim_jobs("w1", None, 1, lease_seconds=5)
    clock.now += 6
    store.complete_jobs([Completion(job, "w1", "protocolled", _attempt(), protocol_number="P1", outcome="ACQUISITA")])
    view = store.get_filing(ref, "test")
    assert view is not None and view.deliveries[0].protocol_number == "P1" and store.pending_jobs() == 0
