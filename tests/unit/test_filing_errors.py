"""Every violation of a filing at once, located in the sender's terms: XML paths and lines for
XML, JSON Pointers (RFC 6901) into the JSON sent for JSON."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from domain.intake import ContentViolation, SchemaViolation, Violation
from schemas.filing import FilingValidator
from schemas.json_locations import field_pointer, json_pointer, json_terms
from schemas.json_schema import FILING_EXAMPLES

TODAY = date(2026, 11, 28)


@pytest.fixture(scope="module")
def validator() -> FilingValidator:
    return FilingValidator(clock=lambda: TODAY)


def _xml(*replacements: tuple[str, str]) -> bytes:
    text = (FILING_EXAMPLES / "business_start.xml").read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


def _json() -> dict[str, Any]:
    return json.loads((FILING_EXAMPLES / "business_start.json").read_text(encoding="utf-8"))


def _schema_refusal(validator: FilingValidator, document: dict[str, Any] | bytes) -> list[Violation]:
    with pytest.raises(SchemaViolation) as refused:
        if isinstance(document, bytes):
            validator.parse(document)
        else:
            validator.parse_json(json.dumps(document).encode())
    return refused.value.violations


# -- JSON Pointers ---------------------------------------------------------------------------


def test_json_pointer_follows_the_document_sent() -> None:
    """An index only where the sender wrote a list; the root is ""; other locations unchanged."""
    as_list = {"employees": {"employee": [{"taxCode": "A"}, {"taxCode": "B"}]}}
    as_object = {"employees": {"employee": {"taxCode": "A"}}}
    location = "/f:filing/f:employees/f:employee[2]/f:taxCode"
    assert json_pointer(location, as_list) == "/employees/employee/1/taxCode"
    assert json_pointer("/f:filing/f:employees/f:employee[1]/f:taxCode", as_object) == "/employees/employee/taxCode"
    assert json_pointer("/f:filing", as_list) == ""
    assert json_pointer("/f:filing/@schemaVersion", as_list) == "/@schemaVersion"
    assert json_pointer("agency:inps", as_list) == "agency:inps"


def test_field_pointer_and_json_terms() -> None:
    """A mapping's XPath names a JSON field; element names in a detail lose their prefix."""
    assert field_pointer("f:subject/f:activityStartDate") == "/subject/activityStartDate"
    assert field_pointer("count(f:employees/f:employee)") == "count(f:employees/f:employee)"
    assert json_terms("Expected is ( f:role ).") == "Expected is ( role )."


def test_an_unknown_key_with_a_slash_is_escaped(validator: FilingValidator) -> None:
    """RFC 6901: `/` in a key is `~1`, `~` is `~0`."""
    document = _json()
    document["subject"]["a/b~c"] = 1
    [violation] = _schema_refusal(validator, document)
    assert violation.location == "/subject/a~1b~0c"


# -- JSON: every structure problem -------------------------------------------------------------


def test_every_missing_json_field_is_named_at_its_object(validator: FilingValidator) -> None:
    """Two fields missing from one object are two errors, not the first one only."""
    document = _json()
    del document["declarant"]["givenName"]
    del document["declarant"]["role"]
    del document["subject"]["pec"]
    violations = _schema_refusal(validator, document)
    assert sorted((v.location, v.detail) for v in violations) == [
        ("/declarant", "The required field 'givenName' is missing."),
        ("/declarant", "The required field 'role' is missing."),
        ("/subject", "The required field 'pec' is missing."),
    ]
    assert all(v.line is None for v in violations)


def test_missing_fields_do_not_hide_wrong_values_beside_them(validator: FilingValidator) -> None:
    """A missing field and a bad value in the same object both come back."""
    document = _json()
    del document["subject"]["name"]
    document["subject"]["registeredOffice"]["province"] = "rm"
    document["subject"]["pec"] = "not an address"
    violations = _schema_refusal(validator, document)
    assert {v.location for v in violations} == {
        "/subject", "/subject/registeredOffice/province", "/subject/pec"}


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda d: d.pop("businessStart"), "One of businessStart, runtsRegistration, durcRequest, "
                                           "responsibilityDeclaration, runtsDeposit is required."),
        (lambda d: d.update(durcRequest={"purpose": "altro"}), "Only one of businessStart, runtsRegistration, "
                                                               "durcRequest, responsibilityDeclaration, runtsDeposit "
                                                               "may be given, not businessStart and durcRequest."),
    ],
    ids=["no kind", "two kinds"],
)
def test_exactly_one_kind_block(validator: FilingValidator, change: Any, detail: str) -> None:
    """The kind is a choice: none and two are each one error at the root."""
    document = _json()
    change(document)
    assert [(v.location, v.detail) for v in _schema_refusal(validator, document)] == [("", detail)]


