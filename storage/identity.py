"""The identity store: token ids seen, lockouts, delegations; every change audited in its transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy import Connection, Engine, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from domain.delegation import Delegation
from domain.lockout import FailureState, Lockout, LockoutPolicy, locked_until, register_failure
from domain.timestamps import epoch_rfc3339
from service.identity import Admission, AuditEntry
from service.ports import TokenClaim
from storage.audit import append_audit
from storage.errors import errors_translated
from storage.identity_tables import auth_failures, delegations, seen_tokens

__all__ = ["SqlIdentityStore", "TokenAdmission", "judge_claims"]

#: Expired token ids are purged at most this often (seconds).
_PURGE_INTERVAL = 60.0
_ADMITTED = Admission("ok")


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; they were written in UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _delegation(row: Any) -> Delegation:
    return Delegation(
        id=row.id,
        subject_tax_code=row.subject_tax_code,
        delegate_tax_code=row.delegate_tax_code,
        agencies=frozenset(row.agencies or ()),
        valid_from=_aware(row.valid_from),
        valid_to=_aware(row.valid_to),
        granted_by=row.granted_by,
        revoked_at=_aware(row.revoked_at),
        parent_id=row.parent_id,
    )


def judge_claims(claims: Sequence[TokenClaim], failures: Mapping[str, FailureState]
                 ) -> tuple[list[Admission], dict[tuple[str, str], int]]:
    """What `claims` are to be told, if every token id still to be remembered is new.

    Each claim is judged as if admitted alone, in order: a locked-out caller is `locked`; a
    token id twice in `claims` is wanted once (its first claim, `ok` here) and `replayed`
    after. The caller remembers the wanted ids, (issuer, jti) → index in `claims`, and turns
    to `replayed` each one that was seen before.

    Args:
        failures: the failure state of each caller that has one.
    """
    admissions: list[Admission] = [Admission("replayed")] * len(claims)
    wanted: dict[tuple[str, str], int] = {}
    for i, claim in enumerate(claims):
        until = locked_until(failures.get(claim.caller), claim.now)
        if until is not None:
            admissions[i] = Admission("locked", until)
        elif (claim.issuer, claim.jti) not in wanted:
            wanted[(claim.issuer, claim.jti)] = i
            admissions[i] = _ADMITTED
    return admissions, wanted


class TokenAdmission:
    """Admits token ids inside a caller's write transaction: the lockout check, the token-id
    row and the failure count's reset, with its statements built once.

    Used on its own (`SqlIdentityStore.admit`) and inside the intake's accept transaction
    (`storage.store`), so that a filing and its token id commit together. The token id's
    primary key makes a second admission fail in any process on the same database.
    """

    def __init__(self, dialect: str) -> None:
        insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._last_purge = 0.0
        # SQLAlchemy memoizes a statement's cache key on the object: reused, it is not re-keyed.
        self._failures_of = select(auth_failures).where(auth_failures.c.caller == bindparam("caller"))
        self._remember_token = insert_for(seen_tokens).on_conflict_do_nothing().returning(seen_tokens.c.jti)
        self._clear_failures = delete(auth_failures).where(auth_failures.c.caller == bindparam("caller"))
        self._purge_tokens = delete(seen_tokens).where(seen_tokens.c.expires_at < bindparam("now"))
        self._failures_of_many = select(auth_failures).where(
            auth_failures.c.caller.in_(bindparam("callers", expanding=True)))
        self._remember_many = (
            insert_for(seen_tokens).on_conflict_do_nothing().returning(seen_tokens.c.issuer, seen_tokens.c.jti)
        )
        self._forget_token = delete(seen_tokens).where(seen_tokens.c.issuer == bindparam("b_issuer"),
                                                       seen_tokens.c.jti == bindparam("b_jti"))
        self._clear_many = delete(auth_failures).where(
            auth_failures.c.caller.in_(bindparam("callers", expanding=True)))

    def admit_many(self, conn: Connection, claims: Sequence[TokenClaim]) -> list[Admission]:
        """`admit` for several claims at once, in three statements (the intake's group commit).

        Each claim is judged as if admitted alone, in order: a token id twice in `claims` is
        admitted once and replayed after.
        """
        if not claims:
            return []
        failures = {r.caller: FailureState(r.failures, r.last_failure_at, r.locked_until) for r in conn.execute(
            self._failures_of_many, {"callers": sorted({c.caller for c in claims})})}
        admissions, wanted = judge_claims(claims, failures)
        if not wanted:
            return admissions
        # ON CONFLICT DO NOTHING returns only the rows it inserted: the others were seen.
        inserted = {(r.issuer, r.jti) for r in conn.execute(self._remember_many, [
            {"issuer": issuer, "jti": jti, "expires_at": claims[i].keep_until}
            for (issuer, jti), i in wanted.items()
        ])}
        cleared: set[str] = set()
        for key, i in wanted.items():
            if key not in inserted:
                admissions[i] = Admission("replayed")
            elif claims[i].caller in failures:
                cleared.add(claims[i].caller)
        if cleared:
            conn.execute(self._clear_many, {"callers": sorted(cleared)})
        if inserted:
            self.purge_if_due(conn, max(c.now for c in claims))
        return admissions

    def forget(self, conn: Connection, claims: Sequence[TokenClaim]) -> None:
        """Forget token ids this transaction admitted, as if their requests were rolled back."""
        if claims:
            conn.execute(self._forget_token, [{"b_issuer": c.issuer, "b_jti": c.jti} for c in claims])

    def admit(self, conn: Connection, claim: TokenClaim) -> Admission:
        """`ok` (the id is now remembered until `claim.keep_until`), `locked` or `replayed`.

        Args:
            conn: a connection in a write transaction; on `locked` or `replayed` nothing was
                written, and the caller should roll back what it wrote before.
        """
        row = conn.execute(self._failures_of, {"caller": claim.caller}).first()
        state = FailureState(row.failures, row.last_failure_at, row.locked_until) if row else None
        until = locked_until(state, claim.now)
        if until is not None:
            return Admission("locked", until)
        # RETURNING, not rowcount: drivers need not report a count for ON CONFLICT DO NOTHING.
        inserted = conn.execute(
            self._remember_token, {"issuer": claim.issuer, "jti": claim.jti, "expires_at": claim.keep_until}
        ).first()
        if inserted is None:
            return Admission("replayed")
        if row is not None:
            conn.execute(self._clear_failures, {"caller": claim.caller})
        self.purge_if_due(conn, claim.now)
        return Admission("ok")

    def remember(self, conn: Connection, issuer: str, jti: str, keep_until: float, now: float) -> bool:
        """Remember a token id without a caller's lockout; False when it was seen before."""
        inserted = conn.execute(
            self._remember_token, {"issuer": issuer, "jti": jti, "expires_at": keep_until}
        ).first()
        if inserted is not None:
            self.purge_if_due(conn, now)
        return inserted is not None

    def purge_if_due(self, conn: Connection, now: float) -> None:
        """Purge expired token ids, at most once every `_PURGE_INTERVAL` seconds."""
        if now - self._last_purge > _PURGE_INTERVAL:
            self._last_purge = now
            conn.execute(self._purge_tokens, {"now": now})


class SqlIdentityStore:
    """Identity records on the hub's database.

    Args:
        engine: the store's engine.
        writer: opens a connection for one write transaction, queued with the other writers of
            this process (`SqlStore.writer`), so that SQLite's single writer is handed over at once.
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._tokens = TokenAdmission(engine.dialect.name)

    # -- authentication -----------------------------------------------------------------------
    @errors_translated
    def admit(self, caller: str, issuer: str, jti: str, keep_until: float, now: float) -> Admission:
        """Admit a verified request: refuse it if the caller is locked out or its token id was
        seen before; otherwise remember the id until `keep_until` and clear the caller's
        failure count.
        """
        with self._writer() as conn, conn.begin():
            return self._tokens.admit(conn, TokenClaim(caller, issuer, jti, keep_until, now))

    @errors_translated
    def record_failure(self, caller: str, now: float, policy: LockoutPolicy,
                       entry: AuditEntry) -> tuple[bool, float | None]:
        """Count one authentication failure and audit it.

        Returns:
            Whether the caller was already locked out before this failure, and when its lock
            ends now (None when it is not locked out).
        """
        with self._writer() as conn, conn.begin():
            conn.execute(
                self._insert(auth_failures)
                .values(caller=caller, failures=0, last_failure_at=now, locked_until=None)
                .on_conflict_do_nothing()
            )
            row = conn.execute(
                select(auth_failures).where(auth_failures.c.caller == caller).with_for_update()
            ).one()
            before = (
                FailureState(row.failures, row.last_failure_at, row.locked_until) if row.failures else None
            )
            after = register_failure(before, now, policy)
            conn.execute(
                update(auth_failures)
                .where(auth_failures.c.caller == caller)
                .values(failures=after.failures, last_failure_at=after.last_failure_at,
                        locked_until=after.locked_until)
            )
            was_locked = locked_until(before, now) is not None
            until = locked_until(after, now)
            detail = {**entry.detail, "failures": after.failures}
            if until is not None:
                detail["lockedUntil"] = epoch_rfc3339(until)
            append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                         outcome="locked_out" if was_locked else entry.outcome, detail=detail)
            if until is not None and not was_locked:
                append_audit(conn, actor=entry.actor, action="caller_locked_out", subject="",
                             outcome="locked", detail={"caller": caller, "failures": after.failures,
                                                       "lockedUntil": detail["lockedUntil"]})
        return was_locked, until

    # -- operators: lockouts ------------------------------------------------------------------
    @errors_translated
    def lockouts(self, now: float, *, counting: bool = False) -> list[Lockout]:
        """Callers locked out at `now`, lock ending soonest first; with `counting`, also those
        with failures on record that are not (or no longer) locked."""
        query = select(auth_failures).order_by(auth_failures.c.locked_until, auth_failures.c.caller)
        if not counting:
            query = query.where(auth_failures.c.locked_until > now)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Lockout(r.caller, FailureState(r.failures, r.last_failure_at, r.locked_until)) for r in rows]

    @errors_translated
    def lift_lockout(self, key: str, now: float, operator: str) -> Lockout | None:
        """Forget `key`'s failures (its lock ends now, its count restarts), audited with the
        operator's name in the same transaction; None, audited too, when `key` has no record.

        Args:
            key: a caller as `lockouts` lists it (`address:<ip>`, `portal:<id>/user:<cf>`).
            now: epoch seconds, to tell whether it was locked.
            operator: who lifts it (the audit line's actor is `operator:<name>`).
        """
        with self._writer() as conn, conn.begin():
            row = conn.execute(
                delete(auth_failures).where(auth_failures.c.caller == key).returning(
                    auth_failures.c.failures, auth_failures.c.last_failure_at, auth_failures.c.locked_until)
            ).first()
            found = Lockout(key, FailureState(row.failures, row.last_failure_at, row.locked_until)) if row else None
            detail: dict[str, Any] = {"caller": key}
            if found is not None:
                detail.update(failures=found.state.failures, wasLocked=found.locked_at(now))
                if found.state.locked_until is not None:
                    detail["lockedUntil"] = epoch_rfc3339(found.state.locked_until)
            append_audit(conn, actor=f"operator:{operator}", action="lockout_lifted", subject=key,
                         outcome="lifted" if found is not None else "not_found", detail=detail)
        return found

    @errors_translated
    def audit(self, entry: AuditEntry) -> None:
        """Append one audit line on its own."""
        with self._writer() as conn, conn.begin():
            append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                         outcome=entry.outcome, detail=entry.detail)

    @errors_translated
    def remember_token(self, issuer: str, jti: str, keep_until: float, now: float) -> bool:
        """Remember a token id of `issuer` until `keep_until`; False when it was seen before
        (an agency's replayed callback). Ids past their time are purged now and then."""
        with self._writer() as conn, conn.begin():
            return self._tokens.remember(conn, issuer, jti, keep_until, now)

    # -- delegations ----------------------------------------------------------------------------
    @errors_translated
    def add_delegation(self, d: Delegation, portal: str, entry: AuditEntry) -> None:
        """Store a new delegation or sub-delegation with its audit line."""
        with self._writer() as conn, conn.begin():
            conn.execute(
                delegations.insert().values(
                    id=d.id, parent_id=d.parent_id, subject_tax_code=d.subject_tax_code,
                    delegate_tax_code=d.delegate_tax_code, agencies=sorted(d.agencies),
                    valid_from=d.valid_from, valid_to=d.valid_to, granted_by=d.granted_by,
                    portal=portal, created_at=datetime.now(timezone.utc),
                )
            )
            append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                         outcome=entry.outcome, detail=entry.detail)

    @errors_translated
    def get_delegation(self, delegation_id: str) -> Delegation | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(delegations).where(delegations.c.id == delegation_id)).first()
        return _delegation(row) if row else None

    @errors_translated
    def revoke_delegation(self, delegation_id: str, at: datetime, by: str, entry: AuditEntry) -> bool:
        """Revoke a delegation not revoked yet; False when it already was."""
        with self._writer() as conn, conn.begin():
            changed = conn.execute(
                update(delegations)
                .where(delegations.c.id == delegation_id, delegations.c.revoked_at.is_(None))
                .values(revoked_at=at, revoked_by=by)
                .returning(delegations.c.id)
            ).first() is not None
            if changed:
                append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                             outcome=entry.outcome, detail=entry.detail)
        return changed

    @errors_translated
    def grants_for(self, user: str, subject: str) -> list[Delegation]:
        """The user's delegations and sub-delegations for `subject`, with the parents of the
        sub-delegations."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(delegations).where(
                    delegations.c.subject_tax_code == subject, delegations.c.delegate_tax_code == user
                )
            ).all()
            parent_ids = {r.parent_id for r in rows if r.parent_id} - {r.id for r in rows}
            parents = conn.execute(
                select(delegations).where(delegations.c.id.in_(sorted(parent_ids)))
            ).all() if parent_ids else []
        return [_delegation(r) for r in [*rows, *parents]]

    @errors_translated
    def delegations_of_subject(
        self, subject: str, involving: str
    ) -> tuple[list[Delegation], dict[str, Delegation]]:
        """The subject's delegations and sub-delegations in which `involving` takes part (as
        grantor or delegate), including sub-delegations of their delegations; and every
        delegation read, by id, so that a sub-delegation's parent can be found."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(delegations)
                .where(
                    delegations.c.subject_tax_code == subject,
                    or_(delegations.c.granted_by == involving,
                        delegations.c.delegate_tax_code == involving,
                        delegations.c.parent_id.is_not(None)),
                )
                .order_by(delegations.c.created_at, delegations.c.id)
            ).all()
            all_of_subject = {r.id: _delegation(r) for r in rows}
            missing = {r.parent_id for r in rows if r.parent_id and r.parent_id not in all_of_subject}
            if missing:
                for r in conn.execute(select(delegations).where(delegations.c.id.in_(sorted(missing)))):
                    all_of_subject[r.id] = _delegation(r)
        mine = {d.id for d in all_of_subject.values()
                if involving in (d.granted_by, d.delegate_tax_code) and not d.is_subdelegation}
        visible = [
            d for d in all_of_subject.values()
            if involving in (d.granted_by, d.delegate_tax_code) or d.parent_id in mine
        ]
        return visible, all_of_subject
