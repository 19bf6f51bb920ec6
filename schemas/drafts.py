"""What saving a draft checks: the same hardened parse as a filing (its refusals stay hard),
then the schema and content checks, whose findings are kept as warnings, not refusals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date

import orjson
from lxml import etree

from domain.intake import SchemaViolation, Violation
from schemas.content_checks import FILING_NS, check_content
from schemas.filing import _JSON_EXPANSION, FILING_KINDS, FilingValidator, _load_json, kind_of
from schemas.child_paths import child_text
from schemas.xml_safety import parse_untrusted_xml

__all__ = ["DraftInspection", "draft_as_json", "draft_as_xml", "inspect_draft"]

JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class DraftInspection:
    """A draft's document as far as it goes: its kind, its XML tree when one could be built,
    and every open point (schema and content violations)."""

    kind: str | None
    root: etree._Element | None
    warnings: list[Violation]

    def text(self, path: str) -> str:
        """A field of the document ("" when absent or when there is no tree)."""
        if self.root is None:
            return ""
        return child_text(self.root, path)


def inspect_draft(validator: FilingValidator, data: bytes, media_type: str, *, today: date) -> DraftInspection:
    """Parse a draft as intake parses a filing and list what a filing would be refused for.

    Raises:
        DocumentTooLarge, UnsafeDocument, MalformedDocument, DocumentTooDeep: the hard refusals
            of the hardened parsers (a draft that is not a document is not kept).
    """
    if media_type == JSON_TYPE:
        obj = _load_json(data, validator.max_bytes)
        try:
            xml = validator.json_to_xml(obj)
        except SchemaViolation as exc:  # the JSON does not even encode: no tree to check further
            kind = next((FILING_KINDS[k] for k in obj if k in FILING_KINDS), None) if isinstance(obj, Mapping) else None
            return DraftInspection(kind, None, exc.violations)
        root = parse_untrusted_xml(xml, max_bytes=validator.max_bytes * _JSON_EXPANSION,
                                   max_depth=validator.max_depth)
    else:
        root = parse_untrusted_xml(data, max_bytes=validator.max_bytes, max_depth=validator.max_depth)
    warnings = validator.schema_violations(root)
    if not warnings:
        # The content checks rely on the schema's guarantees (every required part present):
        # they run once the document matches it, as at intake.
        warnings = check_content(root, today=today)
    if media_type == JSON_TYPE:  # lines point into XML generated here, which the sender never saw
        warnings = [replace(v, line=None) for v in warnings]
    return DraftInspection(kind_of(root), root, warnings)


def draft_as_json(validator: FilingValidator, data: bytes, media_type: str) -> bytes:
    """The draft in the JSON form of a filing, as JSON text: a JSON draft as it was sent
    (already parsed strictly when saved; its numbers keep every digit); an incomplete XML draft
    decoded as far as it matches the schema (xmlschema's lax mode), the rest left out."""
    if media_type == JSON_TYPE:
        return data
    root = parse_untrusted_xml(data, max_bytes=validator.max_bytes, max_depth=validator.max_depth)
    decoded, _errors = validator.json_model().to_dict(
        root, namespaces={"": FILING_NS}, strip_namespaces=True, decimal_type=str, validation="lax")
    return orjson.dumps(decoded)


def draft_as_xml(validator: FilingValidator, data: bytes, media_type: str) -> bytes:
    """The draft as an XML filing document.

    Raises:
        SchemaViolation: a JSON draft whose structure has no XML form yet (unknown fields...).
    """
    if media_type != JSON_TYPE:
        return data
    # Decoded as at intake: numbers keep their digits, and one too long for any field is refused.
    return validator.json_to_xml(_load_json(data, validator.max_bytes))
