"""The REST contracts' JSON Schema check: fastjsonschema's compiled code may only ever say
"valid" where jsonschema says it too, and every refusal reads as jsonschema words it
(adapters/json_check.py).

The contracts are the real ones: the repository's REST agencies and every OpenAPI document of
the external folder. Their documents are judged by both implementations on generated messages,
most built to the schema and some broken in one place or another.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

from adapters.contracts import load_agency_catalog
from adapters.json_check import SchemaCheck
from adapters.openapi import OpenApiContract, load_openapi_contract
from tests.external import repository_catalog, require_external

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _external_contracts(tmp: Path) -> list[OpenApiContract]:
    """Every OpenAPI document of the external folder, declared as a contract of its own."""
    external = require_external()
    loaded = []
    for number, document in enumerate(sorted(external.glob("*/*.yaml"))):
        relative = document.relative_to(external).as_posix()
        (tmp / f"ext{number}.toml").write_text(
            f'[contracts.v1]\nkind = "rest"\nopenapi = "external:{relative}"\n'
            f'[contracts.v1.receipt]\nprotocol_number = "id"\n')
    catalog = load_agency_catalog(tmp, project_root=PROJECT_ROOT, external_dir=external)
    for spec in catalog.all_contracts():
        loaded.append(load_openapi_contract(spec))
    return loaded


def _checks(tmp: Path) -> list[tuple[str, SchemaCheck]]:
    require_external()  # the shipped agencies include the INPS WaaS document, read in place
    contracts = [load_openapi_contract(spec) for spec in repository_catalog().all_contracts()
                 if spec.kind == "rest"]
    found = []
    for contract in [*contracts, *_external_contracts(tmp)]:
        for name, operation in sorted(contract.operations.items()):
            if operation.request is not None:
                found.append((f"{contract.spec.document.name} {name} request", operation.request))
            for status, check in sorted(operation.receipts.items()):
                found.append((f"{contract.spec.document.name} {name} {status}", check))
    return found


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, SchemaCheck]]:
    return _checks(tmp_path_factory.mktemp("agencies"))


# ---------------------------------------------------------------------------------------------
# Messages drawn from a schema: built to it, with a given chance of breaking each value
# ---------------------------------------------------------------------------------------------

_ODD = [None, True, 0, -1, 2**53 + 1, 10**30, 1.0, 2.5, float("inf"), float("nan"), "", "x" * 300,
        "١٢٣", "AB\n", (1, 2), [], {}, {"k": 1}, decimal.Decimal("1"), decimal.Decimal("1.5"),
        dt.date(2024, 1, 2), "\u2028", "2024-13-45T99:00:00Z", "nobody-at-example"]


class _Drawer:
    def __init__(self, data: st.DataObject, breakage: float) -> None:
        self.data = data
        self.breakage = breakage

    def chance(self, p: float) -> bool:
        return p > 0 and self.data.draw(st.floats(0, 1)) < p

    def value(self, schema: Any, depth: int = 0) -> Any:
        if not isinstance(schema, dict) or depth > 12 or self.chance(self.breakage):
            return self.data.draw(st.sampled_from(_ODD))
        if "enum" in schema:
            return self.data.draw(st.sampled_from(schema["enum"]))
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self.value(self.data.draw(st.sampled_from(schema[key])), depth + 1)
        if "allOf" in schema:
            parts = [self.value(branch, depth + 1) for branch in schema["allOf"]]
            if all(isinstance(p, dict) for p in parts):
                return {k: v for p in parts for k, v in p.items()}
            return parts[0]
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):
            kind = self.data.draw(st.sampled_from(kind))
        return getattr(self, f"_{kind}", self._string)(schema, depth)

    def _object(self, schema: dict[str, Any], depth: int) -> Any:
        required = set(schema.get("required") or [])
        body = {}
        for name, sub in (schema.get("properties") or {}).items():
            if name in required or self.data.draw(st.booleans()):
                body[name] = self.value(sub, depth + 1)
        if body and self.chance(self.breakage):
            body.pop(self.data.draw(st.sampled_from(sorted(body))))
        if self.chance(self.breakage):
            body[self.data.draw(st.text(max_size=4))] = self.value({}, depth + 1)
        return body

    def _array(self, schema: dict[str, Any], depth: int) -> Any:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", low + 3)
        size = self.data.draw(st.integers(max(0, low - 1), min(high + 1, low + 4)))
        items = [self.value(schema.get("items", {}), depth + 1) for _ in range(size)]
        return tuple(items) if self.chance(self.breakage) else items  # JSON's, not jsonschema's

    def _string(self, schema: dict[str, Any], depth: int) -> Any:
        pattern, fmt = schema.get("pattern"), schema.get("format")
        low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
        if fmt == "date-time" and not self.chance(self.breakage):
            moment = self.data.draw(st.datetimes(min_value=dt.datetime(1900, 1, 1)))
            return moment.isoformat() + self.data.draw(st.sampled_from(["Z", "+01:00", ""]))
        if fmt == "date" and not self.chance(self.breakage):
            return self.data.draw(st.dates()).isoformat()
        if fmt == "email" and pattern is None and not self.chance(self.breakage):
            return self.data.draw(st.emails())
        if pattern is not None and not self.chance(self.breakage):
            text = self.data.draw(st.from_regex(re.compile(pattern), fullmatch=True))
            if self.chance(self.breakage):  # where a rewritten pattern ($ as \Z) would part
                text = self.data.draw(st.sampled_from([text + "\n", text.replace("0", "٠")]))
            return text
        return self.data.draw(st.text(min_size=max(0, low - 1), max_size=min(high + 1, low + 50)))

    def _number(self, schema: dict[str, Any], depth: int) -> Any:
        low, high = schema.get("minimum", -1e6), schema.get("maximum", 1e6)
        if self.chance(self.breakage):
            return self.data.draw(st.sampled_from([float("inf"), -float("inf"), decimal.Decimal(str(high)),
                                                   2**63, 2**70]))
        return self.data.draw(st.one_of(st.floats(low - 1, high + 1),
                                        st.sampled_from([low, high])))

    def _integer(self, schema: dict[str, Any], depth: int) -> Any:
        low, high = int(schema.get("minimum", -10**6)), int(schema.get("maximum", 10**6))
        number = self.data.draw(st.integers(low - 2, high + 2))
        if self.chance(self.breakage):  # the same number, in types JSON cannot tell apart
            return self.data.draw(st.sampled_from([decimal.Decimal(number), float(number), number + 2**64]))
        return number

    def _boolean(self, schema: dict[str, Any], depth: int) -> Any:
        return self.data.draw(st.booleans())

    def _null(self, schema: dict[str, Any], depth: int) -> Any:
        return None


def _nested(depth: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(depth):
        nested = [nested]
    return nested


def _python_error(check: SchemaCheck, instance: Any) -> Any:
    """jsonschema's own judgement, with the validator the contract built (no fast path)."""
    return best_match(check.python.iter_errors(instance))


