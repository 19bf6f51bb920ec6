"""A declarative field map: XPath over the unified filing → the agency message as dicts.

The format is documented in config/mappings/README.md. Every XPath is compiled once when the
route table loads, so a typo fails at start-up and the hot path only evaluates.

Most of a mapping's paths only step from child to child (`f:subject/f:taxCode`); those are
walked in Python (`ChildPath`), not evaluated by libxml2. lxml serialises the evaluations of
one compiled `etree.XPath` with a lock of its own and releases the GIL twice per call (for the
lock and for the evaluation): the intake's threads, planning filings at once over the same
compiled paths, queued on those locks and handed the GIL back and forth: ~7.8 µs of CPU per
call with 8 threads against ~1.1 µs for one (`bench/field_paths.py`). The walk holds the GIL
throughout: ~1.4 µs, however many threads run it. The other paths (conditions, predicates,
functions) are evaluated by a compiled copy per thread (`ThreadXPath`): no lock is shared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from lxml import etree
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.child_paths import CHILD_STEPS, FILING_NAMESPACES, ChildPath

__all__ = ["ChildPath", "FieldMap", "Handoff", "MappingError", "ThreadXPath", "compile_field_map",
           "validation_problems"]

#: Which paths are walked (`ChildPath`) rather than evaluated by libxml2: a name of its own,
#: so that a test can send every path to XPath.
_CHILD_STEPS = CHILD_STEPS

_Converter = Callable[[Any], Any]


class MappingError(ValueError):
    """A mapping file is not well formed (raised at load time, naming the field)."""


def validation_problems(exc: ValidationError) -> str:
    """Pydantic's errors as `dotted.key: what` (unknown keys and wrong choices named as such)."""
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "extra_forbidden":
            text = "unknown key"
        elif error["type"] == "missing":
            text = "missing"
        elif error["type"] == "literal_error":
            text = f"expected one of {ctx['expected']}, got {error['input']!r}"
        elif error["type"] == "value_error":
            text = str(ctx["error"])
        else:
            text = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {error['input']!r}"
        problems.append(f"{key}: {text}" if key else text)  # no key: the table as a whole
    return "; ".join(problems)


#: Every rule table refuses keys it does not declare: a typo fails at load.
_RULE = ConfigDict(extra="forbid", frozen=True)


class _ConstRule(BaseModel):
    model_config = _RULE
    const: Any


class _FromRecipientRule(BaseModel):
    model_config = _RULE
    from_recipient: str  #: the agency whose receipt holds the reference
    reference: str


class _EachRule(BaseModel):
    model_config = _RULE
    each: str
    fields: dict[str, Any] | None = None  #: records, each mapped with its node as context


class _XPathRule(BaseModel):
    model_config = _RULE
    xpath: str
    type: Literal["int", "bool", "str"] = "str"


#: A table holding one of these keys is that rule (first match wins); any other table is a
#: nested record whose keys are field names.
_RULES: tuple[tuple[str, type[BaseModel]], ...] = (
    ("const", _ConstRule), ("from_recipient", _FromRecipientRule), ("each", _EachRule),
    ("xpath", _XPathRule),
)


def _text_of(result: Any) -> Any:
    """Reduce an XPath result to a scalar: first node's text, a string, number or boolean."""
    if isinstance(result, list):
        if not result:
            return None
        first = result[0]
        text = first if isinstance(first, str) else first.text
        return text.strip() if text is not None else None
    if isinstance(result, str):
        return result or None
    return result


def _to_int(value: Any) -> int | None:
    return None if value is None else int(float(value))


def _to_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_CONVERTERS: dict[str, _Converter] = {"int": _to_int, "bool": bool, "str": _to_str}


class ThreadXPath:
    """An XPath over the filing, compiled once per thread that evaluates it (~5 KiB each).

    One `etree.XPath` shared by threads serialises them on its lock (see the module's
    docstring); a copy per thread takes its lock uncontended.

    Raises:
        etree.XPathSyntaxError: at construction, for an expression that does not compile.
    """

    __slots__ = ("path", "_smart_strings", "_copies")

    def __init__(self, path: str, *, smart_strings: bool = True) -> None:
        self.path = path
        self._smart_strings = smart_strings
        self._copies = threading.local()
        self._copies.xpath = self._compile()

    def _compile(self) -> etree.XPath:
        return etree.XPath(self.path, namespaces=FILING_NAMESPACES, smart_strings=self._smart_strings)

    def __call__(self, node: etree._Element) -> Any:
        try:
            xpath = self._copies.xpath
        except AttributeError:
            xpath = self._copies.xpath = self._compile()
        return xpath(node)


@dataclass(frozen=True, slots=True)
class _Walked:
    """A field whose path only steps from child to child: its first element's text."""

    xpath: ChildPath
    convert: _Converter | None

    def apply(self, node: etree._Element) -> Any:
        element = self.xpath.first(node)
        value = None if element is None else _text_of([element])
        return self.convert(value) if self.convert is not None else value


