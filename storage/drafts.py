"""The drafts repository: each change and its audit line in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from domain.drafts import Draft, DraftState
from service.identity import AuditEntry
from storage.audit import append_audit
from storage.draft_tables import draft_viewers, drafts
from storage.errors import errors_translated

__all__ = ["SqlDrafts"]


def _aware(value: datetime) -> datetime:
    # SQLite gives back naive datetimes; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _draft(row: Any, viewers: tuple[str, ...] = ()) -> Draft:
    return Draft(
        id=row.id, portal=row.portal, owner=row.owner, kind=row.kind, state=DraftState(row.state),
        media_type=row.media_type, document=bytes(row.document), warnings=tuple(row.warnings or ()),
        version=row.version, created_at=_aware(row.created_at), updated_at=_aware(row.updated_at),
        expires_at=_aware(row.expires_at), subject_tax_code=row.subject_tax_code, reference=row.reference,
        viewers=viewers,
    )


def _audit(conn: Connection, entry: AuditEntry) -> None:
    append_audit(conn, actor=entry.actor, action=entry.action, subject=entry.subject,
                 outcome=entry.outcome, detail=entry.detail)


def _set_viewers(conn: Connection, draft_id: str, viewers: tuple[str, ...]) -> None:
    conn.execute(delete(draft_viewers).where(draft_viewers.c.draft_id == draft_id))
    if viewers:
        conn.execute(insert(draft_viewers), [{"draft_id": draft_id, "tax_code": v} for v in viewers])


class SqlDrafts:
    """Drafts on SQLite or PostgreSQL (the `service.store_ports.DraftStore` port).

    Args:
        engine: the hub's engine (migrated to 0010 or later).
        writer: a connection for one write transaction, queued behind the process's other
            writers (`SqlStore.writer`: SQLite has one writer at a time).
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer() as conn, conn.begin():
            yield conn

    @errors_translated
    def create_draft(self, draft: Draft, max_per_owner: int, now: datetime, audit: AuditEntry) -> bool:
        """Store a new draft unless its owner is at the cap of live drafts.

        Returns:
            False when the cap is reached (nothing stored but the audit line).
        """
        with self._write() as conn:
            live = conn.execute(
                select(func.count()).select_from(drafts).where(
                    drafts.c.portal == draft.portal, drafts.c.owner == draft.owner, drafts.c.expires_at > now)
            ).scalar_one()
            if live >= max_per_owner:
                _audit(conn, AuditEntry(audit.actor, audit.action, audit.subject, "too-many-drafts", audit.detail))
                return False
            conn.execute(insert(drafts).values(
                id=draft.id, portal=draft.portal, owner=draft.owner, kind=draft.kind, state=draft.state.value,
                media_type=draft.media_type, document=draft.document, warnings=list(draft.warnings),
                version=draft.version, subject_tax_code=draft.subject_tax_code[:16], reference=None,
                created_at=draft.created_at, updated_at=draft.updated_at, expires_at=draft.expires_at,
            ))
            _set_viewers(conn, draft.id, draft.viewers)
            _audit(conn, audit)
        return True

    @errors_translated
    def get_draft(self, draft_id: str, portal: str, viewer: str) -> Draft | None:
        """The draft if `viewer` may read it in `portal` (expired ones included: the caller
        tells them apart); None otherwise."""
        if "\x00" in draft_id:  # no id has a NUL, and PostgreSQL refuses one in text
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(drafts).where(drafts.c.id == draft_id, drafts.c.portal == portal)).first()
            if row is None:
                return None
            viewers = tuple(conn.execute(
                select(draft_viewers.c.tax_code).where(draft_viewers.c.draft_id == draft_id)
                .order_by(draft_viewers.c.tax_code)).scalars())
        return _draft(row, viewers) if viewer in viewers else None

    @errors_translated
    def list_drafts(self, portal: str, viewer: str, now: datetime, before: int | None,
                    limit: int) -> tuple[list[Draft], int | None]:
        """The live drafts `viewer` may read, newest first, from below position `before`."""
        query = (
            select(drafts)
            .join(draft_viewers, draft_viewers.c.draft_id == drafts.c.id)
            .where(draft_viewers.c.tax_code == viewer, drafts.c.portal == portal, drafts.c.expires_at > now)
            .order_by(drafts.c.seq.desc())
            .limit(limit + 1)
        )
        if before is not None:
            query = query.where(drafts.c.seq < before)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        page = rows[:limit]
        return [_draft(r) for r in page], (page[-1].seq if len(rows) > limit else None)

    @errors_translated
    def replace_draft(self, draft: Draft, expected_version: int, audit: AuditEntry) -> bool:
        """Replace an open draft's document if it is still at `expected_version`."""
        with self._write() as conn:
            done = conn.execute(
                update(drafts)
                .where(drafts.c.id == draft.id, drafts.c.version == expected_version,
                       drafts.c.state == DraftState.DRAFT.value)
                .values(kind=draft.kind, media_type=draft.media_type, document=draft.document,
                        warnings=list(draft.warnings), version=draft.version,
                        subject_tax_code=draft.subject_tax_code[:16], updated_at=draft.updated_at,
                        expires_at=draft.expires_at)
            ).rowcount
            if done:
                _set_viewers(conn, draft.id, draft.viewers)
            _audit(conn, audit if done else AuditEntry(audit.actor, audit.action, audit.subject,
                                                         "version-mismatch", audit.detail))
        return bool(done)

    @errors_translated
    def delete_draft(self, draft_id: str, audit: AuditEntry) -> bool:
        with self._write() as conn:
            conn.execute(delete(draft_viewers).where(draft_viewers.c.draft_id == draft_id))
            done = conn.execute(delete(drafts).where(drafts.c.id == draft_id)).rowcount
            _audit(conn, audit if done else AuditEntry(audit.actor, audit.action, audit.subject,
                                                         "not-found", audit.detail))
        return bool(done)

    @errors_translated
    def mark_submitted(self, draft_id: str, reference: str, answer: dict[str, Any], audit: AuditEntry) -> bool:
        """The draft became filing `reference`; a second mark (a concurrent submit) changes nothing."""
        with self._write() as conn:
            done = conn.execute(
                update(drafts).where(drafts.c.id == draft_id, drafts.c.state == DraftState.DRAFT.value)
                .values(state=DraftState.SUBMITTED.value, reference=reference, submission=answer)
            ).rowcount
            _audit(conn, audit if done else AuditEntry(audit.actor, audit.action, audit.subject,
                                                         "replayed", audit.detail))
        return bool(done)

    @errors_translated
    def submission(self, draft_id: str) -> dict[str, Any] | None:
        """The answer the submit that made the draft a filing gave (None: not submitted)."""
        with self._engine.connect() as conn:
            value = conn.execute(select(drafts.c.submission).where(drafts.c.id == draft_id)).scalar_one_or_none()
        return dict(value) if isinstance(value, dict) else None

    @errors_translated
    def purge_expired_drafts(self, now: datetime, limit: int) -> int:
        """Delete up to `limit` expired drafts with one audit line saying how many."""
        with self._write() as conn:
            ids = list(conn.execute(
                select(drafts.c.id).where(drafts.c.expires_at <= now).order_by(drafts.c.seq).limit(limit)
            ).scalars())
            if not ids:
                return 0
            conn.execute(delete(draft_viewers).where(draft_viewers.c.draft_id.in_(ids)))
            conn.execute(delete(drafts).where(drafts.c.id.in_(ids)))
            append_audit(conn, actor="system:drafts", action="drafts_purged", subject="", outcome="ok",
                         detail={"count": len(ids), "drafts": ids[:100]})
        return len(ids)

    @errors_translated
    def audit_draft(self, audit: AuditEntry) -> None:
        with self._write() as conn:
            _audit(conn, audit)
