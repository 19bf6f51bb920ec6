"""Intake of a unified filing: hardened parse, XSD validation, content checks, JSON intake.

`FilingValidator` is built once per process and shared by all threads.

JSON shape. A filing in JSON is the natural xmlschema encoding of the XML, without namespaces:
each element is a key holding an object (complex elements) or a value (simple ones): a string
for text, codes and dates, true/false for a flag, a number or a string of its digits for an
amount (as the JSON Schema says: a number where text belongs is refused, not converted);
repeated elements are lists under their own name inside their wrapper; the root attribute is
"@schemaVersion" and may be left out ("1.0" is implied). Keys may come in any
order. Example::

    {"@schemaVersion": "1.0",
     "subject": {"taxCode": "09182730581", "name": "Alfa Esempio S.r.l.", "legalForm": "SRL",
                 "registeredOffice": {"address": "...", "municipalityCode": "H501",
                                      "postalCode": "00184", "province": "RM"},
                 "pec": "alfa@pec.example.it", "atecoCodes": {"ateco": ["62.01.00"]}},
     "legalRepresentative": {"taxCode": "...", "givenName": "...", "familyName": "...",
                             "birthDate": "1985-03-14"},
     "declarant": {"taxCode": "...", "givenName": "...", "familyName": "...",
                   "role": "legal_representative"},
     "employees": {"employee": [{"taxCode": "...", "hireDate": "2025-03-03",
                                 "contractType": "indeterminato"}]},
     "businessStart": {"registrationSection": "ordinaria", "shareCapital": 10000.00}}

`XMLSchema.to_dict(xml, namespaces={"": FILING_NS}, strip_namespaces=True)` produces exactly
this; `schemas/filing/v1/filing.schema.json` is its JSON Schema (generated from the XSD by
`schemas.json_schema`). Violations found in JSON are located with a JSON Pointer into the
document the sender sent (`/declarant/taxCode`, `/employees/employee/1/hireDate`) and carry no
line number; those found in XML keep their `/f:...` path and line.

Every violation of a document comes in one answer. libxml2 stops checking the children of an
element at its first content-model error (a missing or unexpected child), so when one is found
the document is checked again with xmlschema, which goes on, and the values libxml2 skipped
are reported too. For JSON the structure (unknown, missing, repeated fields, the one kind) is
checked while the document is turned into XML, so every missing field is named, not the first.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lxml import etree

from domain.intake import (
    ContentViolation,
    DocumentTooDeep,
    DocumentTooLarge,
    MalformedDocument,
    SchemaViolation,
    Violation,
)
from schemas.content_checks import FILING_NS, NSMAP, check_content
from schemas.child_paths import child_text
from schemas.xml_names import local_name
from schemas.json_locations import escape_token, json_pointer, json_terms
from schemas.schema_errors import (
    CONTENT_MODEL,
    check_presence,
    describe,
    explained_by,
    libxml_message,
    missing_children,
)
from schemas.xml_safety import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    make_hardened_parser,
    parse_untrusted_xml,
)

__all__ = [
    "FILING_KINDS",
    "FILING_NS",
    "FILING_XSD",
    "NSMAP",
    "FilingValidator",
    "ParsedFiling",
    "kind_of",
]

#: The filing schema, version 1.
FILING_XSD = Path(__file__).resolve().parent / "filing" / "v1" / "filing.xsd"

#: Filing kind for each kind block, in schema order.
FILING_KINDS: dict[str, str] = {
    "businessStart": "business_start",
    "runtsRegistration": "runts_registration",
    "durcRequest": "durc_request",
    "responsibilityDeclaration": "responsibility_declaration",
    "runtsDeposit": "runts_deposit",
}

#: Generated XML is larger than the JSON it comes from; this bounds it relative to max_bytes.
_JSON_EXPANSION = 4

#: The most significant digits, and the largest power of ten, a JSON number may have. No field
#: of the filing schema holds more (an amount in euro has a dozen); beyond, the number is
#: refused at its field (422) before Python converts it: int() stops at 4,300 digits, and
#: 1e999999999 written out as a decimal is a gigabyte.
MAX_JSON_NUMBER_DIGITS = 40

_SCHEMA_VERSION = "1.0"

_NOT_XML_TEXT = "The text has characters that XML cannot carry."

def _today_in_rome() -> date:
    """Today's date where the agencies are: deadlines and ages are judged in Italian time."""
    try:
        return datetime.now(ZoneInfo("Europe/Rome")).date()
    except ZoneInfoNotFoundError:  # no tz database on this host: local date is the best guess
        return date.today()


