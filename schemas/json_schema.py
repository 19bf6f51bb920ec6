"""The JSON Schema (Draft 2020-12) of a filing's JSON form, generated from the filing XSD.

The XSD is the one source of truth: this module walks its components (through xmlschema, as
the JSON intake does) and writes what they say in JSON Schema terms, so the two cannot drift.
`python -m schemas.json_schema` rewrites `schemas/filing/v1/filing.schema.json`; a test fails
when the checked-in file differs from what this module generates.

The JSON shape is the one `schemas.filing` reads (see its docstring): one key per element, no
namespaces, repeated elements as a list under their own name, the root attribute as
"@schemaVersion". Choices where XSD and JSON differ:

- XSD patterns are anchored implicitly; here each is written `^(?:...)$`.
- Patterns of a base type are kept by referring to it (`$ref` beside the narrower facets).
- Text takes a JSON string only, `xs:boolean` true/false only, `xs:decimal` a JSON number or a
  string of digits (no float rounding of amounts): `minimum`/`maximum` bind the number, a
  pattern the string. The JSON intake refuses the other kinds alike (schemas/filing.py).
- `xs:date` adds `format: date` (annotation only, as Draft 2020-12 says).
- Check digits, date coherence and uniqueness are not shape: the hub checks them after the
  schema (schemas/content_checks.py), as it does for XML.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "FILING_EXAMPLES",
    "FILING_JSON_SCHEMA",
    "build_filing_schema",
    "load_filing_schema",
    "main",
    "render_example",
    "render_filing_schema",
]

#: The checked-in JSON Schema, beside the XSD it is generated from.
FILING_JSON_SCHEMA = Path(__file__).resolve().parent / "filing" / "v1" / "filing.schema.json"

#: The example filings: each XML example has its JSON twin (same stem, `.json`).
FILING_EXAMPLES = FILING_JSON_SCHEMA.parent / "examples"

_XS = "{http://www.w3.org/2001/XMLSchema}"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ID = "urn:crocevia:filing:v1:json-schema"

_DECIMAL = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_INTEGER = r"^[+-]?[0-9]+$"
_UNSIGNED = r"^\+?[0-9]+$"

#: JSON Schemas of the XSD built-in types (by local name). A type missing here stops the
#: generator: add it rather than let the JSON Schema say less than the XSD.
_BUILTINS: dict[str, dict[str, Any]] = {
    **{name: {"type": "string"} for name in (
        "string", "normalizedString", "token", "language", "Name", "NCName", "NMTOKEN", "ID")},
    "date": {"type": "string", "format": "date"},
    "dateTime": {"type": "string", "format": "date-time"},
    "time": {"type": "string", "format": "time"},
    "duration": {"type": "string", "format": "duration"},
    "gYear": {"type": "string", "pattern": r"^-?[0-9]{4,}(?:Z|[+-][0-9]{2}:[0-9]{2})?$"},
    "gYearMonth": {"type": "string", "pattern": r"^-?[0-9]{4,}-[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})?$"},
    "anyURI": {"type": "string", "format": "uri-reference"},
    "base64Binary": {"type": "string", "contentEncoding": "base64"},
    "hexBinary": {"type": "string", "pattern": r"^(?:[0-9A-Fa-f]{2})*$"},
    "boolean": {"type": "boolean"},
    "decimal": {"type": ["number", "string"], "pattern": _DECIMAL},
    "float": {"type": ["number", "string"]},
    "double": {"type": ["number", "string"]},
    **{name: {"type": ["integer", "string"], "pattern": _INTEGER}
       for name in ("integer", "long", "int", "short", "byte")},
    **{name: {"type": ["integer", "string"], "pattern": _UNSIGNED, "minimum": 0}
       for name in ("nonNegativeInteger", "unsignedLong", "unsignedInt", "unsignedShort", "unsignedByte")},
    "positiveInteger": {"type": ["integer", "string"], "pattern": _UNSIGNED, "minimum": 1},
}

#: Facets written as a JSON Schema keyword of the same meaning.
_LENGTHS = {"minLength": "minLength", "maxLength": "maxLength"}
_BOUNDS = {
    "minInclusive": "minimum",
    "maxInclusive": "maximum",
    "minExclusive": "exclusiveMinimum",
    "maxExclusive": "exclusiveMaximum",
}


class UnsupportedSchemaConstruct(Exception):
    """The XSD uses a construct this generator does not translate: extend it, never guess."""


def _documentation(component: Any) -> str | None:
    """The xs:documentation of a component, white space folded."""
    annotation = getattr(component, "annotation", None)
    if annotation is None:
        return None
    texts = [" ".join((doc.text or "").split()) for doc in annotation.documentation]
    text = " ".join(t for t in texts if t)
    return text or None


def _number(value: Any) -> int | float:
    """A facet value as a JSON number (integers stay integers)."""
    decimal = Decimal(str(value))
    return int(decimal) if decimal == decimal.to_integral_value() else float(decimal)


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _decimal_pattern(facets: dict[str, Any]) -> str:
    """The lexical form of a decimal as a string, bounded by totalDigits/fractionDigits."""
    total = facets.get(f"{_XS}totalDigits")
    fraction = facets.get(f"{_XS}fractionDigits")
    minimum = facets.get(f"{_XS}minInclusive")
    sign = r"\+?" if minimum is not None and minimum.value >= 0 else r"[+-]?"
    places = "*" if fraction is None else f"{{0,{fraction.value}}}0*"
    whole = "+" if total is None else (
        f"{{1,{total.value - (fraction.value if fraction is not None else 0)}}}")
    return f"^{sign}0*(?:[0-9]{whole}(?:\\.[0-9]{places})?|\\.[0-9]{places.replace('{0,', '{1,')})$"


class _Generator:
    """Walks the xmlschema components once, collecting named types under `$defs`."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.defs: dict[str, dict[str, Any]] = {}

    # -- types -----------------------------------------------------------------------------

    def type_schema(self, xsd_type: Any) -> dict[str, Any]:
        """A `$ref` for a named type of ours (defined once), the schema itself otherwise."""
        if xsd_type.name and xsd_type.target_namespace == self.namespace:
            name = xsd_type.local_name
            if name not in self.defs:
                self.defs[name] = {}  # reserved first: a recursive type refers to itself
                self.defs[name] = self.define(xsd_type)
            return {"$ref": f"#/$defs/{name}"}
        return self.define(xsd_type)

    def define(self, xsd_type: Any) -> dict[str, Any]:
        """The schema a type stands for, its documentation as `description`."""
        if xsd_type.is_simple():
            schema = self.simple(xsd_type)
        elif xsd_type.has_simple_content():
            raise UnsupportedSchemaConstruct(f"simple content with attributes: {xsd_type.name}")
        else:
            schema = self.complex(xsd_type)
        doc = _documentation(xsd_type)
        return {"description": doc, **schema} if doc else schema

    def simple(self, xsd_type: Any) -> dict[str, Any]:
        if xsd_type.is_list() or xsd_type.is_union():
            raise UnsupportedSchemaConstruct(f"list or union type: {xsd_type.name}")
        if xsd_type.target_namespace == _XS.strip("{}"):  # a built-in
            if xsd_type.local_name not in _BUILTINS:
                raise UnsupportedSchemaConstruct(f"built-in type xs:{xsd_type.local_name}")
            return dict(_BUILTINS[xsd_type.local_name])
        schema = dict(self.type_schema(xsd_type.base_type))
        facets: dict[str, Any] = xsd_type.facets
        primitive = xsd_type.primitive_type.local_name
        own_pattern = False
        for key, facet in facets.items():
            local = key.removeprefix(_XS) if isinstance(key, str) else ""
            if local == "pattern":
                own_pattern = True
                patterns = [_anchored(p) for p in facet.regexps]
                if len(patterns) == 1:
                    schema["pattern"] = patterns[0]
                else:  # several patterns in one step: any may match
                    schema["anyOf"] = [{"pattern": p} for p in patterns]
            elif local == "enumeration":
                schema["enum"] = [str(v) if not isinstance(v, bool) else v for v in facet.enumeration]
            elif local in _LENGTHS:
                schema[_LENGTHS[local]] = facet.value
            elif local == "length":
                schema["minLength"] = schema["maxLength"] = facet.value
            elif local in _BOUNDS and primitive != "date":
                schema[_BOUNDS[local]] = _number(facet.value)
            elif local in ("totalDigits", "fractionDigits"):
                continue  # folded into the number's bound and the string's pattern below
            elif local == "whiteSpace":
                continue
            else:
                raise UnsupportedSchemaConstruct(f"facet {local} on {xsd_type.name}")
        if primitive == "decimal" and not own_pattern:
            total = facets.get(f"{_XS}totalDigits")
            fraction = facets.get(f"{_XS}fractionDigits")
            if total is not None or fraction is not None:
                schema["pattern"] = _decimal_pattern(facets)
            if total is not None:
                schema["exclusiveMaximum"] = 10 ** (total.value - (fraction.value if fraction else 0))
        return schema

    def complex(self, xsd_type: Any) -> dict[str, Any]:
        """An object: one property per child element and attribute, no other key allowed."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        one_of: list[dict[str, Any]] = []
        for name, attribute in xsd_type.attributes.items():
            if not isinstance(name, str) or attribute.is_global():
                continue
            local = name.split("}")[-1]
            prop = self.type_schema(attribute.type)
            if attribute.fixed is not None:
                prop = {**prop, "const": attribute.fixed}
            doc = _documentation(attribute)
            properties[f"@{local}"] = {"description": doc, **prop} if doc else prop
            # The intake implies the fixed version when the key is left out.
            if attribute.use == "required" and attribute.fixed is None:
                required.append(f"@{local}")
        content = xsd_type.content
        if content is not None and getattr(content, "model", None) is not None:
            self.group(content, properties, required, one_of)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        if one_of:
            schema["oneOf"] = one_of
        return schema

    def group(self, group: Any, properties: dict[str, Any], required: list[str],
              one_of: list[dict[str, Any]]) -> None:
        """The children of a sequence, each choice becoming exactly one of its alternatives."""
        if group.model != "sequence" or group.max_occurs != 1:
            raise UnsupportedSchemaConstruct(f"{group.model} group as a content model")
        for item in group:
            if hasattr(item, "model"):
                self.choice(item, properties, one_of)
                continue
            properties[item.local_name] = self.element(item)
            if item.min_occurs > 0 and group.min_occurs > 0:
                required.append(item.local_name)

    def choice(self, group: Any, properties: dict[str, Any], one_of: list[dict[str, Any]]) -> None:
        if group.model != "choice" or group.max_occurs != 1:
            raise UnsupportedSchemaConstruct(f"{group.model} group inside a sequence")
        names: list[str] = []
        for item in group:
            if hasattr(item, "model"):
                raise UnsupportedSchemaConstruct("a group inside a choice")
            properties[item.local_name] = self.element(item)
            names.append(item.local_name)
        one_of.extend({"required": [name]} for name in names)
        if group.min_occurs == 0:  # none of them is also allowed
            one_of.append({"not": {"anyOf": [{"required": [name]} for name in names]}})

    def element(self, element: Any) -> dict[str, Any]:
        """A child element's schema: its type, a list of it when it repeats."""
        schema = self.type_schema(element.type)
        doc = _documentation(element)
        if element.is_multiple():
            schema = {"type": "array", "items": schema}
            if element.min_occurs:
                schema["minItems"] = element.min_occurs
            if element.max_occurs is not None:
                schema["maxItems"] = element.max_occurs
        return {"description": doc, **schema} if doc else schema


