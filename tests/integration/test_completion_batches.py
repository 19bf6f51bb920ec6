"""Completions recorded in one batch on SQLite and PostgreSQL: the rows and events are those of
recording them one by one, and two recipients of one filing settle together."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import event, select

from routing.plan import PlannedDelivery
from service.ports import AttemptRecord, ClaimedJob, Completion, NewFiling
from storage.delivery_tables import filing_events
from storage.store import SqlStore
from storage.tables import attempts, deliveries, filings, outbox
from tests.integration.test_store import clock, store  # noqa: F401 - fixtures: a store on a manual clock

_NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
_HANDOFF = ({"path": ["numeroREA"], "agency": "cciaa", "reference": "numeroREA"},)
#: Columns that differ between two otherwise equal filings, or hold the wall clock.
_IDS = {"id", "filing_id", "message_id", "created_at", "updated_at"}
_CLOCKS = {"acknowledged_at", "schedule_origin"}


def _plan(on_reject: str):  # type: ignore[no-untyped-def]
    """cciaa and suap on their own; inps waits for cciaa (its REA number), inail for inps."""

    def plan(reference: str) -> list[PlannedDelivery]:
        return [
            PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "cciaa", "IscrizioneImpresa", {"x": 1}),
            PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "suap", "Op", {"x": 2}),
            PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "inps", "Op", {"x": 3}, after="cciaa",
                            on_reject=on_reject, handoffs=_HANDOFF),
            PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "inail", "Op", {"x": 4}, after="inps",
                            on_reject=on_reject),
        ]

    return plan


def _new() -> NewFiling:
    return NewFiling("business_start", "test", "09182730581", "Alfa", "FTTMRC85C14H501X", "legal_representative",
                     b"<filing/>", "b" * 64, _NOW)


def _open_jobs(store: SqlStore, filing_ids: list[int]) -> dict[tuple[int, str], ClaimedJob]:
    """(position of the filing, agency) → its open job."""
    jobs = store.claim_jobs("w", None, 1000, 60)
    return {(filing_ids.index(j.filing_id), j.agency): j for j in jobs if j.filing_id in filing_ids}


def _accept(store: SqlStore, policies: list[str]) -> list[int]:
    refs = [store.accept_filing(_new(), _plan(p)).reference for p in policies]
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        by_ref = {ref: fid for ref, fid in conn.execute(select(filings.c.reference, filings.c.id))}
    return [by_ref[r] for r in refs]


def _pass(job: ClaimedJob, state: str, **fields: Any) -> Completion:
    result = {"retrying": "transient", "undeliverable": "transient", "rejected": "permanent"}.get(state, "ok")
    return Completion(job=job, owner="w", new_state=state, attempts=[AttemptRecord(1, _NOW, 5.0, result)], **fields)


def _strip(value: Any, run: str = "") -> Any:
    """An event payload without what names one filing's rows rather than another's (and
    without the `run` prefix of its protocol numbers)."""
    if isinstance(value, dict):
        return {k: (v.removeprefix(run) if k == "protocolNumber" and v else _strip(v, run))
                for k, v in value.items() if k not in ("deliveryId", "messageId", "reference")}
    if isinstance(value, list):
        return [_strip(v, run) for v in value]
    return value


def _snapshot(store: SqlStore, filing_ids: list[int], run: str = "") -> dict[str, Any]:
    """Everything the filings' completions wrote, keyed by filing position and agency; `run`
    is the prefix of the protocol numbers its filings were given, left out."""
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        rows = conn.execute(select(deliveries).where(deliveries.c.filing_id.in_(filing_ids))).all()
        key = {r.id: (filing_ids.index(r.filing_id), r.agency) for r in rows}
        snap: dict[str, Any] = {
            "filings": [conn.execute(select(filings.c.state).where(filings.c.id == f)).scalar() for f in filing_ids],
            "deliveries": {
                key[r.id]: {k: (v is not None if k in _CLOCKS else v.removeprefix(run) if k == "protocol_number" and v
                                else v) for k, v in r._mapping.items() if k not in _IDS}
                for r in rows
            },
            "attempts": {}, "jobs": {}, "events": {},
        }
        for r in conn.execute(select(attempts).where(attempts.c.delivery_id.in_(key)).order_by(attempts.c.id)):
            snap["attempts"].setdefault(key[r.delivery_id], []).append((r.number, r.result, r.worker, r.duration_ms))
        for r in conn.execute(select(outbox).where(outbox.c.delivery_id.in_(key)).order_by(outbox.c.id)):
            snap["jobs"].setdefault(key[r.delivery_id], []).append((r.available_at, r.done_at, r.claims))
        for r in conn.execute(select(filing_events).where(filing_events.c.filing_id.in_(filing_ids))
                              .order_by(filing_events.c.filing_id, filing_events.c.seq)):
            snap["events"].setdefault(filing_ids.index(r.filing_id), []).append((r.seq, r.type, _strip(r.payload, run)))
    return snap


#: Filing positions of the mixed batch, and the route policy of each.
_POLICIES = ["hold", "hold", "cancel", "hold", "hold", "hold", "hold", "hold"]


def _mixed(store: SqlStore, run: str) -> tuple[list[int], list[Completion]]:
    """Filings prepared alike, and one batch: per filing one live pass, plus duplicates. The
    protocol numbers start with `run`: an agency never gives one number to two messages."""
    ids = _accept(store, _POLICIES)
    clock = store._clock  # noqa: SLF001 - the test's own clock
    jobs = _open_jobs(store, ids)
    # Settled before the batch (6); acknowledged, its status to poll at once (5).
    store.complete_jobs([_pass(jobs[6, "cciaa"], "protocolled", protocol_number=f"{run}P6", references={"numeroREA": "R6"}),
                         _pass(jobs[5, "cciaa"], "acknowledged", correlation_id="c5", poll_url="/s/5",
                               next_attempt_at=clock())])
    polled = _open_jobs(store, ids)[5, "cciaa"]
    later = clock() + 300
    batch = [
        _pass(jobs[0, "cciaa"], "protocolled", protocol_number=f"{run}P0", protocolled_at="2026-03-02T09:31:00+01:00",
              references={"numeroREA": "R0"}),                                     # releases inps
        _pass(jobs[1, "cciaa"], "rejected", outcome="rejected", outcome_code="E1", outcome_text="no"),  # holds
        _pass(jobs[2, "cciaa"], "rejected", outcome="rejected", outcome_code="E2", outcome_text="no"),  # cancels
        _pass(jobs[3, "cciaa"], "retrying", last_error="503", next_attempt_at=later),
        Completion(job=jobs[4, "suap"], owner="w", new_state="pending", deferred=True, next_attempt_at=later),
        _pass(polled, "acknowledged", polled=True, correlation_id="c5", poll_url="/s/5", next_attempt_at=later),
        _pass(jobs[6, "cciaa"], "undeliverable", last_error="late duplicate"),       # settled before: ignored
        _pass(jobs[7, "cciaa"], "undeliverable", last_error="gave up"),              # holds the chain
        _pass(jobs[0, "cciaa"], "rejected", outcome="rejected", outcome_code="E9"),  # settled in this batch
    ]
    return ids, batch


def test_a_mixed_batch_writes_what_one_pass_at_a_time_writes(store: SqlStore) -> None:
    """Released, held and cancelled chains, a retry, a deferral, a poll and duplicates: one
    batch leaves the same rows, jobs, attempts and events as one transaction per pass."""
    batched, batch = _mixed(store, "A")
    single, passes = _mixed(store, "B")

    store.complete_jobs(batch)
    for c in passes:
        store.complete_jobs([c])

    got = _snapshot(store, batched, "A")
    assert got == _snapshot(store, single, "B")
    states = {k: v["state"] for k, v in got["deliveries"].items()}
    assert [states[i, "inps"] for i in (0, 1, 2, 7)] == ["pending", "held", "cancelled", "held"]
    assert [states[i, "inail"] for i in (0, 1, 2, 7)] == ["waiting", "held", "cancelled", "held"]
    assert got["deliveries"][0, "inps"]["content"] == {"x": 3, "numeroREA": "R0"}
    # Written in the same statement as inps's content, the rows whose content was not read keep it.
    assert [got["deliveries"][i, "cciaa"]["content"] for i in (0, 1, 3)] == [{"x": 1}] * 3
    assert got["deliveries"][0, "cciaa"]["outcome"] is None  # the duplicate rejection changed nothing
    assert got["deliveries"][6, "cciaa"]["state"] == "protocolled"
    assert (got["deliveries"][4, "suap"]["state"], got["deliveries"][4, "suap"]["rounds"]) == ("pending", 0)
    assert (got["deliveries"][5, "cciaa"]["polls"], got["deliveries"][5, "cciaa"]["rounds"]) == (1, 1)
    assert got["jobs"][3, "cciaa"][-1] == (store._clock() + 300, None, 0)  # noqa: SLF001
    assert [e[1] for e in got["events"][2]] == ["filing.accepted", *["recipient.state_changed"] * 3]
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        # Rows without a receipt keep SQL NULL references (not JSON null) when written back.
        assert conn.execute(select(deliveries.c.id).where(
            deliveries.c.filing_id.in_(batched), deliveries.c.protocol_number.is_(None),
            deliveries.c.references.is_not(None))).all() == []


def test_two_recipients_of_one_filing_settle_in_one_batch(store: SqlStore) -> None:
    """Both passes are recorded, then the dependents move, then the filing state changes once."""
    [filing_id] = _accept(store, ["hold"])
    jobs = _open_jobs(store, [filing_id])
    store.complete_jobs([
        _pass(jobs[0, "cciaa"], "protocolled", protocol_number="P1", references={"numeroREA": "R1"}),
        _pass(jobs[0, "suap"], "protocolled", protocol_number="S1"),
    ])
    events = _snapshot(store, [filing_id])["events"][0]
    assert [(seq, type_, p.get("recipient", {}).get("agency"), p.get("state")) for seq, type_, p in events] == [
        (1, "filing.accepted", None, "in_progress"),
        (2, "recipient.state_changed", "cciaa", None),
        (3, "recipient.state_changed", "suap", None),
        (4, "recipient.state_changed", "inps", None),
        (5, "filing.state_changed", None, "partially_protocolled"),
    ]
    assert events[3][2]["recipient"]["state"] == "pending"


def _statements_of_batch(store: SqlStore, filings_count: int) -> list[str]:
    """The statements one `complete_jobs` call sends for `filings_count` filings whose cciaa is
    protocolled (releasing inps: an update of the dependents and their jobs) and whose suap
    is retried (a next job), with attempts, events and filing states (transaction control
    left out)."""
    ids = _accept(store, ["hold"] * filings_count)
    jobs = _open_jobs(store, ids)
    later = store._clock() + 300  # noqa: SLF001 - the test's own clock
    batch = []
    for n in range(filings_count):
        batch.append(_pass(jobs[n, "cciaa"], "protocolled", protocol_number=f"N{uuid.uuid4().hex[:8]}",
                           references={"numeroREA": f"R{n}"}))
        batch.append(_pass(jobs[n, "suap"], "retrying", last_error="503", next_attempt_at=later))
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            sent.append(statement.split()[0] + " " + statement.split()[2])

    event.listen(store._engine, "before_cursor_execute", count)  # noqa: SLF001 - test inspection
    try:
        store.complete_jobs(batch)
    finally:
        event.remove(store._engine, "before_cursor_execute", count)  # noqa: SLF001
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        released = conn.execute(select(deliveries.c.state).where(
            deliveries.c.filing_id.in_(ids), deliveries.c.agency == "inps")).scalars().all()
    assert released == ["pending"] * filings_count  # the batch did release the dependents
    return sent


def test_a_batch_costs_a_fixed_handful_of_statements(store: SqlStore) -> None:
    """One lock of the filings, one UPDATE … RETURNING that checks and closes the jobs, one
    read of the filings' deliveries (with their last event numbers, for the dependents and
    the filing states too, and the holders of the new protocol numbers), then one write per
    kind of row (the passes and the dependents they released are one write of deliveries):
    eight statements, however many passes (it took fifteen before the reads were merged)."""
    small = _statements_of_batch(store, 2)
    large = _statements_of_batch(store, 8)
    assert len(large) == len(small), large
    assert len(large) <= 8, large
    # Every write counted, those PostgreSQL's driver runs without SQLAlchemy's executemany too.
    assert {"INSERT attempts", "INSERT outbox", "INSERT filing_events"} <= set(large), large
    assert large.count("UPDATE SET") == 3, large  # the jobs, the deliveries, the filings