@dataclass(frozen=True, slots=True)
class ParsedFiling:
    """A filing that passed every intake check, with what routing and storage need first."""

    root: etree._Element
    xml: bytes
    kind: str
    subject_tax_code: str
    subject_name: str
    declarant_tax_code: str
    declarant_role: str
    digest: str


class FilingValidator:
    """Parses and validates unified filings; one instance serves all threads.

    The XSD is read once. Every validation first asks one shared compiled schema whether the
    document is valid: lxml validates without a lock (each call has its own libxml2 context),
    and a valid document leaves nothing in the schema's error log, so the intake's threads
    never wait for one another. Only a document found invalid is validated again, on one of
    `validators` compiled copies lent to one caller at a time: lxml keeps the error log on the
    instance, and two threads reporting with one copy would mix their errors. Before, every
    validation borrowed a copy (4 for 8 threads) and the threads queued for them; one copy
    per thread instead cost ~260 KiB of C memory each (issue 13). The copies are compiled at
    construction, so a broken schema fails at start-up.
    """

    def __init__(
        self,
        *,
        xsd_path: Path = FILING_XSD,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        clock: Callable[[], date] = _today_in_rome,
        validators: int = 4,
    ) -> None:
        if validators < 1:
            raise ValueError("validators must be at least 1")
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._clock = clock
        self._xsd_path = xsd_path
        self._xsd_bytes = xsd_path.read_bytes()
        self._model_lock = threading.Lock()
        self._model: Any = None
        #: Asked only whether a document is valid (its error log, shared, is never read).
        self._checker = self._compile()
        self._validators: queue.SimpleQueue[etree.XMLSchema] = queue.SimpleQueue()
        for _ in range(validators):
            self._validators.put(self._compile())

    # -- XML -------------------------------------------------------------------------------

    def parse(self, data: bytes, *, today: date | None = None) -> ParsedFiling:
        """Parse, validate and check an XML filing.

        Raises:
            DocumentTooLarge, UnsafeDocument, MalformedDocument, DocumentTooDeep: from the
                hardened parse.
            SchemaViolation: every XSD error at once, located and with its line.
            ContentViolation: every content error at once (check digits, dates, coherence).
        """
        return self._parse(
            data,
            digest=hashlib.sha256(data).hexdigest(),
            today=today,
            max_bytes=self.max_bytes,
        )

    def _parse(
        self, data: bytes, *, digest: str, today: date | None, max_bytes: int,
        structure: list[Violation] | None = None,
    ) -> ParsedFiling:
        root = parse_untrusted_xml(data, max_bytes=max_bytes, max_depth=self.max_depth)
        errors = self.schema_violations(root)
        if structure:
            # What the JSON structure check already said is not said again by the XSD.
            errors = [*structure, *(e for e in errors if not explained_by(e, structure))]
        if errors:
            raise SchemaViolation(errors)
        problems = check_content(root, today=today or self._clock())
        if problems:
            raise ContentViolation(problems)
        return _summarise(root, digest)

    def _compile(self) -> etree.XMLSchema:
        document = etree.fromstring(self._xsd_bytes, parser=make_hardened_parser(), base_url=str(self._xsd_path))
        return etree.XMLSchema(document)

    @contextmanager
    def _validator(self) -> Iterator[etree.XMLSchema]:
        """A compiled schema for this caller alone until it returns (waits while all are lent)."""
        validator = self._validators.get()
        try:
            yield validator
        finally:
            self._validators.put(validator)

    def schema_violations(self, root: etree._Element) -> list[Violation]:
        """Every XSD error of the document, each located at its element with its line."""
        tree = root.getroottree()
        if self._checker.validate(tree):
            return []
        with self._validator() as validator:
            if validator.validate(tree):  # not expected: the checker said otherwise
                return []
            error_log = validator.error_log  # a copy: read after the validator is returned
        prefixes: dict[str, str] | None = None
        found: list[Violation] = []
        seen: set[tuple[str, str]] = set()
        for entry in error_log:
            if prefixes is None and ":" in (entry.path or ""):
                prefixes = _declared_prefixes(root)
            element = _resolve(tree, entry.path, prefixes or {})
            location, detail = describe(entry.message, element, entry.path)
            if (location, detail) in seen:
                continue
            seen.add((location, detail))
            line = entry.line if entry.line and entry.line > 0 else None
            found.append(Violation("schema", location, detail, line))
        if any(v.detail.startswith(CONTENT_MODEL) for v in found):
            more = self._values_beyond(tree, {v.location for v in found})
            more += missing_children(root, self._json_model().elements["filing"], found)
            found = sorted([*found, *more], key=lambda v: v.line or 0)  # stable: libxml2's order kept
        return found

    def _values_beyond(self, tree: etree._ElementTree, known: set[str]) -> list[Violation]:
        """The value errors libxml2 skipped after a content-model error, found by xmlschema.

        Content-model errors are libxml2's to report (one per element, as xmlschema's); only
        values at locations not reported yet are added, worded as libxml2 words them.
        """
        from xmlschema.validators.exceptions import XMLSchemaChildrenValidationError

        found: list[Violation] = []
        for error in self._json_model().iter_errors(tree):
            element = error.elem
            if isinstance(error, XMLSchemaChildrenValidationError) or not isinstance(
                element, etree._Element
            ):
                continue
            message = libxml_message(error, element)
            location, detail = describe(message, element, None)
            if location in known:
                continue
            known.add(location)
            found.append(Violation("schema", location, detail, element.sourceline))
        return found

    # -- JSON ------------------------------------------------------------------------------

    def parse_json(self, data: bytes, *, today: date | None = None) -> ParsedFiling:
        """Parse a JSON filing (the shape in the module docstring) through the same checks.

        `digest` is the hash of the JSON bytes, so a repeated body has a repeated digest.

        Raises:
            DocumentTooLarge, DocumentTooDeep, MalformedDocument (problem "malformed-json"),
            SchemaViolation, ContentViolation.
        """
        obj = _load_json(data, self.max_bytes)
        try:
            if not isinstance(obj, Mapping):
                raise SchemaViolation(
                    Violation("schema", "/f:filing", "The filing must be a JSON object.")
                )
            xml, structure = self._json_document(obj)
            return self._parse(
                xml,
                digest=hashlib.sha256(data).hexdigest(),
                today=today,
                max_bytes=self.max_bytes * _JSON_EXPANSION,
                structure=structure,
            )
        except (SchemaViolation, ContentViolation) as exc:
            # The sender never saw the XML generated here: its paths and lines mean nothing to
            # them. Each location becomes a pointer into their JSON.
            raise type(exc)([
                replace(v, location=json_pointer(v.location, obj), detail=json_terms(v.detail), line=None)
                for v in exc.violations
            ]) from None

    def json_to_xml(self, obj: Mapping[str, Any]) -> bytes:
        """The XML document for a JSON filing; its fields are ordered as the schema wants.

        Raises:
            SchemaViolation: the structure cannot be encoded (unknown fields, an object where
                a value belongs, a list for a single element, null); all problems at once.
        """
        if not isinstance(obj, Mapping):
            raise SchemaViolation(
                Violation("schema", "/f:filing", "The filing must be a JSON object.")
            )
        xml, problems = self._json_document(obj)
        if problems:
            raise SchemaViolation(problems)
        return xml

    def _json_document(self, obj: Mapping[str, Any]) -> tuple[bytes, list[Violation]]:
        """The XML for a JSON filing, with every structure problem found on the way (the XML
        then lacks what could not be encoded)."""
        problems: list[Violation] = []
        declaration = self._json_model().elements["filing"]
        obj = {"@schemaVersion": _SCHEMA_VERSION, **obj}
        root = _encode(declaration, obj, None, "/f:filing", problems)
        xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        return xml, problems

    def xml_to_json(self, data: bytes) -> dict[str, Any]:
        """The JSON form (module docstring) of an XML filing that matches the schema.

        The inverse of `json_to_xml`, for portals and tests that build JSON samples. Content
        is not checked; amounts come back as strings so that no decimal is rounded.

        Raises:
            The parse refusals of `parse_untrusted_xml`, and SchemaViolation.
        """
        root = parse_untrusted_xml(data, max_bytes=self.max_bytes, max_depth=self.max_depth)
        errors = self.schema_violations(root)
        if errors:
            raise SchemaViolation(errors)
        decoded = self._json_model().to_dict(
            root, namespaces={"": FILING_NS}, strip_namespaces=True, decimal_type=str
        )
        return dict(decoded)

    def json_model(self) -> Any:
        """The xmlschema model of the filing schema (drafts decode incomplete documents with it)."""
        return self._json_model()

    def _json_model(self) -> Any:
        """The xmlschema model, built on first JSON use (it takes a few hundred ms)."""
        if self._model is not None:
            return self._model
        with self._model_lock:
            if self._model is None:
                import xmlschema  # only JSON intake needs it

                self._model = xmlschema.XMLSchema(
                    self._xsd_bytes.decode("utf-8"), base_url=str(self._xsd_path.parent)
                )
            return self._model