def build_filing_schema(xsd_path: Path | None = None) -> dict[str, Any]:
    """The JSON Schema of the filing's JSON form, from the XSD at `xsd_path`."""
    import xmlschema

    from schemas.filing import FILING_XSD

    path = xsd_path or FILING_XSD
    model = xmlschema.XMLSchema(path.read_text(encoding="utf-8"), base_url=str(path.parent))
    root = model.elements["filing"]
    generator = _Generator(model.target_namespace)
    body = generator.define(root.type)
    body.pop("description", None)
    schema: dict[str, Any] = {
        "$schema": _DRAFT,
        "$id": _ID,
        "title": "Crocevia unified filing (JSON form), version 1",
        "description": (
            "The JSON form of a unified filing: one key per element of the XSD "
            "(schemas/filing/v1/filing.xsd, namespace urn:crocevia:filing:v1) without namespaces, "
            "repeated elements as lists, the root attribute as '@schemaVersion' (1.0 when left "
            "out); exactly one kind block: " + ", ".join(
                name for name in body["properties"] if {"required": [name]} in body.get("oneOf", [])
            ) + ". Generated from the XSD by schemas/json_schema.py: do not edit by hand."
        ),
        **body,
        "$defs": {name: generator.defs[name] for name in sorted(generator.defs)},
    }
    return schema


