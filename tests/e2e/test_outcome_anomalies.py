"""Settled facts over real HTTP, on SQLite and PostgreSQL: an agency callback that contradicts a
recorded protocol number or decision is answered 409 and kept as an anomaly the filing status
and feed show; a callback to a delivery that waits for none is 409 and changes nothing; one
protocol number given to two messages is kept on both and flagged on the second."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from cli.client import PortalClient
from security.callbacks import CallbackSigner, load_callback_keys
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures: make_hub, client_for
    DURC,
    RUNTS,
    HubFactory,
    _by_agency,
    _event_types,
    _settled,
    _submit,
    _view,
    _wait_view,
    client_for,
    make_hub,
)
from tests.support import AUDIENCE
from tests.external import repository_catalog

_CATALOG = repository_catalog()


def _signer(agency: str) -> CallbackSigner:
    """The agency's own callback signer: the key pair its agency file names."""
    spec = _CATALOG.agency(agency).callback
    assert spec is not None and spec.private_key is not None
    key, certificate = load_callback_keys(spec.private_key, spec.certificate, f"{agency} callbacks")
    return CallbackSigner(spec.profile, key, certificate, issuer=agency, audience=AUDIENCE)


def _callback(base_url: str, agency: str, correlation_id: str, body: dict[str, Any]) -> httpx.Response:
    """POST a receipt to the hub's callback, signed, as the agency's simulator does (NONBLOCK_PUSH)."""
    content, headers = _signer(agency).sign(orjson.dumps(body), "application/json", correlation_id)
    return httpx.post(f"{base_url}/v1/callbacks/{agency}", content=content, timeout=10.0, trust_env=False,
                      headers={**headers, "Content-Type": "application/json", "X-Correlation-ID": correlation_id})


def _receipt(recipient: dict[str, Any], protocol_number: str, esito: str, **extra: Any) -> dict[str, Any]:
    """A RUNTS callback body (the simulator's receipt format)."""
    return {"messageId": recipient["messageId"], "protocollo": protocol_number,
            "dataProtocollo": "2026-03-02T09:30:00Z", "esito": esito, "riferimenti": recipient["references"] or {"numeroRepertorio": "0000001"},
            **extra}


def _problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(":" + slug)


def test_a_contradicting_callback_is_409_kept_as_an_anomaly_and_changes_nothing(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """RUNTS protocols by callback; another number is 409 and an anomaly (both numbers) in the
    status and the feed; RESPINTA is recorded; ACCOLTA after it is 409; RESPINTA again is 200."""
    sims.set_faults("runts", [{"kind": "async_push", "delay_ms": 200}])
    with make_hub() as hub:
        client: PortalClient = client_for(hub)
        ref = _submit(client, RUNTS)
        view = _settled(client, ref, "protocolled")
        runts = _by_agency(view)["runts"]
        recorded = runts["protocolNumber"]
        [effect] = [e for e in sims.ledger("runts")["effects"] if e["messageId"] == runts["messageId"]]
        correlation = effect["correlationId"]

        other = _callback(hub.base_url, "runts", correlation, _receipt(runts, "RUNTS-2026-9999999", "ACCOLTA"))
        _problem(other, 409, "outcome-contradicts-record")
        runts = _by_agency(_view(client, ref))["runts"]
        assert (runts["state"], runts["protocolNumber"], runts["outcome"]) == ("protocolled", recorded, None)
        [anomaly] = runts["anomalies"]
        assert anomaly["kind"] == "protocol_number_conflict"
        assert anomaly["detail"]["recorded"]["protocolNumber"] == recorded
        assert anomaly["detail"]["received"]["protocolNumber"] == "RUNTS-2026-9999999"
        assert ("recipient.anomaly", "protocolled") in _event_types(client, ref)

        respinta = _receipt(runts, recorded, "RESPINTA", codice="R7", motivo="statuto incompleto")
        first = _callback(hub.base_url, "runts", correlation, respinta)
        assert (first.status_code, first.json()) == (200, {"status": "recorded"})
        _settled(client, ref, "rejected")

        reversal = _callback(hub.base_url, "runts", correlation, _receipt(runts, recorded, "ACCOLTA"))
        _problem(reversal, 409, "outcome-contradicts-record")
        again = _callback(hub.base_url, "runts", correlation, respinta)
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})

        view = _view(client, ref)
        runts = _by_agency(view)["runts"]
        assert view["state"] == "rejected"
        assert (runts["state"], runts["protocolNumber"], runts["outcome"], runts["outcomeCode"]) == (
            "rejected", recorded, "rejected", "R7")
        assert [a["kind"] for a in runts["anomalies"]] == ["protocol_number_conflict", "decision_conflict"]