# -- helpers -------------------------------------------------------------------------------


def kind_of(root: etree._Element) -> str | None:
    """The filing's kind, named by its kind block (the first child whose name is one); None
    when it has none (a draft may not, yet)."""
    for child in root:
        if isinstance(child.tag, str) and (kind := FILING_KINDS.get(local_name(child.tag))) is not None:
            return kind
    return None


def _summarise(root: etree._Element, digest: str) -> ParsedFiling:
    """The accepted filing with the fields routing and storage read first."""
    kind = kind_of(root)
    if kind is None:  # unreachable after the schema check, which requires a kind block
        raise ValueError("the filing has no kind block")

    return ParsedFiling(
        root=root,
        # Exclusive C14N 1.0 in libxml2 gives C14N 2.0's bytes for a whole document (namespaces
        # declared where used, no comments) at a twentieth of lxml's c14n2 cost.
        xml=etree.tostring(root, method="c14n", exclusive=True, with_comments=False),
        kind=kind,
        subject_tax_code=child_text(root, "f:subject/f:taxCode"),
        subject_name=child_text(root, "f:subject/f:name"),
        declarant_tax_code=child_text(root, "f:declarant/f:taxCode"),
        declarant_role=child_text(root, "f:declarant/f:role"),
        digest=digest,
    )


