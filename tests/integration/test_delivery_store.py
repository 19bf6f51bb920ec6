"""The delivery-semantics store on SQLite and PostgreSQL: hand-off at release, hold and
resume, late outcomes, ordered events under concurrent completions, per-filing event claims."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from domain.messages import Receipt
from routing.plan import PlannedDelivery
from service.ports import Completion, EventSendResult, NewFiling, NotResendable
from storage.delivery_tables import filing_events
from storage.store import SqlStore
from storage.tables import deliveries, filings, outbox
from tests.integration.test_store import clock, store  # noqa: F401 - fixtures: a store on a manual clock


def _new() -> NewFiling:
    return NewFiling("business_start", "test", "09182730581", "Alfa", "FTTMRC85C14H501X", "legal_representative",
                     b"<filing/>", "b" * 64, datetime.now(timezone.utc))


def _planner(*, on_reject: str = "hold"):  # type: ignore[no-untyped-def]
    """cciaa first; inps and inail wait for it and take its numeroREA."""

    def plan(reference: str) -> list[PlannedDelivery]:
        handoff = ({"path": ["numeroREA"], "agency": "cciaa", "reference": "numeroREA"},)
        return [
            PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "cciaa", "IscrizioneImpresa", {"x": 1}),
            *(PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, agency, "Op", {"x": 2}, after="cciaa",
                              on_reject=on_reject, handoffs=handoff) for agency in ("inps", "inail")),
        ]

    return plan


def _rows(store: SqlStore) -> dict[str, dict]:
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return {r.agency: dict(r._mapping) for r in conn.execute(
            select(deliveries).where(deliveries.c.superseded_by.is_(None))).all()}


def _open_jobs(store: SqlStore) -> list[str]:
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return sorted(conn.execute(select(outbox.c.agency).where(outbox.c.done_at.is_(None))).scalars())


def _events(store: SqlStore) -> list[tuple[int, int, str]]:
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return [tuple(r) for r in conn.execute(
            select(filing_events.c.filing_id, filing_events.c.seq, filing_events.c.type)
            .order_by(filing_events.c.filing_id, filing_events.c.seq)).all()]


def _complete(store: SqlStore, agency: str, state: str, **fields) -> None:  # type: ignore[no-untyped-def]
    [job] = [j for j in store.claim_jobs("w", [agency], 10, 60)]
    store.complete_jobs([Completion(job=job, owner="w", new_state=state, **fields)])


def test_waiting_deliveries_get_no_job_until_released_with_the_hand_off(store: SqlStore) -> None:
    """INPS and INAIL wait; the Registro Imprese's receipt releases them with its REA number."""
    store.accept_filing(_new(), _planner())
    assert _open_jobs(store) == ["cciaa"]
    assert {a: r["state"] for a, r in _rows(store).items()} == {"cciaa": "pending", "inps": "waiting",
                                                               "inail": "waiting"}
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/000001",
              references={"numeroREA": "RM-0000001"})
    rows = _rows(store)
    for agency in ("inps", "inail"):
        assert rows[agency]["state"] == "pending"
        assert rows[agency]["content"] == {"x": 2, "numeroREA": "RM-0000001"}
    assert _open_jobs(store) == ["inail", "inps"]


def test_a_rejection_holds_and_a_correction_resumes(store: SqlStore) -> None:
    """Held behind a rejected predecessor; a plain resend is refused; its correction makes
    them wait again, and its receipt releases them."""
    accepted = store.accept_filing(_new(), _planner())
    _complete(store, "cciaa", "rejected", outcome="rejected", outcome_code="R1", outcome_text="no")
    assert {r["state"] for a, r in _rows(store).items() if a != "cciaa"} == {"held"}
    with pytest.raises(NotResendable):
        store.resend_recipient(accepted.reference, "test", "inps", actor="portal:test")

    def plan(filing, corrects):  # type: ignore[no-untyped-def]
        return PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "cciaa", "IscrizioneImpresa",
                               {"x": 3, "corrects": corrects})

    view = store.correct_recipient(accepted.reference, "test", "cciaa", plan, actor="portal:test")
    assert view.state == "pending" and view.corrects is not None
    assert {r["state"] for a, r in _rows(store).items() if a != "cciaa"} == {"waiting"}
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/000002",
              references={"numeroREA": "RM-0000002"})
    assert {r["content"]["numeroREA"] for a, r in _rows(store).items() if a != "cciaa"} == {"RM-0000002"}


def test_cancel_policy_cancels_the_waiting_ones(store: SqlStore) -> None:
    store.accept_filing(_new(), _planner(on_reject="cancel"))
    _complete(store, "cciaa", "rejected", outcome="rejected", outcome_code="R1", outcome_text="no")
    assert {a: r["state"] for a, r in _rows(store).items()} == {"cciaa": "rejected", "inps": "cancelled",
                                                               "inail": "cancelled"}
    assert _open_jobs(store) == []


