"""Plan the deliveries of one filing: one normalized message per recipient."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from collections.abc import Mapping
from typing import Any

from lxml import etree

from domain.timestamps import rfc3339
from routing.routes import Route, RouteTable

__all__ = ["FilingFacts", "PlannedDelivery", "assign_reference", "fill_handoffs", "handoff_sources", "plan_correction",
           "plan_deliveries"]


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
    after: str | None = None  # waits for this agency's outcome (only if it is in the plan)
    on_reject: str = "hold"
    handoffs: tuple[dict[str, Any], ...] = ()  # Handoff.to_json() of each field to fill later
    contract_version: str | None = None  # the agency contract version it was planned with


def _message_header(
    facts: FilingFacts, message_id: str, operation: str, corrects: dict[str, str] | None = None
) -> dict[str, Any]:
    header = {
        "messageId": message_id,
        "filingReference": facts.reference,
        "filingKind": facts.kind,
        "operation": operation,
        "portal": facts.portal,
        "declarant": {"taxCode": facts.declarant_tax_code, "role": facts.declarant_role},
        "sentAt": rfc3339(facts.received_at.replace(microsecond=0)),
    }
    if corrects:
        header["corrects"] = dict(corrects)
    return header


def _planned(
    route: Route, filing_root: etree._Element, facts: FilingFacts, waits: bool,
    corrects: dict[str, str] | None = None,
) -> PlannedDelivery:
    message_id = uuid.uuid4().hex
    content: dict[str, Any] = {}
    if route.with_envelope:  # a third-party contract has no place for our header
        content["messageHeader"] = _message_header(facts, message_id, route.operation, corrects)
    content.update(route.field_map.apply(filing_root) or {})
    return PlannedDelivery(
        delivery_id=uuid.uuid4().hex,
        message_id=message_id,
        agency=route.agency,
        operation=route.operation,
        content=content,
        after=route.after if waits else None,
        on_reject=route.on_reject,
        handoffs=tuple(h.to_json() for h in route.handoffs) if waits else (),
        contract_version=route.contract_version,
    )


def assign_reference(planned: PlannedDelivery, reference: str) -> PlannedDelivery:
    """`planned` for the filing `reference`: a delivery planned (and checked) before the store
    minted the reference carries it in its header, everything else unchanged."""
    header = planned.content.get("messageHeader")
    if not isinstance(header, dict):
        return planned
    return replace(planned, content={**planned.content, "messageHeader": {**header, "filingReference": reference}})


#: Hand-off names that take the predecessor's receipt itself rather than one of its references
#: (`{ from_recipient = "cciaa", reference = "protocol_number" }`).
RECEIPT_HANDOFFS = {"protocol_number": "protocol_number"}


def handoff_sources(predecessor: Mapping[str, Any]) -> dict[str, str]:
    """What a predecessor's receipt can hand over: its references, and its protocol number
    and date under the reserved names of `RECEIPT_HANDOFFS` (a reference of the same name, if
    an agency gave one, is shadowed: the receipt's own field is what the name says)."""
    sources = {str(k): str(v) for k, v in (predecessor.get("references") or {}).items()}
    for name, column in RECEIPT_HANDOFFS.items():
        value = predecessor.get(column)
        if value:
            sources[name] = str(value)
    return sources


def fill_handoffs(
    content: dict[str, Any], handoffs: Any, references: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `content` with each hand-off field set from the predecessor's `references`;
    also the names of the references the predecessor did not give (those fields stay out)."""
    filled = dict(content)
    missing: list[str] = []
    for handoff in handoffs or ():
        value = references.get(handoff["reference"])
        if value is None:
            missing.append(handoff["reference"])
            continue
        node = filled
        *parents, leaf = handoff["path"]
        for name in parents:
            node[name] = dict(node.get(name) or {})
            node = node[name]
        node[leaf] = value
    return filled, missing


def plan_deliveries(
    table: RouteTable, filing_root: etree._Element, facts: FilingFacts
) -> list[PlannedDelivery]:
    """Every route of the filing's kind whose condition holds gives one delivery.

    The message id is minted here, once, and travels with the stored message: retries and
    redeliveries send the same id so the agency can drop a duplicate. A delivery that waits
    for another recipient gets its id here too: its hand-off fields are filled into the stored
    message when it is released, before it is ever sent, so the id still names one content.
    """
    routes = table.applicable(facts.kind, filing_root)
    planned_agencies = {r.agency for r in routes}
    # A route waits for its `after` agency only when that agency receives this filing too.
    return [_planned(r, filing_root, facts, waits=r.after in planned_agencies) for r in routes]


def plan_correction(
    route: Route, filing_root: etree._Element, facts: FilingFacts, corrects: dict[str, str]
) -> PlannedDelivery:
    """A corrected message for one recipient: a NEW message id (the agency has refused or
    never accepted the old one, and must not take the new one for a repeat), whose header
    names the message it corrects and, when it had one, its protocol number."""
    return _planned(route, filing_root, facts, waits=route.after is not None, corrects=corrects)
