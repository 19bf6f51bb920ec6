"""One filing's whole path over real HTTP: intake → store → worker → simulators → outcome.

Each test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from storage.tables import audit_log, deliveries, filings, outbox
from tests.support import OTHER_PORTAL_KEY, TEST_PORTAL_KEY, RunningHub, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


def _settled(client: PortalClient, reference: str) -> dict:
    views = client.wait_settled([reference], timeout=30)
    return views[reference]


def _effects(sims, agency: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return sims.ledger(agency)["effects"]


@pytest.mark.parametrize(
    ("example", "recipients"),
    [
        ("business_start.xml", {"cciaa", "inps", "inail"}),
        ("runts_registration.xml", {"runts", "cciaa"}),
        ("durc_request.xml", {"inps"}),
        ("responsibility_declaration.xml", {"inps"}),
    ],
)
def test_each_kind_is_delivered_once_to_each_planned_recipient(
    client: PortalClient, sims, example: str, recipients: set[str]  # type: ignore[no-untyped-def]
) -> None:
    """202 with the planned recipients, then a protocol number from each, one ledger effect each."""
    response = client.submit((EXAMPLES / example).read_bytes())
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/filings/{body['reference']}"
    assert {r["agency"] for r in body["recipients"]} == recipients
    view = _settled(client, body["reference"])
    assert view["state"] == "protocolled"
    for recipient in view["recipients"]:
        effects = [e for e in _effects(sims, recipient["agency"]) if e["filingReference"] == body["reference"]]
        assert len(effects) == 1, recipient["agency"]
        assert effects[0]["protocollo"] == recipient["protocolNumber"]
        assert effects[0]["messageId"] == recipient["messageId"]
        assert effects[0]["duplicates"] == 0
    for agency in {"inps", "inail", "cciaa", "runts"} - recipients:
        assert not [e for e in _effects(sims, agency) if e["filingReference"] == body["reference"]]


@pytest.mark.parametrize(
    ("document", "status", "problem"),
    [
        (b"<filing xmlns='urn:crocevia:filing:v1'><subject>", 400, "malformed-xml"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
         b"<filing xmlns='urn:crocevia:filing:v1'>&b;</filing>", 400, "forbidden-xml-construct"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
         b"<filing xmlns='urn:crocevia:filing:v1'>&e;</filing>", 400, "forbidden-xml-construct"),
        (b"<filing xmlns='urn:crocevia:filing:v1' schemaVersion='1.0'><subject/></filing>", 422, "schema-violation"),
    ],
    ids=["malformed", "entity-bomb", "external-entity", "schema"],
)
def test_bad_documents_get_a_problem_and_store_nothing(
    client: PortalClient, hub: RunningHub, document: bytes, status: int, problem: str
) -> None:
    """Each refusal is RFC 9457 problem+json; only the audit line remains."""
    response = client.submit(document)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith(problem) and body["status"] == status and body["detail"]
    assert (hub.count(filings), hub.count(deliveries), hub.count(outbox)) == (0, 0, 0)
    assert hub.count(audit_log) == 1


def test_a_wrong_check_digit_is_refused_at_its_location(client: PortalClient, hub: RunningHub) -> None:
    """A tax code with a wrong check character is a 422 naming the element."""
    good = (EXAMPLES / "durc_request.xml").read_text()
    import re

    code = re.search(r"<legalRepresentative>\s*<taxCode>([A-Z0-9]{16})</taxCode>", good).group(1)
    wrong = code[:15] + ("A" if code[15] != "A" else "B")
    response = client.submit(good.replace(code, wrong).encode())
    assert response.status_code == 422
    body = response.json()
    assert body["type"].endswith("content-violation")
    assert any("legalRepresentative" in e["location"] and "taxCode" in e["location"] for e in body["errors"])
    assert hub.count(filings) == 0


def test_schema_violations_are_all_listed_with_where(client: PortalClient) -> None:
    """Two wrong fields give two located violations in one answer."""
    doc = (EXAMPLES / "durc_request.xml").read_text()
    doc = doc.replace("<postalCode>", "<postalCode>X", 1).replace("<province>", "<province>x", 1)
    response = client.submit(doc.encode())
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert len(errors) >= 2
    assert {("postalCode" in e["location"]) or ("province" in e["location"]) for e in errors} == {True}


def test_oversize_filing_is_refused_with_413(client: PortalClient, hub: RunningHub) -> None:
    """A body over the configured cap is refused before parsing."""
    response = client.submit(b"<filing>" + b" " * (hub.settings.api.max_body_bytes + 1) + b"</filing>")
    assert response.status_code == 413 and response.json()["type"].endswith("document-too-large")


def test_a_transient_fault_is_retried_then_succeeds(client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """Two 503s then OK: protocolled after three tries, one effect at the agency."""
    sims.set_faults("inps", [{"operation": "*", "kind": "http_status", "status": 503, "times": 2}])
    ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
    view = _settled(client, ref)
    inps = view["recipients"][0]
    assert view["state"] == "protocolled" and inps["attempts"] == 3
    assert len([e for e in _effects(sims, "inps") if e["filingReference"] == ref]) == 1


def test_a_long_outage_moves_to_the_persisted_schedule(client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """More failures than the short retries allow: a later pass from the schedule succeeds."""
    sims.set_faults("inps", [{"operation": "*", "kind": "http_status", "status": 503, "times": 4}])
    ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
    view = _settled(client, ref)
    assert view["state"] == "protocolled" and view["recipients"][0]["attempts"] == 5


def test_an_agency_always_down_ends_undeliverable(client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """After the schedule's bound the delivery is parked as undeliverable, visibly."""
    sims.set_faults("inps", [{"operation": "*", "kind": "http_status", "status": 503}])
    ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
    view = _settled(client, ref)
    assert view["state"] == "undeliverable"
    assert view["recipients"][0]["state"] == "undeliverable" and "503" in view["recipients"][0]["lastError"]


