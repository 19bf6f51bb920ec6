"""Accept a validated filing: plan its deliveries and store everything in one transaction."""

from __future__ import annotations


from lxml import etree

from routing.plan import FilingFacts, plan_deliveries
from routing.routes import RouteTable
from service.ports import AcceptedFiling, NewFiling, Store

__all__ = ["NoRecipients", "accept_filing"]


class NoRecipients(Exception):
    """No route sends this filing anywhere: accepting it would strand it."""


def accept_filing(
    store: Store, routes: RouteTable, root: etree._Element, filing: NewFiling
) -> AcceptedFiling:
    if not any(route.applies_to(root) for route in routes.for_kind(filing.kind)):
        raise NoRecipients(f"no agency is configured to receive a filing of kind {filing.kind!r}")

    def plan(reference: str) -> list:
        facts = FilingFacts(
            reference=reference,
            kind=filing.kind,
            portal=filing.portal,
            declarant_tax_code=filing.declarant_tax_code,
            declarant_role=filing.declarant_role,
            received_at=filing.received_at,
        )
        return plan_deliveries(routes, root, facts)

    return store.accept_filing(filing, plan)


