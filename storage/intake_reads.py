"""What a group of filings must know before it is written, read in one round trip (PostgreSQL).

The intake's group commit used to ask PostgreSQL one question at a time: its callers'
lockouts, then (after remembering the tokens) the audit chain's lock, then new filing ids with
the chain's end, and each Idempotency-Key's earlier filing. Each question was a round trip and
a pass through SQLAlchemy's execution layers. None depends on another's answer, so they ride
one psycopg pipeline (`storage.pipelining.queued`) and are answered together; the server still
runs them in order, so the chain's end is read after its lock is taken.

The token ids are then remembered in the pipeline that writes the filings (`remember_tokens`),
on the bet that they are new, and the commit rides that pipeline too
(`storage.pipelining.queue_commit`): a seen id fails the whole group (a unique violation),
which is then stored filing by filing, the careful way (`storage.store`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from domain.lockout import FailureState
from storage.audit import AUDIT_LOCK_KEY, CHAIN_END_SQL
from storage.pipelining import pipelined, queued

__all__ = ["EarlierFiling", "IntakeFacts", "forget_failures", "read_intake_facts", "remember_tokens"]

_LOCK_CHAIN = "SELECT pg_advisory_xact_lock(%s)"
_NEW_IDS_AND_CHAIN_END = (f"SELECT nextval(pg_get_serial_sequence('filings', 'id')), ({CHAIN_END_SQL})"
                          " FROM generate_series(1, %s)")

# The values are listed one parameter each, not as arrays: psycopg dumps an array element by
# element in Python, a scalar in C. A statement's text then depends on the count; a group
# has a few callers and tokens, so psycopg's caches and prepared statements keep up.


@functools.lru_cache(maxsize=128)
def _values(rows: int, width: int) -> str:
    """`(%s, …), (%s, …)`: `rows` rows of `width` parameters."""
    row = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([row] * rows)


def _failures(callers: int) -> str:
    return ("SELECT caller, failures, last_failure_at, locked_until FROM auth_failures"
            f" WHERE caller IN {_values(1, callers)}")


def _earlier(keys: int) -> str:
    return ("SELECT id, reference, request_digest, portal, idempotency_key FROM filings"
            f" WHERE (portal, idempotency_key) IN ({_values(keys, 2)})")


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
    cursors: dict[str, Any] = {}
    pairs = sorted(set(keys))
    try:
        with pipelined(conn):
            cursors["lock"] = queued(conn, _LOCK_CHAIN, (AUDIT_LOCK_KEY,))
            if callers:
                cursors["failures"] = queued(conn, _failures(len(callers)), callers)
            if pairs:
                cursors["earlier"] = queued(conn, _earlier(len(pairs)), [v for pair in pairs for v in pair])
            cursors["drawn"] = queued(conn, _NEW_IDS_AND_CHAIN_END, (count,))
        drawn = cursors["drawn"].fetchall()
        failures = cursors["failures"].fetchall() if "failures" in cursors else []
        earlier = cursors["earlier"].fetchall() if "earlier" in cursors else []
    finally:
        for cursor in cursors.values():
            cursor.close()
    return IntakeFacts(
        failures={caller: FailureState(n, last, until) for caller, n, last, until in failures},
        earlier={(portal, key): EarlierFiling(fid, reference, digest)
                 for fid, reference, digest, portal, key in earlier},
        ids=sorted(fid for fid, _ in drawn),
        chain_end=drawn[0][1] if drawn else None,
    )


def remember_tokens(conn: Connection, tokens: Sequence[tuple[str, str, float]]) -> None:
    """Remember (issuer, jti, expires_at) token ids, inside `pipelined`, on the bet that each
    is new: one seen before fails the block (a unique violation), and the whole group with it."""
    queued(conn, f"INSERT INTO seen_tokens (issuer, jti, expires_at) VALUES {_values(len(tokens), 3)}",
           [v for token in tokens for v in token]).close()


def forget_failures(conn: Connection, callers: Sequence[str]) -> None:
    """Clear the callers' failure counts (they were admitted), inside `pipelined`."""
    queued(conn, f"DELETE FROM auth_failures WHERE caller IN {_values(1, len(callers))}", callers).close()
