"""`routing.mapping`'s paths: a child-step path walked in Python selects what XPath selects,
and every thread plans the same messages as one thread alone."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

import routing.mapping as mapping
from config.settings import PROJECT_ROOT
from routing.mapping import FILING_NAMESPACES, ChildPath, ThreadXPath, compile_field_map
from routing.plan import FilingFacts, plan_deliveries
from routing.routes import RouteTable, load_route_table

NS = FILING_NAMESPACES["f"]
EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
_NAMES = ("a", "b", "c")


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    """Small trees of filing-namespace elements named a, b or c (repeated, nested, some empty),
    with an element of another namespace and a comment among them."""
    element = etree.Element(f"{{{NS}}}{draw(st.sampled_from(_NAMES))}")
    element.text = draw(st.sampled_from([None, "", " x ", "y"]))
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["child", "child", "child", "foreign", "comment"]))
            if kind == "child":
                element.append(draw(_trees(depth + 1)))
            elif kind == "foreign":
                etree.SubElement(element, f"{{urn:other}}{draw(st.sampled_from(_NAMES))}")
            else:
                element.append(etree.Comment("c"))
    return element


_PATHS = st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4).map(lambda steps: "/".join(f"f:{s}" for s in steps))


@settings(max_examples=1500, deadline=None)
@given(root=_trees(), path=_PATHS)
def test_a_child_path_selects_what_xpath_selects_in_document_order(root: etree._Element, path: str) -> None:
    """Every match, in document order, and the first one, as libxml2's XPath gives them."""
    expected = etree.XPath(path, namespaces=FILING_NAMESPACES)(root)
    walked = ChildPath(path)
    assert walked(root) == expected
    assert walked.first(root) is (expected[0] if expected else None)


@pytest.mark.parametrize("path", ["f:a[1]", "f:a/@b", "count(f:a)", "//f:a", "f:a/text()", "g:a", "f:a | f:b"])
def test_only_child_steps_are_walked(path: str) -> None:
    """Predicates, attributes, functions, other axes or prefixes stay XPath."""
    with pytest.raises(ValueError, match="not a path of child steps"):
        ChildPath(path)
    assert isinstance(compile_field_map({"field": path}).rules[0][1].xpath, ThreadXPath)


def test_a_path_that_is_not_xpath_is_not_walked_either() -> None:
    """A dangling step is refused by the walk, and by XPath at load, naming the field."""
    with pytest.raises(ValueError, match="not a path of child steps"):
        ChildPath("f:a/")
    with pytest.raises(mapping.MappingError, match="field: invalid XPath"):
        compile_field_map({"field": "f:a/"})


def _example_roots() -> list[etree._Element]:
    return [etree.parse(str(p)).getroot() for p in sorted(EXAMPLES.glob("*.xml"))]


def _tables() -> tuple[RouteTable, RouteTable]:
    """The shipped routes as loaded, and loaded again with every path left to XPath."""
    config = PROJECT_ROOT / "config"
    walked = load_route_table(config / "routes.toml", config / "mappings")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mapping, "_CHILD_STEPS", re.compile(r"(?!)"))
        xpath_only = load_route_table(config / "routes.toml", config / "mappings")
    return walked, xpath_only


def test_the_shipped_mappings_give_the_same_messages_walked_or_by_xpath() -> None:
    """Every route's message for every example filing is what XPath alone makes of it, and
    the shipped mappings do use the walk."""
    walked, xpath_only = _tables()
    compared = 0
    for root in _example_roots():
        for kind, routes in walked.routes_by_kind.items():
            for route, same in zip(routes, xpath_only.routes_by_kind[kind], strict=True):
                assert route.field_map.apply(root) == same.field_map.apply(root), (kind, route.agency)
                compared += 1
    assert compared >= 50
    assert any(isinstance(rule, mapping._Walked) for route in walked.routes_by_kind["business_start"]
               for _, rule in route.field_map.rules)


def _plans(table: RouteTable, roots: list[etree._Element]) -> list[list[tuple[str, object]]]:
    """Each example planned under every kind's routes (more conditions and fields than its own
    kind's), each message's content without its header (whose message id is new each time)."""
    at = datetime(2026, 12, 7, tzinfo=timezone.utc)
    out = []
    for root in roots:
        for kind in sorted(table.routes_by_kind):
            facts = FilingFacts("CRV-2026-000001", kind, "test", "X", "legal_representative", at)
            out.append([(p.agency, {k: v for k, v in p.content.items() if k != "messageHeader"})
                        for p in plan_deliveries(table, root, facts)])
    return out


def test_threads_planning_at_once_get_the_messages_one_thread_gets() -> None:
    """Eight threads planning the example filings through the same compiled routes (their
    conditions and XPath fields in a copy per thread) get what one thread gets."""
    table, _ = _tables()
    roots = _example_roots()
    alone = _plans(table, roots)
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda _: _plans(table, [etree.fromstring(etree.tostring(r)) for r in roots]),
                                 range(24)))
    assert all(result == alone for result in together)
    assert any(any(plan) for plan in alone)