def _declared_prefixes(root: etree._Element) -> dict[str, str]:
    """Every prefix declared in the document, to evaluate libxml2's prefixed error paths."""
    prefixes: dict[str, str] = {}
    for element in root.iter():
        if isinstance(element.tag, str):
            prefixes.update((p, ns) for p, ns in element.nsmap.items() if p)
    return prefixes


def _resolve(
    tree: etree._ElementTree, path: str | None, prefixes: dict[str, str]
) -> etree._Element | None:
    """The element a libxml2 error path ("/*/*[2]" or "/q:filing/q:subject") points at."""
    if not path:
        return None
    try:
        found = tree.xpath(path, namespaces=prefixes)
    except (etree.XPathError, TypeError):
        return None
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def _load_json(data: bytes, max_bytes: int) -> Any:
    """Decode a JSON body strictly: bounded size and depth, no NaN, no duplicate keys."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the raw bytes of the document, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"the document has {len(data)} bytes; the limit is {max_bytes}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise MalformedDocument(f"duplicate key '{key}'", problem="malformed-json")
            result[key] = value
        return result

    def no_constants(name: str) -> Any:
        raise MalformedDocument(f"{name} is not a JSON number", problem="malformed-json")

    try:
        return json.loads(
            bytes(data),
            parse_int=_json_number,
            parse_float=_json_number,
            parse_constant=no_constants,
            object_pairs_hook=no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise MalformedDocument(
            f"{exc.msg} (line {exc.lineno}, column {exc.colno})",
            line=exc.lineno,
            problem="malformed-json",
        ) from exc
    except UnicodeDecodeError as exc:
        raise MalformedDocument(
            "the document is not UTF-8, UTF-16 or UTF-32 text", problem="malformed-json"
        ) from exc
    except RecursionError as exc:
        raise DocumentTooDeep("the JSON document is nested too deeply") from exc


class _JsonNumber(str):
    """A JSON number as the XML text of its field: its digits kept as written (no float
    rounding, no int conversion), an exponent written out."""


@dataclass(frozen=True, slots=True)
class _NumberOutOfRange:
    """A JSON number with more digits or a larger exponent than any field allows."""

    digits: int
    exponent: int


def _json_number(literal: str) -> _JsonNumber | _NumberOutOfRange:
    """`parse_int`/`parse_float` for filings: bound a number before anything converts it."""
    value = Decimal(literal)  # exact for any JSON number literal, and linear in its length
    digits = len(value.as_tuple().digits)
    exponent = value.adjusted()
    if digits > MAX_JSON_NUMBER_DIGITS or abs(exponent) > MAX_JSON_NUMBER_DIGITS:
        return _NumberOutOfRange(digits, exponent)
    return _JsonNumber(literal if "e" not in literal.lower() else format(value, "f"))


def _scalar_text(value: Any) -> str | None:
    """The XML text for a JSON scalar, or None if `value` is not one."""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _wrong_json_kind(xsd_type: Any, value: Any) -> str | None:
    """Why a JSON scalar is not of the kind its field takes, as the JSON Schema says: text
    for text, true/false for a boolean, a number or its digits as text for a number."""
    simple = xsd_type if xsd_type.is_simple() else xsd_type.content
    primitive = getattr(getattr(simple, "primitive_type", None), "local_name", "string")
    if primitive == "boolean":
        return None if isinstance(value, bool) else f"Expected true or false, not {_kind_of(value)}."
    if primitive in _NUMERIC_PRIMITIVES:
        if isinstance(value, bool):
            return "Expected a number, not a boolean."
        return None
    if isinstance(value, bool) or isinstance(value, (_JsonNumber, int, float, Decimal)):
        return f"Expected text, not {_kind_of(value)}."
    return None


#: XSD primitives whose value a JSON number may give (or a string of its digits).
_NUMERIC_PRIMITIVES = frozenset({"decimal", "float", "double"})


def _structure(location: str, detail: str) -> Violation:
    """A JSON structure problem, reported like a schema violation of the element it becomes."""
    return Violation("schema", location, detail)


def _kind_of(value: Any) -> str:
    """How a JSON value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, _NumberOutOfRange):
        return f"a number out of range ({value.digits} digits, magnitude 10^{value.exponent})"
    if isinstance(value, _JsonNumber):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    return type(value).__name__


