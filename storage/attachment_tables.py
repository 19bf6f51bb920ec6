"""The attachments' metadata table (their content is in the blob store, `storage.blobs`)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, String, Table

from storage.tables import metadata

__all__ = ["attachments"]

#: One uploaded attachment, owned by the portal and user who uploaded it. `referenced_by` is
#: the first filing that named it: until then the row (and its blob) expire after the
#: configured time.
attachments = Table(
    "attachments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("file_name", String(255)),
    Column("portal", String(64), nullable=False),
    Column("owner", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("referenced_by", String(32)),
    Index("ix_attachments_unreferenced", "referenced_by", "created_at"),
)
