"""Schema errors worded for the sender: libxml2's messages as sentences, and the errors libxml2
does not report after its first content-model error in an element.

libxml2 checks no further child of an element once one is missing or unexpected. The filing
validator then asks xmlschema for the values it skipped (`libxml_message` words them as
libxml2 would, so both read alike through `describe`) and `missing_children` names every other
required child that is absent. `check_presence` is the same check for a JSON object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lxml import etree

from domain.intake import Violation
from schemas.content_checks import FILING_NS, location_of

__all__ = [
    "CONTENT_MODEL",
    "check_presence",
    "describe",
    "explained_by",
    "libxml_message",
    "missing_children",
]

_LIBXML_MESSAGE = re.compile(r"^Element '[^']*'(?:, attribute '([^']*)')?: (.*)$", re.DOTALL)

#: A quoted value longer than a reader needs to recognise it.
#: (libxml2 cuts its messages at 64 KiB, so the closing quote may be missing.)
_LONG_QUOTE = re.compile(r"'([^']{40})[^']{20,}(?:'|$)")

#: Openings of libxml2's content-model errors: after one, the element's other children are
#: not checked.
CONTENT_MODEL = ("This element is not expected", "Missing child element(s)")

_PATTERN_FAILURE = re.compile(r"is not accepted by the pattern '(.*)'\.$", re.DOTALL)

# What each XSD pattern means, so a refusal reads as a sentence rather than a regex.
_PATTERN_HINTS = {
    r"[\s\S]*\S[\s\S]*": "the text is blank",
    "[0-9]{11}|[A-Z0-9]{16}": "expected 11 digits or 16 upper-case letters and digits",
    "[A-Z0-9]{16}": "expected 16 upper-case letters and digits",
    "[0-9]{11}": "expected 11 digits",
    "[A-Z][0-9]{3}": "expected a cadastral municipality code such as H501",
    "[0-9]{5}": "expected 5 digits",
    "[A-Z]{2}": "expected a two-letter province code such as RM",
    r"[0-9]{2}\.[0-9]{2}(\.[0-9]{1,2})?": "expected an ATECO code such as 62.01 or 62.01.00",
    "[0-9]{4}-[0-9]{2}-[0-9]{2}": "expected a date as YYYY-MM-DD without time zone",
    "[0-9a-f]{64}": "expected 64 lower-case hexadecimal digits",
    "[0-9]{4}(-(0[1-9]|1[0-2]))?": "expected a year (YYYY) or a month (YYYY-MM)",
    "[0-9]{7}": "expected a RUNTS repertory number of 7 digits",
    "[0-9]{4}": "expected a year (YYYY)",
    "[0-9]{1,7}(/[0-9]{1,7})?": "expected a notarial repertory number such as 12345 or 12345/6789",
}


#: What a value of each atomic type looks like, for a value that is not one at all.
_TYPE_HINTS = {
    "f:Date": "expected a calendar date as YYYY-MM-DD",
    "xs:date": "expected a calendar date as YYYY-MM-DD",
    "xs:boolean": "expected true or false",
    "f:Amount": "expected a decimal number such as 1250.50",
    "xs:decimal": "expected a decimal number such as 1250.50",
}

_NOT_OF_TYPE = re.compile(r"^'(.*)' is not a valid value of the atomic type '([^']*)'", re.DOTALL)


def describe(message: str, element: etree._Element | None, path: str | None) -> tuple[str, str]:
    """Location and a readable detail for one libxml2 schema error."""
    message = message.replace(f"{{{FILING_NS}}}", "f:").strip()
    match = _LIBXML_MESSAGE.match(message)
    attribute, detail = (match.group(1), match.group(2)) if match else (None, message)
    detail = re.sub(r"^\[facet '[^']*'\]\s*", "", detail)
    # libxml2 quotes the value refused: a huge one would fill the answer (and the log) with it.
    detail = _LONG_QUOTE.sub(lambda m: f"'{m.group(1)}…'" + ("" if m.group(0).endswith("'") else
                                                            " is not accepted: far too long"), detail)
    failure = _PATTERN_FAILURE.search(detail)
    not_of_type = _NOT_OF_TYPE.match(detail)
    if not_of_type and not_of_type.group(2) in _TYPE_HINTS:
        detail = f"The value '{not_of_type.group(1)}' is not accepted: {_TYPE_HINTS[not_of_type.group(2)]}."
    elif failure:
        hint = _PATTERN_HINTS.get(failure.group(1))
        if hint == "the text is blank":
            detail = "The text is blank."
        elif hint:
            detail = f"{detail[: failure.start()]}is not accepted: {hint}."
        elif "@" in failure.group(1):
            detail = f"{detail[: failure.start()]}is not an e-mail address."
        elif "/" in failure.group(1):
            detail = f"{detail[: failure.start()]}is not a media type (type/subtype)."
    location = location_of(element) if element is not None else (path or "/")
    if attribute:
        location = f"{location}/@{attribute}"
    return location, detail


def check_presence(
    group: Any, value: Mapping[str, Any], location: str, problems: list[Violation],
    *, xml: bool = False,
) -> None:
    """Every required field the JSON object lacks, and its choices: exactly one alternative.

    Located at the object, as the JSON Schema's `required` is. With `xml`, `value` maps the
    element's children and the words are XML's (an extra alternative is libxml2's to report).
    """
    for item in group:
        if getattr(item, "model", None) == "choice":
            names = [element.local_name for element in item.iter_elements()]
            given = [name for name in names if name in value]
            if len(given) > 1 and not xml:
                problems.append(_schema_error(location, (
                    f"Only one of {', '.join(names)} may be given, not {' and '.join(given)}.")))
            elif not given and item.min_occurs > 0:
                problems.append(_schema_error(location, (
                    f"Missing child element: one of {', '.join(f'f:{n}' for n in names)}." if xml
                    else f"One of {', '.join(names)} is required.")))
        elif getattr(item, "model", None) is not None:
            check_presence(item, value, location, problems, xml=xml)
        elif item.min_occurs > 0 and value.get(item.local_name, None) in (None, []):
            if item.local_name in value:
                continue  # null: reported where it is
            problems.append(_schema_error(location, (
                f"Missing child element f:{item.local_name}." if xml
                else f"The required field '{item.local_name}' is missing.")))


def missing_children(
    root: etree._Element, declaration: Any, found: list[Violation]
) -> list[Violation]:
    """The required children libxml2 did not name: it names one per element and stops there.

    Only elements with a content-model error are looked at; a child libxml2's message already
    names is not named again.
    """
    said: dict[str, str] = {}
    for v in found:
        if v.detail.startswith(CONTENT_MODEL):
            parent = v.location if v.detail.startswith("Missing") else v.location.rsplit("/", 1)[0]
            said[parent] = said.get(parent, "") + " " + v.detail
    missing: list[Violation] = []

    def walk(element: etree._Element, declared: Any) -> None:
        xsd_type = declared.type
        if xsd_type.is_simple() or xsd_type.has_simple_content():
            return
        children = [c for c in element if isinstance(c.tag, str)]
        here = location_of(element)
        if here in said:
            present = {etree.QName(c).localname: True for c in children
                       if etree.QName(c).namespace == FILING_NS}
            problems: list[Violation] = []
            check_presence(xsd_type.content, present, here, problems, xml=True)
            named = set(re.findall(r"f:(\w+)", said[here]))
            missing.extend(replace(p, line=element.sourceline) for p in problems
                           if not named & set(re.findall(r"f:(\w+)", p.detail)))
        declarations = {d.local_name: d for d in xsd_type.content.iter_elements()}
        for child in children:
            qname = etree.QName(child)
            if qname.namespace == FILING_NS and qname.localname in declarations:
                walk(child, declarations[qname.localname])

    walk(root, declaration)
    return missing


def explained_by(error: Violation, structure: list[Violation]) -> bool:
    """True when a structure problem of the JSON already accounts for an XSD error.

    The XSD sees the XML with what could not be encoded left out: an empty element where a
    null or an object was, a child missing or unexpected where a field was missing or extra.
    """
    said = {v.location for v in structure}
    if error.location in said:
        return True
    if not error.detail.startswith(CONTENT_MODEL):
        return False
    parent = error.location if error.detail.startswith("Missing") else error.location.rsplit("/", 1)[0]
    return any(where == parent or where.rsplit("/", 1)[0] == parent for where in said)


def libxml_message(error: Any, element: etree._Element) -> str:
    """An xmlschema validation error worded as libxml2 words it, so that `_describe` gives
    both engines' errors the same sentences."""
    validator = error.validator
    kind = type(validator).__name__
    tag = f"Element '{etree.QName(element).text}'"
    if kind == "XsdAttribute":
        name = validator.local_name
        value = element.get(name, "")
        if validator.fixed is not None:
            return (f"{tag}, attribute '{name}': The value '{value}' does not match the fixed "
                    f"value constraint '{validator.fixed}'.")
        return f"{tag}, attribute '{name}': '{value}' is not a valid value: {error.reason}."
    value = element.text or ""
    facet = getattr(validator, "value", None)
    if kind == "XsdPatternFacets":
        pattern = "|".join(validator.regexps)
        return f"{tag}: [facet 'pattern'] The value '{value}' is not accepted by the pattern '{pattern}'."
    if kind == "XsdEnumerationFacets":
        choices = ", ".join(f"'{e}'" for e in validator.enumeration)
        return f"{tag}: [facet 'enumeration'] The value '{value}' is not an element of the set {{{choices}}}."
    if kind == "XsdMaxLengthFacet":
        return (f"{tag}: [facet 'maxLength'] The value has a length of '{len(value)}'; this exceeds "
                f"the allowed maximum length of '{facet}'.")
    if kind == "XsdMinLengthFacet":
        return (f"{tag}: [facet 'minLength'] The value has a length of '{len(value)}'; this underruns "
                f"the allowed minimum length of '{facet}'.")
    if kind == "XsdMinInclusiveFacet":
        return f"{tag}: [facet 'minInclusive'] The value '{value}' is less than the minimum value allowed ('{facet}')."
    if kind == "XsdMaxInclusiveFacet":
        return (f"{tag}: [facet 'maxInclusive'] The value '{value}' is greater than the maximum value "
                f"allowed ('{facet}').")
    if kind == "XsdFractionDigitsFacet":
        return (f"{tag}: [facet 'fractionDigits'] The value '{value}' has more fractional digits than "
                f"are allowed ('{facet}').")
    if kind == "XsdTotalDigitsFacet":
        return f"{tag}: [facet 'totalDigits'] The value '{value}' has more digits than are allowed ('{facet}')."
    type_name = getattr(validator, "prefixed_name", None) or "its type"
    return f"{tag}: '{value}' is not a valid value of the atomic type '{type_name}' ({error.reason})."


def _schema_error(location: str, detail: str) -> Violation:
    return Violation("schema", location, detail)
