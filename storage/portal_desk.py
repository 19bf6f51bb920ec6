"""The portals' search over their filings, and archive/unarchive (`service.desk.FilingDesk`).

Keyset pages newest first by (created_at, id): no OFFSET, so a page costs the same at the
ten-thousandth filing as at the first, and filings that arrive while a portal pages land before
its first page, never inside the pages. Every filter is served by an index of 0011.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, select, tuple_, update
from sqlalchemy.sql import Select

from service.desk import (
    SETTLED_FILING_STATES,
    ArchiveFilter,
    DeskFilters,
    DeskPage,
    FilingNotSettled,
    FilingUnknown,
    encode_desk_cursor,
)
from service.ops_read import rfc3339
from storage.audit import append_audit
from storage.errors import errors_translated
from storage.identity_tables import filing_viewers
from storage.tables import deliveries, filings

__all__ = ["PortalDesk", "filing_summary"]

_SETTLED = [s.value for s in SETTLED_FILING_STATES]
#: What a search item shows of a filing (its payloads never: the page stays small).
_SUMMARY_COLUMNS = (filings.c.id, filings.c.reference, filings.c.kind, filings.c.state, filings.c.subject_tax_code,
                    filings.c.created_at, filings.c.updated_at, filings.c.archived_at, filings.c.payload_purged_at)


def _visible(portal: str, user: str) -> Select[Any]:
    """The portal's filings that `user` filed or that reach them through a delegation (the
    readers intake recorded in `filing_viewers`, as `SqlStore.get_filing` decides)."""
    # One viewer row per (filing, tax code): a join, not a duplicate.
    return (select(*_SUMMARY_COLUMNS)
            .join(filing_viewers, filing_viewers.c.filing_id == filings.c.id)
            .where(filing_viewers.c.tax_code == user, filings.c.portal == portal))


def _query(f: DeskFilters, after: tuple[datetime, int] | None) -> Select[Any]:
    query = _visible(f.portal, f.user)
    if f.reference is not None:
        query = query.where(filings.c.reference == f.reference)
    if f.subject_tax_code is not None:
        query = query.where(filings.c.subject_tax_code == f.subject_tax_code)
    if f.kind is not None:
        query = query.where(filings.c.kind == f.kind)
    if f.state is not None:
        query = query.where(filings.c.state == f.state)
    if f.protocol_number is not None:
        query = query.where(filings.c.id.in_(
            select(deliveries.c.filing_id).where(deliveries.c.protocol_number == f.protocol_number)))
    if f.agency is not None:
        query = query.where(select(deliveries.c.filing_id).where(
            deliveries.c.filing_id == filings.c.id, deliveries.c.agency == f.agency).exists())
    if f.filed_from is not None:
        query = query.where(filings.c.created_at >= f.filed_from.astimezone(timezone.utc))
    if f.filed_to is not None:
        query = query.where(filings.c.created_at < f.filed_to.astimezone(timezone.utc))
    archive = f.archived
    if archive is None:  # unsaid: the desk's list, but a reference finds its filing archived or not
        archive = ArchiveFilter.ANY if f.reference is not None else ArchiveFilter.ACTIVE
    if archive is ArchiveFilter.ACTIVE:
        query = query.where(filings.c.archived_at.is_(None))
    elif archive is ArchiveFilter.ARCHIVED:
        query = query.where(filings.c.archived_at.is_not(None))
    if after is not None:
        query = query.where(tuple_(filings.c.created_at, filings.c.id) < tuple_(after[0], after[1]))
    return query.order_by(filings.c.created_at.desc(), filings.c.id.desc())


def filing_summary(row: Any, recipients: Sequence[Any]) -> dict[str, Any]:
    """A filing as a search item: its states and each recipient's protocol number."""
    return {
        "reference": row.reference, "kind": row.kind, "state": row.state, "subjectTaxCode": row.subject_tax_code,
        "createdAt": rfc3339(row.created_at), "updatedAt": rfc3339(row.updated_at),
        "archived": row.archived_at is not None, "archivedAt": rfc3339(row.archived_at),
        "payloadPurgedAt": rfc3339(row.payload_purged_at),
        "recipients": [{"agency": r.agency, "operation": r.operation, "state": r.state,
                        "protocolNumber": r.protocol_number} for r in recipients],
    }


def _recipients(conn: Connection, ids: Sequence[int]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {i: [] for i in ids}
    if not ids:
        return found
    # A message replaced by a corrected one is history, not a recipient.
    for r in conn.execute(
        select(deliveries.c.filing_id, deliveries.c.agency, deliveries.c.operation, deliveries.c.state,
               deliveries.c.protocol_number)
        .where(deliveries.c.filing_id.in_(list(ids)), deliveries.c.superseded_by.is_(None))
        .order_by(deliveries.c.filing_id, deliveries.c.agency, deliveries.c.operation)
    ):
        found[r.filing_id].append(r)
    return found


class PortalDesk:
    """Implements `service.desk.FilingDesk` over the store's engine.

    Args:
        engine: the store's engine (searches read on their own connections).
        writer: the store's write connections (`SqlStore.writer`), queued behind its other writers.
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer

    def statement(self, f: DeskFilters, limit: int, after: tuple[datetime, int] | None = None) -> Select[Any]:
        """The page's query (the plan tests EXPLAIN it)."""
        return _query(f, after).limit(limit)

    @errors_translated
    def search(self, f: DeskFilters, limit: int, after: tuple[datetime, int] | None = None) -> DeskPage:
        """One page of the caller's filings, newest first; `next_cursor` when more follow."""
        with self._engine.connect() as conn:
            rows = conn.execute(self.statement(f, limit + 1, after)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            recipients = _recipients(conn, [r.id for r in rows])
        items = [filing_summary(r, recipients[r.id]) for r in rows]
        cursor = encode_desk_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return DeskPage(items, cursor)

    @errors_translated
    def set_archived(self, reference: str, portal: str, user: str, archived: bool, *, actor: str,
                     context: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Archive or unarchive one of the caller's filings, with its audit line, in one transaction.

        Returns:
            The filing's summary afterwards, and whether anything changed (a repeat changes nothing).

        Raises:
            FilingUnknown: not the caller's filing.
            FilingNotSettled: archiving a filing some recipient has not answered.
        """
        action = "filing_archived" if archived else "filing_unarchived"
        with self._writer() as conn, conn.begin():
            row = conn.execute(_visible(portal, user).where(filings.c.reference == reference)).first()
            if row is None:
                raise FilingUnknown(reference)
            if archived and row.archived_at is None and row.state not in _SETTLED:
                raise FilingNotSettled(reference, row.state)
            changed = (row.archived_at is None) == archived
            if changed:
                now = datetime.now(timezone.utc)
                conn.execute(update(filings).where(filings.c.id == row.id)
                             .values(archived_at=now if archived else None))
                append_audit(conn, actor=actor, action=action, subject=reference, outcome="ok",
                             detail={"state": row.state, **context})
                row = conn.execute(_visible(portal, user).where(filings.c.id == row.id)).one()
            recipients = _recipients(conn, [row.id])
        return filing_summary(row, recipients[row.id]), changed
