"""The hardened parser: DTDs and entities refused, size and depth bounded, errors located."""

from __future__ import annotations

import time

import pytest
from lxml import etree

from domain.intake import (
    DocumentTooDeep,
    DocumentTooLarge,
    MalformedDocument,
    UnsafeDocument,
)
from schemas.xml_safety import make_hardened_parser, parse_untrusted_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE filing [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<filing>&xxe;</filing>
"""


def _nested(levels: int) -> bytes:
    return b"<a>" * levels + b"</a>" * levels


def test_well_formed_document_parses() -> None:
    """An ordinary document comes back as its root element, with line numbers."""
    root = parse_untrusted_xml(b'<?xml version="1.0"?>\n<root>\n  <child>x</child>\n</root>')
    assert root.tag == "root"
    assert root[0].text == "x"
    assert root[0].sourceline == 3


def test_billion_laughs_is_refused_before_expansion() -> None:
    """An entity bomb is refused as unsafe, at once, without building its gigabyte of text."""
    started = time.perf_counter()
    with pytest.raises(UnsafeDocument) as refused:
        parse_untrusted_xml(BILLION_LAUGHS)
    assert time.perf_counter() - started < 1.0
    assert refused.value.problem == "forbidden-xml-construct"
    assert refused.value.status == 400
    assert "declares entities" in refused.value.detail
    assert refused.value.line == 2


def test_external_entity_is_refused() -> None:
    """A SYSTEM entity pointing at a local file is refused, and the file never appears."""
    with pytest.raises(UnsafeDocument) as refused:
        parse_untrusted_xml(EXTERNAL_ENTITY)
    assert "external resource" in refused.value.detail
    assert "root:" not in str(refused.value)


def test_external_dtd_over_the_network_is_refused() -> None:
    """A DOCTYPE that would fetch a DTD by URL is refused without any request."""
    document = b'<!DOCTYPE a PUBLIC "-//X//Y" "http://192.0.2.1/evil.dtd">\n<a/>'
    with pytest.raises(UnsafeDocument) as refused:
        parse_untrusted_xml(document)
    assert "external resource" in refused.value.detail


def test_doctype_alone_is_refused() -> None:
    """Even a harmless-looking DOCTYPE is refused: no DTD is ever accepted."""
    with pytest.raises(UnsafeDocument) as refused:
        parse_untrusted_xml(b"<?xml version='1.0'?>\n<!-- note -->\n<!DOCTYPE a>\n<a/>")
    assert refused.value.line == 3
    assert refused.value.violations[0].code == "doctype_forbidden"


def test_doctype_hidden_by_utf16_is_refused() -> None:
    """Re-encoding the document as UTF-16 does not smuggle a DOCTYPE past the check."""
    document = (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<!DOCTYPE a [<!ENTITY e "x">]>\n<a>&e;</a>'
    )
    with pytest.raises(UnsafeDocument):
        parse_untrusted_xml(document.encode("utf-16"))


def test_doctype_text_inside_the_body_is_not_a_declaration() -> None:
    """The words <!DOCTYPE in a comment or CDATA section of the body are just text."""
    root = parse_untrusted_xml(b"<a><!-- <!DOCTYPE x> --><![CDATA[<!DOCTYPE y>]]></a>")
    assert "".join(root.itertext()) == "<!DOCTYPE y>"


def test_undefined_entity_reference_is_malformed() -> None:
    """Without a DTD an entity reference has no meaning and is a well-formedness error."""
    with pytest.raises(MalformedDocument) as refused:
        parse_untrusted_xml(b"<a>\n&xxe;</a>")
    assert refused.value.line == 2
    assert "xxe" in refused.value.detail


def test_xinclude_is_not_processed() -> None:
    """An XInclude element stays an element: nothing is fetched into the document."""
    root = parse_untrusted_xml(
        b'<a xmlns:xi="http://www.w3.org/2001/XInclude">'
        b'<xi:include href="file:///etc/passwd" parse="text"/></a>'
    )
    assert root[0].tag == "{http://www.w3.org/2001/XInclude}include"
    assert not (root[0].text or "")


def test_oversize_document_is_refused_before_parsing() -> None:
    """A body over the limit gets the 413 refusal even if it is not XML at all."""
    with pytest.raises(DocumentTooLarge) as refused:
        parse_untrusted_xml(b"<" * 2048, max_bytes=1024)
    assert refused.value.status == 413
    assert refused.value.problem == "document-too-large"
    assert "1024" in refused.value.detail


def test_document_at_the_depth_limit_is_accepted() -> None:
    """Exactly max_depth levels of nesting are fine."""
    assert parse_untrusted_xml(_nested(8), max_depth=8).tag == "a"


def test_too_deep_document_is_refused_with_its_line() -> None:
    """One level more than the limit is refused, pointing at the line of the offending element."""
    document = b"<a>\n" * 9 + b"</a>" * 9
    with pytest.raises(DocumentTooDeep) as refused:
        parse_untrusted_xml(document, max_depth=8)
    assert refused.value.problem == "document-too-deep"
    assert refused.value.line == 9


def test_extremely_deep_document_is_refused_as_too_deep() -> None:
    """Nesting beyond libxml2's own limit is still reported as too deep, not as malformed."""
    with pytest.raises(DocumentTooDeep):
        parse_untrusted_xml(_nested(5000))


def test_malformed_document_is_refused_with_line() -> None:
    """A mismatched end tag is reported at its line, in the violation and in the message."""
    with pytest.raises(MalformedDocument) as refused:
        parse_untrusted_xml(b"<a>\n  <b>\n</a>\n")
    assert refused.value.line == 3
    assert refused.value.violations[0].location == "line 3"
    assert refused.value.problem == "malformed-xml"
    assert "line 3" in str(refused.value)


def test_empty_document_is_malformed() -> None:
    """An empty or blank body is refused as malformed."""
    with pytest.raises(MalformedDocument):
        parse_untrusted_xml(b"  \n")


def test_text_instead_of_bytes_is_a_programming_error() -> None:
    """Callers must pass the raw bytes, so the declared encoding is honoured."""
    with pytest.raises(TypeError):
        parse_untrusted_xml("<a/>")  # type: ignore[arg-type]


def test_refusal_prints_as_one_line() -> None:
    """The CLI prints str(error): one line with the problem and where it is."""
    with pytest.raises(UnsafeDocument) as refused:
        parse_untrusted_xml(BILLION_LAUGHS)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("Forbidden XML construct [forbidden-xml-construct]: line 2:")


def test_factory_parser_alone_never_expands_or_loads_entities() -> None:
    """Used directly on a DTD, the factory's parser leaves entities unexpanded and files unread."""
    document = (
        b'<!DOCTYPE a [<!ENTITY big "EXPANDED"><!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<a>&big;&xxe;</a>"
    )
    root = etree.fromstring(document, parser=make_hardened_parser())
    text = "".join(root.itertext())
    assert [type(node) for node in root] == [etree._Entity, etree._Entity]
    assert "EXPANDED" not in text
    assert "root:" not in text
