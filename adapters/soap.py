"""SOAP machinery for the SOAP agencies: stored contracts, the zeep-built delivery, `classify_soap`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import requests
import structlog
import zeep
import zeep.exceptions as zx
from lxml import etree

from adapters.base import (
    REPLY_TO_HEADER,
    ErrorContext,
    FaultCodes,
    check_fault_overrides,
    classify_httpx_error,
    classify_status,
)
from domain.errors import (
    AdapterMisconfigured,
    AgencyProtocolError,
    AgencyRejected,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
    OutcomeUnknown,
)
from adapters.attachments import BlobPart, include, inline_base64_body, mtom_body
from adapters.exchange import ContractAdapter, OutgoingRequest
from adapters.replies import Reply
from adapters.wsdl import ENVELOPE_NS, SoapOperation, WsdlContract, parse_reply
from domain.messages import OutgoingMessage, Receipt
from schemas.xml_names import local_name, namespace_of
from service.attachments import BlobStore

__all__ = [
    "SCHEMAS_DIR",
    "SoapAgencyAdapter",
    "classify_soap",
]

log = structlog.get_logger(__name__)

#: Root of the stored contracts (`schemas/` at the top of the project).
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Loading a declared contract lives in `adapters.wsdl` (shared with the contracts check).
_ENV_NS = ENVELOPE_NS


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _local(name: object) -> str:
    """`soap:Client`, `{ns}Client` or a QName → `Client`."""
    if name is None:
        return ""
    localname = getattr(name, "localname", None)
    if localname is not None:
        return str(localname)
    text = str(name).strip()
    return text.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _local_tag(element: Any) -> str:
    tag = element.tag
    return local_name(tag) if isinstance(tag, str) else ""


def _detail_code(detail: Any, fields: tuple[str, ...]) -> str:
    """The agency's own code inside a fault's detail: the first element named in `fields`
    (local names, any depth: AgID `customFaultCode`, pagoPA `faultCode`), or ""."""
    if not fields or not isinstance(detail, etree._Element):
        return ""
    for node in detail.iter():
        if _local_tag(node) in fields and (node.text or "").strip():
            return (node.text or "").strip()
    return ""


def _read_rejection(detail: Any) -> tuple[str, str]:
    """`(codice, motivo)` from the `<Rifiuto>` in a fault detail, or empty strings."""
    if not isinstance(detail, etree._Element):
        return "", ""
    for node in detail.iter():
        if _local_tag(node) == "Rifiuto":
            found = {_local_tag(child): (child.text or "").strip() for child in node}
            return found.get("codice", ""), found.get("motivo", "")
    return "", ""


def _read_fault(content: bytes) -> zx.Fault | None:
    """The SOAP 1.1 or 1.2 fault in a reply body, as zeep would raise it, or None."""
    root = parse_reply(content)
    if root is None:
        return None
    namespace = namespace_of(root.tag) if isinstance(root.tag, str) else None
    version = {v: k for k, v in _ENV_NS.items()}.get(namespace) if namespace else None
    if version is None:
        return None
    env = _ENV_NS[version]
    fault = root.find(f"{{{env}}}Body/{{{env}}}Fault")
    if fault is None:
        return None
    if version == "1.1":
        # Fault children are unqualified in SOAP 1.1 (section 4.4).
        children = {_local_tag(child): child for child in fault}
        text = {k: (v.text or "").strip() for k, v in children.items()}
        return zx.Fault(
            message=text.get("faultstring"), code=text.get("faultcode"),
            actor=text.get("faultactor"), detail=children.get("detail"),
        )
    subcodes = []
    subcode = fault.find(f"{{{env}}}Code/{{{env}}}Subcode")
    while subcode is not None:
        subcodes.append(_local(subcode.findtext(f"{{{env}}}Value")))
        subcode = subcode.find(f"{{{env}}}Subcode")
    return zx.Fault(
        message=fault.findtext(f"{{{env}}}Reason/{{{env}}}Text"),
        code=fault.findtext(f"{{{env}}}Code/{{{env}}}Value"),
        detail=fault.find(f"{{{env}}}Detail"),
        subcodes=subcodes,
    )


def _from_fault(
    fault: zx.Fault, ctx: ErrorContext, overrides: FaultCodes
) -> DeliveryError:
    fault_code = _local(fault.code)
    kind = fault_code.split(".", 1)[0]  # SOAP 1.1 dotted codes: `Client.Authentication`
    subcodes = [_local(s) for s in (fault.subcodes or [])]
    codice, motivo = _read_rejection(fault.detail)
    custom = _detail_code(fault.detail, overrides.fields)
    text = motivo or (fault.message or "").strip() or "SOAP fault without a reason"
    # The most specific code wins: the agency's own (our Rifiuto, then a declared detail
    # field), then the innermost SOAP 1.2 subcode.
    code = codice or custom or (subcodes[-1] if subcodes else "") or fault_code or "SOAP_FAULT"
    for key in (codice, custom, fault_code, *subcodes):
        if key and key in overrides:
            return ctx.build(overrides[key], text, code=code)
    if "SCHEMA" in {codice.upper(), kind.upper(), *(s.upper() for s in subcodes)}:
        return ctx.build(MessageRejectedAsInvalid, text, code=code)
    if kind in ("Client", "Sender"):
        return ctx.build(AgencyRejected, text, code=code)
    if kind in ("Server", "Receiver"):
        # A technical failure the agency reported: it answered, so it is not an unknown
        # outcome, and like a 503 it should count against the agency's circuit breaker.
        return ctx.build(AgencyUnreachable, text, code=code)
    if kind in ("VersionMismatch", "MustUnderstand", "DataEncodingUnknown"):
        return ctx.build(AdapterMisconfigured, text, code=code)
    return ctx.build(AgencyProtocolError, f"SOAP fault with unknown code {fault_code!r}: {text}")


def _from_status(status: int, ctx: ErrorContext) -> DeliveryError:
    """A non-200 reply that carried no SOAP fault."""
    code = f"HTTP{status}"
    if status >= 500 or status == 408:
        return ctx.build(AgencyUnreachable, f"HTTP {status} without a SOAP fault", code=code)
    if status in (400, 413, 414):
        return ctx.build(MessageRejectedAsInvalid, f"HTTP {status} without a SOAP fault", code=code)
    if 400 <= status < 500:
        return ctx.build(AdapterMisconfigured, f"HTTP {status} without a SOAP fault", code=code)
    return ctx.build(AgencyProtocolError, f"unexpected HTTP {status}", code=code)


def _from_transport_error(exc: zx.TransportError, ctx: ErrorContext) -> DeliveryError:
    status = exc.status_code or 0
    if status and status != 200:
        error = classify_status(status, {}, ctx) or _from_status(status, ctx)
    else:
        error = ctx.build(AgencyProtocolError, "the reply is not a SOAP envelope")
    error.http_status = status or None
    return error


def _from_requests_connection_error(
    exc: requests.exceptions.ConnectionError, ctx: ErrorContext
) -> DeliveryError:
    # requests folds "never connected" and "connection dropped after sending" into one class;
    # urllib3's NewConnectionError (DNS, refused) tells them apart.
    from urllib3.exceptions import NewConnectionError

    reason = exc.args[0] if exc.args else None
    for candidate in (reason, getattr(reason, "reason", None)):
        if isinstance(candidate, NewConnectionError):
            return ctx.build(AgencyUnreachable, "connection failed (requests)")
    return ctx.build(OutcomeUnknown, "connection dropped (requests)")


_Handler = Callable[[Any, ErrorContext, FaultCodes], DeliveryError]


def _fixed(cls: type[DeliveryError], text: str) -> _Handler:
    def handler(exc: Any, ctx: ErrorContext, _overrides: Any) -> DeliveryError:
        return ctx.build(cls, f"{text}: {exc}")

    return handler


#: Exceptions in lookup order (subclasses before their bases), httpx excepted: it has its own
#: table in `adapters.base`. requests appears because zeep lets its exceptions through.
_SOAP_TABLE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], _Handler], ...] = (
    (zx.Fault, _from_fault),
    (zx.ValidationError, _fixed(MessageRejectedAsInvalid, "the message fails the contract")),
    (etree.DocumentInvalid, _fixed(MessageRejectedAsInvalid, "the message fails the agency XSD")),
    (zx.TransportError, lambda exc, ctx, _o: _from_transport_error(exc, ctx)),
    ((zx.DTDForbidden, zx.EntitiesForbidden, zx.ExternalReferenceForbidden),
     _fixed(AgencyProtocolError, "the reply uses forbidden XML constructs")),
    ((zx.XMLSyntaxError, etree.XMLSyntaxError),
     _fixed(AgencyProtocolError, "the reply is not well-formed XML")),
    ((zx.XMLParseError, zx.UnexpectedElementError),
     _fixed(AgencyProtocolError, "the reply does not match the contract")),
    ((zx.LookupError, zx.NamespaceError, zx.IncompleteOperation),
     _fixed(AdapterMisconfigured, "the contract cannot serve this operation")),
    (requests.exceptions.SSLError, _fixed(AdapterMisconfigured, "TLS failure")),
    (requests.exceptions.ConnectTimeout, _fixed(AgencyUnreachable, "connect timeout")),
    (requests.exceptions.ReadTimeout, _fixed(OutcomeUnknown, "read timeout after sending")),
    (requests.exceptions.Timeout, _fixed(OutcomeUnknown, "timeout")),
    (requests.exceptions.ConnectionError,
     lambda exc, ctx, _o: _from_requests_connection_error(exc, ctx)),
    (requests.exceptions.ChunkedEncodingError, _fixed(OutcomeUnknown, "truncated reply")),
    (requests.exceptions.ContentDecodingError, _fixed(AgencyProtocolError, "undecodable reply")),
    ((requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
      requests.exceptions.InvalidSchema, requests.exceptions.TooManyRedirects),
     _fixed(AdapterMisconfigured, "bad endpoint")),
    (requests.exceptions.RequestException, _fixed(OutcomeUnknown, "request failed")),
    (zx.Error, _fixed(AgencyProtocolError, "unexpected zeep error")),
)


def _is_xml(response: Reply | httpx.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type.endswith("/xml") or media_type.endswith("+xml")


def _classify_response(
    response: Reply | httpx.Response, ctx: ErrorContext, overrides: FaultCodes
) -> DeliveryError:
    status = response.status_code
    error = classify_status(status, response.headers, ctx)
    if error is not None:
        return error
    fault = _read_fault(response.content) if response.content else None
    if fault is not None:
        return _from_fault(fault, ctx, overrides)
    if status == 200:
        what = "an XML body that is not a SOAP reply" if _is_xml(response) else "a non-XML body"
        return ctx.build(AgencyProtocolError, f"HTTP 200 with {what}", code="PROTOCOL")
    return _from_status(status, ctx)


def _classify(
    exc_or_response: BaseException | Reply | httpx.Response,
    ctx: ErrorContext,
    overrides: FaultCodes,
) -> DeliveryError:
    if isinstance(exc_or_response, (Reply, httpx.Response)):
        classified = _classify_response(exc_or_response, ctx, overrides)
        classified.http_status = exc_or_response.status_code
        return classified
    exc = exc_or_response
    if isinstance(exc, DeliveryError):
        return exc
    error = classify_httpx_error(exc, ctx) if isinstance(exc, Exception) else None
    if error is None:
        for types, handler in _SOAP_TABLE:
            if isinstance(exc, types):
                error = handler(exc, ctx, overrides)
                break
        else:
            log.error("delivery_unclassified_error", agency=ctx.agency,
                      operation=ctx.operation, error_class=type(exc).__name__, exc_info=exc)
            error = ctx.build(AgencyProtocolError, f"unclassified {type(exc).__name__}",
                              code="UNCLASSIFIED")
    error.__cause__ = exc  # callers also write `raise ... from exc`; this keeps it if they don't
    return error


def classify_soap(
    exc_or_response: BaseException | httpx.Response,
    *,
    agency: str = "",
    operation: str = "",
    delivery_id: str = "",
    fault_overrides: Mapping[str, str] | None = None,
    fault_code_fields: tuple[str, ...] = (),
) -> DeliveryError:
    """Translate a SOAP exchange's failure into the delivery error tree.

    Args:
        exc_or_response: an httpx, zeep, lxml or requests exception, or an httpx reply that
            is not a usable receipt (status-only failures, SOAP 1.1/1.2 fault bodies).
        agency, operation, delivery_id: copied into the error.
        fault_overrides: `{fault, Rifiuto or detail code: kind}`, kinds as in `adapters.base`.
        fault_code_fields: local names of the detail elements carrying the agency's own code
            (AgID `customFaultCode`); their code is looked up in `fault_overrides` first.

    Returns:
        The error to raise (`raise classify_soap(exc) from exc`). Its `__cause__` is set.
    """
    ctx = ErrorContext(agency, operation, delivery_id)
    return _classify(exc_or_response, ctx,
                     check_fault_overrides(fault_overrides or {}, fault_code_fields))


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class SoapAgencyAdapter(ContractAdapter[WsdlContract, SoapOperation]):
    """Delivers messages to one SOAP agency through one declared contract version.

    Args:
        contract: the loaded contract (`adapters.wsdl.load_wsdl_contract`): WSDL, binding,
            operations, pre-send schema and receipt mapping, from `config/agencies/`.
        endpoint: the service address (overrides the WSDL's).
        http: the hub's client; its timeouts apply, unset ones default to `DEFAULT_TIMEOUT`.
        fault_overrides: `{code: kind}` for this agency's fault codes; they win over the
            contract's own `fault_overrides`.
        timeout: this contract's timeouts, or None for the client's.
        signer: a zeep egress plugin applied to each envelope after validation (the agency's
            WS-Security profile, `security.wssecurity.WsSecurityPlugin`), or None.
        reply_to: the hub's callback address for this agency's late outcomes (`X-ReplyTo`,
            AgID NONBLOCK_PUSH), or None.
    """

    def __init__(
        self,
        contract: WsdlContract,
        *,
        endpoint: str,
        http: httpx.AsyncClient,
        fault_overrides: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        signer: zeep.Plugin | None = None,
        reply_to: str | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        super().__init__(contract, endpoint=endpoint, http=http, fault_overrides=fault_overrides,
                         timeout=timeout, signer=signer, reply_to=reply_to, blobs=blobs)
        self._url = httpx.URL(endpoint)  # parsed once, not on every request

    def __repr__(self) -> str:
        return (f"SoapAgencyAdapter(contract={self.contract.spec.ref!r}, "
                f"endpoint={self._endpoint!r})")

    def _envelope(self, name: str, content: Mapping[str, Any], ctx: ErrorContext,
                  soap_headers: Mapping[str, Any] | None = None) -> bytes:
        """The signed envelope of one call of `name`, its body checked against the contract."""
        # zeep (strict) builds the envelope, the contract's schema validates its body.
        envelope = self.contract.build(name, content, ctx, soap_headers, address=self._endpoint)
        if self._signer is not None:
            # Signed last, over exactly the bytes that leave (zeep's egress plugin contract).
            envelope, _ = self._signer.egress(envelope, {}, name, {})
        return etree.tostring(envelope, encoding="utf-8", xml_declaration=True)

    def _serialize(self, message: OutgoingMessage, ctx: ErrorContext) -> bytes:
        """The envelope of one delivery (build and sign: the benchmark times this step)."""
        return self._envelope(message.operation, message.content, ctx)

    def _soap_request(self, operation: SoapOperation, payload: bytes, message_id: str | None,
                      extra_headers: Mapping[str, str]) -> OutgoingRequest:
        """A POST of `payload` to the endpoint with the operation's headers (SOAPAction,
        Content-Type), the message id where the contract wants it, then `extra_headers`."""
        headers = dict(operation.headers)
        if message_id is not None and self.contract.spec.message_id_header:
            headers[self.contract.spec.message_id_header] = message_id  # contracts without our envelope
        headers.update(extra_headers)
        return OutgoingRequest("POST", self._url, payload, headers, self._endpoint)

    def _encode(self, message: OutgoingMessage, operation: SoapOperation,
                ctx: ErrorContext) -> OutgoingRequest:
        extra = {REPLY_TO_HEADER: self._reply_to} if self._reply_to else {}
        parts = self._attachment_parts(message, ctx)
        if parts:
            return self._with_attachments(message, operation, parts, ctx, extra)
        return self._soap_request(operation, self._serialize(message, ctx), message.message_id, extra)

    def _with_attachments(self, message: OutgoingMessage, operation: SoapOperation, parts: list[BlobPart],
                          ctx: ErrorContext, extra: dict[str, str]) -> OutgoingRequest:
        """The envelope (validated without the content), each attachment's content element
        added as the contract's form says: an xop:Include of a MIME part (MTOM), or its base64
        streamed inline; signed last, over the envelope as it leaves."""
        spec = self.contract.spec.attachments
        assert spec is not None and self._blobs is not None  # `_attachment_parts` found some
        if spec.form == "base64" and self._signer is not None:
            # A signature over the envelope would cover the markers, not the streamed content.
            raise ctx.build(AdapterMisconfigured, "inline base64 attachments cannot be signed while streamed: "
                                                  "declare form = \"mtom\" for a signing profile",
                            code="ATTACHMENT_FORM")
        envelope = self.contract.build(message.operation, message.content, ctx, None, address=self._endpoint)
        listed = [el for el in envelope.iter() if isinstance(el.tag, str) and local_name(el.tag) == spec.element]
        if len(listed) != len(parts):
            raise ctx.build(AdapterMisconfigured, f"the envelope holds {len(listed)} {spec.element} elements "
                                                  f"for {len(parts)} attachments", code="ATTACHMENT_ELEMENT")
        markers: list[tuple[bytes, BlobPart]] = []
        for element, part in zip(listed, parts):
            namespace = namespace_of(element.tag) if isinstance(element.tag, str) else None
            content = etree.SubElement(element, f"{{{namespace}}}{spec.content}" if namespace else spec.content)
            if spec.form == "mtom":
                include(content, part)
            else:
                marker = f"crocevia-attachment-{len(markers)}-{part.sha256}"
                content.text = marker
                markers.append((marker.encode(), part))
        if self._signer is not None:
            envelope, _ = self._signer.egress(envelope, {}, message.operation, {})
        payload = etree.tostring(envelope, encoding="utf-8", xml_declaration=True)
        request = self._soap_request(operation, b"", message.message_id, extra)
        if spec.form == "mtom":
            soap_type = request.headers.get("Content-Type", "text/xml").split(";", 1)[0].strip()
            content_type, body = mtom_body(payload, parts, self._blobs, soap_type)
            request.headers["Content-Type"] = content_type
        else:
            body = inline_base64_body(payload, markers, self._blobs)
        return dataclasses.replace(request, stream=body)

    def _failure(self, exc_or_response: BaseException | Reply,
                 ctx: ErrorContext) -> DeliveryError:
        return _classify(exc_or_response, ctx, self._overrides)

    def _log_reply(self, operation: str, response: Reply, started: float) -> None:
        log.debug("soap_reply_received", agency=self.agency, operation=operation,
                  status=response.status_code,
                  duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def _accept(self, operation: SoapOperation) -> str:
        return operation.headers.get("Accept", "text/xml")

    def _raise_for_status(self, response: Reply, ctx: ErrorContext) -> None:
        """Raise the statuses whose meaning does not depend on the body (`classify_status`)."""
        status_error = classify_status(response.status_code, response.headers, ctx)
        if status_error is not None:
            raise status_error

    def _read_receipt(self, response: Reply, message: OutgoingMessage,
                      ctx: ErrorContext) -> Receipt:
        """The receipt, read with the contract's receipt mapping from the reply's body."""
        payload = self.contract.payload(response.content)
        if payload is None:
            raise ctx.build(AgencyProtocolError, "the reply has no body element", code="PROTOCOL")
        return self.contract.receipt.receipt(payload, response.headers, message.message_id, ctx,
                                             self._overrides)

    def _receipt_from(self, response: Reply, operation: SoapOperation,
                      message: OutgoingMessage, ctx: ErrorContext) -> Receipt:
        try:
            # zeep raises the agency's fault and checks the reply against the contract; the
            # receipt itself is read with the declared mapping, from the same parsed tree.
            payload = self.contract.check_reply(operation, response)
        except (zx.Error, etree.LxmlError) as exc:
            raise self._failure(exc, ctx) from exc
        if payload is None:
            raise ctx.build(AgencyProtocolError, "the reply has no body element", code="PROTOCOL")
        return self.contract.receipt.receipt(payload, response.headers, message.message_id, ctx,
                                             self._overrides)

    def _receipt(self, response: Reply, operation: SoapOperation,
                 message: OutgoingMessage, ctx: ErrorContext) -> Receipt:
        self._raise_for_status(response, ctx)
        return self._receipt_from(response, operation, message, ctx)
