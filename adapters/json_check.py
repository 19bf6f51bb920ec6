"""A contract's JSON Schema check: the common answer ("valid") from jsonschema-rs, every refusal
from jsonschema, worded as it always was.

jsonschema walks a schema in Python for every message and every receipt; jsonschema-rs walks a
compiled one in Rust, several times cheaper. The two are different implementations, so Rust is
only asked where they agree by construction, and only its "valid" is ever taken:

- the schema holds only the Draft 4 keywords of `_SAFE` (anything else, a `$ref` left to the
  registry included, keeps the schema in Python alone); `pattern` and `format` are judged by
  Python itself from inside the Rust walk (`re.search` and the validator's own format checker,
  as jsonschema calls them), since ECMA regexes and Rust's format checks differ from Python's;
- the instance is plain JSON (`_plain`): exact dicts with str keys, lists, str, bool, None,
  and numbers whose comparisons are exact in both (no tuple, Decimal, inf or huge int, which
  the two judge differently);
- numeric limits are numbers of that same exact range.

When Rust refuses (or cannot judge: its error is taken as a refusal), jsonschema judges
again and its best match is the error, so messages, problem details and tests are unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema_rs
import structlog
from jsonschema import Draft4Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match

__all__ = ["SchemaCheck"]

log = structlog.get_logger(__name__)

#: Numbers beyond ±2**53 compare differently (int vs float rounding) in the two implementations.
_EXACT = 2**53
#: Draft 4 keywords both implementations judge alike, by what their value holds.
_SUBSCHEMA = frozenset({"additionalProperties", "items", "not"})
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})
_COUNTS = frozenset({"maxLength", "minLength", "maxItems", "minItems", "maxProperties",
                     "minProperties"})
_LIMITS = frozenset({"maximum", "minimum"})
_FLAGS = frozenset({"exclusiveMaximum", "exclusiveMinimum"})
_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
#: Every keyword some JSON Schema draft validates with: one outside the safe ones keeps the
#: schema in Python. Any other key is an annotation both ignore (OpenAPI's `example`, `xml`).
_VALIDATING = frozenset({
    "$ref", "$id", "id", "$schema", "$defs", "definitions", "$anchor", "$dynamicRef",
    "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor", "$vocabulary", "additionalItems",
    "additionalProperties", "allOf", "anyOf", "const", "contains", "contentEncoding",
    "contentMediaType", "contentSchema", "dependencies", "dependentRequired", "dependentSchemas",
    "disallow", "divisibleBy", "else", "enum", "exclusiveMaximum", "exclusiveMinimum", "extends",
    "format", "if", "items", "maxContains", "maxItems", "maxLength", "maxProperties", "maximum",
    "minContains", "minItems", "minLength", "minProperties", "minimum", "multipleOf", "not",
    "oneOf", "pattern", "patternProperties", "prefixItems", "properties", "propertyNames",
    "required", "then", "type", "unevaluatedItems", "unevaluatedProperties", "uniqueItems",
})
_SAFE = _SUBSCHEMA | _SUBSCHEMA_LIST | _COUNTS | _LIMITS | _FLAGS | {
    "enum", "format", "pattern", "properties", "required", "type"}
#: The keyword a schema's `pattern` becomes for Rust: judged by Python's `re.search`.
_PATTERN = "x-crocevia-python-pattern"


class _Unsafe(Exception):
    """The schema holds something the two implementations may judge differently."""


class _PythonPattern:
    """`pattern` as jsonschema judges it (`re.search` on strings), called by jsonschema-rs."""

    def __init__(self, parent_schema: Any, value: str, schema_path: Any) -> None:
        self._search = re.compile(value).search

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and not self._search(instance):
            raise ValueError("does not match the pattern")


def _number(value: Any) -> bool:
    return (type(value) in (int, float) and not (type(value) is float and not math.isfinite(value))
            and -_EXACT <= value <= _EXACT)


def _rewritten(schema: Any, formats: set[str]) -> Any:
    """`schema` for jsonschema-rs (`pattern` renamed to `_PATTERN`), collecting its formats.

    Raises:
        _Unsafe: a keyword or value outside what both judge alike.
    """
    if not isinstance(schema, dict):
        raise _Unsafe("a schema that is not an object")
    copied: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _VALIDATING:
            copied[key] = value  # an annotation: both ignore it
            continue
        if key not in _SAFE:
            raise _Unsafe(key)
        if key in _SUBSCHEMA:
            if key == "additionalProperties" and type(value) is bool:
                copied[key] = value
            elif key == "items" and isinstance(value, list):
                copied[key] = [_rewritten(item, formats) for item in value]
            else:
                copied[key] = _rewritten(value, formats)
        elif key in _SUBSCHEMA_LIST:
            if not isinstance(value, list) or not value:
                raise _Unsafe(key)
            copied[key] = [_rewritten(item, formats) for item in value]
        elif key == "properties":
            if not isinstance(value, dict):
                raise _Unsafe(key)
            copied[key] = {name: _rewritten(item, formats) for name, item in value.items()}
        elif key in _COUNTS:
            if type(value) is not int or not 0 <= value <= _EXACT:
                raise _Unsafe(key)
            copied[key] = value
        elif key in _LIMITS:
            if not _number(value):
                raise _Unsafe(key)
            copied[key] = value
        elif key in _FLAGS:
            if type(value) is not bool:
                raise _Unsafe(key)
            copied[key] = value
        elif key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(type(name) is not str or name not in _TYPES for name in names):
                raise _Unsafe(key)
            copied[key] = value
        elif key == "required":
            if not isinstance(value, list) or not value or any(type(n) is not str for n in value):
                raise _Unsafe(key)
            copied[key] = value
        elif key == "enum":
            if not isinstance(value, list) or not value or not all(_plain(item) for item in value):
                raise _Unsafe(key)
            copied[key] = value
        elif key == "format":
            if type(value) is not str:
                raise _Unsafe(key)
            formats.add(value)
            copied[key] = value
        else:  # pattern
            if type(value) is not str:
                raise _Unsafe(key)
            try:
                re.compile(value)
            except re.error as exc:
                raise _Unsafe(f"pattern {value!r}: {exc}") from exc
            copied[_PATTERN] = value
    return copied


#: Deeper instances are left to jsonschema (no recursion limit reached here, none in Rust).
_MAX_DEPTH = 64


def _plain(node: Any, depth: int = 0) -> bool:
    """Whether `node` is plain JSON that both implementations read the same way."""
    kind = type(node)
    if kind is str or kind is bool or node is None:
        return True
    if kind is int or kind is float:
        return _number(node)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, value in node.items():
            if type(key) is not str or not _plain(value, depth + 1):
                return False
        return True
    if kind is list:
        for value in node:
            if not _plain(value, depth + 1):
                return False
        return True
    return False


def _format_check(checker: FormatChecker, name: str) -> Any:
    return lambda value: checker.conforms(value, name)


def _compiled(validator: Draft4Validator) -> jsonschema_rs.Validator | None:
    """The Rust validator of `validator`'s schema, or None when only jsonschema may judge it."""
    schema = validator.schema
    if type(validator) is not Draft4Validator or _PATTERN in str(schema):
        return None  # our own keyword's name in a document: leave it all to Python
    formats: set[str] = set()
    try:
        rewritten = _rewritten(schema, formats)
    except _Unsafe as exc:
        log.debug("json_schema_check_python_only", reason=str(exc))
        return None
    checker = validator.format_checker  # None: formats are annotations, as in jsonschema
    try:
        return jsonschema_rs.Draft4Validator(
            rewritten, validate_formats=checker is not None, keywords={_PATTERN: _PythonPattern},
            formats={name: _format_check(checker, name) for name in formats} if checker else None)
    except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
        # A schema jsonschema-rs will not compile (it checks the meta-schema, jsonschema does not).
        log.debug("json_schema_check_python_only", reason=str(exc))
        return None


