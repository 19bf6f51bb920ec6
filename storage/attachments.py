"""The attachments' metadata rows; each change audited in its own transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from service.attachments import AttachmentRecord
from storage.attachment_tables import attachments
from storage.audit import append_audit
from storage.errors import errors_translated

__all__ = ["SqlAttachmentStore"]


def _record(row: Any) -> AttachmentRecord:
    created = row.created_at
    if created.tzinfo is None:  # SQLite gives back naive datetimes; they were written in UTC
        created = created.replace(tzinfo=timezone.utc)
    return AttachmentRecord(id=row.id, sha256=row.sha256, size=row.size, media_type=row.media_type,
                            file_name=row.file_name, portal=row.portal, owner=row.owner,
                            created_at=created, referenced_by=row.referenced_by)


class SqlAttachmentStore:
    """Implements `service.attachments.AttachmentStore` over one engine.

    Args:
        engine: the hub's engine (reads).
        writer: the store's queued write connection (`SqlStore.writer`).
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer

    @errors_translated
    def add(self, record: AttachmentRecord) -> None:
        """Insert the row and its audit line (no file name or content in the audit: personal data)."""
        with self._writer() as conn, conn.begin():
            conn.execute(insert(attachments).values(
                id=record.id, sha256=record.sha256, size=record.size, media_type=record.media_type,
                file_name=record.file_name, portal=record.portal, owner=record.owner,
                created_at=record.created_at, referenced_by=None))
            append_audit(conn, actor=record.owner, action="attachment_uploaded", subject=record.id,
                         outcome="ok", detail={"portal": record.portal, "sha256": record.sha256,
                                               "size": record.size, "mediaType": record.media_type})

    @errors_translated
    def get_many(self, ids: Sequence[str]) -> dict[str, AttachmentRecord]:
        """The rows of those ids that exist."""
        ids = [i for i in ids if "\x00" not in i]  # no id has a NUL, and PostgreSQL refuses one in text
        if not ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(attachments).where(attachments.c.id.in_(list(ids))))
            return {row.id: _record(row) for row in rows}

    @errors_translated
    def mark_referenced(self, ids: Sequence[str], reference: str) -> None:
        """Record the first filing naming each attachment: from then on it never expires."""
        if not ids:
            return
        with self._writer() as conn, conn.begin():
            conn.execute(update(attachments)
                         .where(attachments.c.id.in_(list(ids)), attachments.c.referenced_by.is_(None))
                         .values(referenced_by=reference))

    @errors_translated
    def expire_unreferenced(self, created_before: datetime) -> list[AttachmentRecord]:
        """Delete the unreferenced rows created before the cut, audited; returns them."""
        with self._writer() as conn, conn.begin():
            rows = [_record(r) for r in conn.execute(
                select(attachments).where(attachments.c.referenced_by.is_(None),
                                          attachments.c.created_at < created_before))]
            if rows:
                conn.execute(delete(attachments).where(attachments.c.id.in_([r.id for r in rows])))
                for record in rows:
                    append_audit(conn, actor="hub", action="attachment_expired", subject=record.id,
                                 outcome="ok", detail={"sha256": record.sha256})
            return rows

    @errors_translated
    def sha256_in_use(self, sha256: str) -> bool:
        """Whether any row still names this content (then its blob must stay)."""
        with self._engine.connect() as conn:
            return conn.execute(select(attachments.c.id).where(attachments.c.sha256 == sha256)
                                .limit(1)).first() is not None