def _encode(
    declaration: Any,
    value: Any,
    parent: etree._Element | None,
    location: str,
    problems: list[Violation],
) -> etree._Element:
    """Append the element for `value` under `parent` (or make the root), following the schema.

    Children are written in schema order whatever the key order; problems are collected rather
    than raised, so one answer lists them all.
    """
    name = declaration.local_name
    tag = f"{{{FILING_NS}}}{name}"
    element = (
        etree.Element(tag, nsmap={None: FILING_NS})
        if parent is None
        else etree.SubElement(parent, tag)
    )
    if value is None:
        problems.append(_structure(location, "null is not allowed; leave the field out."))
        return element
    if isinstance(value, _NumberOutOfRange):
        problems.append(_structure(location, (
            f"The number is out of range ({value.digits} digits, magnitude 10^{value.exponent}); "
            f"no field takes more than {MAX_JSON_NUMBER_DIGITS} digits.")))
        return element
    xsd_type = declaration.type
    if xsd_type.is_simple() or xsd_type.has_simple_content():
        text = _scalar_text(value)
        if text is None:
            problems.append(_structure(location, f"Expected a text value, not {_kind_of(value)}."))
            return element
        wrong_kind = _wrong_json_kind(xsd_type, value)
        if wrong_kind is not None:
            problems.append(_structure(location, wrong_kind))
            return element
        try:
            element.text = text
        except ValueError:
            problems.append(_structure(location, _NOT_XML_TEXT))
        return element
    if not isinstance(value, Mapping):
        problems.append(_structure(location, f"Expected an object, not {_kind_of(value)}."))
        return element
    children = {child.local_name: child for child in xsd_type.content.iter_elements()}
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        if key.startswith("@"):
            _encode_attribute(element, xsd_type, key[1:], item, location, problems)
        elif key not in children:
            problems.append(_structure(f"{location}/f:{escape_token(key)}", f"Unknown field '{key}'."))
    check_presence(xsd_type.content, value, location, problems)
    for child_name, child in children.items():
        if child_name not in value:
            continue
        item = value[child_name]
        if child.is_multiple():
            items = item if isinstance(item, list) else [item]
            if child.max_occurs is not None and len(items) > child.max_occurs:
                problems.append(_structure(f"{location}/f:{child_name}", (
                    f"At most {child.max_occurs} entries are allowed, not {len(items)}.")))
            for index, one in enumerate(items, start=1):
                _encode(child, one, element, f"{location}/f:{child_name}[{index}]", problems)
        elif isinstance(item, list):
            where = f"{location}/f:{child_name}"
            problems.append(_structure(where, "Expected one value, not a list."))
        else:
            _encode(child, item, element, f"{location}/f:{child_name}", problems)
    return element


def _encode_attribute(
    element: etree._Element,
    xsd_type: Any,
    name: str,
    value: Any,
    location: str,
    problems: list[Violation],
) -> None:
    """Set one "@name" key as an attribute; namespace declarations from to_dict are ignored."""
    if name == "xmlns" or name.startswith("xmlns:"):
        return
    where = f"{location}/@{name}"
    if name not in xsd_type.attributes:
        problems.append(_structure(where, f"Unknown attribute '{name}'."))
        return
    text = _scalar_text(value)
    if text is None:
        problems.append(_structure(where, f"Expected a text value, not {_kind_of(value)}."))
        return
    try:
        element.set(name, text)
    except ValueError:
        problems.append(_structure(where, _NOT_XML_TEXT))

