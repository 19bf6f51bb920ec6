"""Intake refusals over real HTTP: every parse failure is a 4xx problem, and a filing whose
recipients' messages cannot pass their agency schemas is refused before anything is stored.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from storage.tables import audit_log, deliveries, filings, outbox
from tests.support import RunningHub, hub_settings, portal_signer

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start.xml)
ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request.xml)
ELENA = "DLGLNE88D50L219Q"  # a delegate


@pytest.fixture
def hub(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints)) as running:
        yield running


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
    assert error["location"].endswith(f"f:{field}") and "out of range" in error["detail"]
    assert _nothing_stored(hub)
    with hub.hub.engine.connect() as conn:
        assert conn.execute(select(audit_log.c.action)).scalars().all() == ["filing_refused"]


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
