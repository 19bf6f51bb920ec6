"""The operator API's reads: per-agency summaries, search, a filing's full history, problems.

Read-only SQLAlchemy Core over the store's engine. Every query is bounded (a page, a group
count) and the common filters use indexes (0008_ops_indexes), so an operator's search never
scans every delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, RowMapping, and_, case, func, or_, select
from sqlalchemy.sql import Select

from domain.states import OPEN_DELIVERY_STATES, DeliveryState
from domain.timestamps import agency_instant
from service.ops_read import SearchFilters, SearchPage, encode_cursor, epoch_rfc3339, rfc3339, utc
from storage.anomalies import filing_anomalies
from storage.delivery_tables import agency_status, anomalies, filing_events
from storage.errors import errors_translated
from storage.tables import attempts, deliveries, filings

__all__ = ["OpsQueries"]

_S = DeliveryState
#: States an operator watches per agency (the summary's counts).
SUMMARY_STATES = (_S.PENDING, _S.RETRYING, _S.ACKNOWLEDGED, _S.WAITING, _S.HELD, _S.UNDELIVERABLE)
#: States that are an open problem: the hub cannot finish them on its own, or keeps failing.
PROBLEM_STATES = (_S.RETRYING, _S.UNDELIVERABLE, _S.HELD)
_OPEN = [s.value for s in OPEN_DELIVERY_STATES]
#: The window of the summary's throughput and success ratio.
RECENT = timedelta(hours=1)


#: What a search row shows of a delivery (not its message content: rows stay small).
_SEARCH_DELIVERY_COLUMNS = tuple(deliveries.c[name] for name in (
    "id", "filing_id", "agency", "operation", "message_id", "state", "protocol_number", "outcome",
    "outcome_code", "attempts", "last_error", "updated_at"))


def _search_row(r: Any) -> dict[str, Any]:
    return {
        "reference": r.reference, "kind": r.kind, "portal": r.portal, "filingState": r.filing_state,
        "subjectTaxCode": r.subject_tax_code, "createdAt": rfc3339(r.filing_created_at),
        "agency": r.agency, "operation": r.operation, "deliveryId": r.id, "messageId": r.message_id,
        "state": r.state, "protocolNumber": r.protocol_number, "outcome": r.outcome,
        "outcomeCode": r.outcome_code, "attempts": r.attempts, "lastError": r.last_error,
        "updatedAt": rfc3339(r.updated_at),
    }


@dataclass
class OpsQueries:
    """The operator API's read model over one engine.

    Args:
        engine: the store's engine (reads only).
        agencies: the configured agencies: each has a summary line even with no deliveries.
    """

    engine: Engine
    agencies: Iterable[str] = field(default_factory=tuple)

    # -- per-agency summary --------------------------------------------------------------------
    @errors_translated
    def agency_summaries(self, now: datetime) -> list[dict[str, Any]]:
        """One line per agency: counts per watched state, anomalies, the circuit, the oldest
        open delivery's age and the last hour's deliveries and success ratio."""
        watched = [s.value for s in SUMMARY_STATES]
        since = now - RECENT
        origin = func.coalesce(deliveries.c.schedule_origin, deliveries.c.created_at)
        with self.engine.connect() as conn:
            counts = conn.execute(
                select(deliveries.c.agency, deliveries.c.state, func.count())
                .where(deliveries.c.state.in_(watched), deliveries.c.superseded_by.is_(None))
                .group_by(deliveries.c.agency, deliveries.c.state)
            ).all()
            oldest: dict[str, datetime] = {agency: at for agency, at in conn.execute(
                select(deliveries.c.agency, func.min(origin))
                .where(deliveries.c.state.in_(_OPEN)).group_by(deliveries.c.agency)
            )}
            flagged: dict[str, int] = {agency: count for agency, count in conn.execute(
                select(anomalies.c.agency, func.count()).group_by(anomalies.c.agency)
            )}
            recent = conn.execute(
                select(deliveries.c.agency, func.count(func.distinct(attempts.c.delivery_id)), func.count(),
                       func.sum(case((attempts.c.result == "ok", 1), else_=0)))
                .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
                .where(attempts.c.started_at >= since).group_by(deliveries.c.agency)
            ).all()
            circuits = {r.agency: r for r in conn.execute(select(agency_status)).all()}
        by_agency: dict[str, dict[str, int]] = {}
        for agency, state, count in counts:
            by_agency.setdefault(agency, {})[state] = count
        recent_by = {r[0]: (r[1], r[2], r[3] or 0) for r in recent}
        names = sorted(set(self.agencies) | by_agency.keys() | oldest.keys() | circuits.keys() | flagged.keys())
        lines = []
        for name in names:
            states = by_agency.get(name, {})
            first = utc(oldest.get(name))
            touched, tries, ok = recent_by.get(name, (0, 0, 0))
            status = circuits.get(name)
            lines.append({
                "agency": name,
                "counts": {s: states.get(s, 0) for s in watched} | {"anomalies": flagged.get(name, 0)},
                "circuit": _circuit(status),
                "oldestOpenAgeSeconds": round((now - first).total_seconds(), 3) if first else None,
                "lastHour": {"deliveries": touched, "attempts": tries,
                             "successRatio": round(ok / tries, 4) if tries else None},
            })
        return lines

    # -- search ---------------------------------------------------------------------------------
    def _search_query(self, f: SearchFilters) -> Select[Any]:
        query = (
            select(*_SEARCH_DELIVERY_COLUMNS, filings.c.reference, filings.c.kind, filings.c.portal,
                   filings.c.state.label("filing_state"), filings.c.subject_tax_code,
                   filings.c.created_at.label("filing_created_at"), filings.c.id.label("filing_pk"))
            .join(filings, filings.c.id == deliveries.c.filing_id)
        )
        conditions = []
        if f.reference is not None:
            conditions.append(filings.c.reference == f.reference)
        if f.state is not None:
            conditions.append(deliveries.c.state == f.state)
        if f.filing_state is not None:
            conditions.append(filings.c.state == f.filing_state)
        if f.agency is not None:
            conditions.append(deliveries.c.agency == f.agency)
        if f.kind is not None:
            conditions.append(filings.c.kind == f.kind)
        if f.subject_tax_code is not None:
            conditions.append(filings.c.subject_tax_code == f.subject_tax_code)
        if f.portal is not None:
            conditions.append(filings.c.portal == f.portal)
        if f.protocol_number is not None:
            conditions.append(deliveries.c.protocol_number == f.protocol_number)
        if f.message_id is not None:
            conditions.append(deliveries.c.message_id == f.message_id)
        if f.created_from is not None:
            conditions.append(filings.c.created_at >= f.created_from.astimezone(timezone.utc))
        if f.created_to is not None:
            conditions.append(filings.c.created_at < f.created_to.astimezone(timezone.utc))
        # Newest first: filings by id (assigned in acceptance order), then their deliveries.
        return query.where(*conditions).order_by(deliveries.c.filing_id.desc(), deliveries.c.id.desc())

    @staticmethod
    def _after(query: Select[Any], position: tuple[int, str] | None) -> Select[Any]:
        if position is None:
            return query
        filing_id, delivery_id = position
        return query.where(or_(deliveries.c.filing_id < filing_id,
                               and_(deliveries.c.filing_id == filing_id, deliveries.c.id < delivery_id)))

    @errors_translated
    def search(self, f: SearchFilters, limit: int, after: tuple[int, str] | None = None) -> SearchPage:
        """One page of deliveries (with their filing), newest filing first.

        Keyset pagination on (filing id, delivery id): rows that arrive while an operator pages
        appear before the first page, never inside the pages, so none is repeated or skipped.
        """
        query = self._after(self._search_query(f), after).limit(limit + 1)
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
        more = len(found) > limit
        found = found[:limit]
        rows = [_search_row(r) for r in found]
        cursor = encode_cursor(found[-1].filing_pk, found[-1].id) if more and found else None
        return SearchPage(rows, cursor)

    def search_all(self, f: SearchFilters, after: tuple[int, str] | None = None, *,
                   batch: int = 500, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every matching row, read a batch at a time (the CSV export streams them)."""
        given = 0
        while limit is None or given < limit:
            size = batch if limit is None else min(batch, limit - given)
            query = self._after(self._search_query(f), after).limit(size)
            with self.engine.connect() as conn:
                found = conn.execute(query).all()
            for r in found:
                yield _search_row(r)
            given += len(found)
            if len(found) < size:
                return
            after = (found[-1].filing_pk, found[-1].id)

    # -- a filing's full history ----------------------------------------------------------------
    @errors_translated
    def filing_detail(self, reference: str) -> dict[str, Any] | None:
        """The filing, every recipient with its attempts, message and receipt, anomalies and
        events; None when no filing has that reference."""
        with self.engine.connect() as conn:
            filing = conn.execute(select(filings).where(filings.c.reference == reference)).first()
            if filing is None:
                return None
            rows = conn.execute(
                select(deliveries).where(deliveries.c.filing_id == filing.id)
                .order_by(deliveries.c.created_at, deliveries.c.id)
            ).all()
            ids = [r.id for r in rows]
            tries: dict[str, list[dict[str, Any]]] = {}
            for a in conn.execute(select(attempts).where(attempts.c.delivery_id.in_(ids))
                                  .order_by(attempts.c.started_at, attempts.c.id)) if ids else ():
                tries.setdefault(a.delivery_id, []).append(_attempt_json(a))
            flagged = filing_anomalies(conn, filing.id, _anomaly_detail)
            events = [
                {"id": e.id, "seq": e.seq, "type": e.type, "payload": e.payload, "createdAt": rfc3339(e.created_at),
                 "notifiedAt": epoch_rfc3339(e.delivered_at), "notifyAttempts": e.attempts,
                 "notifyError": e.last_error}
                for e in conn.execute(select(filing_events).where(filing_events.c.filing_id == filing.id)
                                      .order_by(filing_events.c.seq))
            ]
        return {
            "reference": filing.reference, "kind": filing.kind, "portal": filing.portal, "state": filing.state,
            "subject": {"taxCode": filing.subject_tax_code, "name": filing.subject_name},
            "declarant": {"taxCode": filing.declarant_tax_code, "role": filing.declarant_role},
            "filedBy": filing.filed_by, "responsibleTaxCode": filing.responsible_tax_code,
            "digest": filing.digest, "createdAt": rfc3339(filing.created_at), "updatedAt": rfc3339(filing.updated_at),
            # The portal's archive and retention (0011): a purged filing's messages and bodies are gone.
            "archivedAt": rfc3339(filing.archived_at), "payloadPurgedAt": rfc3339(filing.payload_purged_at),
            "recipients": [_recipient_detail(r, tries.get(r.id, []), flagged.get(r.id, [])) for r in rows],
            "events": events,
        }

    # -- problems ---------------------------------------------------------------------------------
    @errors_translated
    def problems(self, since: datetime | None = None, *, max_groups: int = 500) -> list[dict[str, Any]]:
        """Open problems grouped by cause: agency, error class and code of the last attempt
        (`result` for attempts recorded before the class was kept).

        A held recipient made no attempt of its own: its cause is the agency it waits for.
        """
        last = (select(attempts.c.delivery_id, func.max(attempts.c.id).label("last_id"))
                .group_by(attempts.c.delivery_id).subquery())
        query = (
            select(deliveries.c.id, deliveries.c.agency, deliveries.c.state, deliveries.c.depends_on,
                   deliveries.c.last_error, deliveries.c.updated_at, filings.c.reference,
                   attempts.c.result, attempts.c.error_class, attempts.c.error_code)
            .join(filings, filings.c.id == deliveries.c.filing_id)
            .outerjoin(last, last.c.delivery_id == deliveries.c.id)
            .outerjoin(attempts, attempts.c.id == last.c.last_id)
            .where(deliveries.c.state.in_([s.value for s in PROBLEM_STATES]), deliveries.c.superseded_by.is_(None))
        )
        if since is not None:
            query = query.where(deliveries.c.updated_at >= since.astimezone(timezone.utc))
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                if r.state == _S.HELD.value:
                    error_class, code = "held", f"waits-for:{r.depends_on or '-'}"
                else:
                    error_class, code = r.error_class or r.result or "none", r.error_code or "-"
                key = (r.agency, error_class, code)
                group = groups.get(key)
                updated = utc(r.updated_at)
                if group is None:
                    if len(groups) >= max_groups:
                        continue
                    group = groups[key] = {"agency": r.agency, "errorClass": error_class, "code": code,
                                           "count": 0, "states": {}, "_newest": updated,
                                           "newestReference": r.reference, "newestError": r.last_error}
                group["count"] += 1
                group["states"][r.state] = group["states"].get(r.state, 0) + 1
                if updated is not None and (group["_newest"] is None or updated > group["_newest"]):
                    group.update(_newest=updated, newestReference=r.reference, newestError=r.last_error)
        found = sorted(groups.values(), key=lambda g: (-g["count"], g["agency"], g["errorClass"], g["code"]))
        for g in found:
            g["newestAt"] = rfc3339(g.pop("_newest"))
        return found