@dataclass(frozen=True, slots=True)
class _Scalar:
    xpath: ThreadXPath
    convert: _Converter | None

    def apply(self, node: etree._Element) -> Any:
        value = _text_of(self.xpath(node))
        return self.convert(value) if self.convert is not None else value


@dataclass(frozen=True, slots=True)
class _Const:
    value: Any

    def apply(self, node: etree._Element) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class Handoff:
    """A field whose value comes from another recipient's receipt (`references[reference]`),
    known only once that recipient is protocolled. `path` locates it in the message."""

    path: tuple[str, ...]
    agency: str
    reference: str

    def to_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "agency": self.agency, "reference": self.reference}


@dataclass(frozen=True, slots=True)
class _FromRecipient:
    agency: str
    reference: str

    def apply(self, node: etree._Element) -> Any:
        return None  # filled at release time from the predecessor's receipt


@dataclass(frozen=True, slots=True)
class _Each:
    xpath: ThreadXPath | ChildPath
    item: FieldMap | None

    def apply(self, node: etree._Element) -> Any:
        found = self.xpath(node)
        if not isinstance(found, list):
            raise MappingError(f"`each` must select nodes, got {type(found).__name__}")
        if self.item is None:
            return [_text_of([child]) for child in found] or None
        return [self.item.apply(child) for child in found] or None


@dataclass(frozen=True, slots=True)
class FieldMap:
    """A compiled record mapping: field name → rule."""

    rules: tuple[tuple[str, Any], ...]

    def apply(self, node: etree._Element) -> dict[str, Any] | None:
        record: dict[str, Any] = {}
        for name, rule in self.rules:
            value = rule.apply(node)
            if value is not None:
                record[name] = value
        return record or None

    def source_of(self, path: tuple[str, ...]) -> str | None:
        """The XPath over the filing that fills the field at `path`, to name it in a refusal."""
        rule: Any = self
        for name in path:
            if isinstance(rule, _Each):
                rule = rule.item
            if not isinstance(rule, FieldMap):
                return None
            rule = dict(rule.rules).get(name)
        if isinstance(rule, (_Scalar, _Walked, _Each)):
            return str(rule.xpath.path)
        return None

    def handoffs(self, prefix: tuple[str, ...] = ()) -> list[Handoff]:
        """Every `from_recipient` field of this map and its nested records."""
        found: list[Handoff] = []
        for name, rule in self.rules:
            if isinstance(rule, _FromRecipient):
                found.append(Handoff((*prefix, name), rule.agency, rule.reference))
            elif isinstance(rule, FieldMap):
                found.extend(rule.handoffs((*prefix, name)))
        return found


def _compile_xpath(expr: str, where: str) -> ThreadXPath:
    try:
        return ThreadXPath(expr, smart_strings=False)
    except etree.XPathSyntaxError as exc:
        raise MappingError(f"{where}: invalid XPath {expr!r}: {exc}") from exc


def _compile_path(expr: str, where: str) -> ThreadXPath | ChildPath:
    """A `ChildPath` when `expr` only steps from child to child, else the compiled XPath."""
    if _CHILD_STEPS.fullmatch(expr.strip()):
        return ChildPath(expr.strip())
    return _compile_xpath(expr, where)


def _scalar(expr: str, convert: _Converter | None, where: str) -> _Scalar | _Walked:
    path = _compile_path(expr, where)
    return _Walked(path, convert) if isinstance(path, ChildPath) else _Scalar(path, convert)


def _rule_of(spec: Mapping[str, Any], where: str) -> BaseModel | None:
    """The rule a table declares, validated; None for a nested record."""
    model = next((m for key, m in _RULES if key in spec), None)
    if model is None:
        return None
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise MappingError(f"{where}: {validation_problems(exc)}") from None


def _compile_rule(spec: Any, where: str) -> Any:
    if isinstance(spec, str):
        return _scalar(spec, None, where)
    if not isinstance(spec, Mapping):
        raise MappingError(f"{where}: expected a string or a table, got {spec!r}")
    rule = _rule_of(spec, where)
    if isinstance(rule, _ConstRule):
        return _Const(rule.const)
    if isinstance(rule, _FromRecipientRule):
        return _FromRecipient(rule.from_recipient, rule.reference)
    if isinstance(rule, _EachRule):
        item = compile_field_map(rule.fields, where) if rule.fields is not None else None
        if item is not None and item.handoffs():
            raise MappingError(f"{where}: from_recipient cannot appear inside `each`")
        return _Each(_compile_path(rule.each, where), item)
    if isinstance(rule, _XPathRule):
        return _scalar(rule.xpath, _CONVERTERS[rule.type], where)
    return compile_field_map(spec, where)


def compile_field_map(spec: Mapping[str, Any], where: str = "") -> FieldMap:
    """Compile a `[fields]` table; `where` names the file for error messages."""
    rules = tuple(
        (name, _compile_rule(value, f"{where}.{name}" if where else name))
        for name, value in spec.items()
    )
    return FieldMap(rules)
