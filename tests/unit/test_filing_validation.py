"""Filing intake: the examples pass, schema and content errors are all listed and located."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from domain.intake import (
    ContentViolation,
    DocumentTooLarge,
    MalformedDocument,
    SchemaViolation,
    UnsafeDocument,
)
from domain.taxcode import compute_check_character
from schemas.filing import FILING_NS, FILING_XSD, NSMAP, FilingValidator

TODAY = date(2026, 11, 28)
EXAMPLES = FILING_XSD.parent / "examples"
EXPECTED_KINDS = {
    "business_start.xml": "business_start",
    "business_start_no_employees.xml": "business_start",
    "business_start_social_enterprise.xml": "business_start",
    "runts_deposit_accounts.xml": "runts_deposit",
    "runts_deposit_statute.xml": "runts_deposit",
    "runts_registration.xml": "runts_registration",
    "runts_registration_odv.xml": "runts_registration",
    "durc_request.xml": "durc_request",
    "responsibility_declaration.xml": "responsibility_declaration",
}
REP = "FTTMRC85C14H501X"  # legal representative and declarant of business_start.xml


@pytest.fixture(scope="module")
def validator() -> FilingValidator:
    return FilingValidator(clock=lambda: TODAY)


@pytest.fixture(scope="module")
def model() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(FILING_XSD))


def _example(name: str = "business_start.xml") -> bytes:
    return (EXAMPLES / name).read_bytes()


def _edited(name: str, *replacements: tuple[str, str]) -> bytes:
    """An example with textual replacements, each of which must apply."""
    text = _example(name).decode()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


def _as_json(model: xmlschema.XMLSchema, name: str) -> dict:
    decoded = model.to_dict(
        str(EXAMPLES / name), namespaces={"": FILING_NS}, strip_namespaces=True
    )
    return json.loads(json.dumps(decoded, default=str))


def _content_refusal(validator: FilingValidator, data: bytes) -> dict[str, str]:
    """The content violations of `data` as {location: code}."""
    with pytest.raises(ContentViolation) as refused:
        validator.parse(data)
    return {v.location: v.code for v in refused.value.violations}


# -- examples and the accepted filing ----------------------------------------------------------


def test_every_example_file_is_listed() -> None:
    """The examples folder holds exactly the documented samples."""
    assert sorted(p.name for p in EXAMPLES.glob("*.xml")) == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED_KINDS.items()))
def test_each_example_is_accepted_with_its_kind(
    validator: FilingValidator, name: str, kind: str
) -> None:
    """Each sample passes the schema and the content checks and reports its filing kind."""
    parsed = validator.parse(_example(name))
    assert parsed.kind == kind


def test_accepted_filing_summarises_who_files_for_whom(validator: FilingValidator) -> None:
    """Subject and declarant come out of the document ready for routing and authorization."""
    data = _example("business_start_no_employees.xml")
    parsed = validator.parse(data)
    assert parsed.subject_tax_code == "07364510151"
    assert parsed.subject_name == "Beta Prova S.r.l.s."
    assert parsed.declarant_tax_code == "DLGLNE88D50L219Q"
    assert parsed.declarant_role == "intermediary"
    assert parsed.digest == hashlib.sha256(data).hexdigest()
    assert parsed.root.tag == f"{{{FILING_NS}}}filing"


def test_stored_xml_is_canonical_and_parses_back(validator: FilingValidator) -> None:
    """The stored bytes drop comments and the declaration, and are themselves a valid filing."""
    parsed = validator.parse(_example())
    assert parsed.xml.startswith(b"<filing")
    assert b"<!--" not in parsed.xml
    assert validator.parse(parsed.xml).kind == "business_start"


def test_stored_xml_is_the_c14n_2_form_of_the_document(validator: FilingValidator) -> None:
    """The stored bytes are exactly the document's C14N 2.0 form, whatever its spelling: an
    unused namespace declaration, a processing instruction, attribute order, character references."""
    text = _example().decode().replace('xmlns="urn:', 'xmlns:unused="urn:nothing" xmlns="urn:', 1)
    text = text.replace("<subject>", "<?audit x?><subject>", 1).replace("</name>", "&#xE9;&#x9;</name>", 1)
    parsed = validator.parse(text.encode())
    assert b"urn:nothing" not in parsed.xml and b"<?audit x?>" in parsed.xml
    assert parsed.xml == etree.tostring(etree.fromstring(text.encode()), method="c14n2", with_comments=False)


def test_namespace_prefix_does_not_matter(validator: FilingValidator) -> None:
    """A document using a prefix instead of the default namespace is the same filing."""
    text = _example().decode().replace('xmlns="urn:', 'xmlns:x="urn:')
    text = text.replace("<", "<x:").replace("<x:/", "</x:")
    text = text.replace("<x:?", "<?").replace("<x:!", "<!")
    assert validator.parse(text.encode()).kind == "business_start"


# -- refusals before the schema -----------------------------------------------------------------


def test_unsafe_filing_is_refused_before_validation(validator: FilingValidator) -> None:
    """A filing carrying a DOCTYPE is refused as unsafe, not as a schema problem."""
    doctype = b'<!DOCTYPE filing SYSTEM "http://192.0.2.1/x">\n'
    data = _example().replace(b"<filing ", doctype + b"<filing ")
    with pytest.raises(UnsafeDocument):
        validator.parse(data)


def test_oversize_filing_is_refused_with_413() -> None:
    """The validator applies its size limit before anything else."""
    small = FilingValidator(max_bytes=1000, clock=lambda: TODAY)
    with pytest.raises(DocumentTooLarge) as refused:
        small.parse(_example())
    assert refused.value.status == 413


# -- schema violations --------------------------------------------------------------------------


def test_schema_violations_are_listed_all_at_once_with_locations(
    validator: FilingValidator,
) -> None:
    """Two wrong fields give two violations, each at its element and line."""
    data = _edited(
        "business_start.xml",
        ("<postalCode>00184</postalCode>", "<postalCode>0018</postalCode>"),
        ("<contractType>apprendistato", "<contractType>stagista"),
    )
    with pytest.raises(SchemaViolation) as refused:
        validator.parse(data)
    error = refused.value
    assert error.status == 422 and error.problem == "schema-violation"
    found = {(v.location, v.line) for v in error.violations}
    assert found == {
        ("/f:filing/f:subject/f:registeredOffice/f:postalCode", 12),
        ("/f:filing/f:employees/f:employee[2]/f:contractType", 47),
    }
    assert all(v.code == "schema" for v in error.violations)
    assert "expected 5 digits" in error.violations[0].detail


def test_missing_element_is_reported_at_its_parent(validator: FilingValidator) -> None:
    """A filing without a kind block says what is missing and where."""
    data = _edited(
        "durc_request.xml",
        ("<durcRequest>\n    <purpose>appalto_pubblico</purpose>\n  </durcRequest>\n", ""),
    )
    with pytest.raises(SchemaViolation) as refused:
        validator.parse(data)
    (violation,) = refused.value.violations
    assert violation.location == "/f:filing"
    assert "f:businessStart" in violation.detail


def test_two_kind_blocks_are_refused(validator: FilingValidator) -> None:
    """Exactly one kind block is allowed; a second one is located."""
    data = _edited(
        "durc_request.xml",
        ("</durcRequest>", "</durcRequest><durcRequest><purpose>altro</purpose></durcRequest>"),
    )
    with pytest.raises(SchemaViolation) as refused:
        validator.parse(data)
    assert [v.location for v in refused.value.violations] == ["/f:filing/f:durcRequest[2]"]


def test_wrong_schema_version_is_located_at_the_attribute(validator: FilingValidator) -> None:
    """Only version 1.0 is accepted here, and the violation points at the attribute."""
    data = _edited("durc_request.xml", ('schemaVersion="1.0"', 'schemaVersion="2.0"'))
    with pytest.raises(SchemaViolation) as refused:
        validator.parse(data)
    assert refused.value.violations[0].location == "/f:filing/@schemaVersion"


# -- content violations -------------------------------------------------------------------------


def test_wrong_check_digit_is_located_at_the_tax_code(validator: FilingValidator) -> None:
    """A mistyped check character of the second employee is reported there, with the fix."""
    data = _edited("business_start.xml", ("SMPPLA98S02L219A", "SMPPLA98S02L219B"))
    with pytest.raises(ContentViolation) as refused:
        validator.parse(data)
    (violation,) = refused.value.violations
    assert violation.code == "tax_code_check_digit"
    assert violation.location == "/f:filing/f:employees/f:employee[2]/f:taxCode"
    assert violation.line == 43
    assert "expected 'A'" in violation.detail
    assert refused.value.status == 422 and refused.value.problem == "content-violation"


def test_wrong_vat_check_digit_is_reported(validator: FilingValidator) -> None:
    """The partita IVA has its own check digit, reported at vatNumber."""
    data = _edited("business_start.xml", ("<vatNumber>09182730581", "<vatNumber>09182730582"))
    found = _content_refusal(validator, data)
    assert found == {"/f:filing/f:subject/f:vatNumber": "vat_number_check_digit"}


def test_company_vat_number_must_equal_its_tax_code(validator: FilingValidator) -> None:
    """For an SRL a valid but different partita IVA is refused; an ODV may have a different one."""
    data = _edited("business_start.xml", ("<vatNumber>09182730581", "<vatNumber>12345678903"))
    assert _content_refusal(validator, data) == {
        "/f:filing/f:subject/f:vatNumber": "vat_number_mismatch"
    }
    assert validator.parse(_example("runts_registration.xml")).subject_tax_code == "97123450633"


def test_personal_subject_tax_code_is_only_for_sole_proprietors(
    validator: FilingValidator,
) -> None:
    """A company filed under a person's tax code is refused; a DI is not."""
    data = _edited("business_start.xml", ("<taxCode>09182730581", f"<taxCode>{REP}"))
    assert _content_refusal(validator, data) == {"/f:filing/f:subject/f:taxCode": "tax_code_kind"}


