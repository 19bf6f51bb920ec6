"""Tables of drafts: the saved documents and who may read each (as `filing_viewers`).

They share `storage.tables.metadata`, so Alembic sees one schema (migration 0010).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table

from storage.tables import metadata

__all__ = ["draft_viewers", "drafts"]

_ID = BigInteger().with_variant(Integer(), "sqlite")  # as `filings.id`

#: One draft. `seq` orders the listings (newest first) and makes their cursor; `id` is the
#: public name. `submission` keeps the answer of the submit that made it a filing, so a
#: repeated submit answers the same.
drafts = Table(
    "drafts",
    metadata,
    Column("seq", _ID, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("portal", String(64), nullable=False),
    Column("owner", String(16), nullable=False),
    Column("kind", String(40)),
    Column("state", String(16), nullable=False),
    Column("media_type", String(40), nullable=False),
    Column("document", LargeBinary, nullable=False),
    Column("warnings", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("subject_tax_code", String(16), nullable=False),
    Column("reference", String(32)),
    Column("submission", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # The per-user cap counts a portal user's drafts; the purge finds the expired ones.
    Index("ix_drafts_portal_owner", "portal", "owner"),
    Index("ix_drafts_expires_at", "expires_at"),
)

#: Who may read a draft: its owner, the legal representative it names, the grantors and
#: responsible delegates of the owner's delegations for its subject.
draft_viewers = Table(
    "draft_viewers",
    metadata,
    Column("draft_id", String(32), ForeignKey("drafts.id"), primary_key=True),
    Column("tax_code", String(16), primary_key=True),
    Index("ix_draft_viewers_tax_code", "tax_code"),
)
