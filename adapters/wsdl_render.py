"""A direct renderer for the plain document/literal requests of a stored WSDL (zeep's output, cheaper).

zeep builds an envelope by first turning the keyword arguments into value objects, checking
each against its type, then rendering them: most of a delivery's build time. For a request
whose body is a tree of plain sequences of elements (no choice, group, wildcard or
attribute), rendering the content dict directly, with zeep's own element names and zeep's own
`xmlvalue` for each leaf, yields the same envelope, byte for byte. Anything else — a type
outside that shape, an unknown or missing field, a value that is not a plain one — is left to
zeep (`render` returns None), so every refusal and its wording stay zeep's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker
from zeep.xsd import ComplexType, Element, Sequence
from zeep.xsd.types.builtins import String
from zeep.xsd.types.simple import AnySimpleType

__all__ = ["RequestRenderer"]


class _NotPlain(Exception):
    """The content needs zeep: a missing or unknown field, or a value of another shape."""


@dataclass(frozen=True, slots=True)
class _Node:
    """One element of a request: a leaf of a simple type, or a sequence of named children."""

    tag: str  #: `{ns}local` of zeep's `etree.QName` for the element (its form already applied)
    xsd_type: Any  #: the simple type (leaves), whose `xmlvalue` writes the text
    #: A leaf whose `xmlvalue` is xs:string's own: a str is written as it is (`str(value)`).
    text_as_is: bool
    optional: bool
    multiple: bool
    min_occurs: int
    max_occurs: int | None  #: None: unbounded
    children: tuple[tuple[str, _Node], ...] | None
    names: frozenset[str]


def _compile(element: Any) -> _Node | None:
    """The plan of `element`, or None when its type is not a plain sequence tree."""
    if type(element) is not Element:  # refs, wildcards and the like: zeep's
        return None
    xsd_type = element.type
    children: tuple[tuple[str, _Node], ...] | None = None
    if isinstance(xsd_type, ComplexType):
        nested = xsd_type.elements_nested
        if (xsd_type.attributes or getattr(xsd_type, "_mixed", False) or len(nested) != 1
                or type(nested[0][1]) is not Sequence):
            return None
        sequence = nested[0][1]
        if sequence.accepts_multiple or sequence.min_occurs != 1:
            return None
        plans = []
        for name, child in sequence.elements_nested:
            plan = _compile(child) if name else None
            if plan is None:
                return None
            plans.append((name, plan))
        children = tuple(plans)
    elif not isinstance(xsd_type, AnySimpleType):
        return None
    max_occurs = element.max_occurs
    return _Node(
        tag=etree.QName(element.qname).text, xsd_type=xsd_type,
        text_as_is=children is None and type(xsd_type).xmlvalue is String.xmlvalue,
        optional=element.is_optional,
        multiple=element.accepts_multiple, min_occurs=element.min_occurs,
        max_occurs=None if max_occurs == "unbounded" else int(max_occurs),
        children=children, names=frozenset(name for name, _ in children or ()),
    )


def _render_fields(parent: etree._Element, node: _Node, value: Any) -> None:
    if type(value) is not dict or not value.keys() <= node.names:
        raise _NotPlain
    assert node.children is not None
    for name, child in node.children:
        item = value.get(name)
        if item is None:
            if child.optional:
                continue  # zeep skips an optional element without a value
            raise _NotPlain  # zeep: "Missing element"
        _render(parent, child, item)


def _render(parent: etree._Element, node: _Node, value: Any) -> None:
    if isinstance(value, list):
        if not node.multiple or len(value) < node.min_occurs or (
                node.max_occurs is not None and len(value) > node.max_occurs):
            raise _NotPlain
        for item in value:
            _render_one(parent, node, item)
    else:
        _render_one(parent, node, value)


def _render_one(parent: etree._Element, node: _Node, item: Any) -> None:
    if type(item) is str and node.text_as_is:  # the common leaf: what xs:string's xmlvalue returns
        etree.SubElement(parent, node.tag).text = item
        return
    if item is None or isinstance(item, (list, tuple, set)):
        raise _NotPlain
    element = etree.SubElement(parent, node.tag)
    if node.children is None:
        if isinstance(item, (dict, etree._Element)):
            raise _NotPlain
        element.text = node.xsd_type.xmlvalue(item)
    else:
        _render_fields(element, node, item)


class RequestRenderer:
    """The envelopes of one binding's plain requests (see the module doc).

    Args:
        binding: the zeep SOAP binding of the contract.
        operations: the operation names to prepare.
    """

    def __init__(self, binding: Any, operations: Mapping[str, Any]) -> None:
        #: Per operation: the body's plan, and an empty Envelope/Body to copy (cheaper than making one).
        self._plans: dict[str, tuple[_Node, etree._Element]] = {}
        for name, operation in operations.items():
            message = operation.input
            if (message is None or getattr(message, "_is_body_wrapped", True) or message.body is None
                    or (message.header is not None and message.header.type.elements)):
                continue
            plan = _compile(message.body)
            if plan is None or plan.children is None:
                continue
            env_ns = message.nsmap["soap-env"]
            nsmap = {"soap-env": env_ns, **message.wsdl.types._prefix_map_custom}
            soap = ElementMaker(namespace=env_ns, nsmap=nsmap)
            self._plans[name] = (plan, soap.Envelope(soap.Body()))

    def supports(self, name: str) -> bool:
        """Whether `name`'s requests can be rendered here at all."""
        return name in self._plans

    def render(self, name: str, content: Mapping[str, Any]) -> etree._Element | None:
        """The envelope zeep would build for `content`, or None when zeep must build it."""
        found = self._plans.get(name)
        if found is None:
            return None
        plan, empty = found
        envelope = copy.deepcopy(empty)
        try:
            _render_fields(etree.SubElement(envelope[0], plan.tag), plan, dict(content))
        except _NotPlain:
            return None
        return envelope
