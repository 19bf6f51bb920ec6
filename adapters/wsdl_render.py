"""A direct renderer for the plain document/literal requests of a stored WSDL (zeep's output, cheaper).

zeep builds an envelope by first turning the keyword arguments into value objects, checking
each against its type, then rendering them: most of a delivery's build time. For a request
whose body is a tree of plain sequences of elements (no choice, group, wildcard or
attribute), rendering the content dict directly, with zeep's own element names and zeep's own
`xmlvalue` for each leaf, yields the same envelope, byte for byte. Anything else — a type
outside that shape, an unknown or missing field, a value that is not a plain one — is left to
zeep (`render` returns None), so every refusal and its wording stay zeep's. The elements of each
shape of a request (which optional elements, how many of a list) are made once, as zeep makes
them, and copied for every request of that shape; only the texts are written each time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker
from zeep.xsd import ComplexType, Element, Sequence
from zeep.xsd.types.builtins import String
from zeep.xsd.types.simple import AnySimpleType

__all__ = ["RequestRenderer"]


#: Shapes kept per operation (optional fields and list lengths make a few dozen in practice);
#: past it they are all dropped and learnt again, whatever the portals send.
_TEMPLATES_KEPT = 64


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


def _collect_fields(node: _Node, value: Any, texts: list[str | None], shape: list[int]) -> None:
    """Check `value` against `node`'s children, noting each child's count and each element's text."""
    if type(value) is not dict or not value.keys() <= node.names:
        raise _NotPlain
    assert node.children is not None
    for name, child in node.children:
        item = value.get(name)
        if item is None:
            if not child.optional:
                raise _NotPlain  # zeep: "Missing element"
            shape.append(0)  # zeep skips an optional element without a value
        elif isinstance(item, list):
            if not child.multiple or len(item) < child.min_occurs or (
                    child.max_occurs is not None and len(item) > child.max_occurs):
                raise _NotPlain
            shape.append(len(item))
            for one in item:
                _collect_one(child, one, texts, shape)
        else:
            shape.append(1)
            _collect_one(child, item, texts, shape)


def _collect_one(node: _Node, item: Any, texts: list[str | None], shape: list[int]) -> None:
    if type(item) is str and node.text_as_is:  # the common leaf: what xs:string's xmlvalue returns
        texts.append(item)
        return
    if item is None or isinstance(item, (list, tuple, set)):
        raise _NotPlain
    if node.children is None:
        if isinstance(item, (dict, etree._Element)):
            raise _NotPlain
        try:
            texts.append(node.xsd_type.xmlvalue(item))
        except (ValueError, TypeError) as exc:  # a value its type cannot write: zeep refuses it, in its words
            raise _NotPlain from exc
    else:
        texts.append(None)
        _collect_fields(node, item, texts, shape)


def _build(parent: etree._Element, node: _Node, counts: Iterator[int]) -> None:
    """The empty elements under `parent`: each child as many times as the next of `counts` says."""
    assert node.children is not None
    for _, child in node.children:
        for _ in range(next(counts)):
            element = etree.SubElement(parent, child.tag)
            if child.children is not None:
                _build(element, child, counts)


@dataclass(frozen=True, slots=True)
class _Operation:
    """What one operation's requests are rendered from."""

    plan: _Node
    empty: etree._Element  #: an Envelope/Body with nothing in it
    #: Per shape (each child's count, in walk order): the envelope with its elements and no
    #: texts. Copying one (libxml2 copies the tree in C) costs a quarter of making its elements
    #: one by one: lxml checks each new tag name, which in CPython raises and discards a TypeError.
    templates: dict[tuple[int, ...], etree._Element]

    def template(self, shape: tuple[int, ...]) -> etree._Element:
        """The empty envelope of this shape, built once with zeep's element calls (so the same prefixes)."""
        found = self.templates.get(shape)
        if found is None:
            found = copy.deepcopy(self.empty)
            _build(etree.SubElement(found[0], self.plan.tag), self.plan, iter(shape))
            if len(self.templates) >= _TEMPLATES_KEPT:
                self.templates.clear()  # one call: safe while other threads read or add
            self.templates[shape] = found
        return found


class RequestRenderer:
    """The envelopes of one binding's plain requests (see the module doc).

    Args:
        binding: the zeep SOAP binding of the contract.
        operations: the operation names to prepare.
    """

    def __init__(self, binding: Any, operations: Mapping[str, Any]) -> None:
        self._plans: dict[str, _Operation] = {}
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
            self._plans[name] = _Operation(plan, soap.Envelope(soap.Body()), {})

    def supports(self, name: str) -> bool:
        """Whether `name`'s requests can be rendered here at all."""
        return name in self._plans

    def render(self, name: str, content: Mapping[str, Any]) -> etree._Element | None:
        """The envelope zeep would build for `content`, or None when zeep must build it."""
        operation = self._plans.get(name)
        if operation is None:
            return None
        texts: list[str | None] = [None]  # the request element's own: none
        shape: list[int] = []
        try:
            _collect_fields(operation.plan, dict(content), texts, shape)
        except _NotPlain:
            return None
        envelope = copy.deepcopy(operation.template(tuple(shape)))
        # The elements in document order are the walk's: each leaf gets its text.
        try:
            for element, text in zip(envelope[0][0].iter(), texts, strict=True):
                if text is not None:
                    element.text = text
        except ValueError:
            return None  # a text XML cannot carry (a control character): zeep refuses it, in its words
        return envelope