def _circuit(status: Any) -> dict[str, Any]:
    if status is None:
        return {"state": "closed", "since": None, "failures": 0, "reportedBy": None, "reportedAt": None}
    since = epoch_rfc3339(status.opened_at) if status.circuit != "closed" else rfc3339(status.updated_at)
    return {"state": status.circuit, "since": since, "failures": status.failures,
            "openUntil": epoch_rfc3339(status.open_until), "throttledUntil": epoch_rfc3339(status.throttled_until),
            "reportedBy": status.reported_by, "reportedAt": rfc3339(status.updated_at)}


def _anomaly_detail(a: RowMapping) -> dict[str, Any]:
    return {"kind": a["kind"], "detail": a["detail"], "createdAt": rfc3339(a["created_at"])}


def _attempt_json(a: Any) -> dict[str, Any]:
    # `result` says what the hub did (ok, transient: retried, permanent, invalid); `errorClass`
    # is the delivery error's class, `errorCode` the agency's fault code (or HTTPnnn), and
    # `httpStatus` the agency's answer when there was one. Attempts recorded before 0008 have
    # no class or status.
    return {"number": a.number, "startedAt": rfc3339(a.started_at), "durationMs": round(a.duration_ms, 3),
            "result": a.result, "errorClass": a.error_class, "httpStatus": a.http_status,
            "errorCode": a.error_code, "errorText": a.error_text, "worker": a.worker,
            "sent": a.request_body, "received": a.reply_body}


