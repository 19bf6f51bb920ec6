"""`classify_soap` and the SOAP adapter over httpx.MockTransport and stored fault envelopes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import requests
import zeep.exceptions as zx
from urllib3.exceptions import NewConnectionError

from adapters.factory import ContractSet
from adapters.soap import classify_soap
from bootstrap import build_adapter
from domain.errors import (
    AdapterMisconfigured,
    AgencyProtocolError,
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
    OutcomeUnknown,
)
from domain.messages import OutgoingMessage
from tests.external import repository_catalog

FAULTS = Path(__file__).resolve().parent.parent / "data" / "faults"
ENDPOINT = "http://127.0.0.1:9/soap"
MESSAGE_ID = "0123456789abcdef0123456789abcdef"


def build_inail_adapter(**kwargs):  # type: ignore[no-untyped-def]
    """INAIL's adapter, from its declaration in config/agencies/inail.toml."""
    return build_adapter(ContractSet(repository_catalog()), "inail", **kwargs)


def build_inps_adapter(**kwargs):  # type: ignore[no-untyped-def]
    """INPS's adapter, from its declaration in config/agencies/inps.toml."""
    return build_adapter(ContractSet(repository_catalog()), "inps", **kwargs)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _fault(name: str) -> bytes:
    return (FAULTS / name).read_bytes()


def _header(operation: str, kind: str = "business_start") -> dict[str, object]:
    return {
        "messageId": MESSAGE_ID,
        "filingReference": "CRV-2026-000042",
        "filingKind": kind,
        "operation": operation,
        "portal": "demo",
        "declarant": {"taxCode": "RSSMRA80A01H501U", "role": "legal_representative"},
        "sentAt": "2026-11-28T09:00:00+00:00",
    }


def inail_message(**changes: object) -> OutgoingMessage:
    content = {
        "messageHeader": _header("AperturaPAT"),
        "codiceFiscale": "01234567890",
        "denominazione": "Rossi Costruzioni SRL",
        "sede": {"indirizzo": "Via Roma 1", "codiceComune": "H501", "cap": "00184",
                 "provincia": "RM"},
        "legaleRappresentante": {"codiceFiscale": "RSSMRA80A01H501U", "nome": "Mario",
                                 "cognome": "Rossi"},
        "dataInizioAttivita": "2026-12-01",
        "ateco": ["41.20"],
        "numeroDipendenti": 3,
    }
    content.update(changes)
    return OutgoingMessage(MESSAGE_ID, "dlv-1", "CRV-2026-000042", "inail", "AperturaPAT", content)


def inps_durc_message() -> OutgoingMessage:
    content = {
        "messageHeader": _header("RichiestaDurc", "durc_request"),
        "codiceFiscale": "01234567890",
        "denominazione": "Rossi Costruzioni SRL",
        "motivo": "appalto_pubblico",
    }
    return OutgoingMessage(MESSAGE_ID, "dlv-2", "CRV-2026-000042", "inps", "RichiestaDurc", content)


INAIL_RECEIPT = f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<i:AperturaPATResponse xmlns:i="urn:crocevia:agency:inail:v1"><i:ricevuta>
<i:messageId>{MESSAGE_ID}</i:messageId><i:protocollo>INAIL/2026/00001234</i:protocollo>
<i:dataProtocollo>2026-11-28T09:00:01+00:00</i:dataProtocollo><i:esito>ACQUISITA</i:esito>
<i:riferimento nome="numeroPAT" valore="123456789"/>
</i:ricevuta></i:AperturaPATResponse></s:Body></s:Envelope>""".encode()


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler),
                             timeout=httpx.Timeout(connect=1, read=2, write=1, pool=1))


async def _reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_type: str = "text/xml; charset=utf-8") -> httpx.Response:
    """The agency's reply as the hub's client receives it, through httpx.MockTransport."""
    all_headers = {"content-type": content_type, **(headers or {})}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=all_headers)

    async with _client(handler) as http:
        return await http.post(ENDPOINT, content=b"<x/>")


async def _raised(exc_factory: Callable[[httpx.Request], Exception]) -> Exception:
    """The exception the hub's client raises when the mock transport fails this way."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_factory(request)

    async with _client(handler) as http:
        try:
            await http.post(ENDPOINT, content=b"<x/>")
        except Exception as exc:  # noqa: BLE001 - the exception is the test subject
            return exc
    raise AssertionError("the mock transport did not fail")


