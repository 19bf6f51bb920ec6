"""An agency answering oversized receipts, end to end (issue 10, item 5): retried, then
undeliverable, and nothing oversized stored.

A real hub (API + embedded worker) delivers a RUNTS registration to a loopback agency
(tests/agency_server.py) that answers schema-valid receipts the hub must not keep: the 10 MB
receipt with 174,763 references of the issue, or one with more references than allowed. The
delivery is retried (the agency sees several calls), then parked undeliverable with the
reason; the store holds no protocol number and no references, and a status read stays small.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from storage.tables import deliveries
from tests.agency_server import Recorded, Reply, agency_server
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

#: A RUNTS registration that goes to RUNTS alone (not a social enterprise: no Registro Imprese).
RUNTS = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "runts_registration.xml").read_bytes().replace(
    b"<socialEnterprise>true</socialEnterprise>", b"<socialEnterprise>false</socialEnterprise>").replace(
    b"<section>impresa_sociale</section>", b"<section>aps</section>")
_ID = "0" * 32  # replaced by each request's message id


def _receipt(references: int) -> bytes:
    refs = {"numeroRepertorio": "0000001", **{f"riferimento{i:06d}": "x" * 33 for i in range(references)}}
    return json.dumps({"messageId": _ID, "protocollo": "RUNTS-2026-0000001",
                       "dataProtocollo": "2026-12-04T10:00:00Z", "esito": "ACQUISITA",
                       "riferimenti": refs}).encode()


@pytest.mark.parametrize(("references", "reason"), [
    (174_763, "REPLY_TOO_LARGE"),
    (100, "TOO_MANY_REFERENCES"),
], ids=["10MB", "100-references"])
def test_an_oversized_receipt_is_retried_then_undeliverable_and_nothing_is_stored(
    database_url: str, references: int, reason: str,
) -> None:
    """The agency answers 201 with a receipt beyond the bounds every time: undeliverable."""
    body = _receipt(references)
    assert references < 1000 or len(body) > 10_000_000

    def answer(request: Recorded) -> Reply:
        return Reply(201, body.replace(_ID.encode(), request.headers["idempotency-key"].encode()))

    with agency_server(answer) as agency:
        settings = hub_settings(database_url, {"runts": agency.url})
        with RunningHub(settings) as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            response = client.submit(RUNTS)
            assert response.status_code == 202, response.text
            reference = response.json()["reference"]
            view = client.wait_settled([reference], timeout=60)[reference]
            read = client.status(reference)
            with hub.hub.engine.connect() as conn:
                row = conn.execute(select(deliveries.c.protocol_number, deliveries.c.references,
                                          deliveries.c.outcome_code, deliveries.c.last_error)).one()
    (recipient,) = view["recipients"]
    assert view["state"] == recipient["state"] == "undeliverable", view
    assert reason in (recipient["lastError"] or ""), recipient
    assert len(agency.received) > 1  # retried before it was given up
    assert row.protocol_number is None and not row.references
    assert row.outcome_code == reason and reason in row.last_error
    assert len(read.content) < 10_000  # a status read no longer carries the receipt