class SchemaCheck:
    """One schema's check: jsonschema-rs says "valid" where it may (module doc), jsonschema says
    everything else.

    Args:
        validator: the jsonschema validator whose judgement and errors are the contract's.
    """

    def __init__(self, validator: Draft4Validator) -> None:
        self.python = validator
        self._fast = _compiled(validator)

    @property
    def schema(self) -> Mapping[str, Any]:
        return self.python.schema  # type: ignore[return-value]

    @property
    def compiled(self) -> bool:
        """Whether jsonschema-rs judges this schema's valid instances."""
        return self._fast is not None

    def fast_valid(self, instance: Any) -> bool:
        """Whether jsonschema-rs may vouch for `instance` and does; False: ask jsonschema."""
        if self._fast is None or not _plain(instance):
            return False
        try:
            return bool(self._fast.is_valid(instance))
        except Exception as exc:  # a format or pattern call that raised: jsonschema will too
            log.debug("json_schema_check_deferred", error_class=type(exc).__name__)
            return False

    def error(self, instance: Any) -> ValidationError | None:
        """jsonschema's best match for `instance`'s errors, or None when it is valid."""
        if self.fast_valid(instance):
            return None
        return best_match(self.python.iter_errors(instance))

    def is_valid(self, instance: Any) -> bool:
        return self.fast_valid(instance) or bool(self.python.is_valid(instance))

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every error, as jsonschema finds them (no fast path: for callers wanting them all)."""
        return self.python.iter_errors(instance)

    def __repr__(self) -> str:
        return f"SchemaCheck(compiled={self.compiled})"
