"""Tables of the delivery semantics (0004): the sender's event feed and each agency's circuit;
the anomalies operators must see (0006).

They share `storage.tables.metadata`; importing this module registers them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from storage.tables import _ID, metadata

__all__ = ["agency_pauses", "agency_status", "anomalies", "filing_events"]

# One row per change of a filing or of one of its recipients, written in the transaction that
# made the change. `seq` orders the events of one filing; the notifier pushes them to the
# portal in that order (never one before an earlier undelivered one) and `id` stays the same
# across its retries, so that the portal can recognise a repeat.
filing_events = Table(
    "filing_events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("filing_id", _ID, ForeignKey("filings.id"), nullable=False),
    Column("portal", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Push to the portal's callback (epoch seconds, like the outbox).
    Column("next_attempt_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("lease_owner", String(64)),
    Column("leased_until", Float),
    Column("delivered_at", Float),
    Column("last_error", Text),
    UniqueConstraint("filing_id", "seq", name="uq_filing_events_filing_id_seq"),
)
# The notifier's claim (0013) reads a portal's undelivered events in the order they fall due,
# from `ix_filing_events_due`, and stops at its limit; of each it asks whether an earlier event of
# its filing is still open, one probe of `ix_filing_events_open`. Without them the planner read
# every open event per candidate (quadratic in the backlog), then every due one per claim (linear:
# a notifier that fell behind fell further behind, its claims slower as the backlog grew).
# The operators' backlog gauge reads `ix_filing_events_due` too; 0014 dropped the older
# `ix_filing_events_pending`, which no query read any more and which held every event.
_UNDELIVERED = filing_events.c.delivered_at.is_(None)
Index("ix_filing_events_open", filing_events.c.filing_id, filing_events.c.seq,
      postgresql_where=_UNDELIVERED, sqlite_where=_UNDELIVERED)
Index("ix_filing_events_due", filing_events.c.portal, filing_events.c.next_attempt_at,
      postgresql_where=_UNDELIVERED, sqlite_where=_UNDELIVERED)

# The circuit breaker of each agency as the last worker to change it saw it.
agency_status = Table(
    "agency_status",
    metadata,
    Column("agency", String(32), primary_key=True),
    Column("circuit", String(16), nullable=False),
    Column("failures", Integer, nullable=False, default=0),
    Column("opened_at", Float),
    Column("open_until", Float),
    Column("throttled_until", Float),
    Column("reported_by", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A contradiction from outside that the hub refused to apply or could only flag: a second
# protocol number for one delivery, a decision reversed, one number given to two messages.
# `detail` keeps both sides (e.g. the recorded and the received number); the delivery itself
# keeps what it had (Trust at the edges: a settled fact is never overwritten).
anomalies = Table(
    "anomalies",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("delivery_id", String(32), ForeignKey("deliveries.id"), nullable=False),
    Column("filing_id", _ID, ForeignKey("filings.id"), nullable=False),
    Column("agency", String(32), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_anomalies_filing_id", "filing_id"),
    Index("ix_anomalies_created_at", "created_at"),
)

# Agencies an operator paused (0009): while a row exists no worker calls the agency; its jobs
# wait, and resuming makes them due. In the store, so every worker process sees it.
agency_pauses = Table(
    "agency_pauses",
    metadata,
    Column("agency", String(32), primary_key=True),
    Column("paused_by", String(128), nullable=False),
    Column("reason", Text),
    Column("paused_at", DateTime(timezone=True), nullable=False),
)