def test_every_contract_schema_is_compiled_for_the_fast_path(checks: list[tuple[str, SchemaCheck]]) -> None:
    """The real contracts' schemas are all ones the compiled check may judge (else no gain)."""
    assert len(checks) >= 15
    assert [name for name, check in checks if not check.compiled] == []


def test_the_compiled_check_never_accepts_what_jsonschema_refuses(checks: list[tuple[str, SchemaCheck]]) -> None:
    """On messages drawn from every contract schema, whole and broken, the check's verdict and
    error are jsonschema's, and the compiled check says "valid" only when jsonschema does."""
    for name, check in checks:
        seen: Counter[str] = Counter()

        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data(), breakage=st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.2]))
        def judge(data: st.DataObject, breakage: float) -> None:
            instance = _Drawer(data, breakage).value(check.schema)
            expected = _python_error(check, instance)
            fast = check.fast_valid(instance)
            assert not (fast and expected is not None), (name, instance, expected)
            got = check.error(instance)
            assert (got and (got.message, got.json_path)) == (expected and (expected.message, expected.json_path))
            assert check.is_valid(instance) is (expected is None)
            seen["fast" if fast else "valid" if expected is None else "invalid"] += 1

        judge()
        assert seen["fast"] > 0 and seen["invalid"] > 0, (name, seen)