def test_a_business_rejection_is_recorded_and_not_retried(client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """The agency's code and reason are kept; one try only; the other recipients go on."""
    sims.set_faults("inail", [{"operation": "*", "kind": "reject", "code": "R042", "text": "posizione esistente"}])
    ref = client.submit((EXAMPLES / "business_start.xml").read_bytes()).json()["reference"]
    view = _settled(client, ref)
    by_agency = {r["agency"]: r for r in view["recipients"]}
    assert view["state"] == "partially_rejected"
    assert by_agency["inail"]["state"] == "rejected" and by_agency["inail"]["outcomeCode"] == "R042"
    assert by_agency["inail"]["attempts"] == 1
    assert by_agency["inps"]["state"] == by_agency["cciaa"]["state"] == "protocolled"
    assert not [e for e in _effects(sims, "inail") if e["filingReference"] == ref]


def test_idempotency_key_returns_the_first_answer(client: PortalClient, hub: RunningHub) -> None:
    """A portal retrying a submit gets the same reference; another body with the key is a 422."""
    doc = (EXAMPLES / "durc_request.xml").read_bytes()
    first = client.submit(doc, idempotency_key="portal-req-1")
    again = client.submit(doc, idempotency_key="portal-req-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["reference"] == first.json()["reference"]
    assert again.headers.get("idempotent-replayed") == "true"
    other = client.submit((EXAMPLES / "responsibility_declaration.xml").read_bytes(), idempotency_key="portal-req-1")
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    assert hub.count(filings) == 1


def test_the_same_filing_as_json_is_accepted(client: PortalClient, hub: RunningHub) -> None:
    """JSON intake goes through the same validation and routing as XML."""
    import json

    json_doc = hub.hub.validator.xml_to_json((EXAMPLES / "durc_request.xml").read_bytes())
    response = client.submit(json.dumps(json_doc).encode(), content_type="application/json")
    assert response.status_code == 202, response.text
    assert _settled(client, response.json()["reference"])["state"] == "protocolled"


def test_callers_without_a_valid_signature_are_refused(hub: RunningHub) -> None:
    """A request signed with another key: 401 problem, nothing stored but the audit line."""
    from security.keys import generate_private_key
    from security.modi import ModiSigner

    forger = ModiSigner(issuer="test", private_key=generate_private_key("ES256"), audience="crocevia")
    with PortalClient(hub.base_url, forger) as intruder:
        response = intruder.submit((EXAMPLES / "durc_request.xml").read_bytes())
    assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    assert hub.count(filings) == 0 and hub.count(audit_log) == 1


def test_another_portals_filing_is_not_found(client: PortalClient, hub: RunningHub) -> None:
    """A portal sees only its own filings: another's reference is a 404, not a 403."""
    ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
    filer = demo_user("CMPNNA80E59D612B")  # the declarant, asking through another portal
    with PortalClient(hub.base_url, OTHER_PORTAL_KEY) as other:
        assert other.status(ref, user=filer).status_code == 404
    assert client.status(ref).status_code == 200
