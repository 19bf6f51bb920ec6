"""Tables for identity and authorization: delegations, seen token ids, lockouts, filing readers.

They share `storage.tables.metadata`, so Alembic sees one schema.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, String, Table

from storage.tables import metadata

__all__ = ["auth_failures", "delegations", "filing_viewers", "seen_tokens"]

_ID = BigInteger().with_variant(Integer(), "sqlite")  # as `filings.id`

#: A delegation, or a sub-delegation when `parent_id` is set (then `granted_by` is the
#: parent's delegate, who stays responsible). Rows are never deleted; revocation sets
#: `revoked_at`.
delegations = Table(
    "delegations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("parent_id", String(32), ForeignKey("delegations.id"), index=True),
    Column("subject_tax_code", String(16), nullable=False),
    Column("delegate_tax_code", String(16), nullable=False),
    Column("agencies", JSON, nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_to", DateTime(timezone=True), nullable=False),
    Column("granted_by", String(16), nullable=False),
    Column("portal", String(64), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(16)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_delegations_subject_delegate", "subject_tax_code", "delegate_tax_code"),
)

#: ID_AUTH_REST_02: every token id seen, kept until the token expires (then a replay would
#: be refused as expired anyway).
seen_tokens = Table(
    "seen_tokens",
    metadata,
    Column("issuer", String(64), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

#: Consecutive authentication failures per caller (`portal:<id>` or `address:<ip>`).
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("caller", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", Float, nullable=False),
    Column("locked_until", Float),
)

#: Who may read a filing besides its portal's scope: the filer, the legal representative it
#: names, the grantors and responsible delegates of the delegations it used.
filing_viewers = Table(
    "filing_viewers",
    metadata,
    Column("filing_id", _ID, ForeignKey("filings.id"), primary_key=True),
    Column("tax_code", String(16), primary_key=True),
    # A user's filings, newest first (the portals' search, 0011).
    Index("ix_filing_viewers_tax_code_filing_id", "tax_code", "filing_id"),
)
