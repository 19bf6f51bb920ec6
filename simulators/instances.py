"""Valid XML instances generated from an XSD element (xmlschema): what the sandbox answers.

The instance is minimal (required particles only, first choice, first enumeration value),
except along the paths the caller wants, which are materialised even where optional: the
sandbox wants the reply fields its agency's receipt mapping reads. Simple values are chosen
among candidates until one is valid for the type, patterns included (a string is generated
from the pattern's regular expression).
"""

from __future__ import annotations

import random
import re
import re._constants as C  # noqa: N812 - the sre opcodes, as `sre_constants` named them
import re._parser as sre
import string
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from lxml import etree
from xmlschema.validators import XsdAnyElement, XsdComplexType, XsdElement, XsdGroup

__all__ = ["InstanceBuilder", "InstanceError", "path_steps", "value_for"]

#: Deepest nesting generated: recursive types stop here.
MAX_DEPTH = 24
_ALPHABET = string.ascii_uppercase + string.digits + string.ascii_lowercase + " -._'/"


class InstanceError(ValueError):
    """No valid instance could be generated (say which value in the sandbox's `values`)."""


def path_steps(xpath: str) -> tuple[str, ...] | None:
    """`p:a/p:b[@x='y']/@c` → `("a", "b", "@c")`; None when the path is not a simple
    relative location path (the sandbox then cannot materialise it)."""
    if not xpath or xpath.startswith("/") or "//" in xpath:
        return None
    steps = []
    for raw in re.sub(r"\[[^\]]*\]", "", xpath).split("/"):
        step = raw.strip()
        attribute = step.startswith("@")
        name = step[1:] if attribute else step
        name = name.rsplit(":", 1)[-1]
        if not re.fullmatch(r"[A-Za-z_][\w.\-]*", name):
            return None
        steps.append(("@" if attribute else "") + name)
    return tuple(steps)


# ----- strings from regular expressions -----------------------------------------------------

_CATEGORIES = {
    C.CATEGORY_DIGIT: string.digits, C.CATEGORY_NOT_DIGIT: string.ascii_letters,
    C.CATEGORY_SPACE: " ", C.CATEGORY_NOT_SPACE: string.ascii_letters,
    C.CATEGORY_WORD: string.ascii_letters + string.digits, C.CATEGORY_NOT_WORD: "-",
}


def _in_set(items: list[Any], char: str) -> bool:
    code = ord(char)
    for op, arg in items:
        if op is C.LITERAL and arg == code:
            return True
        if op is C.RANGE and arg[0] <= code <= arg[1]:
            return True
        if op is C.CATEGORY and char in _CATEGORIES.get(arg, ""):
            return True
    return False


def _pick(items: list[Any], rng: random.Random) -> str:
    negate = bool(items) and items[0][0] is C.NEGATE
    body = items[1:] if negate else items
    allowed = [ch for ch in _ALPHABET if _in_set(body, ch) != negate]
    if allowed:
        return rng.choice(allowed)
    for op, arg in body:  # only characters outside our alphabet: take the first
        if op is C.LITERAL:
            return chr(arg)
        if op is C.RANGE:
            return chr(arg[0])
    raise InstanceError("cannot pick a character for a negated class")


def _generate(parsed: Any, rng: random.Random) -> Iterator[str]:
    for op, arg in parsed:
        if op is C.LITERAL:
            yield chr(arg)
        elif op is C.NOT_LITERAL:
            yield "a" if arg != ord("a") else "b"
        elif op is C.ANY:
            yield "x"
        elif op is C.IN:
            yield _pick(list(arg), rng)
        elif op is C.CATEGORY:
            yield rng.choice(_CATEGORIES.get(arg, "x"))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
            low, high, sub = arg
            count = low if low > 0 else min(1, high)
            for _ in range(count):
                yield from _generate(sub, rng)
        elif op is C.SUBPATTERN:
            yield from _generate(arg[-1], rng)
        elif op is getattr(C, "ATOMIC_GROUP", None):
            yield from _generate(arg, rng)
        elif op is C.BRANCH:
            yield from _generate(arg[1][0], rng)
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue
        else:
            raise InstanceError(f"unsupported construct {op} in a pattern")


def from_pattern(pattern: re.Pattern[str] | str, seed: int = 0) -> str:
    """A string matching `pattern` (Python syntax, as xmlschema translates XSD patterns)."""
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return "".join(_generate(sre.parse(text), random.Random(seed)))


# ----- simple values -------------------------------------------------------------------------


def _primitive(xsd_type: Any) -> str:
    primitive = getattr(xsd_type, "primitive_type", None)
    name = getattr(primitive, "local_name", None) or getattr(xsd_type, "local_name", None) or ""
    return name