# --- exceptions ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda r: httpx.ConnectError("refused", request=r), AgencyUnreachable),
        (lambda r: httpx.ConnectTimeout("slow connect", request=r), AgencyUnreachable),
        (lambda r: httpx.PoolTimeout("pool full", request=r), AgencyUnreachable),
        (lambda r: httpx.ReadTimeout("slow reply", request=r), OutcomeUnknown),
        (lambda r: httpx.WriteTimeout("slow send", request=r), OutcomeUnknown),
        (lambda r: httpx.RemoteProtocolError("peer closed", request=r), OutcomeUnknown),
        (lambda r: httpx.ReadError("reset", request=r), OutcomeUnknown),
        (lambda r: httpx.UnsupportedProtocol("ftp", request=r), AdapterMisconfigured),
    ],
)
async def test_httpx_failures_are_classified_by_where_they_happened(factory, expected) -> None:
    """Never sent → unreachable; maybe processed → outcome unknown (mock transport raises)."""
    exc = await _raised(factory)
    error = classify_soap(exc, agency="inail", operation="AperturaPAT", delivery_id="dlv-1")
    assert type(error) is expected
    assert (error.agency, error.operation, error.delivery_id) == ("inail", "AperturaPAT", "dlv-1")
    assert error.__cause__ is exc


def _requests_connection_refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(reason)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.ConnectTimeout("connect"), AgencyUnreachable),
        (requests.exceptions.ReadTimeout("read"), OutcomeUnknown),
        (_requests_connection_refused(), AgencyUnreachable),
        (requests.exceptions.ConnectionError("Connection aborted."), OutcomeUnknown),
        (requests.exceptions.SSLError("certificate verify failed"), AdapterMisconfigured),
        (requests.exceptions.ChunkedEncodingError("truncated"), OutcomeUnknown),
        (requests.exceptions.MissingSchema("no scheme"), AdapterMisconfigured),
        (zx.ValidationError("Missing element codiceFiscale"), MessageRejectedAsInvalid),
        (zx.XMLSyntaxError("not xml"), AgencyProtocolError),
        (zx.TransportError("invalid XML", status_code=200, content=b"<html>"), AgencyProtocolError),
        (zx.TransportError("invalid XML", status_code=502, content=b"<html>"), AgencyUnreachable),
        (zx.TransportError("no content", status_code=404), AdapterMisconfigured),
        (zx.XMLParseError("unexpected element"), AgencyProtocolError),
    ],
)
def test_zeep_and_requests_exceptions_follow_the_table(exc: Exception, expected: type) -> None:
    """requests exceptions that zeep lets through are classified like httpx's."""
    error = classify_soap(exc, agency="inail")
    assert type(error) is expected
    assert error.__cause__ is exc


def test_tls_failure_is_a_misconfiguration() -> None:
    """A certificate problem will not heal by retrying: httpx ConnectError caused by ssl."""
    import ssl

    exc = httpx.ConnectError("certificate verify failed")
    exc.__cause__ = ssl.SSLCertVerificationError("self-signed certificate")
    assert isinstance(classify_soap(exc), AdapterMisconfigured)