def load_filing_schema() -> dict[str, Any]:
    """The checked-in JSON Schema, as the OpenAPI document and the tests take it (no XSD work:
    the file is kept in step by the test that regenerates it)."""
    loaded: dict[str, Any] = json.loads(FILING_JSON_SCHEMA.read_text(encoding="utf-8"))
    return loaded


def render_filing_schema(xsd_path: Path | None = None) -> str:
    """The schema as the checked-in file holds it: stable order, two-space indent, final newline."""
    return json.dumps(build_filing_schema(xsd_path), indent=2, ensure_ascii=False) + "\n"


def render_example(xml_path: Path) -> str:
    """The JSON twin of an XML example: the same filing in the JSON form, as checked in."""
    from schemas.filing import FilingValidator

    document = FilingValidator().xml_to_json(xml_path.read_bytes())
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _generated() -> dict[Path, str]:
    """Every generated file and its content: the schema and each example's JSON twin."""
    files = {FILING_JSON_SCHEMA: render_filing_schema()}
    for xml_path in sorted(FILING_EXAMPLES.glob("*.xml")):
        files[xml_path.with_suffix(".json")] = render_example(xml_path)
    return files


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with --check, compare) the JSON Schema and the JSON examples."""
    parser = argparse.ArgumentParser(prog="python -m schemas.json_schema",
                                     description="Regenerate the filing's JSON Schema and JSON examples.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in _generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            print(f"{path} is out of date: run python -m schemas.json_schema", file=sys.stderr)
            stale += 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