def test_a_callback_to_an_undeliverable_delivery_is_409_and_changes_nothing(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """RUNTS never took the message (always 503): a callback naming its message id is refused."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        client: PortalClient = client_for(hub)
        ref = _submit(client, RUNTS)
        before = _settled(client, ref, "undeliverable")
        runts = _by_agency(before)["runts"]
        events = _event_types(client, ref)

        response = _callback(hub.base_url, "runts", runts["messageId"],
                             _receipt(runts, "RUNTS-2026-1234567", "ACCOLTA"))

        _problem(response, 409, "outcome-conflict")
        after = _view(client, ref)
        assert after["state"] == "undeliverable"
        assert {k: v for k, v in _by_agency(after)["runts"].items() if k != "nextAttemptAt"} == \
            {k: v for k, v in runts.items() if k != "nextAttemptAt"}
        assert _by_agency(after)["runts"]["anomalies"] == []
        assert _event_types(client, ref) == events


def test_one_protocol_number_for_two_messages_is_flagged_on_the_second(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """INPS's numbering repeats itself: both filings keep INPS's number, the second shows an
    anomaly naming the first, and its feed has the event."""
    with make_hub() as hub:
        client: PortalClient = client_for(hub)
        first = _submit(client, DURC)
        number = _by_agency(_settled(client, first, "protocolled"))["inps"]["protocolNumber"]
        sims.set_faults("inps", [{"kind": "duplicate_number", "times": 1}])
        second = _submit(client, DURC)
        view = _wait_view(client, second, lambda v: v["state"] == "protocolled", what="second protocolled")

        a, b = _by_agency(_view(client, first))["inps"], _by_agency(view)["inps"]
        assert a["protocolNumber"] == b["protocolNumber"] == number
        assert a["anomalies"] == []
        [anomaly] = b["anomalies"]
        assert anomaly["kind"] == "duplicate_protocol_number"
        assert anomaly["detail"]["alsoGivenTo"] == [
            {"deliveryId": anomaly["detail"]["alsoGivenTo"][0]["deliveryId"], "messageId": a["messageId"],
             "filingReference": first}]
        assert ("recipient.anomaly", "protocolled") in _event_types(client, second)
        assert "recipient.anomaly" not in [t for t, _ in _event_types(client, first)]


def test_a_callback_before_the_acknowledgment_is_recorded_is_503_and_changes_nothing(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """RUNTS is throttling (503, Retry-After 600): the recipient is retrying, a send may be in
    flight, so a callback is early, not wrong: 503 with Retry-After, nothing changes, no anomaly."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503, "retry_after": 600}])
    with make_hub() as hub:
        client: PortalClient = client_for(hub)
        ref = _submit(client, RUNTS)
        before = _wait_view(client, ref, lambda v: _by_agency(v)["runts"]["state"] == "retrying",
                            what="runts retrying")
        runts = _by_agency(before)["runts"]

        response = _callback(hub.base_url, "runts", runts["messageId"],
                             _receipt(runts, "RUNTS-2026-7654321", "ACCOLTA"))

        _problem(response, 503, "delivery-not-acknowledged-yet")
        assert response.headers["Retry-After"] == "2"
        after = _by_agency(_view(client, ref))["runts"]
        assert after["state"] == "retrying" and after["protocolNumber"] is None and after["anomalies"] == []