def test_underage_legal_representative_is_refused(validator: FilingValidator) -> None:
    """A legal representative born 17 years ago cannot sign for the company."""
    minor = "FTTMRC09L01H501"
    minor += compute_check_character(minor)
    data = _edited(
        "business_start.xml",
        (REP, minor),
        ("<birthDate>1985-03-14", "<birthDate>2009-07-01"),
    )
    assert _content_refusal(validator, data) == {
        "/f:filing/f:legalRepresentative/f:birthDate": "legal_representative_underage"
    }


def test_birth_date_must_match_the_tax_code(validator: FilingValidator) -> None:
    """A birth date that contradicts the one encoded in the tax code is refused."""
    data = _edited("business_start.xml", ("<birthDate>1985-03-14", "<birthDate>1985-03-15"))
    assert _content_refusal(validator, data) == {
        "/f:filing/f:legalRepresentative/f:birthDate": "birth_date_mismatch"
    }


def test_birth_date_in_another_century_is_not_a_mismatch(validator: FilingValidator) -> None:
    """The code keeps two digits of the year, so 1885 and 1985 both match it."""
    data = _edited("business_start.xml", ("<birthDate>1985-03-14", "<birthDate>1885-03-14"))
    assert validator.parse(data).kind == "business_start"


def test_hire_date_before_activity_start_is_refused(validator: FilingValidator) -> None:
    """Nobody is hired by a business before it starts; the employee is pinpointed."""
    data = _edited("business_start.xml", ("<hireDate>2025-03-03", "<hireDate>2025-02-03"))
    assert _content_refusal(validator, data) == {
        "/f:filing/f:employees/f:employee[1]/f:hireDate": "hire_date_before_activity_start"
    }


