"""Paths of child steps over the unified filing, walked in Python as XPath would evaluate them.

`f:subject/f:taxCode` only steps from child to child: walking the children with
`iterchildren(tag)` finds what lxml's `find(path, namespaces)` or an XPath would, for a third
of `find`'s cost (lxml parses the path and its prefixes again on every call) and without the
lock a compiled `etree.XPath` takes. The field mappings (`routing.mapping`), the content
checks, the filing's summary, its parties and its attachment references read the filing this way.
"""

from __future__ import annotations

import functools
import re

from lxml import etree

__all__ = ["CHILD_STEPS", "FILING_NAMESPACES", "ChildPath", "child_path", "child_text"]

#: The filing's prefix: every walked path names its steps `f:`.
FILING_NAMESPACES = {"f": "urn:crocevia:filing:v1"}

#: A path of child steps in the filing's namespace, nothing else (no predicate, axis or function).
CHILD_STEPS = re.compile(r"f:[A-Za-z_][\w.-]*(?:/f:[A-Za-z_][\w.-]*)*")


class ChildPath:
    """A path of child steps evaluated as XPath would: the matching elements in document order.

    Args:
        path: `f:name/f:name/...`, each step a child element in the filing's namespace.
    """

    __slots__ = ("path", "_tags")

    def __init__(self, path: str) -> None:
        if not CHILD_STEPS.fullmatch(path):
            raise ValueError(f"not a path of child steps: {path!r}")
        self.path = path
        namespace = FILING_NAMESPACES["f"]
        self._tags = tuple(f"{{{namespace}}}{step[2:]}" for step in path.split("/"))

    def __call__(self, node: etree._Element) -> list[etree._Element]:
        found: list[etree._Element] = []
        self._collect(node, 0, found)
        return found

    def first(self, node: etree._Element) -> etree._Element | None:
        """The first matching element in document order (a depth-first walk stops at it)."""
        tags = self._tags
        last = len(tags) - 1
        if last == 0:
            return next(node.iterchildren(tags[0]), None)
        return self._first(node, 0, last)

    def _first(self, node: etree._Element, depth: int, last: int) -> etree._Element | None:
        for child in node.iterchildren(self._tags[depth]):
            if depth == last:
                return child
            found = self._first(child, depth + 1, last)
            if found is not None:
                return found
        return None

    def _collect(self, node: etree._Element, depth: int, found: list[etree._Element]) -> None:
        children = node.iterchildren(self._tags[depth])
        if depth == len(self._tags) - 1:
            found.extend(children)
            return
        for child in children:
            self._collect(child, depth + 1, found)


@functools.lru_cache(maxsize=512)
def child_path(path: str) -> ChildPath:
    """The walk of `path`, built once (the checks name their paths as constants).

    Raises:
        ValueError: `path` is not a path of child steps.
    """
    return ChildPath(path)


def child_text(node: etree._Element, path: str) -> str:
    """The stripped text of the first element at `path` below `node`; "" when there is none
    (what `findtext(path, default="")` gives)."""
    element = child_path(path).first(node)
    return "" if element is None else (element.text or "").strip()

