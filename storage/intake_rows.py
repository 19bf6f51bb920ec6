"""The rows one accepted filing writes: filing, deliveries, outbox jobs and its audit line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.states import DeliveryState, FilingState
from routing.plan import PlannedDelivery
from service.ports import NewFiling
from storage.audit import AuditLine

__all__ = ["audit_line", "delivery_row", "filing_row", "outbox_row"]


def filing_row(filing: NewFiling, now: datetime) -> dict[str, Any]:
    return {
        "kind": filing.kind,
        "portal": filing.portal,
        "state": FilingState.IN_PROGRESS.value,
        "subject_tax_code": filing.subject_tax_code,
        "subject_name": filing.subject_name,
        "declarant_tax_code": filing.declarant_tax_code,
        "declarant_role": filing.declarant_role,
        "document": filing.document,
        "digest": filing.digest,
        "idempotency_key": filing.idempotency_key,
        "request_digest": filing.request_digest,
        "created_at": now,
        "updated_at": now,
        "filed_by": filing.filed_by,
        "responsible_tax_code": filing.responsible_tax_code,
        "authorization": filing.authorization,
    }


def delivery_row(p: PlannedDelivery, filing_id: int, now: datetime) -> dict[str, Any]:
    return {
        "id": p.delivery_id,
        "filing_id": filing_id,
        "agency": p.agency,
        "operation": p.operation,
        "message_id": p.message_id,
        # A delivery that waits for another recipient gets no job until then.
        "state": (DeliveryState.WAITING if p.after else DeliveryState.PENDING).value,
        "content": p.content,
        "attempts": 0,
        "rounds": 0,
        "polls": 0,
        "created_at": now,
        "updated_at": now,
        "depends_on": p.after,
        "on_reject": p.on_reject if p.after else None,
        "handoff": list(p.handoffs) if p.after else None,
        "contract_version": p.contract_version,
    }


def outbox_row(p: PlannedDelivery, epoch: float) -> dict[str, Any]:
    return {"delivery_id": p.delivery_id, "agency": p.agency, "available_at": epoch, "claims": 0,
            "created_at": epoch}


def audit_line(filing: NewFiling, reference: str, planned: list[PlannedDelivery], now: datetime) -> AuditLine:
    return AuditLine(
        at=now,
        actor=filing.filed_by or f"portal:{filing.portal}",
        action="filing_accepted",
        subject=reference,
        outcome="accepted",
        detail={
            "portal": filing.portal,
            "kind": filing.kind,
            "subject": filing.subject_tax_code,
            "declarant": filing.declarant_tax_code,
            "responsible": filing.responsible_tax_code,
            "authorization": filing.authorization,
            "recipients": [p.agency for p in planned],
            "digest": filing.digest,
            **(filing.auth_context or {}),
        },
    )
