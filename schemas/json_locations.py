"""Locations in the sender's own terms: the XML path of a violation as a JSON Pointer.

A filing sent as JSON is checked as the XML it becomes, so its violations are first located
with XML paths (`/f:filing/f:employees/f:employee[2]/f:taxCode`). A portal that sent JSON
never saw that XML: it gets an RFC 6901 JSON Pointer into the document it sent
(`/employees/employee/1/taxCode`) instead. Stdlib only, so the API may use it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["escape_token", "field_pointer", "json_pointer", "json_terms"]

_STEP = re.compile(r"f:(.+?)(?:\[(\d+)\])?")
_FIELD_PATH = re.compile(r"(?:/?f:filing)?(?:/?f:[A-Za-z_][A-Za-z0-9_.-]*)+")
_PREFIXED = re.compile(r"\bf:(?=[A-Za-z_])")


def escape_token(key: str) -> str:
    """A key as one JSON Pointer reference token (RFC 6901 section 3: `~` then `/`)."""
    return key.replace("~", "~0").replace("/", "~1")


def json_pointer(location: str, document: Any) -> str:
    """The JSON Pointer, into `document`, of the field at XML `location`.

    An index is kept only where the sender wrote a list (a repeated element may be sent as a
    single object); the root is "" as RFC 6901 says. A location that is not a filing path
    ("agency:inps") is returned unchanged. Steps are taken as already escaped tokens: element
    names never hold `~` or `/`, and unknown keys are escaped where they are located.
    """
    if location != "/f:filing" and not location.startswith("/f:filing/"):
        return location
    tokens: list[str] = []
    node: Any = document
    for step in location.split("/")[2:]:
        match = _STEP.fullmatch(step)
        if match is None:  # an attribute ("@schemaVersion") or a foreign step
            tokens.append(step)
            node = None
            continue
        name, index = match.group(1), match.group(2)
        tokens.append(name)
        node = node.get(name) if isinstance(node, Mapping) else None
        if index is not None and isinstance(node, list):
            position = int(index) - 1
            tokens.append(str(position))
            node = node[position] if 0 <= position < len(node) else None
    return "".join(f"/{token}" for token in tokens)


def field_pointer(xpath: str) -> str:
    """A filing field named by a mapping's XPath (`f:subject/f:activityStartDate`) as the
    JSON Pointer of that field (`/subject/activityStartDate`); other XPaths unchanged."""
    if not _FIELD_PATH.fullmatch(xpath):
        return xpath
    steps = [s.removeprefix("f:") for s in xpath.split("/") if s]
    if steps and steps[0] == "filing":
        steps = steps[1:]
    return "".join(f"/{step}" for step in steps)


def json_terms(detail: str) -> str:
    """A detail naming elements (`Expected is ( f:role )`) as the JSON keys they are."""
    return _PREFIXED.sub("", detail)
