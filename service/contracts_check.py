"""Routes against contracts: resolve each route's contract version, and map sample filings
through every route into a message its agency's contract accepts, before anything is sent.

Start-up runs this on the configured routes (a broken mapping stops the hub naming the route,
the mapping file and the violation, instead of failing a delivery at 3 a.m.); `hub.py contracts
check` runs it too, after loading every declared WSDL and OpenAPI document.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from lxml import etree

from domain.errors import DeliveryError
from domain.messages import OutgoingMessage
from routing.plan import FilingFacts, plan_deliveries
from routing.routes import Route, RouteTable

__all__ = [
    "CheckReport",
    "ContractBook",
    "ContractCheckFailed",
    "Problem",
    "SampleFiling",
    "check_routes",
    "resolve_routes",
]

#: The reference sample messages carry: a valid one that no real filing will ever have.
SAMPLE_REFERENCE = "CRV-2000-000000"


class ContractBook(Protocol):
    """The declared contracts (adapters.factory.ContractSet)."""

    def spec(self, agency: str, version: str | None = None) -> Any:
        """Raises ValueError (ContractError) for an unknown agency or version."""
        ...

    def resolve_operation(self, spec: Any, operation: str) -> None:
        """Raises ValueError naming the file and the operation."""
        ...

    def build_message(self, spec: Any, message: OutgoingMessage) -> bytes:
        """Raises ValueError (contract) or DeliveryError (the message fails the contract)."""
        ...


class SampleFiling(Protocol):
    """A parsed example filing (schemas.filing.ParsedFiling) and its file name; read-only,
    so that frozen dataclasses (schemas.samples.NamedSample) satisfy it."""

    @property
    def name(self) -> str: ...
    @property
    def root(self) -> etree._Element: ...
    @property
    def kind(self) -> str: ...
    @property
    def declarant_tax_code(self) -> str: ...
    @property
    def declarant_role(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that stops a route from working, located."""

    where: str  #: the route (`routes.toml route #3`) or the contract (`inps/v1`)
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass
class CheckReport:
    """What was checked, and what failed."""

    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  #: one line per route and sample

    @property
    def ok(self) -> bool:
        return not self.problems


class ContractCheckFailed(RuntimeError):
    """Routes that cannot work with their contracts; the message lists every problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"routes do not fit their agency contracts:\n  {lines}")


def resolve_routes(table: RouteTable, book: ContractBook, *,
                   collect: list[Problem] | None = None) -> RouteTable:
    """The table with each route's contract version fixed (default: the agency's current
    one) and its envelope decided by the contract.

    Args:
        collect: when given, unresolvable routes are left out and their problems added here
            instead of raised (`hub.py contracts check` reports everything at once).

    Raises:
        ContractCheckFailed: a route names an agency or version that no agency file declares.
    """
    problems: list[Problem] = []
    resolved: dict[str, tuple[Route, ...]] = {}
    for kind, routes in table.routes_by_kind.items():
        fixed = []
        for route in routes:
            try:
                spec = book.spec(route.agency, route.contract_version)
            except ValueError as exc:
                problems.append(Problem(route.where or f"{kind}/{route.agency}", str(exc)))
                continue
            fixed.append(dataclasses.replace(route, contract_version=spec.version,
                                             with_envelope=spec.envelope))
        resolved[kind] = tuple(fixed)
    if problems and collect is not None:
        collect.extend(problems)
    elif problems:
        raise ContractCheckFailed(problems)
    return RouteTable(resolved)


def _facts(kind: str, sample: SampleFiling) -> FilingFacts:
    return FilingFacts(
        reference=SAMPLE_REFERENCE, kind=kind, portal="contracts-check",
        declarant_tax_code=sample.declarant_tax_code, declarant_role=sample.declarant_role,
        received_at=datetime.now(UTC).replace(microsecond=0),
    )


def _check_route(route: Route, book: ContractBook, samples: Sequence[SampleFiling],
                 report: CheckReport) -> None:
    where = route.where or f"{route.kind}/{route.agency}"
    try:
        spec = book.spec(route.agency, route.contract_version)
        book.resolve_operation(spec, route.operation)
    except ValueError as exc:
        report.problems.append(Problem(where, str(exc)))
        return
    usable = [s for s in samples if s.kind == route.kind and route.applies_to(s.root)]
    if not usable:
        report.problems.append(Problem(where, f"no sample filing of kind {route.kind!r} meets the "
                                              f"route's condition: its mapping "
                                              f"{route.mapping_file} cannot be checked"))
        return
    single = RouteTable({route.kind: (route,)})
    for sample in usable:
        planned = plan_deliveries(single, sample.root, _facts(route.kind, sample))
        if not planned:  # pragma: no cover - the condition held above
            continue
        p = planned[0]
        message = OutgoingMessage(p.message_id, p.delivery_id, SAMPLE_REFERENCE, p.agency,
                                  p.operation, p.content, spec.version)
        try:
            book.build_message(spec, message)
        except (DeliveryError, ValueError) as exc:
            text = exc.text if isinstance(exc, DeliveryError) else str(exc)
            report.problems.append(Problem(
                where, f"mapping {route.mapping_file} on sample {sample.name} does not fit "
                       f"{spec.ref} {route.operation}: {text}"))
            continue
        report.checked.append(f"{where}: {route.kind} → {spec.ref} {route.operation} "
                              f"({route.mapping_file}, {sample.name}): ok")


def check_routes(table: RouteTable, book: ContractBook,
                 samples: Sequence[SampleFiling]) -> CheckReport:
    """Resolve every route's operation in its contract and build and validate, without
    sending, the message each applicable sample filing maps to.

    Hand-off fields (`from_recipient`) are left out, as they are until release.
    """
    report = CheckReport()
    for routes in table.routes_by_kind.values():
        for route in routes:
            _check_route(route, book, samples, report)
    return report
