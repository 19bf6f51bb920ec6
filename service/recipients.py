"""Use cases on one recipient after intake: an agency's late outcome, a resend, a correction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol


from domain.errors import AgencyRejected, DeliveryError
from domain.messages import Receipt
from routing.plan import FilingFacts, PlannedDelivery, plan_correction
from routing.routes import RouteTable
from service.intake import MessageCheck, check_messages
from service.ports import DeliveryView, ParsedFilingView
from service.store_ports import LateOutcomes, RecipientCorrections

__all__ = [
    "CallbackUnreadable",
    "CorrectionRefused",
    "OutcomeReader",
    "correct_recipient",
    "record_callback",
]


class CorrectionRefused(Exception):
    """The corrected filing cannot replace the recipient's message (kind, subject, route)."""


class CallbackUnreadable(Exception):
    """An agency's callback body is not a reply of the operation it names."""


class OutcomeReader(Protocol):
    def read_result(self, operation: str, content_type: str, body: bytes, message_id: str) -> Receipt: ...


def record_callback(
    store: LateOutcomes, readers: Mapping[str, OutcomeReader], agency: str, correlation_id: str,
    content_type: str, body: bytes,
) -> str:
    """Record what an agency POSTed to the hub's callback (AgID NONBLOCK_PUSH).

    Returns:
        "recorded", "duplicate" (already known: a repeat is answered as the first), "conflict"
        (the delivery waits for no callback), "contradiction" (it contradicts the protocol
        number or final decision recorded: kept as an anomaly, nothing else changes) or
        "unknown" (no delivery has that correlation id).

    Raises:
        CallbackUnreadable: the body is not the operation's reply for that message.
    """
    target = store.find_callback_target(agency, correlation_id)
    if target is None or agency not in readers:
        return "unknown"
    reader: Any = readers[agency]
    try:
        # An agency speaking several contract versions reads the callback with the one the
        # delivery was planned with (adapters.factory.VersionedAdapter).
        pick = getattr(reader, "for_version", None)
        if callable(pick) and target.contract_version:
            reader = pick(target.contract_version, target.operation)
        receipt = reader.read_result(target.operation, content_type, body, target.message_id)
    except AgencyRejected as exc:  # the agency refused it, after taking it in charge
        receipt = Receipt(protocol_number="", outcome="RESPINTA", outcome_code=exc.code, outcome_text=exc.text)
    except DeliveryError as exc:
        raise CallbackUnreadable(str(exc)) from exc
    recorded: str = store.record_late_outcome(target.delivery_id, receipt)
    return recorded


def correct_recipient(
    store: RecipientCorrections, routes: RouteTable, parsed: ParsedFilingView, reference: str, portal: str, agency: str,
    *, actor: str, now: datetime | None = None, check: MessageCheck | None = None,
) -> DeliveryView:
    """Replace `agency`'s refused message with one mapped from the corrected filing `parsed`.

    The corrected filing must be of the same kind and subject, and still route to `agency`.
    Only that recipient changes: a NEW message id, linked to the refused message and its
    protocol number.

    Raises:
        CorrectionRefused: as above.
        RecipientMessagesInvalid: the corrected message would still fail the agency's schema
            (checked with `check`); nothing changes.
        RecipientNotFound, NotResendable: from the store.
    """
    route = routes.route(parsed.kind, agency)
    if route is None or not route.applies_to(parsed.root):
        raise CorrectionRefused(f"the corrected filing does not go to {agency}")

    def plan(filing: Mapping[str, Any], corrects: dict[str, str]) -> PlannedDelivery:
        if parsed.kind != filing["kind"]:
            raise CorrectionRefused(f"the correction is a {parsed.kind} filing, not {filing['kind']}")
        if parsed.subject_tax_code != filing["subject_tax_code"]:
            raise CorrectionRefused("the correction is about another subject (tax code)")
        facts = FilingFacts(
            reference=reference,
            kind=parsed.kind,
            portal=filing["portal"],
            declarant_tax_code=parsed.declarant_tax_code,
            declarant_role=parsed.declarant_role,
            received_at=now or datetime.now(timezone.utc),
        )
        planned = plan_correction(route, parsed.root, facts, corrects)
        if check is not None:
            check_messages(routes, parsed.kind, [planned], check)
        return planned

    return store.correct_recipient(reference, portal, agency, plan, actor=actor,
                                   detail={"digest": parsed.digest})