def test_dates_too_far_ahead_are_refused(validator: FilingValidator) -> None:
    """Activity start over a year ahead and hire dates over 60 days ahead are refused."""
    data = _edited(
        "business_start.xml",
        ("<activityStartDate>2025-03-01", "<activityStartDate>2028-01-01"),
        ("<hireDate>2025-03-03", "<hireDate>2028-02-01"),
        ("<hireDate>2025-04-01", "<hireDate>2028-03-01"),
    )
    found = _content_refusal(validator, data)
    assert found["/f:filing/f:subject/f:activityStartDate"] == "activity_start_too_far"
    assert found["/f:filing/f:employees/f:employee[2]/f:hireDate"] == "hire_date_too_far"


def test_reference_period_in_the_future_is_refused(validator: FilingValidator) -> None:
    """A declaration cannot cover a month that has not begun; the current month is fine."""
    future = _edited("responsibility_declaration.xml", ("2025-12", "2026-12"))
    assert _content_refusal(validator, future) == {
        "/f:filing/f:responsibilityDeclaration/f:referencePeriod": "reference_period_future"
    }
    current = _edited("responsibility_declaration.xml", ("2025-12", "2026-11"))
    assert validator.parse(current).kind == "responsibility_declaration"


def test_duplicates_are_refused_at_the_repeated_entry(validator: FilingValidator) -> None:
    """A repeated employee tax code and a repeated attachment name point at the second entry."""
    data = _edited(
        "business_start.xml",
        ("SMPPLA98S02L219A", "NVNLRA92L61F205G"),
        ("<name>statuto.pdf", "<name>Atto-Costitutivo.PDF"),
    )
    assert _content_refusal(validator, data) == {
        "/f:filing/f:employees/f:employee[2]/f:taxCode": "duplicate_tax_code",
        "/f:filing/f:attachments/f:attachment[2]/f:name": "duplicate_attachment_name",
    }


