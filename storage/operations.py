"""The store's side of operators' actions: retry now, cancel, the undeliverable recipients of
a time window, and agencies paused by an operator. Mixed into `storage.store.SqlStore`.

Each action runs in one write transaction that also appends its audit line, so an action
that is recorded is audited, and one that is refused changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from domain.states import DeliveryState
from domain.timestamps import rfc3339
from service.operations import CANCELLABLE_STATES, AgencyThrottledNow
from service.ports import DeliveryView, NotResendable
from storage.audit import append_audit
from storage.delivery_ops import EventLog, _current, refresh_filings, settle_dependents
from storage.delivery_store import delivery_view
from storage.delivery_tables import agency_pauses, agency_status
from storage.errors import errors_translated, outages_translated
from storage.tables import deliveries, filings, outbox

__all__ = ["OperationsStore"]

_S = DeliveryState
def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _throttled_until(conn: Connection, agency: str, epoch: float) -> float | None:
    """When the agency's last Retry-After ends, if it has not ended by `epoch`."""
    until = conn.execute(select(agency_status.c.throttled_until)
                         .where(agency_status.c.agency == agency)).scalar()
    return until if until is not None and until > epoch else None


class OperationsStore:
    """Needs `_write()`, `_read()`, `_clock`, `_recipient()` and `audit()` from the store it is
    mixed into."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[Connection]:  # pragma: no cover - provided by SqlStore
        raise NotImplementedError

    def _read(self) -> Connection:  # pragma: no cover - provided by SqlStore
        raise NotImplementedError

    def _recipient(self, conn: Connection, reference: str, portal: str | None,  # pragma: no cover
                   agency: str) -> tuple[dict[int, dict[str, Any]], dict[str, Any], dict[str, Any]]:
        raise NotImplementedError  # provided by SqlStore (DeliverySemanticsStore)

    def audit(self, actor: str, action: str, subject: str, outcome: str,  # pragma: no cover
              detail: dict[str, Any]) -> None:
        raise NotImplementedError  # provided by SqlStore

    # -- reading for previews -------------------------------------------------------------------
    @errors_translated
    def ops_recipient(self, reference: str, agency: str) -> DeliveryView | None:
        """The filing's current recipient `agency` (any portal), or None."""
        with self._read() as conn:
            filing_id = conn.execute(select(filings.c.id).where(filings.c.reference == reference)).scalar()
            row = _current(conn, filing_id, agency) if filing_id is not None else None
        return delivery_view(row) if row is not None else None

    @errors_translated
    def throttled_until(self, agency: str) -> float | None:
        """When the agency's last Retry-After ends, if it has not ended yet."""
        with self._read() as conn:
            return _throttled_until(conn, agency, self._clock())

    # -- retry now ------------------------------------------------------------------------------
    @errors_translated
    def retry_recipient_now(self, reference: str, agency: str, *, actor: str, force: bool = False,
                            reason: str | None = None) -> DeliveryView:
        """Make a retrying recipient's next attempt due now, ignoring its backoff.

        Never before the agency's Retry-After unless `force`: then the job is marked so the
        worker skips the throttle for this one job.

        Raises:
            RecipientNotFound: no such filing or recipient.
            NotResendable: the recipient is not retrying.
            AgencyThrottledNow: the agency's Retry-After has not ended and `force` is not set.
        """
        now, epoch = _utcnow(), self._clock()
        with self._write() as conn, conn.begin():
            _, _, row = self._recipient(conn, reference, None, agency)
            if row["state"] != _S.RETRYING:
                raise NotResendable(f"the {agency} recipient is {row['state']}; retry now needs retrying",
                                    agency=agency, state=row["state"])
            throttled = _throttled_until(conn, agency, epoch)
            if throttled is not None and not force:
                raise AgencyThrottledNow(agency, throttled)
            free = or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < epoch)
            running = conn.execute(select(func.count()).select_from(outbox).where(
                outbox.c.delivery_id == row["id"], outbox.c.done_at.is_(None), ~free)).scalar_one()
            if running:
                # A worker is calling the agency for it right now: a second job would race it.
                raise NotResendable(f"an attempt to {agency} is in flight now; its outcome decides what follows",
                                    agency=agency, state=row["state"])
            moved = conn.execute(
                update(outbox).where(outbox.c.delivery_id == row["id"], outbox.c.done_at.is_(None), free)
                .values(available_at=epoch, forced=bool(force and throttled))
            ).rowcount
            if not moved:
                # No waiting job (it was lost or closed by hand): add one due now.
                conn.execute(insert(outbox).values(delivery_id=row["id"], agency=agency, available_at=epoch,
                                                   claims=0, created_at=epoch, forced=bool(force and throttled)))
            conn.execute(update(deliveries).where(deliveries.c.id == row["id"])
                         .values(next_attempt_at=epoch, updated_at=now))
            append_audit(conn, at=now, actor=actor, action="recipient_retried", subject=reference,
                         outcome="forced" if throttled is not None else "accepted",
                         detail={"agency": agency, "delivery_id": row["id"], "message_id": row["message_id"],
                                 "was_due_at": row["next_attempt_at"], "throttled_until": throttled,
                                 "force": force, "reason": reason})
        return delivery_view({**row, "next_attempt_at": epoch, "updated_at": now})

    # -- cancel ---------------------------------------------------------------------------------
    @errors_translated
    def cancel_recipient(self, reference: str, agency: str, *, actor: str, reason: str) -> DeliveryView:
        """Cancel a recipient: no more calls, its jobs closed (a pass in flight is dropped as
        stale when it reports), what waits for it settled, the filing's state re-derived.
        A later resend revives it.

        Raises:
            RecipientNotFound: no such filing or recipient.
            NotResendable: the recipient is in a state that cannot be cancelled.
        """
        now, epoch = _utcnow(), self._clock()
        with self._write() as conn, conn.begin():
            info, _, row = self._recipient(conn, reference, None, agency)
            if row["state"] not in CANCELLABLE_STATES:
                allowed = ", ".join(sorted(s.value for s in CANCELLABLE_STATES))
                raise NotResendable(f"the {agency} recipient is {row['state']}; cancel needs one of {allowed}",
                                    agency=agency, state=row["state"])
            values = {"state": _S.CANCELLED.value, "next_attempt_at": None, "outcome_code": "CANCELLED",
                      "outcome_text": reason[:2000], "last_error": None, "updated_at": now}
            conn.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(**values))
            # Every open job, leased ones too: the running pass finds its job closed.
            conn.execute(update(outbox).where(outbox.c.delivery_id == row["id"], outbox.c.done_at.is_(None))
                         .values(done_at=epoch))
            updated = {**row, **values}
            events = EventLog(conn, info, now, epoch)
            events.recipient(updated, row["state"])
            settle_dependents(conn, [updated], now, epoch, events)
            refresh_filings(conn, info, now, events)
            events.flush()
            append_audit(conn, at=now, actor=actor, action="recipient_cancelled", subject=reference,
                         outcome="cancelled",
                         detail={"agency": agency, "delivery_id": row["id"], "message_id": row["message_id"],
                                 "previous_state": row["state"], "reason": reason})
        return delivery_view(updated)

    # -- bulk resend ----------------------------------------------------------------------------
    @errors_translated
    def undeliverable_recipients(self, agency: str, start: datetime, end: datetime,
                                 limit: int) -> tuple[int, list[str]]:
        """How many of `agency`'s current recipients became undeliverable in [start, end), and
        the references of the first `limit` of them (oldest first)."""
        where = (deliveries.c.agency == agency, deliveries.c.state == _S.UNDELIVERABLE.value,
                 deliveries.c.superseded_by.is_(None), deliveries.c.updated_at >= start,
                 deliveries.c.updated_at < end)
        with self._read() as conn:
            count = conn.execute(select(func.count()).select_from(deliveries).where(*where)).scalar_one()
            refs = conn.execute(
                select(filings.c.reference).join(filings, filings.c.id == deliveries.c.filing_id)
                .where(*where).order_by(deliveries.c.updated_at, deliveries.c.id).limit(limit)
            ).scalars().all()
        return int(count), list(refs)

    # -- pause and resume -----------------------------------------------------------------------
    @errors_translated
    @outages_translated
    def paused_agencies(self) -> dict[str, dict[str, Any]]:
        """Agency → {pausedBy, reason, pausedAt} for every agency paused now."""
        with self._read() as conn:
            rows = conn.execute(select(agency_pauses)).all()
        return {r.agency: {"pausedBy": r.paused_by, "reason": r.reason, "pausedAt": rfc3339(r.paused_at)} for r in rows}

    @errors_translated
    def pause_agency(self, agency: str, *, actor: str, reason: str | None) -> bool:
        """Pause calls to `agency`; False (audited too) when it was paused already."""
        now = _utcnow()
        try:
            with self._write() as conn, conn.begin():
                conn.execute(insert(agency_pauses).values(agency=agency, paused_by=actor, reason=reason,
                                                          paused_at=now))
                append_audit(conn, at=now, actor=actor, action="agency_paused", subject=agency,
                             outcome="paused", detail={"agency": agency, "reason": reason})
            return True
        except IntegrityError:
            self.audit(actor, "agency_paused", agency, "already_paused", {"agency": agency, "reason": reason})
            return False

    @errors_translated
    def resume_agency(self, agency: str, *, actor: str, reason: str | None = None) -> int | None:
        """Resume calls to `agency` and make the jobs the pause held back due now.

        Returns:
            How many jobs became due, or None (audited too) when the agency was not paused.
        """
        now, epoch = _utcnow(), self._clock()
        with self._write() as conn, conn.begin():
            removed = conn.execute(delete(agency_pauses).where(agency_pauses.c.agency == agency)).rowcount
            if not removed:
                append_audit(conn, at=now, actor=actor, action="agency_resumed", subject=agency,
                             outcome="not_paused", detail={"agency": agency, "reason": reason})
                return None
            # A deferral records only the job's new time, so every job of the agency's deliveries
            # still to be sent is made due: the pause may have moved any of them. (Retry-After
            # still holds: the workers' breakers keep it.) Late-outcome checks keep their times.
            held = select(deliveries.c.id).where(deliveries.c.agency == agency,
                                                 deliveries.c.state.in_([_S.PENDING.value, _S.RETRYING.value]))
            made_due = conn.execute(
                update(outbox).where(outbox.c.agency == agency, outbox.c.done_at.is_(None),
                                     outbox.c.available_at > epoch, outbox.c.delivery_id.in_(held))
                .values(available_at=epoch)
            ).rowcount
            conn.execute(update(deliveries).where(deliveries.c.id.in_(held.scalar_subquery()))
                         .values(next_attempt_at=epoch))
            append_audit(conn, at=now, actor=actor, action="agency_resumed", subject=agency, outcome="resumed",
                         detail={"agency": agency, "jobs_made_due": made_due, "reason": reason})
        return int(made_due)
