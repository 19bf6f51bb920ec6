"""Third-party fault codes choose the error kind by configuration (issue 10, item 7).

Real adapters against a real loopback agency (tests/agency_server.py): SOAP 1.2 faults of the
AgID blocking service carrying `customFaultCode` in their detail, REST error bodies carrying a
pagoPA-style `faultCode`, and a 201 receipt whose business status is not ok, with the agency's
code beside it. The agency file says which code means transient, rejected or invalid; an
unknown code keeps the default the fault or status would have had.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from adapters.contracts import load_agency_catalog
from adapters.factory import build_contract_adapter
from config.settings import PROJECT_ROOT
from domain.errors import (
    AgencyRejected,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
)
from domain.messages import OutgoingMessage
from tests.agency_server import Recorded, Reply, agency_server
from tests.external import EXTERNAL_DIR, require_external
from tests.integration.test_adapters import build_message

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
AGID = "http://ente.example/nomeinterfacciaservizio"

#: The AgID blocking service as config/agencies/agid_blocking.toml declares it, plus the
#: codes its faults carry in `ErrorMessageFault/customFaultCode`.
AGID_FILE = """
current = "v1"
[contracts.v1]
kind = "soap"
wsdl = "external:agid-modi-patterns/soap-blocking.wsdl"
service = "SOAPBlockingImplService"
port = "SOAPBlockingImplPort"
operations = ["MRequest"]
envelope = "none"
message_id_header = "Idempotency-Key"
fault_code_fields = ["customFaultCode"]
[contracts.v1.fault_overrides]
E_BUSY = "transient"
E_UNKNOWN_SUBJECT = "rejected"
E_BAD_REQUEST = "invalid"
[contracts.v1.receipt]
protocol_number = "return/c"
acknowledgment = true
"""

#: RUNTS (REST) with pagoPA-style codes: in an error body's `faultCode` (or `fault.faultCode`),
#: and beside a receipt's `esito` that is not ok.
RUNTS_FILE = """
current = "v1"
[contracts.v1]
kind = "rest"
openapi = "schemas/agencies/runts/v1/openapi.yaml"
operations = ["IscrizioneEnte"]
envelope = "crocevia"
message_id_header = "Idempotency-Key"
fault_code_fields = ["faultCode", "fault.faultCode", "codice"]
[contracts.v1.fault_overrides]
PAA_SYSTEM_ERROR = "transient"
PAA_PAGAMENTO_SCONOSCIUTO = "rejected"
PAA_SINTASSI_XSD = "invalid"
[contracts.v1.receipt]
http_statuses = [201, 200]
protocol_number = "protocollo"
message_id = "messageId"
references_object = "riferimenti"
[contracts.v1.receipt.status]
path = "esito"
ok = ["ACQUISITA", "ACCOLTA"]
errors = { RESPINTA = "rejected" }
code = "codice"
text = "motivo"
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
        yield client


def _adapter(tmp_path: Path, text: str, name: str, endpoint: str, http: httpx.AsyncClient,
             **overrides: str) -> Any:
    directory = tmp_path / "agencies"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.toml").write_text(text)
    catalog = load_agency_catalog(directory, project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    return build_contract_adapter(catalog.contract(name), endpoint=endpoint, http=http,
                                  fault_overrides=overrides)


def _soap_fault(sender: bool, code: str) -> Reply:
    """A SOAP 1.2 fault as the AgID WSDL declares it: `ErrorMessageFault/customFaultCode`."""
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12, "tns": AGID})
    fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP12}}}Body"), f"{{{SOAP12}}}Fault")
    value = etree.SubElement(etree.SubElement(fault, f"{{{SOAP12}}}Code"), f"{{{SOAP12}}}Value")
    value.text = "env:Sender" if sender else "env:Receiver"
    reason = etree.SubElement(etree.SubElement(fault, f"{{{SOAP12}}}Reason"), f"{{{SOAP12}}}Text")
    reason.set("{http://www.w3.org/XML/1998/namespace}lang", "it")
    reason.text = f"errore {code}"
    bean = etree.SubElement(etree.SubElement(fault, f"{{{SOAP12}}}Detail"), f"{{{AGID}}}ErrorMessageFault")
    etree.SubElement(bean, "customFaultCode").text = code
    return Reply(400 if sender else 500, etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
                 "application/soap+xml; charset=utf-8")


def _agid_message() -> OutgoingMessage:
    message_id = uuid.uuid4().hex
    return OutgoingMessage(message_id, "dlv-agid", "CRV-2026-000001", "agid_blocking", "MRequest",
                           {"M": {"b": "Rossi Costruzioni SRL"}})