def test_zeep_fault_client_is_a_business_rejection() -> None:
    """A zeep Fault raised by process_reply carries the Rifiuto code and reason."""
    from lxml import etree

    detail = etree.fromstring(
        b'<detail><r:Rifiuto xmlns:r="urn:crocevia:agency:inail:v1">'
        b"<r:codice>R001</r:codice><r:motivo>gia' aperta</r:motivo></r:Rifiuto></detail>"
    )
    fault = zx.Fault("Richiesta respinta", code="soapenv:Client", detail=detail)
    error = classify_soap(fault)
    assert isinstance(error, AgencyRejected)
    assert (error.code, error.text) == ("R001", "gia' aperta")


def test_unclassified_exception_becomes_a_logged_protocol_error() -> None:
    """An exception outside the table is never dropped: transient, with its cause."""
    from structlog.testing import capture_logs

    exc = RuntimeError("bug")
    with capture_logs() as logs:
        error = classify_soap(exc, agency="inps")
    assert isinstance(error, AgencyProtocolError) and error.code == "UNCLASSIFIED"
    assert error.__cause__ is exc
    assert logs[0]["event"] == "delivery_unclassified_error" and logs[0]["exc_info"] is exc


# --- replies ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (401, {}, AdapterMisconfigured, None),
        (403, {}, AdapterMisconfigured, None),
        (404, {}, AdapterMisconfigured, None),
        (502, {}, AgencyUnreachable, None),
        (503, {}, AgencyUnreachable, None),
        (504, {}, AgencyUnreachable, None),
        (503, {"Retry-After": "7"}, AgencyThrottled, 7.0),
        (429, {"Retry-After": "2"}, AgencyThrottled, 2.0),
        (429, {}, AgencyThrottled, None),
    ],
)
async def test_status_only_replies(status, headers, expected, retry_after) -> None:
    """Status-decided replies, HTML bodies included (mock transport)."""
    response = await _reply(status, _fault("gateway_error_page.html"), headers, "text/html")
    error = classify_soap(response, agency="inps")
    assert type(error) is expected
    assert getattr(error, "retry_after", None) == retry_after


@pytest.mark.anyio
async def test_retry_after_as_http_date_is_understood() -> None:
    """Retry-After may be an HTTP-date (RFC 9110); a past date means no wait."""
    response = await _reply(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    error = classify_soap(response)
    assert isinstance(error, AgencyThrottled) and error.retry_after == 0.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("envelope", "status", "overrides", "expected", "code"),
    [
        ("soap11_client_rifiuto_R001.xml", 500, {}, AgencyRejected, "R001"),
        ("soap12_sender_rifiuto_R001.xml", 400, {}, AgencyRejected, "R001"),
        ("soap11_client_rifiuto_R999.xml", 500, {}, AgencyRejected, "R999"),
        ("soap11_client_rifiuto_R999.xml", 500, {"R999": "transient"}, AgencyUnreachable, "R999"),
        ("soap11_client_schema.xml", 500, {}, MessageRejectedAsInvalid, "SCHEMA"),
        ("soap12_sender_subcode_schema.xml", 400, {}, MessageRejectedAsInvalid, "SCHEMA"),
        ("soap11_server_fault.xml", 500, {}, AgencyUnreachable, "Server"),
        ("soap12_receiver_fault.xml", 500, {}, AgencyUnreachable, "Receiver"),
        ("soap12_receiver_fault.xml", 500, {"Receiver": "permanent"}, AgencyRejected, "Receiver"),
        ("soap11_version_mismatch.xml", 500, {}, AdapterMisconfigured, "VersionMismatch"),
    ],
)
async def test_stored_fault_envelopes(envelope, status, overrides, expected, code) -> None:
    """Stored SOAP 1.1/1.2 faults, served by a mock transport, map as the contract says."""
    response = await _reply(status, _fault(envelope))
    error = classify_soap(response, agency="x", fault_overrides=overrides)
    assert type(error) is expected
    assert error.code == code


