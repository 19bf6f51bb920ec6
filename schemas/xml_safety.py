"""The one hardened XML parser for untrusted input: no DTD, no entities, no network, bounded.

Every document from outside (portal filings, agency replies) goes through here. A DOCTYPE is
refused outright, before libxml2 sees the document, so entity bombs and external entities are
never declared, let alone expanded; the parse result is checked again in case an encoding hid
the declaration from the pre-scan. Size is checked before parsing and depth after, in one pass.
"""

from __future__ import annotations

import codecs
import re
from typing import NoReturn

from lxml import etree

from domain.intake import DocumentTooDeep, DocumentTooLarge, MalformedDocument, UnsafeDocument

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "make_hardened_parser",
    "parse_untrusted_xml",
]

#: Largest document accepted by default (1 MiB); a filing with 500 employees is about 150 KiB.
DEFAULT_MAX_BYTES = 1_048_576

#: Deepest element nesting accepted by default; the filing schema needs 5 levels.
DEFAULT_MAX_DEPTH = 32

# Byte-order marks and the first bytes of "<?" in encodings that are not ASCII-compatible
# (XML 1.0, appendix F); anything else is scanned as bytes, where "<!DOCTYPE" looks the same.
_WIDE_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)

_WHITESPACE = " \t\r\n\ufeff"

_EXTERNAL_ID = re.compile(r"\b(?:SYSTEM|PUBLIC)\b")

_LIBXML_POSITION = re.compile(r"\s*,?\s*line \d+, column \d+\s*$")


def make_hardened_parser() -> etree.XMLParser:
    """A new strict parser that never loads, resolves or fetches anything.

    lxml parsers must not be shared between threads, so each call builds a fresh one; that is
    cheap next to parsing.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        recover=False,
        collect_ids=False,
        remove_blank_text=False,
    )


def _prolog_text(data: bytes) -> str:
    """The document as text, decoded just enough to find a DOCTYPE in its prolog."""
    for marker, encoding in _WIDE_ENCODINGS:
        if data.startswith(marker):
            return data.decode(encoding, errors="replace")
    # Latin-1 maps every byte to one character, so ASCII markup keeps its offsets.
    return data.decode("latin-1")


def _find_doctype(text: str) -> int | None:
    """Offset of a DOCTYPE in the prolog (before the root element), or None.

    Only the prolog is scanned, so "<!DOCTYPE" inside a comment or CDATA section of the body is
    not mistaken for a declaration.
    """
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if text.startswith("<?", i):
            end = text.find("?>", i + 2)
        elif text.startswith("<!--", i):
            end = text.find("-->", i + 4)
        elif text[i : i + 9].upper() == "<!DOCTYPE":
            return i
        else:
            return None  # the root element, or something the parser will call malformed
        if end < 0:
            return None
        i = end + 2 if text[end] == "?" else end + 3
    return None


def _refuse_doctype(data: bytes) -> None:
    """Raise UnsafeDocument if the prolog declares a DOCTYPE, saying what it tried to do."""
    text = _prolog_text(data)
    offset = _find_doctype(text)
    if offset is None:
        return
    reasons = []
    if text.find("<!ENTITY", offset) >= 0:
        reasons.append("declares entities")
    if _EXTERNAL_ID.search(text, offset, offset + 65_536):
        reasons.append("refers to an external resource")
    why = f" (this one {' and '.join(reasons)})" if reasons else ""
    raise UnsafeDocument(
        f"DOCTYPE declarations are not accepted{why}; send the document without one",
        line=text.count("\n", 0, offset) + 1,
        code="doctype_forbidden",
    )


def _refuse_dtd_remnants(root: etree._Element) -> None:
    """Second line of defence: a DTD or entity that slipped past the pre-scan."""
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeDocument("DOCTYPE declarations are not accepted", code="doctype_forbidden")
    for node in root.iter(etree.Entity):
        raise UnsafeDocument(
            f"entity references are not accepted ({node.text})",  # an entity's text is `&name;`
            line=node.sourceline,
            code="entity_forbidden",
        )


def _check_depth(root: etree._Element, max_depth: int) -> None:
    """Raise DocumentTooDeep at the first element nested deeper than `max_depth`.

    One walk with start/end events keeps a running depth, so the cost is linear in the size.
    """
    depth = 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if depth > max_depth:
            raise DocumentTooDeep(
                f"elements are nested more than {max_depth} levels deep",
                line=element.sourceline,
            )


def _raise_malformed(exc: etree.XMLSyntaxError, max_depth: int) -> NoReturn:
    """Translate a libxml2 syntax error into the refusal a client can act on."""
    message = _LIBXML_POSITION.sub("", " ".join((exc.msg or str(exc)).split()))
    line = exc.lineno if exc.lineno and exc.lineno > 0 else None
    if "Excessive depth" in message or "maximum depth" in message.lower():
        raise DocumentTooDeep(
            f"elements are nested more than {max_depth} levels deep", line=line
        ) from exc
    if "Detected an entity reference loop" in message or "amplification" in message:
        raise UnsafeDocument(message, line=line, code="entity_forbidden") from exc
    column = exc.position[1] if exc.position else 0
    where = f" (line {line}, column {column})" if line and column else ""
    raise MalformedDocument(f"{message}{where}", line=line) from exc


def parse_untrusted_xml(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Parse `data` from an untrusted source and return its root element.

    Raises:
        DocumentTooLarge: more than `max_bytes` bytes (checked before parsing).
        UnsafeDocument: a DOCTYPE (hence any entity or external reference) is present.
        MalformedDocument: not well-formed XML; the violation carries the line.
        DocumentTooDeep: elements nested deeper than `max_depth`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the raw bytes of the document, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DocumentTooLarge(
            f"the document has {len(data)} bytes; the limit is {max_bytes}",
            location="/",
        )
    if not data.strip():
        raise MalformedDocument("the document is empty", line=1)
    _refuse_doctype(data)
    try:
        root = etree.fromstring(data, parser=make_hardened_parser())
    except etree.XMLSyntaxError as exc:
        _raise_malformed(exc, max_depth)
    _refuse_dtd_remnants(root)
    _check_depth(root, max_depth)
    return root