def _recipient_detail(r: Any, tries: Sequence[Mapping[str, Any]], flagged: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "deliveryId": r.id, "agency": r.agency, "operation": r.operation, "messageId": r.message_id,
        "state": r.state, "contractVersion": r.contract_version,
        # The message as the hub keeps it: the agency message's content, mapped and checked
        # against the agency schema at intake; the adapter renders it (SOAP/REST) unchanged.
        "message": {"messageId": r.message_id, "operation": r.operation, "content": r.content},
        # The agency's receipt: what it answered (protocol number, decision, references).
        "receipt": {"protocolNumber": r.protocol_number, "protocolledAt": agency_instant(r.protocolled_at),
                    "outcome": r.outcome, "outcomeCode": r.outcome_code, "outcomeText": r.outcome_text,
                    "references": r.references or {}, "correlationId": r.correlation_id,
                    "acknowledgedAt": rfc3339(r.acknowledged_at)},
        "attemptCount": r.attempts, "rounds": r.rounds, "polls": r.polls, "lastError": r.last_error,
        "nextAttemptAt": epoch_rfc3339(r.next_attempt_at), "waitsFor": r.depends_on,
        "corrects": r.corrects_delivery_id, "supersededBy": r.superseded_by,
        "createdAt": rfc3339(r.created_at), "updatedAt": rfc3339(r.updated_at),
        "attempts": list(tries), "anomalies": flagged,
    }
