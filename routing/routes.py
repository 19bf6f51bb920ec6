"""The route table: which agency gets which filing kind, under which condition, how mapped."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from domain.identity import IdentityError, parse_min_level
from routing.mapping import FILING_NAMESPACES, FieldMap, Handoff, MappingError, compile_field_map

__all__ = ["ON_REJECT_POLICIES", "Route", "RouteTable", "load_route_table", "MappingError"]

#: What a waiting delivery does when the recipient it waits for is rejected.
ON_REJECT_POLICIES = frozenset({"hold", "cancel"})


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    agency: str
    operation: str
    mapping_name: str
    field_map: FieldMap
    condition_text: str | None
    condition: etree.XPath | None
    after: str | None = None  # the agency whose outcome this delivery waits for
    on_reject: str = "hold"  # hold | cancel, when that agency rejects
    handoffs: tuple[Handoff, ...] = ()
    #: The lowest assurance level a user may file this route with (domain.identity: 1..3).
    min_level: int = 1
    #: The agency contract version this route speaks (`contract = "inps/v1"`); None until
    #: bootstrap resolves it to the agency's current version (routing.resolve_contracts).
    contract_version: str | None = None
    #: Whether the hub adds the crv:messageHeader (contracts with envelope = "none" do not).
    with_envelope: bool = True
    where: str = ""  #: `routes.toml route #3`, for messages
    mapping_file: str = ""  #: the mapping's file name, for messages

    def applies_to(self, filing_root: etree._Element) -> bool:
        return self.condition is None or bool(self.condition(filing_root))


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes_by_kind: dict[str, tuple[Route, ...]]

    def for_kind(self, kind: str) -> tuple[Route, ...]:
        return self.routes_by_kind.get(kind, ())

    @property
    def agencies(self) -> frozenset[str]:
        return frozenset(r.agency for routes in self.routes_by_kind.values() for r in routes)

    def route(self, kind: str, agency: str) -> Route | None:
        """The route of `kind` to `agency` (the first, if several)."""
        return next((r for r in self.for_kind(kind) if r.agency == agency), None)


def _check_ordering(kind: str, routes: list[Route], where: str) -> None:
    """`after` must name another agency of the same kind, without cycles; hand-offs may only
    read from the agency waited for."""
    agencies = {r.agency for r in routes}
    waits = {r.agency: r.after for r in routes if r.after}
    for route in routes:
        if route.after is not None and (route.after not in agencies or route.after == route.agency):
            raise MappingError(f"{where}: {kind}/{route.agency}: after = {route.after!r} is not "
                               f"another recipient of {kind}")
        for handoff in route.handoffs:
            if handoff.agency != route.after:
                raise MappingError(f"{where}: {kind}/{route.agency}: from_recipient "
                                   f"{handoff.agency!r} needs after = {handoff.agency!r}")
    for start in waits:
        seen, agency = {start}, waits.get(start)
        while agency is not None:
            if agency in seen:
                raise MappingError(f"{where}: {kind}: `after` forms a cycle through {agency}")
            seen.add(agency)
            agency = waits.get(agency)


def _with_contract(raw: dict, where: str) -> tuple[dict, str | None]:
    """`contract = "agency/version"` names the agency too; `agency` may then be left out."""
    contract = raw.get("contract")
    if contract is None:
        return raw, None
    if not isinstance(contract, str) or not contract.strip():
        raise MappingError(f"{where}: contract must be \"agency/version\", e.g. \"inps/v1\"")
    agency, _, version = contract.strip().partition("/")
    if raw.get("agency", agency) != agency:
        raise MappingError(f"{where}: contract {contract!r} belongs to {agency!r}, "
                           f"not to agency {raw['agency']!r}")
    return {**raw, "agency": agency}, version or None


def load_route_table(routes_file: Path, mappings_dir: Path) -> RouteTable:
    """Load and compile the routes and their mappings; any error names the file and field."""
    with routes_file.open("rb") as fh:
        data = tomllib.load(fh)
    field_maps: dict[str, FieldMap] = {}
    by_kind: dict[str, list[Route]] = defaultdict(list)
    for index, raw in enumerate(data.get("route", []), start=1):
        where = f"{routes_file.name} route #{index}"
        raw, contract_version = _with_contract(raw, where)
        missing = {"kind", "agency", "operation", "mapping"} - raw.keys()
        if missing:
            raise MappingError(f"{where}: missing {', '.join(sorted(missing))}")
        name = raw["mapping"]
        if name not in field_maps:
            mapping_file = mappings_dir / f"{name}.toml"
            if not mapping_file.is_file():
                raise MappingError(f"{where}: mapping file {mapping_file} not found")
            with mapping_file.open("rb") as fh:
                spec = tomllib.load(fh)
            field_maps[name] = compile_field_map(spec.get("fields", {}), mapping_file.name)
        when = raw.get("when")
        condition = None
        if when:
            try:
                condition = etree.XPath(f"boolean({when})", namespaces=FILING_NAMESPACES)
            except etree.XPathSyntaxError as exc:
                raise MappingError(f"{where}: invalid condition {when!r}: {exc}") from exc
        try:
            min_level = parse_min_level(raw.get("min_level"))
        except IdentityError as exc:
            raise MappingError(f"{where}: {exc}") from exc
        on_reject = raw.get("on_reject", "hold")
        if on_reject not in ON_REJECT_POLICIES:
            raise MappingError(f"{where}: on_reject must be one of {sorted(ON_REJECT_POLICIES)}")
        by_kind[raw["kind"]].append(
            Route(
                kind=raw["kind"],
                agency=raw["agency"],
                operation=raw["operation"],
                mapping_name=name,
                field_map=field_maps[name],
                condition_text=when,
                condition=condition,
                after=raw.get("after"),
                on_reject=on_reject,
                handoffs=tuple(field_maps[name].handoffs()),
                min_level=min_level,
                contract_version=contract_version,
                where=where,
                mapping_file=f"{name}.toml",
            )
        )
    for kind, routes in by_kind.items():
        _check_ordering(kind, routes, routes_file.name)
    return RouteTable({kind: tuple(routes) for kind, routes in by_kind.items()})