def test_declarant_signing_as_legal_representative_must_be_one(validator: FilingValidator) -> None:
    """Role legal_representative with someone else's tax code is refused."""
    data = _example().replace(
        f"<taxCode>{REP}</taxCode>\n    <givenName>Marco</givenName>\n    "
        f"<familyName>Fittizi</familyName>\n    <role>".encode(),
        b"<taxCode>DLGLNE88D50L219Q</taxCode>\n    <givenName>Elena</givenName>\n    "
        b"<familyName>Delegata</familyName>\n    <role>",
    )
    assert _content_refusal(validator, data) == {
        "/f:filing/f:declarant/f:taxCode": "declarant_not_legal_representative"
    }


def test_all_content_violations_come_together_in_document_order(
    validator: FilingValidator,
) -> None:
    """Several content errors are reported in one refusal, ordered as in the document."""
    data = _edited(
        "business_start.xml",
        ("<vatNumber>09182730581", "<vatNumber>09182730582"),
        ("SMPPLA98S02L219A", "SMPPLA98S02L219B"),
    )
    with pytest.raises(ContentViolation) as refused:
        validator.parse(data)
    assert [v.line for v in refused.value.violations] == [6, 43]


# -- JSON intake --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED_KINDS.items()))
def test_json_intake_round_trips_each_example(
    validator: FilingValidator, model: xmlschema.XMLSchema, name: str, kind: str
) -> None:
    """The xmlschema JSON form of each example is accepted as the same filing."""
    from_xml = validator.parse(_example(name))
    body = json.dumps(_as_json(model, name)).encode()
    from_json = validator.parse_json(body)
    assert from_json.kind == kind == from_xml.kind
    assert from_json.subject_tax_code == from_xml.subject_tax_code
    assert from_json.digest == hashlib.sha256(body).hexdigest()