@pytest.mark.anyio
@pytest.mark.parametrize(("sender", "code", "expected"), [
    (False, "E_UNKNOWN_SUBJECT", AgencyRejected),         # a Receiver fault, by default retried
    (True, "E_BUSY", AgencyUnreachable),                  # a Sender fault, by default final
    (True, "E_BAD_REQUEST", MessageRejectedAsInvalid),
    (True, "E_OTHER", AgencyRejected),                    # unknown: Sender stays rejected
    (False, "E_OTHER", AgencyUnreachable),                # unknown: Receiver stays transient
], ids=["receiver-rejected", "sender-transient", "sender-invalid", "unknown-sender", "unknown-receiver"])
async def test_a_custom_fault_code_in_a_soap_fault_detail_picks_the_kind(
    tmp_path: Path, http: httpx.AsyncClient, sender: bool, code: str, expected: type[DeliveryError],
) -> None:
    """AgID `customFaultCode` → the kind the agency file gives it; unknown codes keep the default."""
    require_external()
    with agency_server(lambda _request: _soap_fault(sender, code), "/soap") as agency:
        adapter = _adapter(tmp_path, AGID_FILE, "agid_blocking", agency.url, http)
        with pytest.raises(DeliveryError) as caught:
            await adapter.deliver(_agid_message())
    assert type(caught.value) is expected
    assert caught.value.code == code and caught.value.text == f"errore {code}"


@pytest.mark.anyio
async def test_the_agency_settings_override_a_detail_code_too(tmp_path: Path,
                                                              http: httpx.AsyncClient) -> None:
    """`[agencies.<name>] fault_overrides` (crocevia.toml) win over the agency file's."""
    require_external()
    with agency_server(lambda _request: _soap_fault(True, "E_OTHER"), "/soap") as agency:
        adapter = _adapter(tmp_path, AGID_FILE, "agid_blocking", agency.url, http,
                           E_OTHER="transient")
        with pytest.raises(AgencyUnreachable):
            await adapter.deliver(_agid_message())


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "body", "expected"), [
    (500, {"faultCode": "PAA_PAGAMENTO_SCONOSCIUTO", "faultString": "sconosciuto"}, AgencyRejected),
    # The fields are tried in order: `fault.faultCode` before `codice`.
    (422, {"codice": "X1", "motivo": "m", "fault": {"faultCode": "PAA_SYSTEM_ERROR"}}, AgencyUnreachable),
    (422, {"faultCode": "PAA_SYSTEM_ERROR", "faultString": "nodo giù"}, AgencyUnreachable),
    (422, {"faultCode": "PAA_SINTASSI_XSD"}, MessageRejectedAsInvalid),
    (500, {"faultCode": "PAA_ALTRO"}, AgencyUnreachable),
    (422, {"faultCode": "PAA_ALTRO", "motivo": "m"}, AgencyRejected),
], ids=["500-rejected", "fields-in-order", "422-transient", "422-invalid", "unknown-500", "unknown-422"])
async def test_a_fault_code_in_a_rest_error_body_picks_the_kind(
    tmp_path: Path, http: httpx.AsyncClient, status: int, body: dict[str, Any],
    expected: type[DeliveryError],
) -> None:
    """pagoPA `faultCode` in an error body → the kind the agency file gives it."""
    reply = Reply(status, json.dumps(body).encode(), "application/problem+json")
    with agency_server(lambda _request: reply) as agency:
        adapter = _adapter(tmp_path, RUNTS_FILE, "runts", agency.url, http)
        with pytest.raises(DeliveryError) as caught:
            await adapter.deliver(build_message("runts"))
    assert type(caught.value) is expected


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "expected"), [
    ("PAA_SYSTEM_ERROR", AgencyUnreachable),
    ("PAA_PAGAMENTO_SCONOSCIUTO", AgencyRejected),
    ("PAA_ALTRO", AgencyRejected),  # unknown: the status rule's own kind (RESPINTA = rejected)
], ids=["transient", "rejected", "unknown"])
async def test_a_code_beside_a_ko_status_picks_the_kind(tmp_path: Path, http: httpx.AsyncClient,
                                                        code: str, expected: type[DeliveryError]) -> None:
    """A receipt whose esito is not ok is not always final: its code decides."""

    def answer(request: Recorded) -> Reply:
        receipt = {"messageId": request.headers["idempotency-key"], "protocollo": "RUNTS-2026-0000001",
                   "dataProtocollo": "2026-12-04T10:00:00Z", "esito": "RESPINTA", "codice": code,
                   "motivo": "il nodo risponde KO", "riferimenti": {"numeroRepertorio": "0000001"}}
        return Reply(201, json.dumps(receipt).encode())

    with agency_server(answer) as agency:
        adapter = _adapter(tmp_path, RUNTS_FILE, "runts", agency.url, http)
        with pytest.raises(DeliveryError) as caught:
            await adapter.deliver(build_message("runts"))
    assert type(caught.value) is expected
    assert caught.value.code == code and caught.value.text == "il nodo risponde KO"
