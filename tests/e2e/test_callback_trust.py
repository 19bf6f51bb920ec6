"""Agencies' callbacks are authenticated and audited (issue 10, items 1 and 3), over real HTTP.

A delivery is taken in charge by a simulated agency (async_push with a long delay, so that the
agency's own callback does not come during the test); the test then posts callbacks to the
hub's `POST /v1/callbacks/{agency}` as a forger would, and as the agency does, signed with
the key pair the agency file names (the simulators' own, under var/secrets). A callback
without a valid credential is 401 and changes nothing; every callback is one audit line.
Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from lxml import etree
from sqlalchemy import select

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from security.callbacks import CallbackSigner, load_callback_keys
from security.keys import ensure_private_key, ensure_self_signed_certificate, generate_private_key
from security.modi import ModiSigner
from security.wssecurity import sign_envelope
from simulators.ledger import Effect
from simulators.soap import receipt_response
from storage.tables import audit_log, deliveries
from tests.support import AUDIENCE, TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for
from tests.external import repository_catalog

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
DURC = (EXAMPLES / "durc_request.xml").read_bytes()
#: A RUNTS registration that goes to RUNTS alone (not a social enterprise: no Registro Imprese).
RUNTS = (EXAMPLES / "runts_registration.xml").read_bytes().replace(
    b"<socialEnterprise>true</socialEnterprise>", b"<socialEnterprise>false</socialEnterprise>").replace(
    b"<section>impresa_sociale</section>", b"<section>aps</section>")
#: The agencies' own callback signers: the key pairs their agency files name.
_CATALOG = repository_catalog()


def _agency_keys(agency: str) -> tuple[Any, Any]:
    spec = _CATALOG.agency(agency).callback
    assert spec is not None and spec.private_key is not None
    return load_callback_keys(spec.private_key, spec.certificate, f"{agency} callbacks")


@pytest.fixture
def hub(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
    with RunningHub(settings) as running:
        yield running


@pytest.fixture
def client(hub: RunningHub) -> Iterator[PortalClient]:
    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as portal:
        yield portal


def _recipient(client: PortalClient, reference: str, agency: str) -> dict[str, Any]:
    view = client.status(reference).json()
    return next(r for r in view["recipients"] if r["agency"] == agency)


def _acknowledged(hub: RunningHub, client: PortalClient, sims, agency: str,  # type: ignore[no-untyped-def]
                  document: bytes) -> tuple[str, dict[str, Any], str]:
    """A filing whose `agency` delivery is taken in charge and waits for its callback."""
    sims.set_faults(agency, [{"kind": "async_push", "delay_ms": 600_000}])
    response = client.submit(document)
    assert response.status_code == 202, response.text
    reference = response.json()["reference"]
    wait_for(lambda: _recipient(client, reference, agency)["state"] == "acknowledged", timeout=30,
             what=f"{agency} acknowledged")
    recipient = _recipient(client, reference, agency)
    with hub.hub.engine.connect() as conn:
        correlation_id = conn.execute(select(deliveries.c.correlation_id).where(
            deliveries.c.message_id == recipient["messageId"])).scalar_one()
    assert correlation_id
    return reference, recipient, correlation_id


def _callback_lines(hub: RunningHub) -> list[Any]:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == "agency_callback")
                            .order_by(audit_log.c.id)).all()


def _post(hub: RunningHub, agency: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        return http.post(f"{hub.base_url}/v1/callbacks/{agency}", content=body, headers=headers)


def _unchanged(client: PortalClient, reference: str, agency: str) -> Callable[[], None]:
    before = _recipient(client, reference, agency)

    def check() -> None:
        after = _recipient(client, reference, agency)
        assert after["state"] == "acknowledged" and after["protocolNumber"] == before["protocolNumber"]
        assert after["outcome"] == before["outcome"]

    return check


# -- REST: ModI ------------------------------------------------------------------------------------


def test_a_rest_callback_needs_the_agencys_modi_signature(hub: RunningHub, client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """Unsigned, signed with another key, a body that does not match its Digest, a correlation
    id the signature does not cover: 401, nothing changes. The agency's own signature is
    recorded; the same token again is a replay (401). Every callback is an audit line."""
    reference, recipient, cid = _acknowledged(hub, client, sims, "runts", RUNTS)
    unchanged = _unchanged(client, reference, "runts")
    body = orjson.dumps({"messageId": recipient["messageId"], "protocollo": "RUNTS-2026-9000001",
                         "dataProtocollo": datetime.now(timezone.utc).isoformat(), "esito": "ACCOLTA",
                         "riferimenti": {"numeroRepertorio": "0000042"}})
    plain = {"Content-Type": "application/json", "X-Correlation-ID": cid}

    # Given no credential at all
    response = _post(hub, "runts", body, plain)
    assert response.status_code == 401 and response.json()["type"].endswith("missing-token")
    assert response.headers["content-type"].startswith("application/problem+json")
    unchanged()
    key, certificate = _agency_keys("runts")
    agency = CallbackSigner("modi", key, certificate, issuer="runts", audience=AUDIENCE)
    # Given a ModI signature by a key that is not the agency's
    forger = ModiSigner(issuer="runts", private_key=generate_private_key("ES256"), audience=AUDIENCE)
    headers = forger.headers(body=body, content_type="application/json", signed={"X-Correlation-ID": cid})
    response = _post(hub, "runts", body, {**plain, **headers})
    assert response.status_code == 401 and response.json()["type"].endswith("invalid-token")
    unchanged()
    # Given the agency's signature over another body (the Digest does not match)
    _, headers = agency.sign(body, "application/json", cid)
    tampered = body.replace(b"RUNTS-2026-9000001", b"RUNTS-2026-9000002")
    response = _post(hub, "runts", tampered, {**plain, **headers})
    assert response.status_code == 401 and response.json()["type"].endswith("digest-mismatch")
    unchanged()
    # Given the agency's signature, pointed at another correlation id than the one it signed
    _, headers = agency.sign(body, "application/json", "another-correlation-id")
    response = _post(hub, "runts", body, {**plain, **headers})
    assert response.status_code == 401 and response.json()["type"].endswith("correlation-id-unsigned")
    unchanged()

    # When the agency signs it: recorded
    _, headers = agency.sign(body, "application/json", cid)
    response = _post(hub, "runts", body, {**plain, **headers})
    assert response.status_code == 200 and response.json() == {"status": "recorded"}
    after = _recipient(client, reference, "runts")
    assert after["state"] == "protocolled" and after["protocolNumber"] == "RUNTS-2026-9000001"
    # ...and the same signed request again is a replayed token
    response = _post(hub, "runts", body, {**plain, **headers})
    assert response.status_code == 401 and response.json()["type"].endswith("token-replayed")
    # ...while the agency's own retry, signed anew, is answered as the first
    _, headers = agency.sign(body, "application/json", cid)
    response = _post(hub, "runts", body, {**plain, **headers})
    assert response.status_code == 200 and response.json() == {"status": "duplicate"}
    # A signed callback for a correlation id nobody has, and one whose body is unreadable
    _, headers = agency.sign(body, "application/json", "no-such-exchange")
    response = _post(hub, "runts", body, {**plain, "X-Correlation-ID": "no-such-exchange", **headers})
    assert response.status_code == 404
    _, headers = agency.sign(b"not json", "application/json", cid)
    response = _post(hub, "runts", b"not json", {**plain, **headers})
    assert response.status_code == 400 and response.json()["type"].endswith("callback-unreadable")
    assert _recipient(client, reference, "runts")["protocolNumber"] == "RUNTS-2026-9000001"

    # Then one audit line per callback: agency, correlation id, outcome; never the body
    lines = _callback_lines(hub)
    assert [line.outcome for line in lines] == [
        "missing-token", "invalid-token", "digest-mismatch", "correlation-id-unsigned", "recorded",
        "token-replayed", "duplicate", "unknown-correlation-id", "callback-unreadable"]
    assert [line.subject for line in lines] == [cid] * 7 + ["no-such-exchange", cid]
    assert all(line.detail["agency"] == "runts" and line.detail["correlationId"] == line.subject
               for line in lines)
    assert [line.actor for line in lines] == ["anonymous"] * 4 + ["agency:runts", "anonymous"] + [
        "agency:runts"] * 3
    assert [line.detail["status"] for line in lines] == [401, 401, 401, 401, 200, 401, 200, 404, 400]
    assert not any(b"RUNTS-2026-900000" in orjson.dumps(line.detail) for line in lines)


# -- SOAP: WS-Security ---------------------------------------------------------------------------


def _soap_receipt(recipient: dict[str, Any], protocol: str) -> bytes:
    """The INPS receipt envelope the simulated agency posts as its callback (unsigned)."""
    stamp = datetime.now(timezone.utc).isoformat()
    effect = Effect(message_id=recipient["messageId"], operation=recipient["operation"],
                    protocol_number=protocol, protocolled_at=stamp, references={}, received_at=stamp,
                    filing_reference="")
    return bytes(receipt_response("1.2", "urn:crocevia:agency:inps:v1", "inps", effect).body)


def _signed(envelope: bytes, key: Any, certificate: Any, *, now: float | None = None) -> bytes:
    root = etree.fromstring(envelope)
    sign_envelope(root, key, certificate, now=now)
    return etree.tostring(root)


def test_a_soap_callback_needs_the_agencys_ws_security_signature(hub: RunningHub, client: PortalClient, sims,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    """Unsigned, a tampered body, a signature by another certificate, a stale Timestamp: 401,
    nothing changes. The agency's own signature is recorded; the same envelope again is a
    replay. Every callback is an audit line."""
    reference, recipient, cid = _acknowledged(hub, client, sims, "inps", DURC)
    unchanged = _unchanged(client, reference, "inps")
    headers = {"Content-Type": "application/soap+xml; charset=utf-8", "X-Correlation-ID": cid}
    envelope = _soap_receipt(recipient, "INPS-FORGED-1")

    # Given no signature
    response = _post(hub, "inps", envelope, headers)
    assert response.status_code == 401 and response.json()["type"].endswith("signature-invalid")
    assert "no wsse:Security header" in response.json()["detail"]
    unchanged()
    key, certificate = _agency_keys("inps")
    # Given the agency's signature, and then the protocol number changed in the Body
    tampered = _signed(envelope, key, certificate).replace(b"INPS-FORGED-1", b"INPS-FORGED-2")
    response = _post(hub, "inps", tampered, headers)
    assert response.status_code == 401 and "changed after signing" in response.json()["detail"]
    unchanged()
    # Given a valid signature by another certificate
    other_key = ensure_private_key(tmp_path / "other.pem", "ES256")
    other = ensure_self_signed_certificate(tmp_path / "other.crt", other_key, "inps")
    response = _post(hub, "inps", _signed(envelope, other_key, other), headers)
    assert response.status_code == 401 and "does not verify with the agency's certificate" in response.json()["detail"]
    unchanged()
    # Given the agency's signature with a Timestamp an hour old
    response = _post(hub, "inps", _signed(envelope, key, certificate, now=time.time() - 3600), headers)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    unchanged()

    # When the agency signs it: recorded
    signed = _signed(envelope, key, certificate)
    response = _post(hub, "inps", signed, headers)
    assert response.status_code == 200 and response.json() == {"status": "recorded"}
    after = _recipient(client, reference, "inps")
    assert after["state"] == "protocolled" and after["protocolNumber"] == "INPS-FORGED-1"
    # ...and the same signed envelope again is a replay
    response = _post(hub, "inps", signed, headers)
    assert response.status_code == 401 and response.json()["type"].endswith("token-replayed")

    lines = _callback_lines(hub)
    assert [line.outcome for line in lines] == ["signature-invalid"] * 4 + ["recorded", "token-replayed"]
    assert all(line.subject == cid and line.detail == {"agency": "inps", "correlationId": cid,
                                                       "status": line.detail["status"]} for line in lines)
    assert [line.detail["status"] for line in lines] == [401] * 4 + [200, 401]


def test_an_agency_that_declares_no_callback_credential_cannot_call_back(hub: RunningHub) -> None:
    """agid_blocking's file declares no [callback]; `nosuch` is no agency: both 401, audited."""
    body = b'{"esito": "ACCOLTA"}'
    for agency in ("agid_blocking", "nosuch"):
        response = _post(hub, agency, body, {"Content-Type": "application/json", "X-Correlation-ID": "c-1"})
        assert response.status_code == 401
        assert response.json()["type"].endswith("no-callback-credential")
    lines = _callback_lines(hub)
    assert [(line.detail["agency"], line.subject, line.outcome) for line in lines] == [
        ("agid_blocking", "c-1", "no-callback-credential"), ("nosuch", "c-1", "no-callback-credential")]


