"""What a group of filings must know before it is written, read in one round trip (PostgreSQL).

The intake's group commit used to ask PostgreSQL one question at a time: its callers'
lockouts, then (after remembering the tokens) the audit chain's lock, then new filing ids with
the chain's end, and each Idempotency-Key's earlier filing. Each question was a round trip and
a pass through SQLAlchemy's execution layers. None depends on another's answer, so they ride
one psycopg pipeline (`storage.pipelining.queued`) and are answered together; the server still
runs them in order, so the chain's end is read after its lock is taken.

The token ids are then remembered in the pipeline that writes the filings (`remember_tokens`),
on the bet that they are new, and the commit rides that pipeline too (`storage.pipelining.queue_commit`): a seen id
fails the whole group (a unique violation), which is then stored filing by filing, the careful
way (`storage.store`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from domain.lockout import FailureState
from storage.audit import AUDIT_LOCK_KEY, CHAIN_END_SQL
from storage.pipelining import pipelined, queued

__all__ = ["EarlierFiling", "IntakeFacts", "forget_failures", "read_intake_facts", "remember_tokens"]

_LOCK_CHAIN = "SELECT pg_advisory_xact_lock(%s)"
_FAILURES = "SELECT caller, failures, last_failure_at, locked_until FROM auth_failures WHERE caller = ANY(%s)"
# The pairs are matched here: both columns' lists keep the (portal, idempotency_key) index usable.
_EARLIER = ("SELECT id, reference, request_digest, portal, idempotency_key FROM filings"
            " WHERE portal = ANY(%s) AND idempotency_key = ANY(%s)")
_NEW_IDS_AND_CHAIN_END = (f"SELECT nextval(pg_get_serial_sequence('filings', 'id')), ({CHAIN_END_SQL})"
                          " FROM generate_series(1, %s)")
_REMEMBER = ("INSERT INTO seen_tokens (issuer, jti, expires_at)"
             " SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::float8[])")
_FORGET_FAILURES = "DELETE FROM auth_failures WHERE caller = ANY(%s)"


@dataclass(frozen=True, slots=True)
class EarlierFiling:
    """The filing an Idempotency-Key was first used for."""

    id: int
    reference: str
    request_digest: str | None


@dataclass(frozen=True, slots=True)
class IntakeFacts:
    """What the group's decisions rest on, read under the audit chain's lock."""

    failures: Mapping[str, FailureState]  #: per caller that has failed lately
    earlier: Mapping[tuple[str, str], EarlierFiling]  #: per (portal, Idempotency-Key) used before
    ids: list[int]  #: new filing ids, ascending: one per filing of the group (the unused are skipped)
    chain_end: str | None  #: the audit chain's last hash (None: empty)


def read_intake_facts(conn: Connection, callers: Sequence[str], keys: Sequence[tuple[str, str]],
                      count: int) -> IntakeFacts:
    """Take the audit chain's lock (until commit) and read the callers' failures, the keys'
    earlier filings, `count` new filing ids and the chain's end: one round trip.

    Raises:
        DBAPIError: a statement failed (the transaction is to roll back).
    """
    cursors: list[Any] = []
    try:
        with pipelined(conn):
            cursors.append(queued(conn, _LOCK_CHAIN, (AUDIT_LOCK_KEY,)))
            failures = queued(conn, _FAILURES, (list(callers),)) if callers else None
            earlier = (queued(conn, _EARLIER, (sorted({p for p, _ in keys}), sorted({k for _, k in keys})))
                       if keys else None)
            drawn = queued(conn, _NEW_IDS_AND_CHAIN_END, (count,))
            cursors += [c for c in (failures, earlier, drawn) if c is not None]
        rows = drawn.fetchall()
        wanted = set(keys)
        return IntakeFacts(
            failures={caller: FailureState(n, last, until)
                      for caller, n, last, until in (failures.fetchall() if failures else ())},
            earlier={(portal, key): EarlierFiling(fid, reference, digest)
                     for fid, reference, digest, portal, key in (earlier.fetchall() if earlier else ())
                     if (portal, key) in wanted},
            ids=sorted(fid for fid, _ in rows),
            chain_end=rows[0][1] if rows else None,
        )
    finally:
        for cursor in cursors:
            cursor.close()


def remember_tokens(conn: Connection, tokens: Sequence[tuple[str, str, float]]) -> None:
    """Remember (issuer, jti, expires_at) token ids, inside `pipelined`, on the bet that each
    is new: one seen before fails the block (a unique violation), and the whole group with it."""
    columns = list(zip(*tokens, strict=True))
    queued(conn, _REMEMBER, tuple(list(c) for c in columns)).close()


def forget_failures(conn: Connection, callers: Sequence[str]) -> None:
    """Clear the callers' failure counts (they were admitted), inside `pipelined`."""
    queued(conn, _FORGET_FAILURES, (list(callers),)).close()
