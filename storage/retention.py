"""The store's side of retention (`service.retention`): purge a settled filing's payloads.

Removed: the filing document and the subject's name, each recipient's message content, and the
bodies of every attempt (sent and received). Kept: reference, kind, states, tax codes, protocol
numbers, outcomes, the filing's digest. Each filing's purge and its `payload_purged` audit line
commit together; the line carries the SHA-256 of the removed payloads' canonical form, so an
archived copy can still be matched to what the hub held.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, update

from service.desk import SETTLED_FILING_STATES
from service.ops_read import rfc3339, utc
from service.retention import PurgedPayload
from storage.audit import AuditLine, append_audit_lines
from storage.errors import errors_translated
from storage.tables import attempts, deliveries, filings

__all__ = ["RetentionStore", "payload_digest"]

_SETTLED = [s.value for s in SETTLED_FILING_STATES]


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of the payloads' canonical JSON (sorted keys; the document in base64)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _payload(conn: Connection, filing: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the purge removes from one filing, and a description of it without the content."""
    rows = conn.execute(select(deliveries.c.id, deliveries.c.content)
                        .where(deliveries.c.filing_id == filing.id).order_by(deliveries.c.id)).all()
    ids = [r.id for r in rows]
    bodies = conn.execute(
        select(attempts.c.id, attempts.c.delivery_id, attempts.c.request_body, attempts.c.reply_body)
        .where(attempts.c.delivery_id.in_(ids)).order_by(attempts.c.id)
    ).all() if ids else []
    kept_bodies = [b for b in bodies if b.request_body is not None or b.reply_body is not None]
    document = bytes(filing.document or b"")
    payload = {
        "reference": filing.reference,
        "document": base64.b64encode(document).decode(),
        "subjectName": filing.subject_name,
        "messages": {r.id: r.content for r in rows},
        "attempts": {str(b.id): {"delivery": b.delivery_id, "sent": b.request_body, "received": b.reply_body}
                     for b in kept_bodies},
    }
    removed = {"documentBytes": len(document), "subjectName": bool(filing.subject_name), "messages": len(rows),
               "attemptBodies": sum((b.request_body is not None) + (b.reply_body is not None) for b in kept_bodies)}
    return payload, removed


class RetentionStore:
    """Implements `service.retention.PayloadPurger` over the store's engine.

    Args:
        engine: the store's engine (the dry run reads on its own connection).
        writer: the store's write connections (`SqlStore.writer`), queued behind its other writers.
    """

    def __init__(self, engine: Engine, writer: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._writer = writer

    @staticmethod
    def _due(before: datetime, limit: int) -> Any:
        query = (select(filings.c.id, filings.c.reference, filings.c.document, filings.c.subject_name,
                        filings.c.updated_at)
                 .where(filings.c.state.in_(_SETTLED), filings.c.updated_at < before.astimezone(timezone.utc),
                        filings.c.payload_purged_at.is_(None))
                 .order_by(filings.c.updated_at, filings.c.id))
        return query.limit(limit) if limit else query

    @errors_translated
    def purge_settled_payloads(self, before: datetime, *, limit: int, dry_run: bool, actor: str,
                               retention_days: int) -> list[PurgedPayload]:
        """Purge up to `limit` filings settled before `before` (oldest first), in one transaction.

        Args:
            limit: how many at most (0: every one; only for a dry run).
            dry_run: list what would be purged, change nothing, write no audit line.
            actor: whom the audit lines name.
            retention_days: the rule applied, for the audit lines.
        """
        if dry_run:
            with self._engine.connect() as conn:
                return [PurgedPayload(f.reference, utc(f.updated_at) or before, removed, payload_digest(payload))
                        for f in conn.execute(self._due(before, limit)).all()
                        for payload, removed in [_payload(conn, f)]]
        now = datetime.now(timezone.utc)
        done: list[PurgedPayload] = []
        lines: list[AuditLine] = []
        with self._writer() as conn, conn.begin():
            for f in conn.execute(self._due(before, limit)).all():
                payload, removed = _payload(conn, f)
                digest = payload_digest(payload)
                settled = utc(f.updated_at) or before
                # Still settled and unpurged (a resend may have reopened it meanwhile): else skip.
                marked = conn.execute(update(filings)
                                      .where(filings.c.id == f.id, filings.c.state.in_(_SETTLED),
                                             filings.c.payload_purged_at.is_(None))
                                      .values(document=b"", subject_name="", payload_purged_at=now))
                if marked.rowcount != 1:
                    continue
                conn.execute(update(deliveries).where(deliveries.c.filing_id == f.id).values(content={}))
                if removed["attemptBodies"]:
                    conn.execute(update(attempts)
                                 .where(attempts.c.delivery_id.in_(select(deliveries.c.id)
                                                                   .where(deliveries.c.filing_id == f.id)))
                                 .values(request_body=None, reply_body=None))
                lines.append(AuditLine(now, actor, "payload_purged", f.reference, "ok",
                                       {"removed": removed, "sha256": digest, "settledAt": rfc3339(settled),
                                        "retentionDays": retention_days}))
                done.append(PurgedPayload(f.reference, settled, removed, digest))
            append_audit_lines(conn, lines)
        return done