@pytest.mark.anyio
async def test_rejection_text_is_the_rifiuto_motivo() -> None:
    """The audit keeps the agency's own reason, not the generic faultstring."""
    response = await _reply(400, _fault("soap12_sender_rifiuto_R001.xml"),
                            content_type="application/soap+xml")
    error = classify_soap(response)
    assert error.text == "Azienda gia' iscritta come datore di lavoro"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "gateway_error_page.html", AgencyProtocolError),
        (200, "truncated_reply.xml", AgencyProtocolError),
        (500, "gateway_error_page.html", AgencyUnreachable),
        (400, "gateway_error_page.html", MessageRejectedAsInvalid),
    ],
)
async def test_replies_without_a_fault(status, body, expected) -> None:
    """Non-XML or truncated bodies (mock transport) are protocol errors or judged by status."""
    response = await _reply(status, _fault(body))
    assert type(classify_soap(response)) is expected


def test_unknown_override_kind_is_refused() -> None:
    """A typo in config fails at once instead of silently retrying a rejection."""
    with pytest.raises(ValueError, match="unknown kind"):
        classify_soap(zx.Fault("x", code="Client"), fault_overrides={"R001": "sometimes"})


# --- the adapter over a mock transport ---------------------------------------------------------


class _Recorder:
    """A mock-transport handler that records requests and answers from a script."""

    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.mark.anyio
async def test_soap11_adapter_sends_soapaction_and_reads_the_receipt() -> None:
    """INAIL over a mock transport: SOAP 1.1 headers out, Receipt with references back."""
    recorder = _Recorder(httpx.Response(200, content=INAIL_RECEIPT,
                                        headers={"content-type": "text/xml"}))
    async with _client(recorder) as http:
        receipt = await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())
    assert receipt.protocol_number == "INAIL/2026/00001234"
    assert receipt.references == {"numeroPAT": "123456789"}
    assert receipt.protocolled_at.startswith("2026-11-28T09:00:01")
    sent = recorder.requests[0]
    assert sent.headers["SOAPAction"] == '"urn:crocevia:agency:inail:v1/AperturaPAT"'
    assert sent.headers["Content-Type"].startswith("text/xml")
    assert MESSAGE_ID.encode() in sent.content


@pytest.mark.anyio
async def test_soap12_adapter_puts_the_action_in_the_content_type() -> None:
    """INPS is SOAP 1.2: no SOAPAction header, `action` media-type parameter (mock transport)."""
    recorder = _Recorder(httpx.Response(400, content=_fault("soap12_sender_rifiuto_R001.xml"),
                                        headers={"content-type": "application/soap+xml"}))
    async with _client(recorder) as http:
        with pytest.raises(AgencyRejected) as caught:
            await build_inps_adapter(endpoint=ENDPOINT, http=http).deliver(inps_durc_message())
    assert caught.value.code == "R001" and caught.value.agency == "inps"
    assert isinstance(caught.value.__cause__, zx.Fault)  # read through zeep's process_reply
    sent = recorder.requests[0]
    assert "SOAPAction" not in sent.headers
    assert 'action="urn:crocevia:agency:inps:v1/RichiestaDurc"' in sent.headers["Content-Type"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "changes",
    [
        {"sede": {"indirizzo": "Via Roma 1", "codiceComune": "H501", "cap": "ABC",
                  "provincia": "RM"}},
        {"numeroDipendenti": 0},
        {"campoSconosciuto": "x"},
    ],
)
async def test_invalid_message_never_leaves(changes: dict[str, object]) -> None:
    """XSD or contract violations stop before the (mock) transport is called."""
    recorder = _Recorder()
    async with _client(recorder) as http:
        with pytest.raises(MessageRejectedAsInvalid):
            await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message(**changes))
    assert recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (httpx.Response(500, content=_fault("soap11_client_rifiuto_R001.xml"),
                        headers={"content-type": "text/xml"}), AgencyRejected),
        (httpx.Response(500, content=_fault("soap11_server_fault.xml"),
                        headers={"content-type": "text/xml"}), AgencyUnreachable),
        (httpx.Response(200, content=_fault("gateway_error_page.html"),
                        headers={"content-type": "text/html"}), AgencyProtocolError),
        (httpx.Response(200, content=_fault("truncated_reply.xml"),
                        headers={"content-type": "text/xml"}), AgencyProtocolError),
        (httpx.Response(200, content=b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
                                     b'<s:Body/></s:Envelope>',
                        headers={"content-type": "text/xml"}), AgencyProtocolError),  # empty Body
        (httpx.Response(503, headers={"Retry-After": "30"}), AgencyThrottled),
        (httpx.Response(404), AdapterMisconfigured),
        (httpx.ReadTimeout("slow"), OutcomeUnknown),
        (httpx.ConnectError("refused"), AgencyUnreachable),
    ],
)
async def test_adapter_raises_only_delivery_errors(reply, expected) -> None:
    """Every failure of the exchange (mock transport) surfaces as one DeliveryError subclass."""
    async with _client(_Recorder(reply)) as http:
        with pytest.raises(DeliveryError) as caught:
            await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())
    assert type(caught.value) is expected


