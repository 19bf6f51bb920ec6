"""The route table: which agency gets which filing kind, under which condition, how mapped."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from lxml import etree
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from domain.identity import IdentityError, parse_min_level
from routing.mapping import (
    FieldMap,
    Handoff,
    MappingError,
    ThreadXPath,
    compile_field_map,
    validation_problems,
)

__all__ = ["ON_REJECT_POLICIES", "Route", "RouteTable", "load_route_table", "MappingError"]

#: What a waiting delivery does when the recipient it waits for is rejected.
OnReject = Literal["hold", "cancel"]
ON_REJECT_POLICIES = frozenset(get_args(OnReject))


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    agency: str
    operation: str
    mapping_name: str
    field_map: FieldMap
    condition_text: str | None
    condition: ThreadXPath | None
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

    def applicable(self, kind: str, filing_root: etree._Element) -> tuple[Route, ...]:
        """The routes of `kind` whose condition holds for this filing."""
        return tuple(r for r in self.for_kind(kind) if r.applies_to(filing_root))

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


def _level(raw: Any) -> int:
    """`min_level = "SPID2"` (or CIE, CNS, 1..3) → the assurance level."""
    try:
        return parse_min_level(raw)
    except IdentityError as exc:
        raise ValueError(str(exc)) from exc


class _RouteEntry(BaseModel):
    """One `[[route]]` of routes.toml as written; a key it does not declare is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    #: `contract = "agency/version"` names the agency too; `agency` may then be left out.
    agency: str | None = None
    contract: str | None = None
    operation: str
    mapping: str
    when: str | None = None
    after: str | None = None  #: the agency whose outcome this delivery waits for
    on_reject: OnReject = "hold"
    min_level: Annotated[int, BeforeValidator(_level)] = 1

    @model_validator(mode="after")
    def _one_agency(self) -> _RouteEntry:
        if self.contract is None:
            if self.agency is None:
                raise ValueError("missing agency (or contract)")
            return self
        agency = self.contract.strip().partition("/")[0]
        if not agency:
            raise ValueError('contract must be "agency/version", e.g. "inps/v1"')
        if self.agency not in (None, agency):
            raise ValueError(f"contract {self.contract!r} belongs to {agency!r}, "
                             f"not to agency {self.agency!r}")
        return self

    @property
    def target(self) -> tuple[str, str | None]:
        """The agency and the contract version named (None: the agency's current one)."""
        if self.contract is None:
            assert self.agency is not None  # _one_agency
            return self.agency, None
        agency, _, version = self.contract.strip().partition("/")
        return agency, version or None


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route: list[dict[str, Any]] = []  #: each validated as a `_RouteEntry`, named by its number


class _MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, Any] = {}  #: checked rule by rule by `compile_field_map`


def _routes(routes_file: Path) -> list[tuple[str, _RouteEntry]]:
    """Every route of the file with its place (`routes.toml route #3`), for messages."""
    with routes_file.open("rb") as fh:
        data = tomllib.load(fh)
    try:
        raw_routes = _RoutesFile.model_validate(data).route
    except ValidationError as exc:
        raise MappingError(f"{routes_file.name}: {validation_problems(exc)}") from None
    routes = []
    for index, raw in enumerate(raw_routes, start=1):
        where = f"{routes_file.name} route #{index}"
        try:
            routes.append((where, _RouteEntry.model_validate(raw)))
        except ValidationError as exc:
            raise MappingError(f"{where}: {validation_problems(exc)}") from None
    return routes


def _field_map(mapping_file: Path) -> FieldMap:
    with mapping_file.open("rb") as fh:
        data = tomllib.load(fh)
    try:
        spec = _MappingFile.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"{mapping_file.name}: {validation_problems(exc)}") from None
    return compile_field_map(spec.fields, mapping_file.name)


def load_route_table(routes_file: Path, mappings_dir: Path) -> RouteTable:
    """Load and compile the routes and their mappings; any error names the file and field."""
    field_maps: dict[str, FieldMap] = {}
    by_kind: dict[str, list[Route]] = defaultdict(list)
    for where, entry in _routes(routes_file):
        name = entry.mapping
        if name not in field_maps:
            mapping_file = mappings_dir / f"{name}.toml"
            if not mapping_file.is_file():
                raise MappingError(f"{where}: mapping file {mapping_file} not found")
            field_maps[name] = _field_map(mapping_file)
        condition = None
        if entry.when:
            try:
                condition = ThreadXPath(f"boolean({entry.when})")
            except etree.XPathSyntaxError as exc:
                raise MappingError(f"{where}: invalid condition {entry.when!r}: {exc}") from exc
        agency, contract_version = entry.target
        by_kind[entry.kind].append(
            Route(
                kind=entry.kind,
                agency=agency,
                operation=entry.operation,
                mapping_name=name,
                field_map=field_maps[name],
                condition_text=entry.when,
                condition=condition,
                after=entry.after,
                on_reject=entry.on_reject,
                handoffs=tuple(field_maps[name].handoffs()),
                min_level=entry.min_level,
                contract_version=contract_version,
                where=where,
                mapping_file=f"{name}.toml",
            )
        )
    for kind, routes in by_kind.items():
        _check_ordering(kind, routes, routes_file.name)
    return RouteTable({kind: tuple(routes) for kind, routes in by_kind.items()})
