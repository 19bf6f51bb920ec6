"""The append-only audit trail: chained appends and the chain's verification.

Appends are serialized so the chain never forks: SQLite has one writer at a time (the store
opens write transactions with BEGIN IMMEDIATE); on PostgreSQL each append takes a
transaction-scoped advisory lock before reading the last line, held until commit. A unique
`prev_hash` backs this up in the schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from domain.audit import GENESIS_HASH, audit_hash, canonical_line
from storage.row_inserts import RowsInsert, by_driver
from storage.tables import audit_log

__all__ = ["AUDIT_LOCK_KEY", "CHAIN_END_SQL", "AuditLine", "AuditVerification", "append_audit", "append_audit_lines",
           "chain_audit_lines", "hash_audit_lines", "insert_audit_rows", "lock_chain", "verify_audit_chain"]

#: Advisory lock key of the audit chain on PostgreSQL ("CRVA").
AUDIT_LOCK_KEY = 0x43525641

# Built once: every append runs the same three statements, and SQLAlchemy memoizes a
# statement's cache key on the object, so reusing it skips rebuilding and re-keying it.
_LOCK_CHAIN = text("SELECT pg_advisory_xact_lock(:key)")
_LAST_HASH = select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
#: `_LAST_HASH` as SQL text, for a caller that reads the chain's end with other values in one
#: statement (`storage.store`), after `lock_chain`.
CHAIN_END_SQL = "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1"
# Inline: no implicit RETURNING of the new id, which nobody reads (`insert_audit_rows` may be pipelined).
_INSERT_LINE = insert(audit_log).inline()
# Several lines through the driver's executemany on psycopg (`storage.row_inserts`).
_INSERT_LINES = RowsInsert(audit_log)


#: The subject column's width (tables.audit_log).
_SUBJECT_CHARS = 64


def storable_subject(subject: str) -> str:
    """The subject as the column keeps it: a caller's identifier can be longer than any the hub
    hands out, or carry a NUL, which PostgreSQL refuses; the refusal must still be audited."""
    return subject[:_SUBJECT_CHARS].replace("\x00", "?")


def append_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    subject: str,
    outcome: str,
    detail: Mapping[str, Any] | None,
    at: datetime | None = None,
) -> str:
    """Append one line inside the caller's write transaction; returns its hash.

    Args:
        conn: a connection in a write transaction (the line commits or rolls back with it).
        actor: who acted: a person's tax code, `portal:<id>` or `anonymous`.
        action: what was done (`filing_accepted`, `delegation_granted`, ...).
        subject: what it was done to (a filing reference, a delegation id), or "".
        outcome: how it ended (`accepted`, `refused`, a problem slug).
        detail: JSON-able facts an auditor needs.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CHAIN, {"key": AUDIT_LOCK_KEY})
    at = at or datetime.now(timezone.utc)
    subject = storable_subject(subject)
    # What is hashed must be what the database gives back: JSON round-trip the detail.
    detail = json.loads(json.dumps(detail)) if detail is not None else None
    prev = conn.execute(_LAST_HASH).scalar_one_or_none() or GENESIS_HASH
    line = canonical_line(at=at, actor=actor, action=action, subject=subject, outcome=outcome,
                          detail=detail)
    digest = audit_hash(prev, line)
    conn.execute(_INSERT_LINE, {"at": at, "actor": actor, "action": action, "subject": subject,
                                "outcome": outcome, "detail": detail, "prev_hash": prev, "hash": digest})
    return digest


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One line for `append_audit_lines` (the fields of `append_audit`)."""

    at: datetime
    actor: str
    action: str
    subject: str
    outcome: str
    detail: Mapping[str, Any] | None


def append_audit_lines(conn: Connection, lines: list[AuditLine]) -> list[str]:
    """Append several lines, chained in order, inside the caller's write transaction.

    One chain lock and one read of the last hash for all of them (the intake's group
    commit); the lines are inserted one after another, so their ids follow the chain.
    Returns their hashes.
    """
    rows = chain_audit_lines(conn, lines)
    insert_audit_rows(conn, rows)
    return [r["hash"] for r in rows]


def chain_audit_lines(conn: Connection, lines: list[AuditLine]) -> list[dict[str, Any]]:
    """Lock the chain and hash `lines` after its last line: the rows for `insert_audit_rows`.

    Apart from the insert so that a caller can send the insert with other writes that need
    no answer (`storage.pipelining`): the lock, held until commit, keeps the chain's end.
    """
    if not lines:
        return []
    lock_chain(conn)
    return hash_audit_lines(conn.execute(_LAST_HASH).scalar_one_or_none(), lines)


def lock_chain(conn: Connection) -> None:
    """Take the chain's lock until commit: on PostgreSQL its advisory lock (SQLite's write
    transaction holds the database already). The chain's end is to be read after it, in
    another statement: a statement's snapshot is taken when it starts."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CHAIN, {"key": AUDIT_LOCK_KEY})


def hash_audit_lines(last: str | None, lines: list[AuditLine]) -> list[dict[str, Any]]:
    """The rows of `lines` chained after the hash `last` (None: an empty chain), read under
    `lock_chain`."""
    prev = last or GENESIS_HASH
    rows: list[dict[str, Any]] = []
    for entry in lines:
        # What is hashed must be what the database gives back: JSON round-trip the detail.
        detail = json.loads(json.dumps(entry.detail)) if entry.detail is not None else None
        subject = storable_subject(entry.subject)
        digest = audit_hash(prev, canonical_line(at=entry.at, actor=entry.actor, action=entry.action,
                                                 subject=subject, outcome=entry.outcome, detail=detail))
        rows.append({"at": entry.at, "actor": entry.actor, "action": entry.action, "subject": subject,
                     "outcome": entry.outcome, "detail": detail, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows


def insert_audit_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert rows of `chain_audit_lines`, in the same transaction, in chain order."""
    if not rows:
        return
    # The verification walks the chain by id, so lines must be numbered in chain order: the
    # drivers' executemany (psycopg 3's, called directly by `RowsInsert`; sqlite3) runs one
    # INSERT per row, in order; a multi-row INSERT (what SQLAlchemy renders for psycopg2) need
    # not number them so.
    if by_driver(conn.dialect):
        _INSERT_LINES(conn, rows)
    elif conn.dialect.use_insertmanyvalues_wo_returning:
        for row in rows:
            conn.execute(_INSERT_LINE, row)
    else:
        conn.execute(_INSERT_LINE, rows)


@dataclass(frozen=True, slots=True)
class AuditVerification:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""


def verify_audit_chain(engine: Engine, batch: int = 1000) -> AuditVerification:
    """Walk the trail in order and recompute every hash.

    Returns:
        ok with the number of lines, or the id of the first line that was edited, or whose
        predecessor was deleted or reordered. Removing lines from the end is not detectable
        by the chain alone: compare the head hash with one kept elsewhere.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    last_id = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(
                select(audit_log).where(audit_log.c.id > last_id).order_by(audit_log.c.id).limit(batch)
            ).all()
            if not rows:
                break
            for row in rows:
                if row.prev_hash != expected_prev:
                    return AuditVerification(False, checked, row.id, "prev_hash does not match the "
                                             "previous line: a line was deleted or reordered")
                line = canonical_line(at=row.at, actor=row.actor, action=row.action,
                                      subject=row.subject, outcome=row.outcome, detail=row.detail)
                if row.hash != audit_hash(row.prev_hash, line):
                    return AuditVerification(False, checked, row.id, "the line's content does not "
                                             "match its hash: it was edited")
                expected_prev = row.hash
                checked += 1
                last_id = row.id
    return AuditVerification(True, checked)
