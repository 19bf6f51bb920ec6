"""SOAP 1.1 and 1.2 on the wire: envelope versions, receipts and faults as the specs want them."""

from __future__ import annotations

from lxml import etree
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from simulators.desk import AgencyDesk, InvalidMessageError
from simulators.ledger import Effect

__all__ = [
    "ENVELOPE_NS",
    "SoapEndpointBase",
    "accepted_response",
    "MEDIA_TYPE",
    "envelope_version",
    "fault_response",
    "media_type",
    "receipt_response",
    "version_mismatch",
]

#: SOAP version -> envelope namespace.
ENVELOPE_NS = {
    "1.1": "http://schemas.xmlsoap.org/soap/envelope/",
    "1.2": "http://www.w3.org/2003/05/soap-envelope",
}
#: SOAP version -> HTTP media type (SOAP 1.1 §6.1.1; SOAP 1.2 part 2 §7.1.4).
MEDIA_TYPE = {"1.1": "text/xml", "1.2": "application/soap+xml"}
_PREFIX = {"1.1": "soap", "1.2": "env"}


def envelope_version(root: etree._Element) -> str | None:
    """The SOAP version of a parsed document, or None if it is no SOAP envelope we know."""
    for version, namespace in ENVELOPE_NS.items():
        if root.tag == f"{{{namespace}}}Envelope":
            return version
    return None


def _envelope(
    version: str, extra_ns: dict[str, str] | None = None
) -> tuple[etree._Element, etree._Element]:
    ns = ENVELOPE_NS[version]
    envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={_PREFIX[version]: ns, **(extra_ns or {})})
    return envelope, etree.SubElement(envelope, f"{{{ns}}}Body")


def _response(version: str, envelope: etree._Element, status: int) -> Response:
    content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    media = f"{MEDIA_TYPE[version]}; charset=utf-8"
    return Response(content, status_code=status, headers={"content-type": media})


def receipt_response(version: str, namespace: str, prefix: str, effect: Effect) -> Response:
    """`<Operation>Response` holding one `ricevuta`, as the agency XSD declares it."""
    envelope, body = _envelope(version, {prefix: namespace})
    answer = etree.SubElement(body, f"{{{namespace}}}{effect.operation}Response")
    receipt = etree.SubElement(answer, f"{{{namespace}}}ricevuta")
    for name, value in (
        ("messageId", effect.message_id),
        ("protocollo", effect.protocol_number),
        ("dataProtocollo", effect.protocolled_at),
        ("esito", effect.esito),
    ):
        etree.SubElement(receipt, f"{{{namespace}}}{name}").text = value
    for name, value in effect.references.items():
        etree.SubElement(receipt, f"{{{namespace}}}riferimento", nome=name, valore=value)
    if effect.esito == "RESPINTA":  # a decision after the protocol: the agency's reason
        etree.SubElement(receipt, f"{{{namespace}}}codice").text = effect.decision_code
        etree.SubElement(receipt, f"{{{namespace}}}motivo").text = effect.decision_text
    return _response(version, envelope, 200)


def accepted_response(effect: Effect) -> Response:
    """202 Accepted, no envelope (SOAP 1.2 part 2 §7.5.2.2; WS-I allows it for 1.1 too): the
    message is taken in charge; X-Correlation-ID names it, Location (pull) its status."""
    headers = {"X-Correlation-ID": effect.correlation_id or ""}
    if effect.mode == "pull":
        headers["Location"] = f"/esiti/{effect.correlation_id}"
    return Response(b"", status_code=202, headers=headers)