def test_the_simulated_agencys_own_signed_callback_is_recorded(hub: RunningHub, client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """The simulators sign with the key pair the agency file names: their callback (SOAP,
    WS-Security) is never refused as unsigned, is recorded once, and audited as the agency's.

    The simulator calls back 100 ms after taking the message in charge; on a loaded machine
    the worker may not have committed the acknowledgment by then, and the hub answers 503
    "not yet" (Retry-After) until it has: the agency's retry is then recorded."""
    sims.set_faults("inail", [{"kind": "async_push", "delay_ms": 100}])
    # A business start goes to Registro Imprese, INPS and INAIL; INAIL calls back.
    document = (EXAMPLES / "business_start.xml").read_bytes()
    reference = client.submit(document).json()["reference"]
    wait_for(lambda: _recipient(client, reference, "inail")["state"] == "protocolled", timeout=30,
             what="inail protocolled by its callback")
    effect = next(e for e in sims.ledger("inail")["effects"] if e["filingReference"] == reference)
    statuses = [c["status"] for c in effect["callbacks"]]
    assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}, statuses
    lines = [line for line in _callback_lines(hub) if line.detail["agency"] == "inail"]
    assert [(line.actor, line.outcome) for line in lines] == (
        [("agency:inail", "not-yet-acknowledged")] * (len(statuses) - 1) + [("agency:inail", "recorded")])
    assert _recipient(client, reference, "inail")["protocolNumber"] == effect["protocollo"]


def test_a_refused_callback_with_a_long_correlation_id_keeps_its_audit_line(hub: RunningHub) -> None:
    """A correlation id of 65 to 128 characters (found by schemathesis): the refusal is audited on
    PostgreSQL too (the line's subject holds 64 characters; the whole id stays in its detail)."""
    correlation_id = "c" * 128
    response = _post(hub, "nosuch", b'{"esito": "ACCOLTA"}',
                     {"Content-Type": "application/json", "X-Correlation-ID": correlation_id})
    assert response.status_code == 401
    assert response.json()["type"].endswith("no-callback-credential")
    lines = _callback_lines(hub)
    assert [(line.subject, line.detail["correlationId"], line.outcome) for line in lines] == [
        (correlation_id[:64], correlation_id, "no-callback-credential")]