def _candidates(xsd_type: Any, seed: int, hint: str) -> Iterator[str]:
    enumeration = getattr(xsd_type, "enumeration", None)
    if enumeration:
        yield from (str(v) for v in enumeration)
    now = datetime.now(UTC).replace(microsecond=0)
    kind = _primitive(xsd_type)
    if hint:
        yield hint
    if kind == "dateTime":
        yield now.isoformat()
    elif kind == "date":
        yield date.today().isoformat()
    elif kind == "time":
        yield "12:00:00"
    elif kind == "boolean":
        yield from ("false", "true")
    elif kind in ("decimal", "float", "double"):
        low = getattr(xsd_type, "min_value", None)
        yield from (str(seed), "1", "0", str(low) if low is not None else "1")
    elif kind == "duration":
        yield "P1D"
    elif kind in ("gYear", "gYearMonth", "gMonthDay", "gDay", "gMonth"):
        yield {"gYear": str(now.year), "gYearMonth": f"{now.year}-01", "gMonthDay": "--01-01",
               "gDay": "---01", "gMonth": "--01"}[kind]
    elif kind == "anyURI":
        yield "urn:crocevia:sandbox"
    elif kind in ("base64Binary", "hexBinary"):
        yield "AA==" if kind == "base64Binary" else "00"
    length = getattr(xsd_type, "min_length", None) or 1
    yield f"SBX{seed}".ljust(length, "0")
    yield "x" * length
    patterns = getattr(xsd_type, "patterns", None)
    for compiled in getattr(patterns, "patterns", None) or []:
        for attempt in range(4):
            yield from_pattern(compiled, seed * 7 + attempt)
    for member in getattr(xsd_type, "member_types", None) or []:  # unions
        yield from _candidates(member, seed, hint)


def value_for(xsd_type: Any, *, seed: int = 0, preferred: Iterable[str] = ()) -> str:
    """The first of `preferred`, then of generated candidates, valid for `xsd_type`.

    Raises:
        InstanceError: no candidate is valid.
    """
    for candidate in [*preferred, *_candidates(xsd_type, seed, "")]:
        try:
            if xsd_type.is_valid(candidate):
                return candidate
        except (ValueError, TypeError):
            continue
    raise InstanceError(f"no generated value is valid for type {getattr(xsd_type, 'name', xsd_type)}")


# ----- elements ------------------------------------------------------------------------------


class InstanceBuilder:
    """Builds one instance of a global element; remembers each node's simple type.

    Args:
        wanted: paths (`path_steps`) below the root to materialise even where optional.
        seed: varies generated values between calls.
    """

    def __init__(self, wanted: Iterable[tuple[str, ...]] = (), seed: int = 0) -> None:
        self.wanted = {w for w in wanted if w}
        self.seed = seed
        #: (element, attribute name or None) → the simple type of that node's value.
        self.types: dict[tuple[etree._Element, str | None], Any] = {}

    def _wants(self, path: tuple[str, ...], name: str) -> bool:
        target = (*path, name)
        return any(w[: len(target)] == target for w in self.wanted)

    def _group_wanted(self, group: Any, path: tuple[str, ...]) -> bool:
        for particle in group:
            if isinstance(particle, XsdElement) and self._wants(path, particle.local_name):
                return True
            if isinstance(particle, XsdGroup) and self._group_wanted(particle, path):
                return True
        return False

    def build(self, element: XsdElement) -> etree._Element:
        """The instance of `element`.

        Raises:
            InstanceError: a value could not be generated.
        """
        return self._element(element, (), 0)

    def _element(self, element: XsdElement, path: tuple[str, ...], depth: int) -> etree._Element:
        if depth > MAX_DEPTH:
            raise InstanceError(f"{element.name}: nesting deeper than {MAX_DEPTH}")
        node = etree.Element(element.name)
        xsd_type = element.type
        fixed = element.fixed if element.fixed is not None else element.default
        if not isinstance(xsd_type, XsdComplexType):  # a simple type
            node.text = value_for(xsd_type, seed=self.seed,
                                  preferred=[fixed] if fixed is not None else [])
            self.types[(node, None)] = xsd_type
            return node
        for name, attribute in (xsd_type.attributes or {}).items():
            if name is None or attribute.use == "prohibited":
                continue
            local = etree.QName(name).localname
            if attribute.use != "required" and not self._wants(path, "@" + local):
                continue
            given = attribute.fixed if attribute.fixed is not None else attribute.default
            node.set(name, value_for(attribute.type, seed=self.seed,
                                     preferred=[given] if given is not None else []))
            self.types[(node, name)] = attribute.type
        if xsd_type.has_simple_content():
            node.text = value_for(xsd_type.content, seed=self.seed,
                                  preferred=[fixed] if fixed is not None else [])
            self.types[(node, None)] = xsd_type.content
        elif isinstance(xsd_type.content, XsdGroup):
            self._group(xsd_type.content, node, path, depth)
        return node

    def _group(self, group: XsdGroup, node: etree._Element, path: tuple[str, ...],
               depth: int) -> None:
        particles = list(group)
        if group.model == "choice":
            chosen: XsdElement | XsdAnyElement | XsdGroup | None = next(
                (p for p in particles if isinstance(p, XsdElement) and self._wants(path, p.local_name)), None)
            chosen = chosen or next((p for p in particles if not isinstance(p, XsdAnyElement)), None)
            particles = [chosen] if chosen is not None else []
        for particle in particles:
            self._particle(particle, node, path, depth)

    def _particle(self, particle: Any, node: etree._Element, path: tuple[str, ...],
                  depth: int) -> None:
        if isinstance(particle, XsdElement):
            if particle.abstract:
                return
            count = particle.min_occurs
            if count == 0 and self._wants(path, particle.local_name):
                count = 1
            for _ in range(count):
                node.append(self._element(particle, (*path, particle.local_name), depth + 1))
        elif isinstance(particle, XsdGroup):
            if particle.min_occurs == 0 and not self._group_wanted(particle, path):
                return
            for _ in range(max(particle.min_occurs, 1)):
                self._group(particle, node, path, depth)
        elif isinstance(particle, XsdAnyElement) and particle.min_occurs > 0:
            raise InstanceError("a required xs:any: declare the reply's content in the "
                                "sandbox's `values`")
