"""The SQL store: every use case's reads and writes, one transaction each.

SQLAlchemy Core keeps the hot path lean: a claim is one UPDATE … RETURNING, a batch of
completions is a handful of statements in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from domain.states import TERMINAL_DELIVERY_STATES, DeliveryState, FilingState
from routing.aggregate import aggregate_filing_state
from routing.plan import PlannedDelivery
from service.ports import (
    AcceptedFiling,
    ClaimedJob,
    Completion,
    DeliveryView,
    FilingView,
    IdempotencyConflict,
    NewFiling,
)
from storage.tables import attempts, audit_log, deliveries, filings, outbox

__all__ = ["SqlStore", "format_reference"]

_TERMINAL = [s.value for s in TERMINAL_DELIVERY_STATES]


def format_reference(year: int, number: int) -> str:
    return f"CRV-{year}-{number:06d}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SqlStore:
    """Implements `service.ports.Store` over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._skip_locked = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Queuing this process's writers on a Python lock
        # hands the database over at once, instead of SQLite's busy handler sleeping in
        # steps of up to 100 ms; other processes still meet the busy handler.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self._engine.connect().execution_options(write=True) as conn:
                yield conn
            return
        with self._write_lock, self._engine.connect().execution_options(write=True) as conn:
            yield conn

    def _read(self) -> Connection:
        return self._engine.connect()

    # -- intake ---------------------------------------------------------------------------
    def accept_filing(
        self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]
    ) -> AcceptedFiling:
        try:
            return self._accept(filing, plan)
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race: answer as it did.
            if filing.idempotency_key is None:
                raise
            with self._read() as conn:
                replay = self._replay(conn, filing)
            if replay is None:
                raise
            return replay

    def _replay(self, conn: Connection, filing: NewFiling) -> AcceptedFiling | None:
        row = conn.execute(
            select(filings.c.id, filings.c.reference, filings.c.request_digest).where(
                filings.c.portal == filing.portal,
                filings.c.idempotency_key == filing.idempotency_key,
            )
        ).first()
        if row is None:
            return None
        if row.request_digest != filing.request_digest:
            raise IdempotencyConflict(row.reference)
        recipients = conn.execute(
            select(deliveries.c.agency, deliveries.c.operation)
            .where(deliveries.c.filing_id == row.id)
            .order_by(deliveries.c.created_at, deliveries.c.agency)
        ).all()
        return AcceptedFiling(
            reference=row.reference,
            state=FilingState.IN_PROGRESS.value,
            recipients=[{"agency": r.agency, "operation": r.operation} for r in recipients],
            replayed=True,
        )

    def _accept(
        self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]
    ) -> AcceptedFiling:
        now = _utcnow()
        epoch = self._clock()
        with self._write() as conn, conn.begin():
            if filing.idempotency_key is not None:
                replay = self._replay(conn, filing)
                if replay is not None:
                    return replay
            filing_id = conn.execute(
                insert(filings)
                .values(
                    kind=filing.kind,
                    portal=filing.portal,
                    state=FilingState.IN_PROGRESS.value,
                    subject_tax_code=filing.subject_tax_code,
                    subject_name=filing.subject_name,
                    declarant_tax_code=filing.declarant_tax_code,
                    declarant_role=filing.declarant_role,
                    document=filing.document,
                    digest=filing.digest,
                    idempotency_key=filing.idempotency_key,
                    request_digest=filing.request_digest,
                    created_at=now,
                    updated_at=now,
                )
                .returning(filings.c.id)
            ).scalar_one()
            reference = format_reference(filing.received_at.year, filing_id)
            conn.execute(
                update(filings).where(filings.c.id == filing_id).values(reference=reference)
            )
            planned = plan(reference)
            if planned:
                conn.execute(
                    insert(deliveries),
                    [
                        {
                            "id": p.delivery_id,
                            "filing_id": filing_id,
                            "agency": p.agency,
                            "operation": p.operation,
                            "message_id": p.message_id,
                            "state": DeliveryState.PENDING.value,
                            "content": p.content,
                            "attempts": 0,
                            "rounds": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for p in planned
                    ],
                )
                conn.execute(
                    insert(outbox),
                    [
                        {
                            "delivery_id": p.delivery_id,
                            "agency": p.agency,
                            "available_at": epoch,
                            "claims": 0,
                            "created_at": epoch,
                        }
                        for p in planned
                    ],
                )
            conn.execute(
                insert(audit_log).values(
                    at=now,
                    actor=f"portal:{filing.portal}",
                    action="filing_accepted",
                    subject=reference,
                    outcome="accepted",
                    detail={
                        "kind": filing.kind,
                        "declarant": filing.declarant_tax_code,
                        "recipients": [p.agency for p in planned],
                        "digest": filing.digest,
                    },
                )
            )
        return AcceptedFiling(
            reference=reference,
            state=FilingState.IN_PROGRESS.value,
            recipients=[{"agency": p.agency, "operation": p.operation} for p in planned],
            replayed=False,
        )

    # -- reading --------------------------------------------------------------------------
    def get_filing(self, reference: str, portal: str | None) -> FilingView | None:
        with self._read() as conn:
            query = select(filings).where(filings.c.reference == reference)
            if portal is not None:
                query = query.where(filings.c.portal == portal)
            row = conn.execute(query).first()
            if row is None:
                return None
            rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.filing_id == row.id)
                .order_by(deliveries.c.agency, deliveries.c.operation)
            ).all()
        return FilingView(
            reference=row.reference,
            kind=row.kind,
            portal=row.portal,
            state=row.state,
            created_at=row.created_at,
            updated_at=row.updated_at,
            deliveries=[
                DeliveryView(
                    delivery_id=d.id,
                    agency=d.agency,
                    operation=d.operation,
                    message_id=d.message_id,
                    state=d.state,
                    protocol_number=d.protocol_number,
                    protocolled_at=d.protocolled_at,
                    outcome_code=d.outcome_code,
                    outcome_text=d.outcome_text,
                    references=d.references or {},
                    attempts=d.attempts,
                    last_error=d.last_error,
                    next_attempt_at=d.next_attempt_at,
                    updated_at=d.updated_at,
                )
                for d in rows
            ],
        )

    # -- the embedded queue -----------------------------------------------------------------
    def claim_jobs(
        self, owner: str, agencies: Sequence[str] | None, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to `owner`; an expired lease makes a job claimable again.

        One UPDATE … RETURNING: SQLite serialises writers, PostgreSQL skips rows another
        worker has locked, so two workers never hold the same job at once.
        """
        if limit <= 0:
            return []
        now = self._clock()
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.done_at.is_(None),
                outbox.c.available_at <= now,
                or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now),
            )
            .order_by(outbox.c.available_at)
            .limit(limit)
        )
        if agencies is not None:
            due = due.where(outbox.c.agency.in_(list(agencies)))
        if self._skip_locked:
            due = due.with_for_update(skip_locked=True)
        with self._write() as conn, conn.begin():
            claimed = conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(due.scalar_subquery()))
                .values(
                    lease_owner=owner,
                    leased_until=now + lease_seconds,
                    claims=outbox.c.claims + 1,
                )
                .returning(outbox.c.id, outbox.c.delivery_id)
            ).all()
            if not claimed:
                return []
            job_of = {row.delivery_id: row.id for row in claimed}
            rows = conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.filing_id,
                    deliveries.c.agency,
                    deliveries.c.operation,
                    deliveries.c.message_id,
                    deliveries.c.state,
                    deliveries.c.content,
                    deliveries.c.rounds,
                    deliveries.c.created_at,
                    filings.c.reference,
                )
                .join(filings, filings.c.id == deliveries.c.filing_id)
                .where(deliveries.c.id.in_(list(job_of)))
            ).all()
        return [
            ClaimedJob(
                job_id=job_of[r.id],
                delivery_id=r.id,
                filing_id=r.filing_id,
                filing_reference=r.reference,
                agency=r.agency,
                operation=r.operation,
                message_id=r.message_id,
                state=r.state,
                content=r.content,
                rounds=r.rounds,
                created_at=r.created_at,
            )
            for r in rows
        ]

    def complete_jobs(self, completions: Sequence[Completion]) -> None:
        """Record a batch of outcomes, close their jobs, re-derive their filings' states."""
        if not completions:
            return
        now = _utcnow()
        epoch = self._clock()
        with self._write() as conn, conn.begin():
            for c in completions:
                values: dict[str, Any] = {
                    "state": c.new_state,
                    "attempts": deliveries.c.attempts + len(c.attempts),
                    "rounds": deliveries.c.rounds + 1,
                    "last_error": c.last_error,
                    "next_attempt_at": c.next_attempt_at,
                    "updated_at": now,
                }
                if c.protocol_number is not None:
                    values.update(
                        protocol_number=c.protocol_number,
                        protocolled_at=c.protocolled_at,
                        outcome=c.outcome,
                        references=c.references or {},
                    )
                if c.outcome_code is not None:
                    values.update(outcome_code=c.outcome_code, outcome_text=c.outcome_text)
                # A settled delivery never moves again: a late duplicate pass changes nothing.
                changed = conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == c.job.delivery_id, deliveries.c.state.not_in(_TERMINAL))
                    .values(**values)
                ).rowcount
                if changed and c.attempts:
                    conn.execute(
                        insert(attempts),
                        [
                            {
                                "delivery_id": c.job.delivery_id,
                                "number": a.number,
                                "started_at": a.started_at,
                                "duration_ms": a.duration_ms,
                                "result": a.result,
                                "error_code": a.error_code,
                                "error_text": a.error_text,
                                "worker": c.owner,
                            }
                            for a in c.attempts
                        ],
                    )
                conn.execute(
                    update(outbox).where(outbox.c.id == c.job.job_id).values(done_at=epoch)
                )
                if changed and c.next_attempt_at is not None:
                    conn.execute(
                        insert(outbox).values(
                            delivery_id=c.job.delivery_id,
                            agency=c.job.agency,
                            available_at=c.next_attempt_at,
                            claims=0,
                            created_at=epoch,
                        )
                    )
            self._refresh_filing_states(conn, {c.job.filing_id for c in completions}, now)

    def _refresh_filing_states(self, conn: Connection, filing_ids: set[int], now: datetime) -> None:
        rows = conn.execute(
            select(deliveries.c.filing_id, deliveries.c.state).where(
                deliveries.c.filing_id.in_(list(filing_ids))
            )
        ).all()
        states: dict[int, list[str]] = {fid: [] for fid in filing_ids}
        for row in rows:
            states[row.filing_id].append(row.state)
        for filing_id, delivery_states in states.items():
            conn.execute(
                update(filings)
                .where(filings.c.id == filing_id)
                .values(state=aggregate_filing_state(delivery_states).value, updated_at=now)
            )

    # -- audit and operations ----------------------------------------------------------------
    def audit(self, actor: str, action: str, subject: str, outcome: str, detail: dict[str, Any]) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                insert(audit_log).values(
                    at=_utcnow(), actor=actor, action=action, subject=subject, outcome=outcome, detail=detail
                )
            )

    def pending_jobs(self) -> int:
        with self._read() as conn:
            return conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.done_at.is_(None))
            ).scalar_one()

    def open_filings(self, references: Sequence[str]) -> int:
        """How many of these filings still have an open delivery (used by the demo's wait)."""
        with self._read() as conn:
            return conn.execute(
                select(func.count(func.distinct(filings.c.id)))
                .select_from(filings.join(deliveries, deliveries.c.filing_id == filings.c.id))
                .where(filings.c.reference.in_(list(references)), deliveries.c.state.not_in(_TERMINAL))
            ).scalar_one()
