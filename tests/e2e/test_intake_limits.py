"""Intake refusals over real HTTP: every parse failure is a 4xx problem, and a filing whose
recipients' messages cannot pass their agency schemas is refused before anything is stored.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from storage.tables import audit_log, deliveries, filings, outbox
from tests.support import RunningHub, hub_settings, portal_signer, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start.xml)
ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request.xml)
ELENA = "DLGLNE88D50L219Q"  # a delegate


def _client(hub: RunningHub, tax_code: str) -> PortalClient:
    return PortalClient(hub.base_url, portal_signer("test"), user=demo_user(tax_code), timeout=30)


def _json_filing(hub: RunningHub, example: str) -> dict:
    return hub.hub.validator.xml_to_json((EXAMPLES / example).read_bytes())


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:crocevia:problem:{slug}" and body["status"] == status and body["detail"]
    return body


def _nothing_stored(hub: RunningHub) -> bool:
    return (hub.count(filings), hub.count(deliveries), hub.count(outbox)) == (0, 0, 0)


# -- item 10: every parse failure is a 4xx ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "number"),
    [
        ("shareCapital", "1" + "0" * 1_000_000),  # Python's int() stops at 4,300 digits
        ("shareCapital", "1.5e999999999"),  # a gigabyte when written out as a decimal
        ("shareCapital", "-" + "9" * 5_000),
        ("taxCode", "9" * 10_000),  # a number where the schema wants a string
    ],
)
def test_a_number_beyond_what_the_schema_allows_is_422(hub: RunningHub, field: str, number: str) -> None:
    """A JSON filing with a huge number answers 422 naming the field (not 500); nothing stored."""
    doc = json.dumps(_json_filing(hub, "business_start.xml"))
    doc = doc.replace('"10000.00"', number) if field == "shareCapital" else \
        doc.replace('"taxCode": "09182730581"', f'"taxCode": {number}', 1)
    assert number in doc
    with _client(hub, MARCO) as marco:
        response = marco.submit(doc.encode(), content_type="application/json")
    body = _problem(response, 422, "schema-violation")
    [error] = body["errors"]
    assert error["location"].endswith(f"/{field}") and "out of range" in error["detail"]
    assert _nothing_stored(hub)
    with hub.hub.engine.connect() as conn:
        assert conn.execute(select(audit_log.c.action)).scalars().all() == ["filing_refused"]


@pytest.mark.parametrize("digits", [19, 30, 900_000])
def test_an_amount_beyond_the_schemas_digits_is_422_as_xml_and_json(hub: RunningHub, digits: int) -> None:
    """The filing schema bounds an amount to 18 digits: XML and JSON are refused alike, and the
    answer quotes only the start of the value."""
    number = "1" + "0" * (digits - 1)
    xml = (EXAMPLES / "business_start.xml").read_text().replace(">10000.00<", f">{number}<")
    as_json = json.dumps(_json_filing(hub, "business_start.xml")).replace('"10000.00"', number)
    with _client(hub, MARCO) as marco:
        answers = [marco.submit(xml.encode()), marco.submit(as_json.encode(), content_type="application/json")]
    # Each located in the sender's terms: the XML path, and the JSON Pointer.
    for response, location in zip(answers, ["/f:filing/f:businessStart/f:shareCapital",
                                            "/businessStart/shareCapital"], strict=True):
        [error] = _problem(response, 422, "schema-violation")["errors"]
        assert error["location"] == location
        assert len(error["detail"]) < 200
    assert _nothing_stored(hub)


def test_a_number_the_schema_allows_is_still_accepted(hub: RunningHub) -> None:
    """Amounts written as JSON numbers, with or without an exponent, keep their value."""
    doc = json.dumps(_json_filing(hub, "business_start.xml")).replace('"10000.00"', "1.5e4")
    with _client(hub, MARCO) as marco:
        response = marco.submit(doc.encode(), content_type="application/json")
    assert response.status_code == 202, response.text
    with hub.hub.engine.connect() as conn:
        stored = conn.execute(select(filings.c.document)).scalar_one()
    assert b"<shareCapital>15000</shareCapital>" in stored


def test_a_huge_number_in_a_correction_is_422(hub: RunningHub) -> None:
    """The corrected filing of a resend is parsed like a filing: 422, the recipient unchanged."""
    with _client(hub, ANNA) as anna:
        accepted = anna.submit((EXAMPLES / "durc_request.xml").read_bytes())
        assert accepted.status_code == 202, accepted.text
        reference = accepted.json()["reference"]
        doc = json.dumps(_json_filing(hub, "durc_request.xml"))
        doc = doc.replace('"taxCode": "06543210485"', '"taxCode": 1' + "0" * 1_000_000, 1)
        response = anna.resend(reference, "inps", corrected=doc.encode(), content_type="application/json")
    _problem(response, 422, "schema-violation")
    assert hub.count(deliveries) == 1


def test_a_huge_number_in_a_delegation_is_422(hub: RunningHub) -> None:
    """A delegation request has no number field: a number beyond a double is 422, not "not JSON"."""
    valid_to = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    body = (f'{{"subject": "06543210485", "delegate": "{ELENA}", "agencies": ["inps"], '
            f'"validTo": "{valid_to}", "level": 1{"0" * 1_000}}}').encode()
    signer = portal_signer("test")
    headers = {"Content-Type": "application/json",
               **signer.headers(body=body, content_type="application/json", user=demo_user(ANNA))}
    response = httpx.post(f"{hub.base_url}/v1/delegations", content=body, headers=headers, trust_env=False)
    _problem(response, 422, "number-out-of-range")


# -- item 11: recipients' messages are checked against their agency schemas at intake ----------------


def test_a_filing_whose_recipient_messages_fail_their_agency_schemas_is_refused(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """A business start without activityStartDate passes the filing schema but not the three
    agency schemas: 422 naming each agency, the field and why; nothing stored or sent."""
    doc = (EXAMPLES / "business_start.xml").read_text()
    without = re.sub(r"\s*<activityStartDate>[^<]*</activityStartDate>", "", doc)
    assert without != doc
    with _client(hub, MARCO) as marco:
        response = marco.submit(without.encode())
    body = _problem(response, 422, "recipient-message-invalid")
    by_agency = {e["agency"]: e for e in body["errors"]}
    assert set(by_agency) == {"cciaa", "inps", "inail"}
    for agency, error in by_agency.items():
        assert error["code"] == "agency-schema" and error["location"] == f"agency:{agency}"
        assert error["field"] == "dataInizioAttivita"
        assert error["filingField"] == "f:subject/f:activityStartDate"
        assert "required" in error["detail"]
    assert _nothing_stored(hub)
    with hub.hub.engine.connect() as conn:
        line = conn.execute(select(audit_log)).one()
    assert (line.action, line.outcome) == ("filing_refused", "recipient-message-invalid")
    assert line.detail["agencies"] == ["cciaa", "inail", "inps"]
    for agency in ("cciaa", "inps", "inail"):
        assert sims.ledger(agency)["effects"] == []

    # The same filing with the date, whose inps and inail messages wait for the Registro
    # Imprese's REA number (a hand-off left out of the check, as at start-up), is accepted.
    with _client(hub, MARCO) as marco:
        accepted = marco.submit(doc.encode())
    assert accepted.status_code == 202, accepted.text
    assert {r["agency"] for r in accepted.json()["recipients"]} == {"cciaa", "inps", "inail"}


def test_a_correction_that_still_fails_the_agency_schema_is_refused(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """A corrected filing is checked like a new one: 422 and the recipient unchanged."""
    sims.set_faults("cciaa", [{"kind": "reject", "code": "R010", "text": "dati incompleti"}])
    doc = (EXAMPLES / "business_start.xml").read_text()
    with _client(hub, MARCO) as marco:
        reference = marco.submit(doc.encode()).json()["reference"]

        def cciaa_state() -> str:
            recipients = marco.status(reference).json()["recipients"]
            return next(r["state"] for r in recipients if r["agency"] == "cciaa")

        wait_for(lambda: cciaa_state() == "rejected", timeout=30, what="cciaa rejected")
        without = re.sub(r"\s*<activityStartDate>[^<]*</activityStartDate>", "", doc)
        response = marco.resend(reference, "cciaa", corrected=without.encode())
        assert cciaa_state() == "rejected"
    body = _problem(response, 422, "recipient-message-invalid")
    assert [(e["agency"], e["field"]) for e in body["errors"]] == [("cciaa", "dataInizioAttivita")]
    assert hub.count(deliveries) == 3  # no corrected delivery was added


def test_a_bodiless_resend_of_a_message_refused_as_invalid_needs_a_correction(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """An agency that refused our message as invalid (HTTP 400) would refuse it again: a
    resend without a corrected filing is 409 needs-correction; a corrected one is sent."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 400, "times": 1}])
    doc = (EXAMPLES / "durc_request.xml").read_bytes()
    with _client(hub, ANNA) as anna:
        reference = anna.submit(doc).json()["reference"]
        view = anna.wait_settled([reference], timeout=30)[reference]
        assert [r["state"] for r in view["recipients"]] == ["undeliverable"]
        refused = anna.resend(reference, "inps")
        body = _problem(refused, 409, "needs-correction")
        assert body["agency"] == "inps" and body["state"] == "undeliverable"
        assert anna.status(reference).json()["recipients"][0]["state"] == "undeliverable"
        corrected = anna.resend(reference, "inps", corrected=doc)
        assert corrected.status_code == 202, corrected.text
        settled = anna.wait_settled([reference], timeout=30)[reference]
    assert settled["state"] == "protocolled"
