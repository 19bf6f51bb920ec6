"""Operator accounts, tokens, sessions and login failures on the hub's database; every change
audited in its own transaction (storage.audit)."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from domain.operators import OperatorError, lockout_key
from domain.timestamps import epoch_rfc3339
from service.identity import AuditEntry
from service.operators import Account, OperatorPolicy, SessionRecord, TokenRecord
from storage.audit import append_audit
from storage.errors import errors_translated
from storage.identity import _aware
from storage.identity_tables import auth_failures
from storage.operator_tables import operator_login_failures, operator_sessions, operator_tokens, operators

__all__ = ["SqlOperatorStore"]


def _account(row: Any) -> Account:
    return Account(id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled),
                   created_at=_aware(row.created_at),
                   password_hash=row.password_hash, totp_secret=row.totp_secret,
                   totp_last_step=row.totp_last_step)


def _token(row: Any, name: str) -> TokenRecord:
    return TokenRecord(id=row.id, operator=name, label=row.label, created_at=_aware(row.created_at),
                       expires_at=_aware(row.expires_at), last_used_at=_aware(row.last_used_at),
                       revoked_at=_aware(row.revoked_at))


def _append(conn: Connection, entry: AuditEntry) -> None:
    append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                 outcome=entry.outcome, detail=entry.detail)


class SqlOperatorStore:
    """Operator identity records.

    Args:
        engine: the store's engine.
        writer: one write transaction's connection, queued with this process's other writers
            (`SqlStore.writer`), as `storage.identity.SqlIdentityStore` takes it.
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # -- accounts ---------------------------------------------------------------------------------
    @errors_translated
    def add(self, name: str, role: str, password_hash: str | None, totp_secret: str | None,
            at: datetime, entry: AuditEntry) -> Account:
        """Store a new account with its audit line.

        Raises:
            OperatorError: 409 `operator-exists` when the name is taken.
        """
        try:
            with self._writer() as conn, conn.begin():
                conn.execute(operators.insert().values(name=name, role=role, password_hash=password_hash,
                                                       totp_secret=totp_secret, disabled=False, created_at=at))
                _append(conn, entry)
        except IntegrityError as exc:
            raise OperatorError("operator-exists", f"an operator named {name!r} exists", 409) from exc
        found = self.get(name)
        assert found is not None
        return found

    @errors_translated
    def get(self, name: str) -> Account | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(operators).where(operators.c.name == name)).first()
        return _account(row) if row else None

    @errors_translated
    def list(self) -> list[Account]:
        with self._engine.connect() as conn:
            return [_account(r) for r in conn.execute(select(operators).order_by(operators.c.name))]

    @errors_translated
    def set_role(self, name: str, role: str, entry: AuditEntry) -> Account | None:
        with self._writer() as conn, conn.begin():
            changed = conn.execute(update(operators).where(operators.c.name == name).values(role=role)
                                   .returning(operators.c.id)).first()
            if changed is not None:
                _append(conn, entry)
        return self.get(name) if changed is not None else None

    @errors_translated
    def disable(self, name: str, entry: AuditEntry) -> Account | None:
        """Disable the account and delete its sessions, with the audit line."""
        with self._writer() as conn, conn.begin():
            changed = conn.execute(update(operators).where(operators.c.name == name).values(disabled=True)
                                   .returning(operators.c.id)).first()
            if changed is not None:
                conn.execute(delete(operator_sessions).where(operator_sessions.c.operator_id == changed.id))
                _append(conn, entry)
        return self.get(name) if changed is not None else None

    # -- tokens -----------------------------------------------------------------------------------
    @errors_translated
    def add_token(self, account: Account, token_id: str, token_hash: str, label: str, at: datetime,
                  expires_at: datetime | None, entry: AuditEntry) -> None:
        with self._writer() as conn, conn.begin():
            conn.execute(operator_tokens.insert().values(
                id=token_id, operator_id=account.id, token_hash=token_hash, label=label, created_at=at,
                expires_at=expires_at))
            _append(conn, entry)

    @errors_translated
    def tokens(self, name: str) -> builtins.list[TokenRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(operator_tokens).join(operators, operators.c.id == operator_tokens.c.operator_id)
                .where(operators.c.name == name).order_by(operator_tokens.c.created_at)
            ).all()
        return [_token(r, name) for r in rows]

    @errors_translated
    def revoke_token(self, token_id: str, at: datetime, entry: AuditEntry) -> TokenRecord | None:
        """Revoke a token (again: it stays revoked from the first time); audited either way."""
        with self._writer() as conn, conn.begin():
            row = conn.execute(
                select(operator_tokens, operators.c.name)
                .join(operators, operators.c.id == operator_tokens.c.operator_id)
                .where(operator_tokens.c.id == token_id)
            ).first()
            if row is not None and row.revoked_at is None:
                conn.execute(update(operator_tokens).where(operator_tokens.c.id == token_id).values(revoked_at=at))
            subject = row.name if row is not None else ""
            outcome = "revoked" if row is not None else "not_found"
            _append(conn, AuditEntry(entry.actor, entry.action, subject, outcome, entry.detail))
        if row is None:
            return None
        record = _token(row, row.name)
        return record if record.revoked_at is not None else TokenRecord(
            record.id, record.operator, record.label, record.created_at, record.expires_at,
            record.last_used_at, at)

    @errors_translated
    def token_account(self, token_hash: str) -> tuple[TokenRecord, Account] | None:
        with self._engine.connect() as conn:
            token = conn.execute(select(operator_tokens).where(operator_tokens.c.token_hash == token_hash)).first()
            if token is None:
                return None
            account = conn.execute(select(operators).where(operators.c.id == token.operator_id)).one()
        return _token(token, account.name), _account(account)

    @errors_translated
    def touch_token(self, token_id: str, at: datetime) -> None:
        with self._writer() as conn, conn.begin():
            conn.execute(update(operator_tokens).where(operator_tokens.c.id == token_id).values(last_used_at=at))

    # -- login failures and lockout ---------------------------------------------------------------
    @errors_translated
    def lock_of(self, name: str, now: float) -> float | None:
        """When the account's lock ends, or None when it is not locked at `now`."""
        with self._engine.connect() as conn:
            until = conn.execute(select(auth_failures.c.locked_until)
                                 .where(auth_failures.c.caller == lockout_key(name))).scalar_one_or_none()
        return until if until is not None and until > now else None

    @errors_translated
    def record_login_failure(self, account: Account, now: float, policy: OperatorPolicy,
                             entry: AuditEntry) -> float | None:
        """Count one failed login and audit it; lock the account when the failures in the window
        reach the threshold. The lock is kept in `auth_failures` as `operator:<name>`, so a lift
        by `hub.py lockouts lift` (which deletes that record) also starts a new count.

        Returns:
            When the lock this failure set ends, or None.
        """
        key = lockout_key(account.name)
        mine = operator_login_failures.c.operator_id == account.id
        with self._writer() as conn, conn.begin():
            conn.execute(self._insert(auth_failures)
                         .values(caller=key, failures=0, last_failure_at=now, locked_until=None)
                         .on_conflict_do_nothing())
            record = conn.execute(select(auth_failures).where(auth_failures.c.caller == key)
                                  .with_for_update()).one()
            if record.failures == 0 or record.locked_until is not None:
                # New record, lifted (deleted) or lock ended: earlier failures no longer count.
                conn.execute(delete(operator_login_failures).where(mine))
            conn.execute(delete(operator_login_failures)
                         .where(mine, operator_login_failures.c.failed_at < now - policy.failure_window_seconds))
            conn.execute(operator_login_failures.insert().values(operator_id=account.id, failed_at=now))
            count = conn.execute(select(func.count()).select_from(operator_login_failures).where(mine)).scalar_one()
            until = now + policy.lockout_seconds if count >= policy.lockout_threshold else None
            conn.execute(update(auth_failures).where(auth_failures.c.caller == key)
                         .values(failures=count, last_failure_at=now, locked_until=until))
            _append(conn, AuditEntry(entry.actor, entry.action, entry.subject, entry.outcome,
                                     {**entry.detail, "failures": count}))
            if until is not None:
                conn.execute(delete(operator_login_failures).where(mine))
                _append(conn, AuditEntry(entry.actor, "caller_locked_out", account.name, "locked", {
                    "caller": key, "failures": count,
                    "lockedUntil": epoch_rfc3339(until)}))
        return until

    # -- sessions ---------------------------------------------------------------------------------
    @errors_translated
    def open_session(self, account: Account, id_hash: str, csrf_token: str, at: datetime,
                     totp_step: int | None, entry: AuditEntry, *, ended_before: tuple[datetime, datetime]) -> bool:
        """Open a session, forget the account's failures and audit the login; False (nothing
        written) when `totp_step` is no longer newer than the last one accepted.

        Args:
            ended_before: (created before, last seen before): sessions past their lifetime or
                idle timeout, never presented again, are purged here.
        """
        with self._writer() as conn, conn.begin():
            created_cutoff, seen_cutoff = ended_before
            conn.execute(delete(operator_sessions).where(
                (operator_sessions.c.created_at < created_cutoff) | (operator_sessions.c.last_seen_at < seen_cutoff)))
            if totp_step is not None:
                used = conn.execute(
                    update(operators).where(operators.c.id == account.id,
                                            (operators.c.totp_last_step.is_(None))
                                            | (operators.c.totp_last_step < totp_step))
                    .values(totp_last_step=totp_step).returning(operators.c.id)
                ).first()
                if used is None:
                    return False
            conn.execute(delete(operator_login_failures).where(operator_login_failures.c.operator_id == account.id))
            conn.execute(delete(auth_failures).where(auth_failures.c.caller == lockout_key(account.name)))
            conn.execute(operator_sessions.insert().values(id_hash=id_hash, operator_id=account.id, created_at=at,
                                                           last_seen_at=at, csrf_token=csrf_token))
            _append(conn, entry)
        return True

    @errors_translated
    def session(self, id_hash: str) -> SessionRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(operator_sessions).where(operator_sessions.c.id_hash == id_hash)).first()
            if row is None:
                return None
            account = conn.execute(select(operators).where(operators.c.id == row.operator_id)).one()
        return SessionRecord(id_hash=row.id_hash, account=_account(account), created_at=_aware(row.created_at),
                             last_seen_at=_aware(row.last_seen_at), csrf_token=row.csrf_token)

    @errors_translated
    def touch_session(self, id_hash: str, at: datetime) -> None:
        with self._writer() as conn, conn.begin():
            conn.execute(update(operator_sessions).where(operator_sessions.c.id_hash == id_hash)
                         .values(last_seen_at=at))

    @errors_translated
    def close_session(self, id_hash: str, entry: AuditEntry | None) -> bool:
        with self._writer() as conn, conn.begin():
            gone = conn.execute(delete(operator_sessions).where(operator_sessions.c.id_hash == id_hash)
                                .returning(operator_sessions.c.id_hash)).first() is not None
            if gone and entry is not None:
                _append(conn, entry)
        return gone

    @errors_translated
    def audit(self, entry: AuditEntry) -> None:
        with self._writer() as conn, conn.begin():
            _append(conn, entry)