def test_too_many_entries_are_one_error_at_the_list(validator: FilingValidator) -> None:
    """maxOccurs is checked on the list itself, as the JSON Schema's maxItems."""
    document = _json()
    document["subject"]["atecoCodes"]["ateco"] = ["62.01"] * 21
    [violation] = _schema_refusal(validator, document)
    assert (violation.location, violation.detail) == (
        "/subject/atecoCodes/ateco", "At most 20 entries are allowed, not 21.")


def test_json_content_violations_use_pointers(validator: FilingValidator) -> None:
    """Check digits are judged on the XML but located in the JSON."""
    document = _json()
    document["employees"]["employee"][1]["taxCode"] = "SMPPLA98S02L219B"
    with pytest.raises(ContentViolation) as refused:
        validator.parse_json(json.dumps(document).encode())
    [violation] = refused.value.violations
    assert (violation.location, violation.code) == ("/employees/employee/1/taxCode", "tax_code_check_digit")


# -- XML: libxml2 stops, we do not ------------------------------------------------------------


def test_values_after_an_unexpected_element_are_still_checked(validator: FilingValidator) -> None:
    """libxml2 checks nothing after an unexpected child; the values there are reported too,
    each with its line."""
    data = _xml(
        ("<vatNumber>09182730581</vatNumber>", "<vatNumber>09182730581</vatNumber><website/>"),
        ("<postalCode>00184</postalCode>", "<postalCode>0018</postalCode>"),
        ("<pec>alfaesempio@pec.example.it</pec>", "<pec>nope</pec>"),
        ("<ateco>62.02</ateco>", "<ateco>6202</ateco>"),
    )
    violations = _schema_refusal(validator, data)
    lines = data.decode().splitlines()
    found = {v.location: v for v in violations}
    assert set(found) == {
        "/f:filing/f:subject/f:website",
        "/f:filing/f:subject/f:registeredOffice/f:postalCode",
        "/f:filing/f:subject/f:pec",
        "/f:filing/f:subject/f:atecoCodes/f:ateco[2]",
    }
    assert found["/f:filing/f:subject/f:registeredOffice/f:postalCode"].detail == (
        "The value '0018' is not accepted: expected 5 digits.")
    assert found["/f:filing/f:subject/f:pec"].detail == "The value 'nope' is not an e-mail address."
    for v in violations:
        assert v.line is not None and v.location.rsplit(":", 1)[-1].split("[")[0] in lines[v.line - 1]
    assert [v.line for v in violations] == sorted(v.line or 0 for v in violations)


def test_every_missing_xml_child_is_named(validator: FilingValidator) -> None:
    """Two children missing from one element: libxml2 names the first, we name the second."""
    data = _xml(("<givenName>Marco</givenName>\n    <familyName>Fittizi</familyName>\n    <role>",
                 "<familyName>Fittizi</familyName>\n    <role>"),
                ("<role>legal_representative</role>", ""))
    details = {(v.location, v.detail) for v in _schema_refusal(validator, data)}
    assert details == {
        ("/f:filing/f:declarant/f:familyName", "This element is not expected. Expected is ( f:givenName )."),
        ("/f:filing/f:declarant", "Missing child element f:role."),
    }


def test_a_wrong_date_reads_as_a_sentence(validator: FilingValidator) -> None:
    """A value that is no date at all says what a date looks like, in XML and JSON."""
    [violation] = _schema_refusal(validator, _xml(("<birthDate>1985-03-14</birthDate>",
                                                   "<birthDate>14/03/1985</birthDate>")))
    assert violation.detail == "The value '14/03/1985' is not accepted: expected a calendar date as YYYY-MM-DD."