def fault_response(
    version: str,
    *,
    sender: bool,
    text: str,
    rejection: tuple[str, str, str, str] | None = None,
) -> Response:
    """A Client/Sender (`sender`) or Server/Receiver fault.

    `rejection` is (namespace, prefix, codice, motivo) for the `Rifiuto` detail. SOAP 1.1 sends
    every fault with HTTP 500 (SOAP 1.1 §6.2); SOAP 1.2 sends Sender faults with 400 and the
    others with 500 (SOAP 1.2 part 2 §7.5.1.2).
    """
    extra = {rejection[1]: rejection[0]} if rejection else {}
    envelope, body = _envelope(version, extra)
    ns = ENVELOPE_NS[version]
    fault = etree.SubElement(body, f"{{{ns}}}Fault")
    if version == "1.1":
        # faultcode, faultstring and detail are unqualified in SOAP 1.1.
        etree.SubElement(fault, "faultcode").text = "soap:Client" if sender else "soap:Server"
        etree.SubElement(fault, "faultstring").text = text
        detail = etree.SubElement(fault, "detail") if rejection else None
        status = 500
    else:
        code = etree.SubElement(fault, f"{{{ns}}}Code")
        etree.SubElement(code, f"{{{ns}}}Value").text = "env:Sender" if sender else "env:Receiver"
        reason = etree.SubElement(fault, f"{{{ns}}}Reason")
        reason_text = etree.SubElement(reason, f"{{{ns}}}Text")
        reason_text.set("{http://www.w3.org/XML/1998/namespace}lang", "it")
        reason_text.text = text
        detail = etree.SubElement(fault, f"{{{ns}}}Detail") if rejection else None
        status = 400 if sender else 500
    if rejection and detail is not None:
        namespace, _, code_value, motive = rejection
        refusal = etree.SubElement(detail, f"{{{namespace}}}Rifiuto")
        etree.SubElement(refusal, f"{{{namespace}}}codice").text = code_value
        etree.SubElement(refusal, f"{{{namespace}}}motivo").text = motive
    return _response(version, envelope, status)


def version_mismatch(supported: str) -> Response:
    """The fault for an envelope of the wrong SOAP version, itself a SOAP 1.1 message.

    SOAP 1.2 part 1 appendix A: a 1.2 node answers a 1.1 message with a 1.1 VersionMismatch
    fault carrying an Upgrade header; a 1.1 node knows no other version to answer in.
    """
    ns11, ns12 = ENVELOPE_NS["1.1"], ENVELOPE_NS["1.2"]
    envelope, body = _envelope("1.1")
    if supported == "1.2":
        header = etree.Element(f"{{{ns11}}}Header")
        envelope.insert(0, header)
        upgrade = etree.SubElement(header, f"{{{ns12}}}Upgrade", nsmap={"env": ns12})
        etree.SubElement(upgrade, f"{{{ns12}}}SupportedEnvelope", qname="env:Envelope")
    fault = etree.SubElement(body, f"{{{ns11}}}Fault")
    etree.SubElement(fault, "faultcode").text = "soap:VersionMismatch"
    etree.SubElement(fault, "faultstring").text = f"Il servizio accetta solo SOAP {supported}"
    return _response("1.1", envelope, 500)


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its media type (lower case) and its parameters."""
    media, *params = header.split(";")
    pairs = (p.split("=", 1) for p in params if "=" in p)
    return media.strip().lower(), {k.strip().lower(): v.strip().strip('"') for k, v in pairs}


class SoapEndpointBase:
    """The HTTP face every simulated SOAP service shares (the built-in agencies and the
    sandbox): `GET ?wsdl` serves the contract, `POST` is a call, and a refused message is
    recorded in the ledger before it is answered."""

    desk: AgencyDesk

    async def document(self, request: Request) -> Response:
        raise NotImplementedError

    async def call(self, request: Request) -> Response:
        raise NotImplementedError

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response:
        raise NotImplementedError

    async def soap(self, request: Request) -> Response:
        if request.method == "GET":  # the usual `?wsdl` of SOAP stacks
            if "wsdl" in request.query_params:
                return await self.document(request)
            return PlainTextResponse("Method Not Allowed", status_code=405)
        return await self.call(request)

    def _refuse(self, operation: str | None, code: str, error: str) -> Response:
        self.desk.ledger.record_invalid(operation, code, error)
        return self.invalid(operation, InvalidMessageError(code, error))
