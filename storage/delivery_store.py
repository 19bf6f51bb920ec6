"""The store's delivery-semantics operations: late outcomes, resend and correction, the event
feed and its notifier, the agencies' circuit status. Mixed into `storage.store.SqlStore`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Float, Integer, String, Update, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from domain.messages import Receipt
from domain.states import CORRECTABLE_DELIVERY_STATES, RESENDABLE_DELIVERY_STATES, DeliveryState
from routing.plan import PlannedDelivery, fill_handoffs, handoff_sources
from service.ports import (
    AgencyStatus,
    CallbackTarget,
    DeliveryView,
    EventSendResult,
    FilingEvent,
    NeedsCorrection,
    NotResendable,
    RecipientNotFound,
)
from storage.anomalies import list_anomalies
from storage.audit import append_audit
from storage.delivery_ops import (
    RECIPIENT_CORRECTED,
    EventLog,
    _current,
    apply_late_outcome,
    corrects_of,
    initial_state,
    lock_filings,
    recipient_payload,
    refresh_filings,
    resume_dependents,
)
from storage.delivery_tables import agency_status, filing_events
from storage.errors import errors_translated, outages_translated
from storage.identity import _aware
from storage.tables import attempts, deliveries, filings, outbox

__all__ = ["NEVER", "DeliverySemanticsStore", "delivery_view"]

_S = DeliveryState
#: `filing_events.next_attempt_at` of an event the notifier gave up on: never due again.
NEVER = float("inf")


def _claim_events_statement(postgresql: bool) -> Update:
    """The notifier's claim: lease up to `b_limit` due events of portal `b_portal`, of each
    filing only its earliest open one, the longest due first. One portal a statement: with the
    portal fixed, `ix_filing_events_due` gives the events in the order they fall due and the
    claim stops at its limit, whatever the backlog. Built once (per dialect): built per claim,
    its construction cost more than the claim's own work on a short batch."""
    e, o = filing_events, filing_events.alias("open_events")
    now = bindparam("b_now", type_=Float)
    # The filing's earliest event neither delivered nor given up (one given up holds nothing
    # back): a correlated scalar subquery, which PostgreSQL runs per candidate as one probe of
    # `ix_filing_events_open`. As NOT EXISTS it was planned as an anti-join that, on statistics
    # taken while few events waited, scanned every open event per candidate.
    head_seq = (
        select(func.min(o.c.seq))
        .where(o.c.filing_id == e.c.filing_id, o.c.delivered_at.is_(None), o.c.next_attempt_at < NEVER)
        .scalar_subquery()
    )
    due = (
        select(e.c.id)
        .where(
            e.c.delivered_at.is_(None),
            e.c.portal == bindparam("b_portal", type_=String),
            e.c.next_attempt_at <= now,
            or_(e.c.leased_until.is_(None), e.c.leased_until < now),
            e.c.seq == head_seq,
        )
        .order_by(e.c.next_attempt_at)  # the index's order; one event a filing, so no tie to break
        .limit(bindparam("b_limit", type_=Integer))
    )
    if postgresql:
        due = due.with_for_update(skip_locked=True)
    return (
        update(e)
        .where(e.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=bindparam("b_owner"), leased_until=bindparam("b_until", type_=Float))
        .returning(*e.c)
    )


_CLAIM_EVENTS = {postgresql: _claim_events_statement(postgresql) for postgresql in (True, False)}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def delivery_view(d: Any, anomalies: list[dict[str, Any]] | None = None) -> DeliveryView:
    """A delivery row (or mapping) as the status API shows it, with its anomalies if read."""
    row = d if isinstance(d, Mapping) else d._mapping
    return DeliveryView(
        delivery_id=row["id"],
        agency=row["agency"],
        operation=row["operation"],
        message_id=row["message_id"],
        state=row["state"],
        protocol_number=row["protocol_number"],
        protocolled_at=row["protocolled_at"],
        outcome_code=row["outcome_code"],
        outcome_text=row["outcome_text"],
        references=row["references"] or {},
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
        outcome=row["outcome"],
        waits_for=row["depends_on"],
        correlation_id=row["correlation_id"],
        corrects=corrects_of(row),
        anomalies=anomalies,
    )


def _event(row: Any) -> FilingEvent:
    return FilingEvent(id=row.id, filing_id=row.filing_id, portal=row.portal, seq=row.seq, type=row.type,
                       payload=row.payload, created_at=row.created_at, attempts=row.attempts)


