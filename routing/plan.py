"""Plan the deliveries of one filing: one normalized message per recipient."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from routing.routes import RouteTable

__all__ = ["FilingFacts", "PlannedDelivery", "plan_deliveries"]


@dataclass(frozen=True, slots=True)
class FilingFacts:
    """What the envelope needs to know about the filing, besides its XML."""

    reference: str
    kind: str
    portal: str
    declarant_tax_code: str
    declarant_role: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    delivery_id: str
    message_id: str
    agency: str
    operation: str
    content: dict[str, Any]


def _message_header(facts: FilingFacts, message_id: str, operation: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "filingReference": facts.reference,
        "filingKind": facts.kind,
        "operation": operation,
        "portal": facts.portal,
        "declarant": {"taxCode": facts.declarant_tax_code, "role": facts.declarant_role},
        "sentAt": facts.received_at.isoformat(timespec="seconds"),
    }


def plan_deliveries(
    table: RouteTable, filing_root: etree._Element, facts: FilingFacts
) -> list[PlannedDelivery]:
    """Every route of the filing's kind whose condition holds gives one delivery.

    The message id is minted here, once, and travels with the stored message: retries and
    redeliveries send the same id so the agency can drop a duplicate.
    """
    planned: list[PlannedDelivery] = []
    for route in table.for_kind(facts.kind):
        if not route.applies_to(filing_root):
            continue
        message_id = uuid.uuid4().hex
        content = {"messageHeader": _message_header(facts, message_id, route.operation)}
        content.update(route.field_map.apply(filing_root) or {})
        planned.append(
            PlannedDelivery(
                delivery_id=uuid.uuid4().hex,
                message_id=message_id,
                agency=route.agency,
                operation=route.operation,
                content=content,
            )
        )
    return planned
