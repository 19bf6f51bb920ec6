"""Accept a validated filing: plan its deliveries, check each recipient's message against its
agency's schema, and store everything in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from lxml import etree

from domain.intake import MessageProblem, RecipientMessagesInvalid
from routing.plan import FilingFacts, PlannedDelivery, assign_reference, plan_deliveries
from routing.routes import RouteTable
from service.ports import AcceptedFiling, NewFiling
from service.store_ports import FilingIntake, IntakeItem

__all__ = ["MessageCheck", "NoRecipients", "accept_filing", "check_messages", "plan_filing"]

#: The reference a message carries while it is checked, before the store mints the real one
#: (same shape, so it passes the same header pattern).
PLANNING_REFERENCE = "CRV-2000-000000"


class NoRecipients(Exception):
    """No route sends this filing anywhere: accepting it would strand it."""


class MessageCheck(Protocol):
    """Validates one recipient's message as its adapter will (adapters.message_check)."""

    def problem(self, agency: str, version: str | None, operation: str,
                content: Mapping[str, Any]) -> MessageProblem | None: ...


def check_messages(routes: RouteTable, kind: str, planned: list[PlannedDelivery], check: MessageCheck) -> None:
    """Validate each planned message once against its agency's schema.

    Hand-off fields (`from_recipient`) are not in a message until its predecessor answers:
    they are left out here, as at start-up (service.contracts_check).

    Raises:
        RecipientMessagesInvalid: naming, for each failing recipient, the agency, the field,
            why, and the filing field it is mapped from.
    """
    problems: list[MessageProblem] = []
    for p in planned:
        problem = check.problem(p.agency, p.contract_version, p.operation, p.content)
        if problem is None:
            continue
        route = next((r for r in routes.for_kind(kind) if r.agency == p.agency and r.operation == p.operation), None)
        source = route.field_map.source_of(tuple(problem.field.split("."))) if route and problem.field else None
        problems.append(replace(problem, filing_field=source))
    if problems:
        raise RecipientMessagesInvalid(problems)


def plan_filing(
    routes: RouteTable, root: etree._Element, filing: NewFiling, check: MessageCheck | None = None,
) -> IntakeItem:
    """Plan and check (with `check`) one filing's deliveries: what the store is to accept.

    Raises:
        NoRecipients: no route takes it.
        RecipientMessagesInvalid: a recipient's message would fail its agency's schema.
    """
    facts = FilingFacts(
        reference=PLANNING_REFERENCE,
        kind=filing.kind,
        portal=filing.portal,
        declarant_tax_code=filing.declarant_tax_code,
        declarant_role=filing.declarant_role,
        received_at=filing.received_at,
    )
    # Planned once, before the store's transaction: the messages checked are the ones stored.
    planned = plan_deliveries(routes, root, facts)
    if not planned:  # no route of its kind, or none whose condition holds
        raise NoRecipients(f"no agency is configured to receive a filing of kind {filing.kind!r}")
    if check is not None:
        check_messages(routes, filing.kind, planned, check)
    return filing, lambda reference: [assign_reference(p, reference) for p in planned]


def accept_filing(
    store: FilingIntake, routes: RouteTable, root: etree._Element, filing: NewFiling,
    check: MessageCheck | None = None,
) -> AcceptedFiling:
    """Plan, check (with `check`) and store one filing.

    Raises:
        NoRecipients: no route takes it.
        RecipientMessagesInvalid: a recipient's message would fail its agency's schema;
            nothing is stored.
    """
    return store.accept_filing(*plan_filing(routes, root, filing, check))
