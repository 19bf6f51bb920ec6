"""The SQL store: every use case's reads and writes, one transaction each.

SQLAlchemy Core keeps the hot path lean: a claim is one UPDATE … RETURNING, a batch of
completions is a handful of statements in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Update,
    all_,
    and_,
    bindparam,
    case,
    func,
    insert,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from domain.states import TERMINAL_DELIVERY_STATES, FilingState
from routing.plan import PlannedDelivery
from service.ports import (
    AcceptedFiling,
    ClaimedJob,
    Completion,
    FilingView,
    IdempotencyConflict,
    NewFiling,
    TokenClaim,
    TokenNotAdmitted,
)
from service.relay import OutboxJob
from service.store_ports import IntakeItem
from storage.anomalies import filing_anomalies
from storage.audit import (
    CHAIN_END_SQL,
    append_audit,
    chain_audit_lines,
    hash_audit_lines,
    insert_audit_rows,
    lock_chain,
)
from storage.binds import values_in
from storage.delivery_ops import FILING_ACCEPTED, EventLog, apply_completions, recipient_payload
from storage.delivery_store import DeliverySemanticsStore, delivery_view
from storage.errors import errors_translated, outages_translated, translate_errors, translated
from storage.group_commit import GroupCommit
from storage.identity import TokenAdmission, judge_claims
from storage.identity_tables import filing_viewers
from storage.intake_reads import forget_failures, read_intake_facts, remember_tokens
from storage.intake_rows import audit_line, delivery_row, filing_row, outbox_row
from storage.operations import OperationsStore
from storage.pipelining import pipelined, queue_commit
from storage.row_inserts import RowsInsert, by_driver
from storage.tables import deliveries, filings, outbox

__all__ = ["SqlStore", "format_reference"]

_TERMINAL = [s.value for s in TERMINAL_DELIVERY_STATES]


def format_reference(year: int, number: int) -> str:
    return f"CRV-{year}-{number:06d}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: The delivery columns a worker needs to run a job, in the order `_claimed_job` unpacks them.
_JOB_COLUMNS = (
    deliveries.c.id,
    deliveries.c.filing_id,
    deliveries.c.agency,
    deliveries.c.operation,
    deliveries.c.message_id,
    deliveries.c.state,
    deliveries.c.content,
    deliveries.c.rounds,
    deliveries.c.created_at,
    deliveries.c.schedule_origin,
    deliveries.c.correlation_id,
    deliveries.c.poll_url,
    deliveries.c.polls,
    deliveries.c.acknowledged_at,
    deliveries.c.contract_version,
    filings.c.reference,
)


def _claimed_job(r: Sequence[Any], job_id: int, handed_out: int = 0, lease_token: int | None = None,
                 forced: bool = False) -> ClaimedJob:
    """The job of `r`, the values of `_JOB_COLUMNS` in order (unpacked: a row's attributes
    cost more than the rest of the job's making)."""
    (delivery_id, filing_id, agency, operation, message_id, state, content, rounds, created_at, schedule_origin,
     correlation_id, poll_url, polls, acknowledged_at, contract_version, reference) = r
    return ClaimedJob(
        job_id=job_id,
        delivery_id=delivery_id,
        filing_id=filing_id,
        filing_reference=reference,
        agency=agency,
        operation=operation,
        message_id=message_id,
        state=state,
        content=content,
        rounds=rounds,
        # The age bound restarts when a portal resends or a predecessor releases the delivery.
        created_at=schedule_origin or created_at,
        correlation_id=correlation_id,
        poll_url=poll_url,
        polls=polls,
        acknowledged_at=acknowledged_at,
        contract_version=contract_version,
        handed_out=handed_out,
        lease_token=lease_token,
        forced=bool(forced),
    )


# The intake's statements, built once: SQLAlchemy memoizes a statement's cache key on the
# object, so a reused statement is neither rebuilt nor re-keyed per filing.
# Several rows in one INSERT … RETURNING, their ids given back in the order of the rows.
_INSERT_FILINGS = insert(filings).returning(filings.c.id, sort_by_parameter_order=True)
# PostgreSQL: the ids drawn from the filings' sequence first, so that each filing is written
# whole (reference included) with the other writes, in one pipeline. A statement of one
# parameter is cached by psycopg; a multi-row INSERT (16 per row) was parsed anew each time.
# Read with the audit chain's end, under its lock: one statement for both.
_NEXT_FILING_IDS_AND_CHAIN_END = text(
    f"SELECT nextval(pg_get_serial_sequence('filings', 'id')), ({CHAIN_END_SQL}) FROM generate_series(1, :n)"
)
_INSERT_NUMBERED_FILINGS = RowsInsert(filings)
# SET-clause bind names must differ from column names.
_SET_REFERENCE = (
    update(filings).where(filings.c.id == bindparam("b_id")).values(reference=bindparam("b_reference"))
)
# Through the driver's executemany on PostgreSQL (`storage.row_inserts`).
_INSERT_DELIVERIES = RowsInsert(deliveries)
_INSERT_OUTBOX = RowsInsert(outbox)
_INSERT_VIEWERS = RowsInsert(filing_viewers)
# An Idempotency-Key's filing and its recipients (`_replay`), looked up for every keyed filing.
_IDEMPOTENT_FILING = select(filings.c.id, filings.c.reference, filings.c.request_digest).where(
    filings.c.portal == bindparam("b_portal"), filings.c.idempotency_key == bindparam("b_key"))
_RECIPIENTS_OF = (select(deliveries.c.agency, deliveries.c.operation)
                  .where(deliveries.c.filing_id == bindparam("b_filing_id"))
                  .order_by(deliveries.c.created_at, deliveries.c.agency))


def _lease_statement(*conditions: ColumnElement[bool]) -> Update:
    """Lease up to `b_limit` open jobs due at `b_now` that nobody holds (and meeting `conditions`)
    to `b_owner` until `b_until`, in one UPDATE … RETURNING; PostgreSQL skips rows another
    claimer has locked (SQLite, which serialises writers, renders no FOR UPDATE)."""
    now = bindparam("b_now", type_=outbox.c.available_at.type)
    due = (
        select(outbox.c.id)
        .where(
            outbox.c.done_at.is_(None),
            outbox.c.available_at <= now,
            or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now),
            *conditions,
        )
        .order_by(outbox.c.available_at)
        .limit(bindparam("b_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=bindparam("b_owner", type_=outbox.c.lease_owner.type),
                leased_until=bindparam("b_until", type_=outbox.c.leased_until.type), claims=outbox.c.claims + 1)
        .returning(outbox.c.id, outbox.c.delivery_id, outbox.c.agency, outbox.c.available_at,
                   outbox.c.claims, outbox.c.forced)
    )


# The queue's statements, built once with bind parameters like the intake's: a poll runs
# several times a second even when idle, and rebuilding them was most of its cost.
_LEASE_ANY = _lease_statement()
_LEASE_OF = _lease_statement(outbox.c.agency.in_(bindparam("b_agencies", expanding=True)))
_LEASE_UNPUBLISHED = _lease_statement(outbox.c.published_at.is_(None))
# Mark the relay's confirmed jobs (`b_ids`) published at `b_at` (ids bound by `values_in`).
_MARK_PUBLISHED = update(outbox).values(published_at=bindparam("b_at", type_=outbox.c.published_at.type),
                                        leased_until=null())


def _to_mark(postgresql: bool) -> tuple[ColumnElement[bool], ...]:
    """The confirmed jobs `b_ids` not marked yet."""
    return values_in(outbox.c.id, "b_ids", BigInteger, postgresql), outbox.c.published_at.is_(None)


_MARK_PUBLISHED_BY = {  # keyed by "on PostgreSQL?"
    # PostgreSQL: only the rows nobody holds. A worker may be recording the outcome of a job
    # the relay has just published, locking its rows in its own order while the mark locks
    # them in another: each waited for the other until PostgreSQL's deadlock check (1 s) broke
    # one off, and every delivery in flight stood still that second (the half-load tail of
    # issue 13). A row skipped here is being closed by its worker; should that commit fail,
    # the relay's lease runs out and the job is published again, which delivery tolerates.
    True: _MARK_PUBLISHED.where(outbox.c.id.in_(
        select(outbox.c.id).where(*_to_mark(True)).with_for_update(skip_locked=True).scalar_subquery())),
    False: _MARK_PUBLISHED.where(*_to_mark(False)),
}
# PostgreSQL: mark `b_ids` and lease the next jobs in one statement (the mark as a WITH
# clause). Both parts see the same snapshot, so the lease leaves out `b_ids`: no row is updated
# twice by one statement, and a job just marked is never leased again.
_MARK_AND_LEASE = _lease_statement(
    outbox.c.published_at.is_(None), outbox.c.id != all_(bindparam("b_ids", type_=ARRAY(BigInteger)))
).add_cte(_MARK_PUBLISHED_BY[True].returning(outbox.c.id).cte("marked"))

# The jobs `b_ids` (a RabbitMQ worker's claim) with their deliveries, whether done or not; the
# ids bound as `values_in` binds them, so psycopg converts the text once rather than at every claim.
_LOAD_JOBS = select(outbox.c.id.label("job_id"), outbox.c.done_at, outbox.c.forced, *_JOB_COLUMNS).select_from(
    outbox.join(deliveries, deliveries.c.id == outbox.c.delivery_id)
    .join(filings, filings.c.id == deliveries.c.filing_id)
)
_LOAD_JOBS_BY = {postgresql: _LOAD_JOBS.where(values_in(outbox.c.id, "b_ids", BigInteger, postgresql))
                 for postgresql in (True, False)}

class SqlStore(DeliverySemanticsStore, OperationsStore):
    """Implements `service.ports.Store` over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        # PostgreSQL: rows other claimers hold are skipped, ids are bound as arrays, new filings
        # are numbered from their sequence first (`_insert_filings`), single reads and the
        # relay's pass run in autocommit (`_single_statement`).
        self._postgresql = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Queuing this process's writers on a Python lock
        # hands the database over at once, instead of SQLite's busy handler sleeping in
        # steps of up to 100 ms; other processes still meet the busy handler.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self._tokens = TokenAdmission(engine.dialect.name)
        # psycopg's pipeline: the intake's group commit in two round trips (`_accept_pipelined`).
        self._pipelined_intake = by_driver(engine.dialect)
        self._intake: GroupCommit[IntakeItem, AcceptedFiling] = GroupCommit(self._commit_intake)

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

    def _single_statement(self) -> Connection:
        """A PostgreSQL connection in autocommit, for one statement that reads one snapshot on
        its own: one round trip instead of three (BEGIN, the statement, COMMIT or ROLLBACK)."""
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def writer(self) -> AbstractContextManager[Connection]:
        """A connection for one write transaction, queued behind this process's other writers
        (for stores that share this engine, such as `storage.identity.SqlIdentityStore`)."""
        return self._write()

    # -- intake ---------------------------------------------------------------------------
    @errors_translated
    def accept_filing(
        self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]
    ) -> AcceptedFiling:
        """Store a filing, its deliveries, outbox rows, event and audit line in one transaction;
        with `filing.token`, its token id is admitted in that transaction too.

        Concurrent calls are group-committed (`storage.group_commit`): one transaction for the
        filings that arrive while another commits; each call returns once its filing is
        committed.

        Raises:
            TokenNotAdmitted: the token was replayed or its caller is locked out; nothing stored.
            IdempotencyConflict: the key was used with another body.
        """
        return self._intake.submit((filing, plan))

    def accept_filings(self, items: Sequence[IntakeItem]) -> list[AcceptedFiling | BaseException]:
        """Store several filings as `accept_filing` stores one: in one transaction, or each on
        its own when together fails. The caller batches (`api.commit_batches`, from an event
        loop), so no thread waits here for a batch to fill.

        Returns:
            Per item, in order, what it was accepted as, or the error its caller is to raise
            (`TokenNotAdmitted`, `IdempotencyConflict`, a `StoreError`).
        """
        with translate_errors():
            outcomes = self._commit_intake(items)
        return [translated(o) if isinstance(o, BaseException) else o for o in outcomes]

    def _commit_intake(self, items: Sequence[IntakeItem]) -> list[AcceptedFiling | BaseException]:
        """One group commit's filings: together, or one by one when together fails."""
        if self._pipelined_intake:
            try:
                with self._write() as conn, conn.begin():
                    return self._accept_pipelined(conn, items)
            except DBAPIError:
                # Rolled back: a token id was seen, an Idempotency-Key raced, or the database
                # failed. Alone, each filing gets its own answer (`replayed`, a replay, an error).
                return [self._accept_alone(filing, plan) for filing, plan in items]
        if len(items) > 1:
            try:
                with self._write() as conn, conn.begin():
                    return self._accept_many(conn, items)
            except DBAPIError:
                # Rolled back: an Idempotency-Key raced, or the database failed. Alone, each
                # filing gets its own answer (a replay, or its own error).
                pass
        return [self._accept_alone(filing, plan) for filing, plan in items]

    def _accept_pipelined(self, conn: Connection, items: Sequence[IntakeItem]) -> list[AcceptedFiling | BaseException]:
        """`_accept_many` in two round trips (PostgreSQL through psycopg): what the group must
        know (`storage.intake_reads`), then the token ids, every write and the commit.

        The token ids are bet to be new, as nearly all are: each filing is judged before it is
        known whether they were. A seen one fails the writes with a unique violation.

        Raises:
            DBAPIError: a statement failed (a token id was seen before, an Idempotency-Key
                raced, the database failed); nothing was committed.
        """
        claimed = [(i, token) for i, (filing, _) in enumerate(items) if (token := filing.token) is not None]
        keyed = [(filing.portal, filing.idempotency_key) for filing, _ in items if filing.idempotency_key is not None]
        facts = read_intake_facts(conn, sorted({t.caller for _, t in claimed}), keyed, len(items))
        claims = [t for _, t in claimed]
        admissions, wanted = judge_claims(claims, facts.failures)
        outcomes: list[AcceptedFiling | BaseException | None] = [None] * len(items)
        for (i, _), admission in zip(claimed, admissions, strict=True):
            if admission.outcome != "ok":
                outcomes[i] = TokenNotAdmitted(admission.outcome, admission.locked_until)
        for i, (filing, _) in enumerate(items):
            if outcomes[i] is None and filing.idempotency_key is not None:
                earlier = facts.earlier.get((filing.portal, filing.idempotency_key))
                if earlier is not None:
                    outcomes[i] = (IdempotencyConflict(earlier.reference)
                                   if earlier.request_digest != filing.request_digest
                                   else self._replayed(conn, earlier.id, earlier.reference))
        fresh = [i for i in range(len(items)) if outcomes[i] is None]
        # A key's conflict is answered as if rolled back: its token is not remembered (the
        # API admits it on its own).
        wanted = {key: i for key, i in wanted.items() if not isinstance(outcomes[claimed[i][0]], IdempotencyConflict)}
        if wanted:
            self._tokens.purge_if_due(conn, max(c.now for c in claims))
        with pipelined(conn):
            if wanted:
                remember_tokens(conn, [(issuer, jti, claims[i].keep_until) for (issuer, jti), i in wanted.items()])
            cleared = sorted({claims[i].caller for i in wanted.values() if claims[i].caller in facts.failures})
            if cleared:
                forget_failures(conn, cleared)
            if fresh:
                accepted = self._write_filings(conn, [items[i] for i in fresh], facts.ids[:len(fresh)],
                                               facts.chain_end, _utcnow())
                for i, answer in zip(fresh, accepted, strict=True):
                    outcomes[i] = answer
            queue_commit(conn)
        return [o for o in outcomes if o is not None]

    def _accept_alone(self, filing: NewFiling,
                      plan: Callable[[str], list[PlannedDelivery]]) -> AcceptedFiling | BaseException:
        try:
            return self._accept_one(filing, plan)
        except Exception as exc:  # raised in the submitting thread (`GroupCommit.submit`)
            return exc

    def _accept_one(self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]) -> AcceptedFiling:
        try:
            with self._write() as conn, conn.begin():
                self._admit(conn, filing.token)
                if filing.idempotency_key is not None:
                    replay = self._replay(conn, filing)
                    if replay is not None:
                        return replay
                return self._insert_filings(conn, [(filing, plan)])[0]
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race: answer as it did
            # (and remember this request's token: its answer is given now).
            if filing.idempotency_key is None:
                raise
            with self._write() as conn, conn.begin():
                self._admit(conn, filing.token)
                replay = self._replay(conn, filing)
            if replay is None:
                raise
            return replay

    def _admit(self, conn: Connection, token: TokenClaim | None) -> None:
        if token is None:
            return
        admission = self._tokens.admit(conn, token)
        if admission.outcome != "ok":
            raise TokenNotAdmitted(admission.outcome, admission.locked_until)

    def _accept_many(self, conn: Connection, items: Sequence[IntakeItem]) -> list[AcceptedFiling | BaseException]:
        """Several filings in the caller's transaction; a refused one writes nothing."""
        outcomes: list[AcceptedFiling | BaseException | None] = [None] * len(items)
        claimed = [i for i, (filing, _) in enumerate(items) if filing.token is not None]
        admissions = self._tokens.admit_many(conn, [t for i in claimed if (t := items[i][0].token)])
        for i, admission in zip(claimed, admissions, strict=True):
            if admission.outcome != "ok":
                outcomes[i] = TokenNotAdmitted(admission.outcome, admission.locked_until)
        for i, (filing, _) in enumerate(items):
            if outcomes[i] is None and filing.idempotency_key is not None:
                try:
                    outcomes[i] = self._replay(conn, filing)
                except IdempotencyConflict as conflict:
                    outcomes[i] = conflict
        # A key's conflict is answered as if rolled back: its token, admitted above, is
        # forgotten again (the API admits it on its own).
        self._tokens.forget(conn, [token for i, (filing, _) in enumerate(items)
                                   if isinstance(outcomes[i], IdempotencyConflict) and (token := filing.token)])
        fresh = [i for i in range(len(items)) if outcomes[i] is None]
        for i, accepted in zip(fresh, self._insert_filings(conn, [items[i] for i in fresh]), strict=True):
            outcomes[i] = accepted
        return [o for o in outcomes if o is not None]

    def _insert_filings(self, conn: Connection, items: Sequence[IntakeItem]) -> list[AcceptedFiling]:
        """Insert new filings with everything they carry: a few statements for all of them.

        Only the filings' ids and the audit chain's end are read back; every other write goes
        in one pipeline (`storage.pipelining`), a single round trip on PostgreSQL.
        """
        if not items:
            return []
        now = _utcnow()
        if self._postgresql:
            lock_chain(conn)
            drawn = conn.execute(_NEXT_FILING_IDS_AND_CHAIN_END, {"n": len(items)}).all()
            with pipelined(conn):
                return self._write_filings(conn, items, sorted(fid for fid, _ in drawn), drawn[0][1], now)
        rows = [filing_row(filing, now) for filing, _ in items]
        ids = [row.id for row in conn.execute(_INSERT_FILINGS, rows)]
        return self._write_filings(conn, items, ids, None, now, inserted=True)

    def _write_filings(self, conn: Connection, items: Sequence[IntakeItem], ids: list[int], chain_end: str | None,
                       now: datetime, inserted: bool = False) -> list[AcceptedFiling]:
        """Write the filings numbered `ids` with everything they carry, their audit lines
        chained after `chain_end`; with `inserted` (SQLite), their rows are in and get their
        references, and the chain's end is read here. Only writes: on PostgreSQL the caller
        runs them in its pipeline."""
        epoch = self._clock()
        references = [format_reference(filing.received_at.year, fid) for (filing, _), fid in zip(items, ids)]
        plans = [plan(reference) for (_, plan), reference in zip(items, references)]
        lines = [audit_line(filing, reference, planned, now)
                 for (filing, _), reference, planned in zip(items, references, plans)]
        if inserted:
            conn.execute(_SET_REFERENCE, [{"b_id": fid, "b_reference": ref} for fid, ref in zip(ids, references)])
            audit_rows = chain_audit_lines(conn, lines)
        else:
            _INSERT_NUMBERED_FILINGS(conn, [{**filing_row(filing, now), "id": fid, "reference": ref}
                                            for (filing, _), fid, ref in zip(items, ids, references)])
            audit_rows = hash_audit_lines(chain_end, lines)
        self._insert_deliveries(conn, items, ids, references, plans, now, epoch)
        viewers = [{"filing_id": fid, "tax_code": v}
                   for (filing, _), fid in zip(items, ids) for v in sorted(set(filing.viewers))]
        if viewers:
            _INSERT_VIEWERS(conn, viewers)
        insert_audit_rows(conn, audit_rows)
        return [
            AcceptedFiling(
                reference=reference,
                state=FilingState.IN_PROGRESS.value,
                recipients=[{"agency": p.agency, "operation": p.operation} for p in planned],
                replayed=False,
            )
            for reference, planned in zip(references, plans)
        ]

    @staticmethod
    def _insert_deliveries(conn: Connection, items: Sequence[IntakeItem], ids: list[int], references: list[str],
                           plans: list[list[PlannedDelivery]], now: datetime, epoch: float) -> None:
        """The new filings' deliveries, their ready jobs and their `filing_accepted` events."""
        delivery_rows = [[delivery_row(p, fid, now) for p in planned] for fid, planned in zip(ids, plans)]
        if not any(delivery_rows):
            return
        _INSERT_DELIVERIES(conn, [row for rows in delivery_rows for row in rows])
        ready = [outbox_row(p, epoch) for planned in plans for p in planned if not p.after]
        if ready:
            _INSERT_OUTBOX(conn, ready)
        info = {fid: {"reference": ref, "portal": filing.portal}
                for (filing, _), fid, ref in zip(items, ids, references)}
        events = EventLog(conn, info, now, epoch, new_filings=ids)
        for (filing, _), fid, rows in zip(items, ids, delivery_rows):
            if rows:
                events.add(fid, FILING_ACCEPTED, {
                    "kind": filing.kind,
                    "state": FilingState.IN_PROGRESS.value,
                    "recipients": [recipient_payload(r) for r in rows],
                })
        events.flush()

    def _replay(self, conn: Connection, filing: NewFiling) -> AcceptedFiling | None:
        row = conn.execute(_IDEMPOTENT_FILING, {"b_portal": filing.portal,
                                                "b_key": filing.idempotency_key}).first()
        if row is None:
            return None
        if row.request_digest != filing.request_digest:
            raise IdempotencyConflict(row.reference)
        return self._replayed(conn, row.id, row.reference)

    @staticmethod
    def _replayed(conn: Connection, filing_id: int, reference: str) -> AcceptedFiling:
        """The answer given again for the filing an Idempotency-Key was first used for."""
        recipients = conn.execute(_RECIPIENTS_OF, {"b_filing_id": filing_id}).all()
        return AcceptedFiling(
            reference=reference,
            state=FilingState.IN_PROGRESS.value,
            recipients=[{"agency": r.agency, "operation": r.operation} for r in recipients],
            replayed=True,
        )

    # -- reading --------------------------------------------------------------------------
    @errors_translated
    def get_filing(self, reference: str, portal: str | None, user: str | None = None) -> FilingView | None:
        """The filing, or None when it does not exist or is outside the portal's or user's scope."""
        if "\x00" in reference:  # no reference has a NUL, and PostgreSQL refuses one in text
            return None
        with self._read() as conn:
            query = select(filings).where(filings.c.reference == reference)
            if portal is not None:
                query = query.where(filings.c.portal == portal)
            if user is not None:
                query = query.where(
                    select(filing_viewers.c.filing_id)
                    .where(filing_viewers.c.filing_id == filings.c.id, filing_viewers.c.tax_code == user)
                    .exists()
                )
            row = conn.execute(query).first()
            if row is None:
                return None
            rows = conn.execute(
                select(deliveries)
                # A message replaced by a corrected one is history, not a recipient.
                .where(deliveries.c.filing_id == row.id, deliveries.c.superseded_by.is_(None))
                .order_by(deliveries.c.agency, deliveries.c.operation)
            ).all()
            kept = filing_anomalies(conn, row.id)
        return FilingView(
            reference=row.reference,
            kind=row.kind,
            portal=row.portal,
            state=row.state,
            created_at=row.created_at,
            updated_at=row.updated_at,
            deliveries=[delivery_view(d, kept.get(d.id, [])) for d in rows],
            subject_tax_code=row.subject_tax_code,
            subject_name=row.subject_name,
            declarant_tax_code=row.declarant_tax_code,
            declarant_role=row.declarant_role,
            archived_at=row.archived_at,
            payload_purged_at=row.payload_purged_at,
        )

    # -- the embedded queue -----------------------------------------------------------------
    def _lease_due(self, conn: Connection, lease: Update, owner: str, limit: int, lease_seconds: float,
                   **params: Any) -> list[Any]:
        """Lease up to `limit` jobs to `owner` with `lease` (one of `_lease_statement`'s), taking
        its other bind parameters from `params`."""
        now = self._clock()
        return list(conn.execute(lease, {"b_now": now, "b_until": now + lease_seconds, "b_owner": owner,
                                         "b_limit": limit, **params}).all())

    @outages_translated
    def claim_jobs(
        self, owner: str, agencies: Sequence[str] | None, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to `owner`; an expired lease makes a job claimable again.

        One UPDATE … RETURNING: SQLite serialises writers, PostgreSQL skips rows another
        worker has locked, so two workers never hold the same job at once.
        """
        if limit <= 0:
            return []
        with self._write() as conn, conn.begin():
            claimed = (self._lease_due(conn, _LEASE_ANY, owner, limit, lease_seconds) if agencies is None else
                       self._lease_due(conn, _LEASE_OF, owner, limit, lease_seconds, b_agencies=list(agencies)))
            if not claimed:
                return []
            job_of = {row.delivery_id: row for row in claimed}
            rows = conn.execute(
                select(*_JOB_COLUMNS)
                .join(filings, filings.c.id == deliveries.c.filing_id)
                .where(deliveries.c.id.in_(list(job_of)))
            ).all()
        # `claims` counts this claim too; the earlier ones ended without an outcome.
        return [_claimed_job(r, job_of[r.id].id, job_of[r.id].claims - 1, lease_token=job_of[r.id].claims,
                             forced=job_of[r.id].forced)
                for r in rows]

    # -- the outbox relay and the RabbitMQ workers ---------------------------------------------
    @outages_translated
    def claim_unpublished(self, owner: str, limit: int, lease_seconds: float,
                          published: Sequence[int] = ()) -> list[OutboxJob]:
        """Lease up to `limit` due, unpublished, open jobs to relay `owner` for publishing;
        first mark `published` (the previous batch's confirmed jobs) in the same transaction.

        PostgreSQL skips rows another relay holds (`FOR UPDATE SKIP LOCKED`); SQLite serialises
        writers. A lease that runs out (the relay died before marking them) makes the rows
        claimable again: they are published twice, which delivery tolerates.
        """
        if limit <= 0 and not published:
            return []
        rows = self._mark_and_lease(owner, max(limit, 0), lease_seconds, published)
        rows.sort(key=lambda r: (r.available_at, r.id))
        return [OutboxJob(job_id=r.id, delivery_id=r.delivery_id, agency=r.agency) for r in rows]

    def _mark_and_lease(self, owner: str, limit: int, lease_seconds: float, published: Sequence[int]) -> list[Any]:
        """On PostgreSQL one statement on its own, in autocommit: one round trip per relay
        pass instead of four (BEGIN, mark, lease, COMMIT). SQLite runs the two in one transaction."""
        if self._postgresql:
            with self._single_statement() as conn:
                return self._lease_due(conn, _MARK_AND_LEASE, owner, limit, lease_seconds,
                                       b_ids=list(published), b_at=self._clock())
        with self._write() as conn, conn.begin():
            if published:
                self._mark_published(conn, published)
            return self._lease_due(conn, _LEASE_UNPUBLISHED, owner, limit, lease_seconds) if limit > 0 else []

    def _mark_published(self, conn: Connection, job_ids: Sequence[int]) -> None:
        conn.execute(_MARK_PUBLISHED_BY[self._postgresql], {"b_ids": list(job_ids), "b_at": self._clock()})

    @outages_translated
    def mark_published(self, job_ids: Sequence[int]) -> None:
        """Record that the broker confirmed these jobs (the relay will not publish them again)."""
        if not job_ids:
            return
        with self._write() as conn, conn.begin():
            self._mark_published(conn, job_ids)

    @outages_translated
    def load_jobs(self, job_ids: Sequence[int]) -> tuple[list[ClaimedJob], set[int]]:
        """The open jobs among `job_ids` with their deliveries, and the ids already done.

        A broker hands a worker job ids; a job that is already done (a duplicate publish, or a
        redelivery after the outcome was committed) must be acknowledged without sending.
        Ids in neither part do not exist.
        """
        if not job_ids:
            return [], set()
        with self._single_statement() if self._postgresql else self._read() as conn:
            rows = conn.execute(_LOAD_JOBS_BY[self._postgresql], {"b_ids": list(job_ids)}).all()
        done: set[int] = set()
        jobs: list[ClaimedJob] = []
        for job_id, done_at, forced, *job in rows:  # the columns of `_LOAD_JOBS`, in order
            if done_at is None:
                jobs.append(_claimed_job(job, job_id, forced=forced))
            else:
                done.add(job_id)
        return jobs, done

    @outages_translated
    def complete_jobs(self, completions: Sequence[Completion]) -> None:
        """Record a batch of outcomes, close their jobs, release or hold the deliveries that
        wait for them, append the filings' events and re-derive the filings' states."""
        if not completions:
            return
        with self._write() as conn, conn.begin():
            apply_completions(conn, completions, _utcnow(), self._clock(), commit=True)

    # -- audit and operations ----------------------------------------------------------------
    @errors_translated
    def audit(self, actor: str, action: str, subject: str, outcome: str, detail: dict[str, Any]) -> None:
        """Append one line to the hash-chained audit trail, in its own transaction."""
        with self._write() as conn, conn.begin():
            append_audit(conn, at=_utcnow(), actor=actor, action=action, subject=subject,
                         outcome=outcome, detail=detail)

    def queue_summary(self) -> dict[str, dict[str, int]]:
        """Per agency, the open jobs: due now, scheduled for later, and held under a lease
        (being delivered, or with the relay); what operations watch."""
        now = self._clock()
        leased = and_(outbox.c.leased_until.is_not(None), outbox.c.leased_until >= now)
        with self._read() as conn:
            rows = conn.execute(
                select(
                    outbox.c.agency,
                    func.sum(case((and_(~leased, outbox.c.available_at <= now), 1), else_=0)).label("due"),
                    func.sum(case((and_(~leased, outbox.c.available_at > now), 1), else_=0)).label("scheduled"),
                    func.sum(case((leased, 1), else_=0)).label("leased"),
                )
                .where(outbox.c.done_at.is_(None))
                .group_by(outbox.c.agency)
            ).all()
        return {r.agency: {"due": int(r.due or 0), "scheduled": int(r.scheduled or 0), "leased": int(r.leased or 0)}
                for r in rows}

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