def test_a_late_outcome_is_recorded_once(store: SqlStore) -> None:
    """An acknowledged delivery is protocolled by its callback; the same callback again is a
    duplicate; a decision later rejects it and keeps the protocol number."""
    store.accept_filing(_new(), _planner())
    _complete(store, "cciaa", "acknowledged", correlation_id="corr-1", next_attempt_at=2_000_000.0)
    target = store.find_callback_target("cciaa", "corr-1")
    assert target is not None and target.state == "acknowledged"
    receipt = Receipt("RM/RI/2026/000009", references={"numeroREA": "RM-0000009"})
    assert store.record_late_outcome(target.delivery_id, receipt) == "recorded"
    assert store.record_late_outcome(target.delivery_id, receipt) == "duplicate"
    assert "cciaa" not in _open_jobs(store)  # the callback check is moot
    rejected = Receipt("RM/RI/2026/000009", outcome="RESPINTA", outcome_code="R9", outcome_text="no")
    assert store.record_late_outcome(target.delivery_id, rejected) == "recorded"
    row = _rows(store)["cciaa"]
    assert (row["state"], row["protocol_number"], row["outcome"]) == ("rejected", "RM/RI/2026/000009", "rejected")
    assert {r["state"] for a, r in _rows(store).items() if a != "cciaa"} == {"pending"}  # released before


def test_concurrent_completions_of_one_filing_number_its_events_without_gaps(store: SqlStore) -> None:
    """Two workers finish two recipients of one filing at once: events 1..n, the right state."""

    def plan(reference: str) -> list[PlannedDelivery]:
        return [PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, a, "Op", {}) for a in ("inps", "runts")]

    for _ in range(5):
        store.accept_filing(_new(), plan)
    jobs = store.claim_jobs("w", None, 100, 60)
    barrier = threading.Barrier(2)

    def finish(agency: str) -> None:
        mine = [j for j in jobs if j.agency == agency]
        barrier.wait()
        for job in mine:
            store.complete_jobs([Completion(job=job, owner=agency, new_state="protocolled",
                                            protocol_number=f"P-{job.delivery_id}")])

    threads = [threading.Thread(target=finish, args=(a,)) for a in ("inps", "runts")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    by_filing: dict[int, list[int]] = {}
    for filing_id, seq, _type in _events(store):
        by_filing.setdefault(filing_id, []).append(seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_filing.values())
    # accepted; a recipient, partially_protocolled; the other, protocolled
    assert all(len(seqs) == 5 for seqs in by_filing.values())
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        assert set(conn.execute(select(filings.c.state)).scalars()) == {"protocolled"}


def test_only_the_earliest_undelivered_event_of_a_filing_is_claimed(store: SqlStore) -> None:
    """Event 2 waits while event 1 is leased or failed; once 1 is delivered, 2 goes."""
    store.accept_filing(_new(), _planner())
    _complete(store, "cciaa", "protocolled", protocol_number="P1", references={"numeroREA": "RM-1"})
    first = store.claim_events("n1", {"test": 10}, 10, 60)
    assert [e.seq for e in first] == [1]
    assert store.claim_events("n2", {"test": 10}, 10, 60) == []  # 1 is leased: nothing after it
    store.finish_events([EventSendResult(first[0].id, "n1", False, next_attempt_at=store._clock(), error="500")])
    again = store.claim_events("n2", {"test": 10}, 10, 60)
    assert [(e.id, e.seq, e.attempts) for e in again] == [(first[0].id, 1, 1)]
    store.finish_events([EventSendResult(again[0].id, "n2", True)])
    assert [e.seq for e in store.claim_events("n2", {"test": 10}, 10, 60)] == [2]
    assert store.claim_events("n3", {"other": 10}, 10, 60) == []


def test_a_claim_serves_several_portals_in_the_order_given_each_within_its_share_and_the_limit(
        store: SqlStore) -> None:
    """One portal at a time (each read in the order its events fall due): the first named is
    served first, each up to its own share (a portal with no room gets nothing), the next gets
    what the limit leaves, a limit reached stops the claim."""
    for portal in ("test", "other", "test", "test"):
        store.accept_filing(dataclasses.replace(_new(), portal=portal), _planner())
    first = store.claim_events("n1", {"other": 5, "test": 5}, 1, 60)
    assert [e.portal for e in first] == ["other"]
    shared = store.claim_events("n1", {"other": 5, "test": 2}, 10, 60)
    assert [e.portal for e in shared] == ["test", "test"]  # its share, though the limit leaves more
    assert store.claim_events("n1", {"test": 0, "other": 5}, 10, 60) == []  # other's one event is leased
    rest = store.claim_events("n2", {"test": 5, "other": 5}, 10, 60)
    assert [e.portal for e in rest] == ["test"]


def test_pushes_of_several_filings_are_recorded_in_one_batch(store: SqlStore) -> None:
    """Delivered and failed pushes of several filings in one call: each event gets its own
    result, and a result from a notifier that no longer holds the lease changes nothing."""
    later = store._clock() + 30  # noqa: SLF001 - the store's manual clock
    for _ in range(3):
        store.accept_filing(_new(), _planner())
    claimed = store.claim_events("n1", {"test": 10}, 10, 60)
    assert len(claimed) == 3
    ok, failed, lost = claimed
    store.finish_events([
        EventSendResult(ok.id, "n1", True),
        EventSendResult(failed.id, "n1", False, next_attempt_at=later, error="HTTP 500"),
        EventSendResult(lost.id, "someone-else", True),  # its lease is n1's: ignored
    ])
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        rows = {r.id: r for r in conn.execute(select(filing_events)).all()}
    assert rows[ok.id].delivered_at is not None and rows[ok.id].attempts == 1
    assert rows[failed.id].delivered_at is None and rows[failed.id].attempts == 1
    assert rows[failed.id].next_attempt_at == later and rows[failed.id].last_error == "HTTP 500"
    assert rows[lost.id].delivered_at is None and rows[lost.id].attempts == 0