class DeliverySemanticsStore:
    """Needs `_write()`, `_read()`, `_clock` and `_postgresql` from the store it is mixed into."""

    _clock: Callable[[], float]
    _postgresql: bool

    def _write(self) -> AbstractContextManager[Connection]:  # pragma: no cover - provided by SqlStore
        raise NotImplementedError

    def _read(self) -> Connection:  # pragma: no cover - provided by SqlStore
        raise NotImplementedError

    # -- late outcomes (PUSH callbacks) -----------------------------------------------------
    @errors_translated
    def find_callback_target(self, agency: str, correlation_id: str) -> CallbackTarget | None:
        """The current delivery to `agency` that the agency's correlation id names (the id it
        gave in its acknowledgment, or our message id)."""
        with self._read() as conn:
            found = conn.execute(
                select(deliveries).where(
                    deliveries.c.agency == agency,
                    or_(deliveries.c.correlation_id == correlation_id, deliveries.c.message_id == correlation_id),
                )
            ).all()
        rows = sorted(found, key=lambda r: (r.correlation_id != correlation_id, r.superseded_by is not None))
        if not rows:
            return None
        r = rows[0]
        return CallbackTarget(r.id, r.filing_id, r.agency, r.operation, r.message_id, r.state,
                              r.contract_version)

    @errors_translated
    def record_late_outcome(self, delivery_id: str, receipt: Receipt) -> str:
        """Record a late protocol number or decision; "recorded", "duplicate", "conflict",
        "contradiction" (see `apply_late_outcome`)."""
        with self._write() as conn, conn.begin():
            return apply_late_outcome(conn, delivery_id, receipt, _utcnow(), self._clock())

    @errors_translated
    def anomalies(self, agency: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest anomalies kept for operators, newest first (`hub.py anomalies`)."""
        with self._read() as conn:
            return list_anomalies(conn, agency, limit)

    # -- resend and correction ----------------------------------------------------------------
    def _recipient(self, conn: Connection, reference: str, portal: str | None, agency: str,
                   ) -> tuple[dict[int, dict[str, Any]], dict[str, Any], dict[str, Any]]:
        query = select(filings).where(filings.c.reference == reference)
        if portal is not None:
            query = query.where(filings.c.portal == portal)
        filing = conn.execute(query).first()
        if filing is None:
            raise RecipientNotFound(f"no filing {reference}")
        info = lock_filings(conn, [filing.id])
        row = _current(conn, filing.id, agency)
        if row is None:
            raise RecipientNotFound(f"filing {reference} has no recipient {agency}")
        return info, dict(filing._mapping), row

    @errors_translated
    def resend_recipient(self, reference: str, portal: str | None, agency: str, *, actor: str,
                         detail: Mapping[str, Any] | None = None) -> DeliveryView:
        """Send one undeliverable or cancelled recipient's message again, with the SAME message
        id: the agency never accepted it (or took it and lost our answer: then it recognises
        the id and answers with its first receipt). The other recipients are untouched.

        Raises:
            RecipientNotFound: no such filing for `portal`, or no such recipient.
            NotResendable: the recipient is in another state, or what it waits for has failed.
        """
        now, epoch = _utcnow(), self._clock()
        with self._write() as conn, conn.begin():
            info, filing, row = self._recipient(conn, reference, portal, agency)
            if filing.get("payload_purged_at") is not None:  # retention removed the message
                raise NotResendable(f"the filing's payloads were purged after the retention period: "
                                    f"file it again to reach {agency}", agency=agency, state=row["state"])
            if row["state"] not in RESENDABLE_DELIVERY_STATES:
                allowed = " or ".join(sorted(s.value for s in RESENDABLE_DELIVERY_STATES))
                raise NotResendable(f"the {agency} recipient is {row['state']}; a resend needs {allowed}",
                                    agency=agency, state=row["state"])
            last = conn.execute(
                select(attempts.c.result).where(attempts.c.delivery_id == row["id"])
                .order_by(attempts.c.id.desc()).limit(1)
            ).scalar_one_or_none()
            if last == "invalid":
                raise NeedsCorrection(f"the {agency} recipient's message was refused as invalid "
                                      f"({row['outcome_code'] or 'schema'}): the same message would be refused "
                                      "again; resend it with a corrected filing", agency=agency, state=row["state"])
            state, pred = initial_state(conn, filing["id"], row["depends_on"])
            if state == _S.HELD:
                raise NotResendable(f"the {agency} recipient waits for {row['depends_on']}, which has failed: "
                                    f"resend or correct {row['depends_on']} first", agency=agency, state=row["state"])
            content = row["content"]
            if pred is not None and row["state"] == _S.CANCELLED:  # never sent: the hand-off is still due
                content, _ = fill_handoffs(content, row["handoff"], handoff_sources(pred))
            values = {
                "state": state, "content": content, "rounds": 0, "polls": 0, "next_attempt_at": None,
                "correlation_id": None, "poll_url": None, "acknowledged_at": None, "schedule_origin": now,
                "last_error": None, "outcome_code": None, "outcome_text": None, "updated_at": now,
            }
            conn.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(**values))
            if state == _S.PENDING:
                conn.execute(insert(outbox).values(delivery_id=row["id"], agency=agency, available_at=epoch,
                                                   claims=0, created_at=epoch))
            updated = {**row, **values}
            events = EventLog(conn, info, now, epoch)
            events.recipient(updated, row["state"])
            resume_dependents(conn, updated, now, events)
            refresh_filings(conn, info, now, events)
            events.flush()
            append_audit(conn, at=now, actor=actor, action="recipient_resent", subject=reference, outcome="accepted",
                         detail={"agency": agency, "delivery_id": row["id"], "message_id": row["message_id"],
                                 "previous_state": row["state"], "state": state, **(detail or {})})
        return delivery_view(updated)

    @errors_translated
    def correct_recipient(
        self,
        reference: str,
        portal: str | None,
        agency: str,
        plan: Callable[[dict[str, Any], dict[str, str]], PlannedDelivery],
        *,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> DeliveryView:
        """Replace a rejected (or undeliverable) recipient's message with a corrected one.

        `plan(filing_row, corrects)` builds the corrected message: a NEW message id, its header
        naming the message it corrects and that message's protocol number, if any. The old
        delivery stays as it was, marked superseded; the other recipients are untouched.

        Raises:
            RecipientNotFound, NotResendable: as for `resend_recipient`.
        """
        now, epoch = _utcnow(), self._clock()
        with self._write() as conn, conn.begin():
            info, filing, row = self._recipient(conn, reference, portal, agency)
            if row["state"] not in CORRECTABLE_DELIVERY_STATES:
                allowed = " or ".join(sorted(s.value for s in CORRECTABLE_DELIVERY_STATES))
                raise NotResendable(f"the {agency} recipient is {row['state']}; a correction needs {allowed}",
                                    agency=agency, state=row["state"])
            corrects = {"messageId": row["message_id"]}
            if row["protocol_number"]:
                corrects["protocolNumber"] = row["protocol_number"]
            planned = plan(filing, corrects)
            depends_on = planned.after if planned.after and _current(conn, filing["id"], planned.after) else None
            state, pred = initial_state(conn, filing["id"], depends_on)
            content = planned.content
            if pred is not None:
                content, _ = fill_handoffs(content, planned.handoffs, handoff_sources(pred))
            new = {
                "id": planned.delivery_id, "filing_id": filing["id"], "agency": planned.agency,
                "operation": planned.operation, "message_id": planned.message_id, "state": state,
                "content": content, "attempts": 0, "rounds": 0, "polls": 0, "created_at": now, "updated_at": now,
                "depends_on": depends_on, "on_reject": planned.on_reject,
                "handoff": list(planned.handoffs) if depends_on else None,
                "corrects_delivery_id": row["id"], "corrects_protocol_number": row["protocol_number"],
                "contract_version": planned.contract_version,
            }
            conn.execute(insert(deliveries).values(**new))
            conn.execute(update(deliveries).where(deliveries.c.id == row["id"])
                         .values(superseded_by=planned.delivery_id, updated_at=now))
            if state == _S.PENDING:
                conn.execute(insert(outbox).values(delivery_id=planned.delivery_id, agency=planned.agency,
                                                   available_at=epoch, claims=0, created_at=epoch))
            created = dict(conn.execute(select(deliveries).where(deliveries.c.id == planned.delivery_id)).one()._mapping)
            events = EventLog(conn, info, now, epoch)
            events.add(filing["id"], RECIPIENT_CORRECTED, {
                "previousState": row["state"],
                "recipient": recipient_payload(created),
                "replaces": {"deliveryId": row["id"], "messageId": row["message_id"],
                             "protocolNumber": row["protocol_number"], "state": row["state"]},
            })
            resume_dependents(conn, created, now, events)
            refresh_filings(conn, info, now, events)
            events.flush()
            append_audit(conn, at=now, actor=actor, action="recipient_corrected", subject=reference,
                         outcome="accepted",
                         detail={"agency": agency, "delivery_id": planned.delivery_id,
                                 "message_id": planned.message_id, "corrects_delivery_id": row["id"],
                                 "corrects_message_id": row["message_id"],
                                 "corrects_protocol_number": row["protocol_number"], **(detail or {})})
        return delivery_view(created)

    # -- the event feed and the notifier -------------------------------------------------------
    @errors_translated
    def filing_events(self, reference: str, portal: str | None, after: int = 0,
                      limit: int = 1000) -> list[FilingEvent] | None:
        """The filing's events after sequence `after`, in order; None if the filing is not found."""
        if "\x00" in reference:  # no reference has a NUL, and PostgreSQL refuses one in text
            return None
        with self._read() as conn:
            query = select(filings.c.id).where(filings.c.reference == reference)
            if portal is not None:
                query = query.where(filings.c.portal == portal)
            filing_id = conn.execute(query).scalar()
            if filing_id is None:
                return None
            rows = conn.execute(
                select(filing_events)
                .where(filing_events.c.filing_id == filing_id, filing_events.c.seq > after)
                .order_by(filing_events.c.seq)
                .limit(limit)
            ).all()
        return [_event(r) for r in rows]

    @outages_translated
    def claim_events(self, owner: str, portals: Mapping[str, int], limit: int,
                     lease_seconds: float) -> list[FilingEvent]:
        """Lease due events to push: of each filing only the earliest undelivered one, so a
        portal never receives an event before an earlier one of the same filing. The portals are
        served in the order given (the caller rotates them), each up to its own share and to
        what the limit leaves."""
        if limit <= 0 or not portals:
            return []
        now = self._clock()
        claim = _CLAIM_EVENTS[self._postgresql]
        rows: list[Any] = []
        with self._write() as conn, conn.begin():
            for portal, share in portals.items():  # in the caller's order, until the limit is reached
                if share <= 0:
                    continue
                rows += conn.execute(claim, {"b_portal": portal, "b_now": now,
                                             "b_limit": min(share, limit - len(rows)),
                                             "b_owner": owner, "b_until": now + lease_seconds}).all()
                if len(rows) >= limit:
                    break
        return sorted((_event(r) for r in rows), key=lambda ev: (ev.filing_id, ev.seq))

    @outages_translated
    def finish_events(self, results: Sequence[EventSendResult]) -> None:
        """Record pushes: delivered, failed with the time of the next try, or given up (past
        the notifier's horizon: next try `NEVER`; the feed still serves the event)."""
        if not results:
            return
        now = self._clock()
        e = filing_events
        delivered: dict[str, list[str]] = {}
        failed = [{"b_id": r.event_id, "b_owner": r.owner,
                   "b_next": NEVER if r.gave_up else (r.next_attempt_at or now),
                   "b_error": (r.error or "")[:2000]} for r in results if not r.delivered]
        for r in results:
            if r.delivered:
                delivered.setdefault(r.owner, []).append(r.event_id)
        # One statement per owner for the delivered ones, one executemany for the failed ones.
        with self._write() as conn, conn.begin():
            for owner, ids in delivered.items():
                conn.execute(update(e).where(e.c.id.in_(ids), e.c.lease_owner == owner)
                             .values(attempts=e.c.attempts + 1, leased_until=None, delivered_at=now,
                                     last_error=None))
            if failed:
                conn.execute(
                    update(e).where(e.c.id == bindparam("b_id"), e.c.lease_owner == bindparam("b_owner"))
                    .values(attempts=e.c.attempts + 1, leased_until=None, next_attempt_at=bindparam("b_next"),
                            last_error=bindparam("b_error")),
                    failed,
                )

    # -- the agencies' circuits ----------------------------------------------------------------
    @outages_translated
    def report_agency_status(self, agency: str, snapshot: Mapping[str, Any], owner: str, *,
                             refresh_after: float | None = None) -> None:
        """Upsert what a worker's breaker for `agency` says now.

        `refresh_after` (seconds) makes it a periodic re-report, not a change: it refreshes the
        row only when this worker reported it, or it says the same, or the row is older than
        that (its reporter stopped); another live worker's different state is left shown.
        """
        now = _utcnow()
        values = {
            "circuit": snapshot["circuit"], "failures": snapshot["failures"], "opened_at": snapshot.get("opened_at"),
            "open_until": snapshot.get("open_until"), "throttled_until": snapshot.get("throttled_until"),
            "reported_by": owner, "updated_at": now,
        }
        s = agency_status.c
        for _ in range(2):  # two workers may insert the first row at once: the loser updates
            try:
                with self._write() as conn, conn.begin():
                    stmt = update(agency_status).where(s.agency == agency).values(**values)
                    if refresh_after is not None:
                        stmt = stmt.where(or_(s.reported_by == owner, s.circuit == values["circuit"],
                                              s.updated_at < now - timedelta(seconds=refresh_after)))
                    if conn.execute(stmt).rowcount:
                        return
                    if refresh_after is not None and conn.execute(
                            select(s.agency).where(s.agency == agency)).first() is not None:
                        return  # another live worker's report stands
                    conn.execute(insert(agency_status).values(agency=agency, **values))
                return
            except IntegrityError:
                continue

    @errors_translated
    def agency_statuses(self) -> list[AgencyStatus]:
        with self._read() as conn:
            rows = conn.execute(select(agency_status).order_by(agency_status.c.agency)).all()
        return [AgencyStatus(**{**r._mapping, "updated_at": _aware(r.updated_at)}) for r in rows]
