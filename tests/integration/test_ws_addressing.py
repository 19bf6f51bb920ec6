"""WS-Addressing `To` names the endpoint the hub actually calls (issue 10, item 8).

The INPS ISEE WSDL declares `wsaw:Action`, so every call carries WS-Addressing headers; its
`soap:address` is INPS's own host. The hub calls the configured endpoint (here the sandbox,
which serves the contract on loopback and records the `wsa:To` of every call, refusing one
that is not its own address, as a real endpoint's address filter does).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from lxml import etree

from adapters.base import ErrorContext
from adapters.contracts import load_agency_catalog
from adapters.factory import build_contract_adapter, load_contract
from config.settings import PROJECT_ROOT
from domain.messages import OutgoingMessage
from simulators.sandbox_server import SandboxHandle, start_sandbox
from tests.external import require_external

REF = "inps_isee/v1"
WSA = "http://www.w3.org/2005/08/addressing"
OPERATION = "ConsultazioneSogliaIndicatore"
CONTENT = {"request": {"CodiceFiscale": "RSSMRA80A01H501U", "CodiceSoglia": "BVAC01",
                       "FornituraNucleo": "NO"}}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    handle = start_sandbox([REF], agencies_dir=PROJECT_ROOT / "config" / "agencies",
                           external_dir=require_external())
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
        yield client


def _spec():  # type: ignore[no-untyped-def]
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=require_external())
    return catalog.contract("inps_isee")


@pytest.mark.anyio
async def test_wsa_to_is_the_endpoint_the_hub_calls(sandbox: SandboxHandle,
                                                    http: httpx.AsyncClient) -> None:
    """The sandbox receives `wsa:To` = its own address (the configured endpoint), not the WSDL's."""
    sandbox.reset()
    endpoint = sandbox.endpoint(REF)
    adapter = build_contract_adapter(_spec(), endpoint=endpoint, http=http)
    message = OutgoingMessage(uuid.uuid4().hex, "dlv-isee", "CRV-2026-000001", "inps_isee",
                              OPERATION, CONTENT)
    receipt = await adapter.deliver(message)
    assert receipt.protocol_number
    ledger = sandbox.ledger(REF)
    assert ledger["addressedTo"] == [endpoint]
    assert ledger["invalid"] == [] and len(ledger["effects"]) == 1


@pytest.mark.anyio
async def test_the_sandbox_refuses_a_call_addressed_elsewhere(sandbox: SandboxHandle,
                                                              http: httpx.AsyncClient) -> None:
    """A `To` naming the WSDL's production address is refused and recorded: no effect."""
    sandbox.reset()
    contract = load_contract(_spec())
    envelope = contract.serialize(OPERATION, CONTENT, ErrorContext())  # no address: the WSDL's
    to = etree.fromstring(envelope).findtext(f".//{{{WSA}}}To")
    assert to == "http://localhost:57448/SvcConsultazione.svc"
    response = await http.post(sandbox.endpoint(REF), content=envelope,
                               headers={**contract.operation(OPERATION).headers,
                                        "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 500 and b"wsa:To" in response.content
    ledger = sandbox.ledger(REF)
    assert ledger["addressedTo"] == [to]
    assert [i["codice"] for i in ledger["invalid"]] == ["ADDRESSING"] and ledger["effects"] == []