@pytest.mark.anyio
async def test_fault_overrides_reach_the_adapter() -> None:
    """`{"R999": "transient"}` from config turns that rejection into a retry (mock transport)."""
    reply = httpx.Response(500, content=_fault("soap11_client_rifiuto_R999.xml"),
                           headers={"content-type": "text/xml"})
    async with _client(_Recorder(reply)) as http:
        adapter = build_inail_adapter(endpoint=ENDPOINT, http=http,
                                      fault_overrides={"R999": "transient"})
        with pytest.raises(AgencyUnreachable):
            await adapter.deliver(inail_message())


@pytest.mark.anyio
async def test_receipt_for_another_message_is_a_protocol_error() -> None:
    """A receipt echoing a different messageId is not ours to record (mock transport)."""
    other = INAIL_RECEIPT.replace(MESSAGE_ID.encode(), b"f" * 32)
    async with _client(_Recorder(httpx.Response(200, content=other))) as http:
        with pytest.raises(AgencyProtocolError):
            await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())


@pytest.mark.anyio
async def test_unknown_operation_is_a_misconfiguration() -> None:
    """An operation outside the stored contract is a routing or config error, not retried."""
    message = inail_message()
    wrong = OutgoingMessage(message.message_id, "dlv-1", message.filing_reference, "inail",
                            "ChiusuraPAT", message.content)
    async with _client(_Recorder()) as http:
        with pytest.raises(AdapterMisconfigured):
            await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(wrong)


def test_contract_is_loaded_once_and_checked() -> None:
    """The WSDL/XSD are parsed once per contract; a version mismatch fails at build time."""
    from dataclasses import replace

    from adapters.contracts import ContractError
    from adapters.wsdl import load_wsdl_contract

    spec = repository_catalog().contract("inps", "v1")
    assert load_wsdl_contract(spec) is load_wsdl_contract(spec)
    with pytest.raises(ContractError, match="SOAP 1.2"):
        load_wsdl_contract(replace(spec, soap_version="1.1"))


