"""A hardened XML parser for what strangers post to the simulators."""

from __future__ import annotations

from lxml import etree

__all__ = ["UnsafeXmlError", "make_parser", "parse_untrusted"]


class UnsafeXmlError(ValueError):
    """The bytes are not well-formed XML, or carry a DTD we refuse to look at."""


def make_parser() -> etree.XMLParser:
    """A parser that never expands entities, reads DTDs or touches the network.

    `huge_tree=False` keeps libxml2's own limits on depth and text size in force.
    """
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_untrusted(data: bytes, parser: etree.XMLParser) -> etree._Element:
    """Parse `data` and refuse any document type declaration.

    Entities are never expanded, so a "billion laughs" document is cheap to parse; it is still
    refused, because no SOAP message may contain a DTD (SOAP 1.1 §3, SOAP 1.2 part 1 §5).

    Raises:
        UnsafeXmlError: not well-formed, or with a DOCTYPE.
    """
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise UnsafeXmlError(f"XML non ben formato: {exc}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXmlError("DTD non ammessa nei messaggi SOAP")
    return root
