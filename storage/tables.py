"""The tables, in SQLAlchemy Core so the hot path stays lean.

Queue timing columns are epoch seconds (floats): compared on every claim, they stay cheap and
portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

__all__ = ["metadata", "filings", "deliveries", "attempts", "outbox", "audit_log"]

_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

filings = Table(
    "filings",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("reference", String(32), unique=True),
    Column("kind", String(40), nullable=False),
    Column("portal", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("subject_tax_code", String(16), nullable=False),
    Column("subject_name", String(200), nullable=False),
    Column("declarant_tax_code", String(16), nullable=False),
    Column("declarant_role", String(32), nullable=False),
    Column("document", LargeBinary, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_digest", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Who filed (the authenticated user), the delegate who answers for a collaborator's
    # filing, and on what basis each recipient was authorized (0002_identity).
    Column("filed_by", String(16)),
    Column("responsible_tax_code", String(16)),
    Column("authorization", JSON),
    UniqueConstraint("portal", "idempotency_key", name="uq_filings_portal_idempotency_key"),
    # The operator API's search by subject and by date range (0008).
    Index("ix_filings_subject_tax_code", "subject_tax_code"),
    Index("ix_filings_created_at", "created_at"),
    # The portal's desk (0011): archived filings leave the default list; a settled filing's
    # payloads are purged after the retention period (storage.retention).
    Column("archived_at", DateTime(timezone=True)),
    Column("payload_purged_at", DateTime(timezone=True)),
    # The portals' search (storage.portal_search), newest first by (created_at, id) within a
    # portal, each filter served by an index that keeps that order.
    Index("ix_filings_portal_created_at_id", "portal", "created_at", "id"),
    Index("ix_filings_portal_subject_created_at", "portal", "subject_tax_code", "created_at"),
    Index("ix_filings_portal_kind_created_at", "portal", "kind", "created_at"),
    Index("ix_filings_portal_state_created_at", "portal", "state", "created_at"),
    Index("ix_filings_portal_archived_created_at", "portal", "archived_at", "created_at"),
    # Retention finds the filings not purged yet by settlement time.
    Index("ix_filings_payload_purged_at_updated_at", "payload_purged_at", "updated_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("filing_id", _ID, ForeignKey("filings.id"), nullable=False, index=True),
    Column("agency", String(32), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("message_id", String(32), nullable=False, unique=True),
    Column("state", String(32), nullable=False),
    Column("content", JSON, nullable=False),
    Column("protocol_number", String(64)),
    Column("protocolled_at", String(40)),
    Column("outcome", String(32)),
    Column("outcome_code", String(64)),
    Column("outcome_text", Text),
    Column("references", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    Column("rounds", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Delivery semantics (0004): ordering and hand-off, late outcomes, resend and correction.
    Column("depends_on", String(32)),  # the agency whose outcome this delivery waits for
    Column("on_reject", String(16)),  # hold | cancel, when that agency rejects
    Column("handoff", JSON),  # [{path, agency, reference}]: fields filled at release
    Column("correlation_id", String(128)),  # the agency's id for a late outcome (X-Correlation-ID)
    Column("poll_url", Text),  # PULL: the status resource to poll
    Column("polls", Integer, nullable=False, default=0, server_default="0"),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("schedule_origin", DateTime(timezone=True)),  # the age bound restarts here (resend)
    Column("corrects_delivery_id", String(32)),  # the rejected delivery this one corrects
    Column("corrects_protocol_number", String(64)),
    Column("superseded_by", String(32)),  # the corrected delivery that replaced this one
    Index("ix_deliveries_agency_correlation_id", "agency", "correlation_id"),
    # The agency contract version the delivery was planned with (0005): old filings finish
    # on the version they were mapped for while new ones use the current one.
    Column("contract_version", String(32)),
    # Each recorded protocol number is looked up among the agency's others (0006).
    Index("ix_deliveries_agency_protocol_number", "agency", "protocol_number"),
    # The operator API and `/metrics` (0008): counts per state and agency, problems, search by state or by a
    # protocol number whatever the agency.
    Index("ix_deliveries_state_agency", "state", "agency"),
    Index("ix_deliveries_protocol_number", "protocol_number"),
    # The portals' search by agency (0011): a filing's recipients at that agency.
    Index("ix_deliveries_agency_filing_id", "agency", "filing_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("delivery_id", String(32), ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("result", String(16), nullable=False),  # ok | transient | permanent | invalid
    Column("error_code", String(64)),
    Column("error_text", Text),
    Column("worker", String(64)),
    # What operators see of a failed call (0008): the delivery error's class and the HTTP status.
    Column("error_class", String(64)),
    Column("http_status", Integer),
    # The body sent and the reply received in this call, each cut to adapters.wire's bound.
    Column("request_body", Text),
    Column("reply_body", Text),
    Index("ix_attempts_started_at", "started_at"),  # the last hour per agency (0008)
)

# The outbox is also the embedded transport's queue: one row per job, never updated after
# `done_at`; a retry is a new row with a later `available_at`.
outbox = Table(
    "outbox",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("delivery_id", String(32), ForeignKey("deliveries.id"), nullable=False),
    Column("agency", String(32), nullable=False),
    Column("available_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("leased_until", Float),
    Column("claims", Integer, nullable=False, default=0),
    Column("published_at", Float),
    Column("done_at", Float),
    Column("created_at", Float, nullable=False),
    # An operator's "retry now" past the agency's Retry-After (0009): this job skips the throttle.
    Column("forced", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_outbox_pending", "done_at", "agency", "available_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(64), nullable=False, default=""),
    Column("outcome", String(32), nullable=False),
    Column("detail", JSON),
    # The hash chain (storage.audit): hash = sha256(prev_hash || canonical line).
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
)