@pytest.mark.parametrize(("schema", "instance"), [
    ({"type": "array"}, (1, 2)),  # jsonschema: a tuple is not an array
    ({"type": "integer"}, decimal.Decimal("1")),  # nor a Decimal an integer
    ({"maximum": 3}, float("inf")),
    ({"maximum": 2**60}, 2**60 + 1),  # beyond 2**53 a float limit rounds differently
    ({"type": "string", "pattern": r"^[^\d]+$"}, "١٢٣"),  # Python's \d is Unicode
    ({"type": "string", "pattern": r"^\w+$"}, "a b"),
    ({"format": "date-time"}, "2024-01-02 10:00"),  # rfc3339: the T is required
    ({"format": "email"}, "nobody"),
    ({"properties": {"a": {"type": "string"}}, "additionalProperties": False}, {"a": "x", "b": 1}),
])
def test_what_jsonschema_refuses_is_refused_in_its_words(schema: dict[str, Any], instance: Any) -> None:
    """Where another implementation's judgement might differ (instance types, patterns,
    formats), the check refuses as jsonschema does, with its message."""
    python = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    check = SchemaCheck(python)
    expected = best_match(python.iter_errors(instance))
    assert expected is not None
    assert not check.fast_valid(instance)
    error = check.error(instance)
    assert error is not None and error.message == expected.message


@pytest.mark.parametrize(("schema", "instance"), [
    ({"type": "string", "pattern": r"^[A-Z]+$"}, "ABC\n"),  # $ before a final \n (fastjsonschema: \Z)
    ({"type": "string", "pattern": r"^\d+$"}, "١٢٣"),
    ({"format": "date"}, "not a date"),  # Draft 4 checks no `date`
    ({"format": "uri"}, "not a uri"),  # nor `uri` without rfc3987
    ({"type": "object"}, {1: "x"}),  # not JSON: left to jsonschema
    ({"type": "object"}, {"a": _nested(3000)}),  # deeper than any recursion limit, never walked
])
def test_what_jsonschema_accepts_stays_accepted(schema: dict[str, Any], instance: Any) -> None:
    """Where the compiled code alone would refuse, jsonschema has the last word: the message passes."""
    check = SchemaCheck(Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER))
    assert check.compiled
    assert check.error(instance) is None and check.is_valid(instance)


@pytest.mark.parametrize("schema", [
    {"$ref": "#/definitions/a", "definitions": {"a": {"type": "string"}}},
    {"uniqueItems": True},
    {"multipleOf": 0.1},
    {"patternProperties": {"^x": {"type": "string"}}},
    {"const": 1},  # not Draft 4: jsonschema ignores it
    {"type": "strange"},
])
def test_schemas_outside_the_safe_keywords_stay_with_jsonschema(schema: dict[str, Any]) -> None:
    """A schema using a keyword whose judgement might differ is left to jsonschema alone."""
    assert not SchemaCheck(Draft4Validator(schema)).compiled


def test_formats_are_judged_by_the_validators_own_checker() -> None:
    """Formats mean what the validator's checker says: none (annotations only), or its own."""
    from jsonschema import FormatChecker

    plain = SchemaCheck(Draft4Validator({"format": "email"}))
    assert plain.compiled and plain.fast_valid("nobody") and plain.error("nobody") is None
    checker = FormatChecker()
    checker.checks("uri")(lambda value: not isinstance(value, str) or "://" in value)
    strict = SchemaCheck(Draft4Validator({"format": "uri"}, format_checker=checker))
    assert strict.fast_valid("https://example.org")
    error = strict.error("example.org")
    assert not strict.fast_valid("example.org") and error is not None
    assert error.message == "'example.org' is not a 'uri'"


def test_the_compiled_check_changes_nothing_and_quotes_names_safely() -> None:
    """The compiled code fills no default into the message, and a property named with quotes and
    backslashes is judged like any other (the generated source quotes it)."""
    odd = 'a"b\\c\'d'
    check = SchemaCheck(Draft4Validator({
        "type": "object", "required": [odd],
        "properties": {odd: {"type": "integer"}, "stato": {"type": "string", "default": "NUOVO"}}}))
    assert check.compiled
    message: dict[str, Any] = {odd: 1}
    assert check.fast_valid(message) and message == {odd: 1}
    refused = check.error({odd: "1"})
    assert refused is not None and refused.message == "'1' is not of type 'integer'"


@pytest.mark.parametrize("name", ['date"); import os; ("', "x-crocevia-pattern-0", ""])
def test_a_format_name_the_generated_code_would_quote_stays_with_jsonschema(name: str) -> None:
    """A format name that is not a plain token (or is one of the check's own) is never written
    into generated code: jsonschema alone judges that schema."""
    assert not SchemaCheck(Draft4Validator({"type": "string", "format": name},
                                           format_checker=Draft4Validator.FORMAT_CHECKER)).compiled