# --- one parse of the reply ------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_reply_is_parsed_once_for_the_check_and_the_receipt(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """zeep's reply check and the receipt mapping read one parsed tree (mock transport)."""
    import adapters.wsdl as wsdl

    parses: list[bytes] = []
    parse = wsdl.WsdlContract._parse
    monkeypatch.setattr(wsdl.WsdlContract, "_parse", lambda self, content: (
        parses.append(content), parse(self, content))[1])
    monkeypatch.setattr(wsdl.WsdlContract, "payload", lambda *a: pytest.fail("parsed again"))
    reply = httpx.Response(200, content=INAIL_RECEIPT, headers={"content-type": "text/xml"})
    async with _client(_Recorder(reply)) as http:
        receipt = await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())
    assert receipt.protocol_number == "INAIL/2026/00001234" and parses == [INAIL_RECEIPT]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "expected", "cause"),
    [
        (_fault("soap11_client_rifiuto_R001.xml"), AgencyRejected, zx.Fault),
        (INAIL_RECEIPT.replace(b"<i:esito>", b"<i:ignoto>x</i:ignoto><i:esito>"),
         AgencyProtocolError, zx.XMLParseError),
        (INAIL_RECEIPT.replace(b"?>\n", b'?>\n<!DOCTYPE s:Envelope [<!ENTITY e "x">]>\n'),
         AgencyProtocolError, zx.DTDForbidden),
        (INAIL_RECEIPT.replace(b"schemas.xmlsoap.org/soap/envelope/",
                               b"www.w3.org/2003/05/soap-envelope"),
         AgencyProtocolError, zx.XMLSyntaxError),
    ],
    ids=["fault-in-200", "not-the-contract-reply", "dtd", "other-soap-version"],
)
async def test_a_200_reply_is_still_checked_by_zeep_on_the_shared_tree(body, expected, cause) -> None:  # type: ignore[no-untyped-def]
    """Faults, contract mismatches and forbidden XML in a 200 reply are caught before the
    receipt is read (mock transport)."""
    reply = httpx.Response(200, content=body, headers={"content-type": "text/xml"})
    async with _client(_Recorder(reply)) as http:
        with pytest.raises(DeliveryError) as caught:
            await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())
    assert type(caught.value) is expected and isinstance(caught.value.__cause__, cause)


@pytest.mark.anyio
async def test_a_comment_inside_a_receipt_value_does_not_cut_it() -> None:
    """The receipt is read from zeep's tree, comments removed: the whole protocol number."""
    body = INAIL_RECEIPT.replace(b"INAIL/2026/", b"INAIL/<!-- gateway -->2026/")
    async with _client(_Recorder(httpx.Response(200, content=body))) as http:
        receipt = await build_inail_adapter(endpoint=ENDPOINT, http=http).deliver(inail_message())
    assert receipt.protocol_number == "INAIL/2026/00001234"


def test_the_envelope_is_the_one_zeep_create_message_builds() -> None:
    """Serializing through the operation's input message, as `create_message` does when it
    adds nothing else, gives byte for byte the envelope `create_message` builds."""
    from lxml import etree

    from adapters.base import ErrorContext
    from adapters.wsdl import load_wsdl_contract

    for agency, message in (("inail", inail_message()), ("inps", inps_durc_message())):
        contract = load_wsdl_contract(repository_catalog().contract(agency, "v1"))
        built = contract.build(message.operation, message.content, ErrorContext())
        expected = contract.client.create_message(contract._service, message.operation,
                                                  **message.content)
        assert etree.tostring(built) == etree.tostring(expected)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "overrides", "expected", "code"),
    [
        ((), {"E_UNKNOWN_SUBJECT": "rejected"}, AgencyUnreachable, "Receiver"),  # not declared: unread
        (("customFaultCode",), {}, AgencyUnreachable, "E_UNKNOWN_SUBJECT"),  # unknown: the default
        (("customFaultCode",), {"E_UNKNOWN_SUBJECT": "rejected"}, AgencyRejected, "E_UNKNOWN_SUBJECT"),
        (("customFaultCode",), {"E_UNKNOWN_SUBJECT": "invalid"}, MessageRejectedAsInvalid,
         "E_UNKNOWN_SUBJECT"),
    ],
)
async def test_a_declared_detail_field_carries_the_agencys_code(fields, overrides, expected, code) -> None:
    """AgID `customFaultCode` inside the fault's detail is read when the contract names it."""
    response = await _reply(500, _fault("soap12_receiver_custom_fault_code.xml"))
    error = classify_soap(response, agency="x", fault_overrides=overrides, fault_code_fields=fields)
    assert type(error) is expected
    assert error.code == code and error.text == "Soggetto sconosciuto"
