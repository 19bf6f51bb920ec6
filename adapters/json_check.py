"""A contract's JSON Schema check: the common answer ("valid") from fastjsonschema's compiled
code, every refusal from jsonschema, worded as it always was.

jsonschema walks a schema in Python for every message and every receipt, keyword by keyword;
fastjsonschema turns a schema into one Python function once, several times cheaper to run.
The two are different implementations, so the compiled one is only asked where they agree by
construction, and only its "valid" is ever taken:

- the schema holds only the Draft 4 keywords of `_SAFE` (anything else, a `$ref` left to the
  registry included, keeps the schema in jsonschema alone); `pattern` and `format` are judged
  by the very calls jsonschema makes (`re.search`, and the validator's own format checker),
  since fastjsonschema rewrites patterns and has format checks of its own;
- the instance is plain JSON (`_plain`): exact dicts with str keys, lists, str, bool, None,
  and finite numbers (no tuple, Decimal or inf, which the two type differently);
- the compiled code never fills defaults (`use_default=False`): the message is not changed.

When the compiled code refuses, jsonschema judges again and its best match is the error, so
messages, problem details and tests are unchanged; a stricter compiled check costs time, never
a wrong refusal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import fastjsonschema
import structlog
from jsonschema import Draft4Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match

__all__ = ["SchemaCheck"]

log = structlog.get_logger(__name__)

#: Draft 4 keywords both implementations judge alike, by what their value holds.
_SUBSCHEMA = frozenset({"additionalProperties", "items", "not"})
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})
_COUNTS = frozenset({"maxLength", "minLength", "maxItems", "minItems", "maxProperties",
                     "minProperties"})
_LIMITS = frozenset({"maximum", "minimum"})
_FLAGS = frozenset({"exclusiveMaximum", "exclusiveMinimum"})
_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
#: Every keyword some JSON Schema draft validates with: one outside the safe ones keeps the
#: schema in jsonschema. Any other key is an annotation both ignore (OpenAPI's `example`, `xml`).
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
#: The format a schema's `pattern` becomes for fastjsonschema (numbered), judged by `re.search`.
_PATTERN_FORMAT = "x-crocevia-pattern-{}"
#: Format names the generated code may quote (it writes them into its own source).
_FORMAT_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
_DRAFT4 = "http://json-schema.org/draft-04/schema#"


class _Unsafe(Exception):
    """The schema holds something the two implementations may judge differently."""


def _number(value: Any) -> bool:
    """A finite int or float (not a bool, a Decimal or inf, which the two type apart)."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


class _Rewriter:
    """A schema rewritten for fastjsonschema: its patterns and (with a checker) its formats
    become named formats judged as jsonschema judges them; without a checker formats are
    annotations, as in jsonschema, and are dropped."""

    def __init__(self, checker: FormatChecker | None) -> None:
        self._checker = checker
        #: name → the call that judges a string (`format` and `pattern` apply to strings only).
        self.formats: dict[str, Callable[[str], bool]] = {}

    def _pattern(self, value: Any) -> str:
        if type(value) is not str:
            raise _Unsafe("pattern")
        try:
            search = re.compile(value).search
        except re.error as exc:
            raise _Unsafe(f"pattern {value!r}: {exc}") from exc
        name = _PATTERN_FORMAT.format(len(self.formats))
        self.formats[name] = lambda text: search(text) is not None
        return name

    def _format(self, value: Any) -> str | None:
        if type(value) is not str or not _FORMAT_NAME.fullmatch(value) or value.startswith("x-crocevia-"):
            raise _Unsafe("format")
        checker = self._checker
        if checker is None:
            return None
        self.formats[value] = lambda text: bool(checker.conforms(text, value))
        return value

    def schema(self, schema: Any) -> dict[str, Any]:
        """Raises: _Unsafe: a keyword or value outside what both judge alike."""
        if not isinstance(schema, dict):
            raise _Unsafe("a schema that is not an object")
        copied: dict[str, Any] = {}
        checks: list[dict[str, Any]] = []  # the node's pattern and format, as named formats
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
                    copied[key] = [self.schema(item) for item in value]
                else:
                    copied[key] = self.schema(value)
            elif key in _SUBSCHEMA_LIST:
                if not isinstance(value, list) or not value:
                    raise _Unsafe(key)
                copied[key] = [self.schema(item) for item in value]
            elif key == "properties":
                if not isinstance(value, dict):
                    raise _Unsafe(key)
                copied[key] = {name: self.schema(item) for name, item in value.items()}
            elif key in _COUNTS:
                if type(value) is not int or value < 0:
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
                name = self._format(value)
                if name is not None:
                    checks.append({"format": name})
            else:  # pattern
                checks.append({"format": self._pattern(value)})
        if checks:  # one `format` per node in fastjsonschema: each check in a branch of allOf
            copied["allOf"] = [*copied.get("allOf", []), *checks]
        return copied


#: Deeper instances are left to jsonschema (no recursion limit reached here).
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


def _compiled(validator: Draft4Validator) -> Callable[[Any], Any] | None:
    """`validator`'s schema compiled by fastjsonschema, or None when only jsonschema may judge it."""
    if type(validator) is not Draft4Validator:
        return None
    rewriter = _Rewriter(validator.format_checker)  # None: formats are annotations
    try:
        rewritten = rewriter.schema(validator.schema)
        compiled: Callable[[Any], Any] = fastjsonschema.compile(
            {**rewritten, "$schema": _DRAFT4}, formats=rewriter.formats, use_default=False,
            detailed_exceptions=False)
    except _Unsafe as exc:
        log.debug("json_schema_check_python_only", reason=str(exc))
        return None
    except (fastjsonschema.JsonSchemaDefinitionException, SyntaxError, ValueError, TypeError) as exc:
        # A schema fastjsonschema will not compile (jsonschema checks no meta-schema either).
        log.debug("json_schema_check_python_only", reason=f"{type(exc).__name__}: {exc}")
        return None
    return compiled


class SchemaCheck:
    """One schema's check: fastjsonschema says "valid" where it may (module doc), jsonschema
    says everything else.

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
        """Whether compiled code judges this schema's valid instances."""
        return self._fast is not None

    def fast_valid(self, instance: Any) -> bool:
        """Whether the compiled check may vouch for `instance` and does; False: ask jsonschema."""
        if self._fast is None or not _plain(instance):
            return False
        try:
            self._fast(instance)
        except fastjsonschema.JsonSchemaValueException:
            return False
        except Exception as exc:  # a format or pattern call that raised: jsonschema will too
            log.debug("json_schema_check_deferred", error_class=type(exc).__name__)
            return False
        return True

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
