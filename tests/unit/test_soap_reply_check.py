"""The reply check of a SOAP contract with a declared XSD: libxml2 vouches for the common reply,
zeep still decides every other one (nothing it refused is let through unchecked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import zeep.exceptions as zx

from adapters.contracts import load_agency_catalog
from adapters.wsdl import WsdlContract, load_wsdl_contract
from tests.external import EXTERNAL_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_REPLY = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:c="urn:crocevia:agency:cciaa:v1">
  <soap:Body>
    <c:IscrizioneImpresaResponse>
      <c:ricevuta>
        <c:messageId>{message_id}</c:messageId>
        <c:protocollo>CCIAA-2026-000001</c:protocollo>
        <c:dataProtocollo>2026-03-02T09:30:00Z</c:dataProtocollo>
        <c:esito>{esito}</c:esito>
        <c:riferimento nome="numeroREA" valore="RM-1234567"/>
      </c:ricevuta>
    </c:IscrizioneImpresaResponse>
  </soap:Body>
</soap:Envelope>"""


@pytest.fixture(scope="module")
def cciaa() -> WsdlContract:
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    return load_wsdl_contract(catalog.contract("cciaa"))


def _reply(text: str) -> SimpleNamespace:
    return SimpleNamespace(status_code=200, headers={"Content-Type": "text/xml; charset=utf-8"},
                           content=text.encode())


def _check(contract: WsdlContract, text: str) -> tuple[Any, int]:
    """The body element `check_reply` returns, and how often zeep's `process_reply` ran."""
    operation = contract.operation("IscrizioneImpresa")
    real = operation.binding_operation.process_reply
    with mock.patch.object(operation.binding_operation, "process_reply", side_effect=real) as zeep_check:
        payload = contract.check_reply(operation, _reply(text))
    return payload, zeep_check.call_count


def test_a_reply_valid_against_the_declared_xsd_is_not_deserialized_by_zeep(cciaa: WsdlContract) -> None:
    """The common reply: the XSD vouches for it and the same body element comes back."""
    payload, zeep_calls = _check(cciaa, _REPLY.format(message_id="a" * 32, esito="ACQUISITA"))
    assert zeep_calls == 0
    assert payload is not None and payload.tag == "{urn:crocevia:agency:cciaa:v1}IscrizioneImpresaResponse"


def test_a_reply_the_xsd_does_not_vouch_for_is_still_checked_by_zeep(cciaa: WsdlContract) -> None:
    """An esito outside the enumeration fails the XSD: zeep decides, as before."""
    payload, zeep_calls = _check(cciaa, _REPLY.format(message_id="a" * 32, esito="FORSE"))
    assert zeep_calls == 1 and payload is not None


def test_another_element_in_the_body_is_refused_as_before(cciaa: WsdlContract) -> None:
    """Not the operation's output: zeep's strict parsing refuses it."""
    text = _REPLY.format(message_id="a" * 32, esito="ACQUISITA").replace(
        "<c:protocollo>CCIAA-2026-000001</c:protocollo>", "<c:inatteso>x</c:inatteso>")
    with pytest.raises(zx.Error):
        _check(cciaa, text)