def test_json_fields_may_come_in_any_order(
    validator: FilingValidator, model: xmlschema.XMLSchema
) -> None:
    """Key order is irrelevant in JSON; the XML is written in schema order."""
    obj = _as_json(model, "business_start.xml")
    obj = {key: obj[key] for key in reversed(obj)}
    obj["subject"] = {key: obj["subject"][key] for key in reversed(obj["subject"])}
    del obj["@schemaVersion"]
    parsed = validator.parse_json(json.dumps(obj).encode())
    assert parsed.kind == "business_start"
    assert parsed.root.find("f:subject", NSMAP)[0].tag == f"{{{FILING_NS}}}taxCode"


def test_json_single_employee_may_be_an_object(
    validator: FilingValidator, model: xmlschema.XMLSchema
) -> None:
    """A repeated element given once as an object instead of a one-item list is accepted."""
    obj = _as_json(model, "business_start.xml")
    obj["employees"]["employee"] = obj["employees"]["employee"][0]
    parsed = validator.parse_json(json.dumps(obj).encode())
    assert len(parsed.root.findall("f:employees/f:employee", NSMAP)) == 1


def test_invalid_json_structure_gets_located_violations(
    validator: FilingValidator, model: xmlschema.XMLSchema
) -> None:
    """Unknown fields, wrong containers and nulls are all listed, each at its JSON Pointer."""
    obj = _as_json(model, "business_start.xml")
    obj["subject"]["nickname"] = "Alfa"
    obj["subject"]["name"] = None
    obj["declarant"] = "Marco"
    obj["employees"]["employee"][1]["hireDate"] = ["2025-04-01"]
    with pytest.raises(SchemaViolation) as refused:
        validator.parse_json(json.dumps(obj).encode())
    assert {v.location for v in refused.value.violations} == {
        "/subject/nickname",
        "/subject/name",
        "/declarant",
        "/employees/employee/1/hireDate",
    }


def test_json_value_errors_are_located_without_lines(
    validator: FilingValidator, model: xmlschema.XMLSchema
) -> None:
    """Schema and content errors found in JSON carry locations but no line of generated XML."""
    obj = _as_json(model, "business_start.xml")
    obj["subject"]["registeredOffice"]["postalCode"] = "0018"
    with pytest.raises(SchemaViolation) as refused:
        validator.parse_json(json.dumps(obj).encode())
    (violation,) = refused.value.violations
    assert violation.location == "/subject/registeredOffice/postalCode"
    assert violation.line is None
    obj["subject"]["registeredOffice"]["postalCode"] = "00184"
    obj["employees"]["employee"][1]["taxCode"] = "SMPPLA98S02L219B"
    with pytest.raises(ContentViolation) as refused_content:
        validator.parse_json(json.dumps(obj).encode())
    assert refused_content.value.violations[0].location == "/employees/employee/1/taxCode"


def test_json_that_is_not_an_object_is_a_schema_violation(validator: FilingValidator) -> None:
    """A JSON array or string body is refused as a filing of the wrong shape."""
    with pytest.raises(SchemaViolation) as refused:
        validator.parse_json(b"[]")
    assert refused.value.violations[0].location == ""  # RFC 6901: the whole document


def test_malformed_json_is_refused_with_line(validator: FilingValidator) -> None:
    """Broken JSON gets the malformed-json problem and the line of the error."""
    with pytest.raises(MalformedDocument) as refused:
        validator.parse_json(b'{\n  "subject": {\n}')
    assert refused.value.problem == "malformed-json"
    assert refused.value.line == 3


def test_json_duplicate_keys_are_refused(validator: FilingValidator) -> None:
    """A key given twice is ambiguous, so the body is refused rather than half-read."""
    with pytest.raises(MalformedDocument) as refused:
        validator.parse_json(b'{"subject": {}, "subject": {}}')
    assert "subject" in refused.value.detail


