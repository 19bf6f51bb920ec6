"""A refused filing names every mistake at once, each where the sender can find it: a JSON
Pointer into the JSON it sent, or the XML path and line of the XML it sent (over real HTTP).

Each test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from storage.tables import audit_log, deliveries, filings, outbox
from tests.support import RunningHub, hub_settings, portal_signer

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start)
ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request)


def _client(hub: RunningHub, tax_code: str) -> PortalClient:
    return PortalClient(hub.base_url, portal_signer("test"), user=demo_user(tax_code), timeout=30)


def _json_example(name: str) -> dict[str, Any]:
    """A checked-in JSON example, as a portal would start from it."""
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _errors(response: httpx.Response, slug: str) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:crocevia:problem:{slug}" and body["status"] == 422
    for error in body["errors"]:
        assert set(error) >= {"code", "location", "detail"}
    return list(body["errors"])


def _refused_and_nothing_stored(hub: RunningHub, outcome: str) -> None:
    assert (hub.count(filings), hub.count(deliveries), hub.count(outbox)) == (0, 0, 0)
    with hub.hub.engine.connect() as conn:
        lines = conn.execute(select(audit_log.c.action, audit_log.c.outcome)).all()
    assert [tuple(line) for line in lines] == [("filing_refused", outcome)]


def test_a_json_filing_with_three_mistakes_gets_three_errors_at_json_pointers(hub: RunningHub) -> None:
    """A missing field, a value outside its list and a date in the wrong form: three errors,
    each located by a JSON Pointer into the body sent, without XML paths or lines."""
    document = _json_example("business_start.json")
    del document["declarant"]["role"]
    document["subject"]["legalForm"] = "LTD"
    document["employees"]["employee"][1]["hireDate"] = "01/04/2025"
    with _client(hub, MARCO) as marco:
        response = marco.submit(json.dumps(document).encode(), content_type="application/json")
    errors = _errors(response, "schema-violation")
    by_location = {e["location"]: e for e in errors}
    assert sorted(by_location) == ["/declarant", "/employees/employee/1/hireDate", "/subject/legalForm"]
    assert "'role'" in by_location["/declarant"]["detail"]
    assert "'LTD'" in by_location["/subject/legalForm"]["detail"]
    assert "YYYY-MM-DD" in by_location["/employees/employee/1/hireDate"]["detail"]
    for error in errors:
        assert "line" not in error and "f:" not in error["location"] + error["detail"]
    _refused_and_nothing_stored(hub, "schema-violation")


def test_an_xml_filing_with_several_mistakes_gets_every_one_with_its_line(hub: RunningHub) -> None:
    """An unexpected element no longer hides the mistakes after it in the same parent: all five
    come back, at their XML paths and lines."""
    xml = (EXAMPLES / "business_start.xml").read_text(encoding="utf-8")
    for old, new in [
        ("<vatNumber>09182730581</vatNumber>", "<vatNumber>09182730581</vatNumber><website>alfa.it</website>"),
        ("<postalCode>00184</postalCode>", "<postalCode>184</postalCode>"),
        ("<pec>alfaesempio@pec.example.it</pec>", "<pec>alfaesempio at pec</pec>"),
        ("<birthDate>1985-03-14</birthDate>", "<birthDate>1985-02-30</birthDate>"),
        ("<contractType>apprendistato</contractType>", "<contractType>stagionale</contractType>"),
    ]:
        assert old in xml
        xml = xml.replace(old, new)
    with _client(hub, MARCO) as marco:
        response = marco.submit(xml.encode())
    errors = _errors(response, "schema-violation")
    lines = xml.splitlines()
    expected = {
        "/f:filing/f:subject/f:website": "<website>",
        "/f:filing/f:subject/f:registeredOffice/f:postalCode": "<postalCode>184",
        "/f:filing/f:subject/f:pec": "<pec>",
        "/f:filing/f:legalRepresentative/f:birthDate": "<birthDate>",
        "/f:filing/f:employees/f:employee[2]/f:contractType": "<contractType>stagionale",
    }
    assert sorted(e["location"] for e in errors) == sorted(expected)
    for error in errors:
        assert expected[error["location"]] in lines[error["line"] - 1], error
    _refused_and_nothing_stored(hub, "schema-violation")


def test_json_content_violations_are_located_by_json_pointer(hub: RunningHub) -> None:
    """Check digits and dates judged after the schema are located in the JSON too."""
    document = _json_example("business_start.json")
    document["employees"]["employee"][0]["taxCode"] = "NVNLRA92L61F205H"  # wrong check character
    document["legalRepresentative"]["birthDate"] = "1985-03-15"  # not the one in the tax code
    with _client(hub, MARCO) as marco:
        response = marco.submit(json.dumps(document).encode(), content_type="application/json")
    errors = _errors(response, "content-violation")
    assert {e["location"]: e["code"] for e in errors} == {
        "/employees/employee/0/taxCode": "tax_code_check_digit",
        "/legalRepresentative/birthDate": "birth_date_mismatch",
    }
    _refused_and_nothing_stored(hub, "content-violation")


def test_a_recipient_message_refusal_names_the_json_field(hub: RunningHub) -> None:
    """A JSON filing whose agency messages would fail names the filing field as a JSON Pointer;
    the same filing as XML keeps its XPath."""
    document = _json_example("business_start.json")
    del document["subject"]["activityStartDate"]
    xml = re.sub(r"\s*<activityStartDate>[^<]*</activityStartDate>", "",
                 (EXAMPLES / "business_start.xml").read_text(encoding="utf-8"))
    with _client(hub, MARCO) as marco:
        as_json = marco.submit(json.dumps(document).encode(), content_type="application/json")
        as_xml = marco.submit(xml.encode())
    json_errors = _errors(as_json, "recipient-message-invalid")
    xml_errors = _errors(as_xml, "recipient-message-invalid")
    assert {e["agency"] for e in json_errors} == {"cciaa", "inps", "inail"}
    assert {e["filingField"] for e in json_errors} == {"/subject/activityStartDate"}
    assert {e["filingField"] for e in xml_errors} == {"f:subject/f:activityStartDate"}
    assert "(from /subject/activityStartDate)" in as_json.json()["detail"]


def test_a_corrected_json_filing_on_resend_gets_every_error_at_json_pointers(hub: RunningHub) -> None:
    """The correction sent with a resend is judged like a filing: all errors, JSON Pointers,
    and the recipient stays as it was."""
    with _client(hub, ANNA) as anna:
        accepted = anna.submit((EXAMPLES / "durc_request.xml").read_bytes())
        assert accepted.status_code == 202, accepted.text
        reference = accepted.json()["reference"]
        document = _json_example("durc_request.json")
        document["durcRequest"]["purpose"] = "curiosita"
        document["subject"]["registeredOffice"]["province"] = "Roma"
        document["subject"]["nickname"] = "Delta"
        response = anna.resend(reference, "inps", corrected=json.dumps(document).encode(),
                               content_type="application/json")
    errors = _errors(response, "schema-violation")
    assert sorted(e["location"] for e in errors) == [
        "/durcRequest/purpose", "/subject/nickname", "/subject/registeredOffice/province"]
    assert hub.count(deliveries) == 1
