"""The route table: which agency gets which filing kind, under which condition, how mapped."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from routing.mapping import FILING_NAMESPACES, FieldMap, MappingError, compile_field_map

__all__ = ["Route", "RouteTable", "load_route_table", "MappingError"]


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    agency: str
    operation: str
    mapping_name: str
    field_map: FieldMap
    condition_text: str | None
    condition: etree.XPath | None

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


def load_route_table(routes_file: Path, mappings_dir: Path) -> RouteTable:
    """Load and compile the routes and their mappings; any error names the file and field."""
    with routes_file.open("rb") as fh:
        data = tomllib.load(fh)
    field_maps: dict[str, FieldMap] = {}
    by_kind: dict[str, list[Route]] = defaultdict(list)
    for index, raw in enumerate(data.get("route", []), start=1):
        where = f"{routes_file.name} route #{index}"
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
        by_kind[raw["kind"]].append(
            Route(
                kind=raw["kind"],
                agency=raw["agency"],
                operation=raw["operation"],
                mapping_name=name,
                field_map=field_maps[name],
                condition_text=when,
                condition=condition,
            )
        )
    return RouteTable({kind: tuple(routes) for kind, routes in by_kind.items()})