def test_xml_to_json_gives_the_json_form_back(validator: FilingValidator) -> None:
    """The JSON helper produces the documented shape, which intake accepts as the same filing."""
    obj = validator.xml_to_json(_example())
    assert obj["subject"]["atecoCodes"] == {"ateco": ["62.01.00", "62.02"]}
    assert obj["businessStart"] == {"registrationSection": "ordinaria", "shareCapital": "10000.00"}
    parsed = validator.parse_json(json.dumps(obj).encode())
    assert parsed.kind == "business_start"


def test_json_numbers_and_booleans_become_xml_values(validator: FilingValidator) -> None:
    """Numbers and booleans as any JSON library decodes them are written in XSD form."""
    obj = validator.xml_to_json(_example("runts_registration.xml"))
    assert obj["runtsRegistration"]["socialEnterprise"] is True
    xml = validator.json_to_xml(obj)
    assert b"<socialEnterprise>true</socialEnterprise>" in xml
    start = validator.xml_to_json(_example())
    start["businessStart"]["shareCapital"] = 2500.5
    assert validator.parse(validator.json_to_xml(start)).kind == "business_start"


def test_malformed_json_helper_builds_the_json_problem() -> None:
    """The API's shortcut for a JSON decoding error carries the malformed-json problem."""
    refused = MalformedDocument.json("unexpected end of data", line=4)
    assert (refused.problem, refused.status, refused.line) == ("malformed-json", 400, 4)
    assert str(refused) == (
        "Malformed JSON document [malformed-json]: line 4: unexpected end of data"
    )


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("copies", [1, 3])
def test_concurrent_validation_keeps_each_documents_errors(copies: int) -> None:
    """Eight threads sharing one validator, with fewer compiled schemas than threads (they
    wait for one), each get exactly their own document's violations."""
    validator = FilingValidator(clock=lambda: TODAY, validators=copies)
    good = _example()
    bad_postal = _edited("business_start.xml", (">00184<", ">0018<"))
    bad_province = _edited("business_start.xml", (">RM<", ">rm<"))

    def outcome(data: bytes) -> tuple[str, ...]:
        try:
            return (validator.parse(data).kind,)
        except SchemaViolation as error:
            return tuple(v.location.rsplit("/", 1)[-1] for v in error.violations)

    documents = [good, bad_postal, bad_province] * 100
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(outcome, documents))
    expected = [("business_start",), ("f:postalCode",), ("f:province",)] * 100
    assert results == expected


def test_root_is_an_lxml_element(validator: FilingValidator) -> None:
    """The parsed tree can be queried with the exported prefix map."""
    parsed = validator.parse(_example("runts_registration.xml"))
    assert isinstance(parsed.root, etree._Element)
    section = parsed.root.findtext("f:runtsRegistration/f:section", namespaces=NSMAP)
    assert section == "impresa_sociale"


def test_a_validator_needs_at_least_one_compiled_schema() -> None:
    """`api.schema_validators = 0` would leave every filing waiting forever: refused up front."""
    with pytest.raises(ValueError, match="at least 1"):
        FilingValidator(validators=0)


def test_broken_schema_fails_at_startup(tmp_path: Path) -> None:
    """A validator cannot be built on an invalid XSD, so the hub fails before taking filings."""
    broken = tmp_path / "filing.xsd"
    broken.write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:element name="x" type="missing"/></xs:schema>'
    )
    with pytest.raises(etree.XMLSchemaParseError):
        FilingValidator(xsd_path=broken)


def test_a_number_where_an_object_belongs_is_named_a_number(
    validator: FilingValidator, model: xmlschema.XMLSchema
) -> None:
    """The refusal names what the portal sent in its own terms (a number), not a parser type."""
    obj = _as_json(model, "business_start.xml")
    obj["declarant"] = 42
    with pytest.raises(SchemaViolation) as refused:
        validator.parse_json(json.dumps(obj).encode())
    (violation,) = [v for v in refused.value.violations if v.location == "/declarant"]
    assert violation.detail == "Expected an object, not a number."
