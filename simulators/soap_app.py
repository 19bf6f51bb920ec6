"""A simulated SOAP agency (INPS, INAIL, CCIAA): its WSDL, its endpoint, its control API."""

from __future__ import annotations

from functools import lru_cache

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from simulators.attachments import (
    MAX_MULTIPART_BYTES,
    content_type_params,
    received_inline,
    received_xop,
    split_multipart,
)
from simulators.contracts import SoapContract
from simulators.control import control_routes
from simulators.desk import AgencyDesk, InvalidMessageError, Submission
from simulators.faults import FaultRule
from simulators.httpio import BodyTooLargeError, read_body
from simulators.late import late_routes
from simulators.ledger import Effect
from simulators.soap import (
    ENVELOPE_NS,
    MEDIA_TYPE,
    SoapEndpointBase,
    accepted_response,
    envelope_version,
    fault_response,
    media_type,
    receipt_response,
    version_mismatch,
)
from simulators.xmlsafe import UnsafeXmlError, make_parser, parse_untrusted

__all__ = ["soap_app"]

_CRV = "urn:crocevia:envelope:v1"
#: Longest error text returned in a fault; schema errors quote the offending value.
_MAX_ERROR = 300
#: The reason of a technical fault when the rule gives none.
DEFAULT_TECHNICAL_FAULT = "Errore interno del servizio, riprovare più tardi"


class _SoapEndpoint(SoapEndpointBase):
    """Parses, checks and answers SOAP calls for one agency; built once per server."""

    def __init__(self, contract: SoapContract, desk: AgencyDesk) -> None:
        self.contract = contract
        self.desk = desk
        self.version = contract.soap_version
        self.namespace = contract.namespace
        self.parser = make_parser()
        self.schema = contract.load_schema()
        self.documents = lru_cache(maxsize=8)(contract.served_documents)

    # ----- contract -----

    async def document(self, request: Request) -> Response:
        name = request.path_params.get("name", "wsdl")
        base = f"{request.url.scheme}://{request.url.netloc}"
        content = self.documents(base).get(name if name == "wsdl" else f"{name}.xsd")
        if content is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(content, headers={"content-type": "text/xml; charset=utf-8"})

    # ----- calls -----

    async def call(self, request: Request) -> Response:
        self.desk.ledger.calls += 1
        media, params = media_type(request.headers.get("content-type", ""))
        xop_parts: dict[str, bytes] | None = None  # MTOM: the MIME parts by Content-ID
        try:
            if media == "multipart/related":
                media, document, xop_parts = _mtom(await read_body(request, MAX_MULTIPART_BYTES), params)
            else:
                # Documents may travel inline (base64); libxml2's own bound on one text node
                # (10 MB without huge_tree) still caps each at about 7.5 MB: larger ones need MTOM.
                document = await read_body(request, MAX_MULTIPART_BYTES)
        except BodyTooLargeError as exc:
            return self._refuse(None, "XML", str(exc))
        except InvalidMessageError as exc:
            return self._refuse(None, exc.code, exc.error)
        if media not in MEDIA_TYPE.values():
            self.desk.ledger.record_invalid(None, "MEDIA_TYPE", media)
            return PlainTextResponse("Unsupported Media Type", status_code=415)
        try:
            root = parse_untrusted(document, self.parser)
        except UnsafeXmlError as exc:
            return self._refuse(None, "XML", str(exc))
        version = envelope_version(root)
        if version != self.version:
            if version is None and etree.QName(root).localname != "Envelope":
                return self._refuse(None, "XML", "il documento non è una busta SOAP")
            self.desk.ledger.record_invalid(None, "VERSION", str(etree.QName(root).namespace))
            return version_mismatch(self.version)
        if media != MEDIA_TYPE[version]:
            self.desk.ledger.record_invalid(None, "MEDIA_TYPE", media)
            return PlainTextResponse("Unsupported Media Type", status_code=415)
        body = root.find(f"{{{ENVELOPE_NS[version]}}}Body")
        payload = list(body) if body is not None else []
        if len(payload) != 1:
            return self._refuse(None, "XML", "il Body deve contenere esattamente un elemento")
        element = payload[0]
        qname = etree.QName(element)
        operation = qname.localname.removesuffix("Request")
        known = qname.localname.endswith("Request") and operation in self.contract.actions
        if qname.namespace != self.namespace or not known:
            return self._refuse(None, "SCHEMA", f"elemento {qname.text} non previsto")
        action_error = self._action_error(request, params, operation)
        if action_error:
            return self._refuse(operation, "ACTION", action_error)

        def matches(name: str, value: str) -> bool:
            return any((el.text or "").strip() == value for el in element.iter(f"{{*}}{name}"))

        def lookup(name: str) -> str | None:
            found = next(element.iter(f"{{*}}{name}"), None)
            return None if found is None else (found.text or "").strip()

        def check() -> Submission:
            # Each attachment's content is checked against its declared SHA-256 first.
            attachments = received_xop(element, xop_parts) if xop_parts is not None else received_inline(element)
            if not self.schema.validate(element):
                error = self.schema.error_log.last_error
                assert error is not None  # a failed validate() logs why
                message = f"riga {error.line}: {error.message}"
                raise InvalidMessageError("SCHEMA", message[:_MAX_ERROR])
            corrects = element.find(f"{{{_CRV}}}messageHeader/{{{_CRV}}}corrects")
            return Submission(
                operation=operation,
                message_id=element.findtext(f"{{{_CRV}}}messageHeader/{{{_CRV}}}messageId", ""),
                filing_reference=element.findtext(
                    f"{{{_CRV}}}messageHeader/{{{_CRV}}}filingReference", ""
                ),
                lookup=lookup,
                corrects=None if corrects is None else {
                    etree.QName(child).localname: (child.text or "").strip() for child in corrects
                },
                attachments=attachments,
            )

        return await self.desk.process(request, operation, matches, check, self)

    def _action_error(self, request: Request, params: dict[str, str], operation: str) -> str:
        """Dispatch the way real stacks do: a SOAPAction that names another operation is refused.

        SOAP 1.1 requires the header (§6.1.1), though "" is allowed; SOAP 1.2 makes the `action`
        media-type parameter optional.
        """
        expected = self.contract.actions[operation]
        if self.version == "1.1":
            if "soapaction" not in request.headers:
                return "intestazione HTTP SOAPAction mancante"
            action = request.headers["soapaction"].strip().strip('"')
        else:
            action = params.get("action", "")
        if action and action != expected:
            return f"azione SOAP {action!r} non corrisponde a {operation} ({expected})"
        return ""

    # ----- replies (simulators.desk.Replies) -----

    def _rejection(self, code: str, reason: str) -> tuple[str, str, str, str]:
        return self.namespace, self.contract.agency, code, reason

    def technical_fault(self, operation: str, rule: FaultRule) -> Response:
        return fault_response(self.version, sender=False, text=rule.text or DEFAULT_TECHNICAL_FAULT)

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response:
        text = f"Messaggio non valido ({exc.code}): {exc.error}"
        return fault_response(
            self.version, sender=True, text=text, rejection=self._rejection(exc.code, exc.error)
        )

    def rejection(self, operation: str, code: str, reason: str) -> Response:
        return fault_response(
            self.version, sender=True, text=reason, rejection=self._rejection(code, reason)
        )

    def receipt(self, effect: Effect, first: bool) -> Response:
        return receipt_response(self.version, self.namespace, self.contract.agency, effect)

    def acknowledged(self, effect: Effect) -> Response:
        return accepted_response(effect)


def _mtom(body: bytes, params: dict[str, str]) -> tuple[str, bytes, dict[str, bytes]]:
    """An MTOM message (multipart/related, W3C XOP): the envelope's media type (the root
    part's `type`), the envelope, and the other parts by Content-ID.

    Raises:
        InvalidMessageError: "MULTIPART" when the body is not such a message.
    """
    parts = split_multipart(body, params.get("boundary", ""))
    if not parts:
        raise InvalidMessageError("MULTIPART", "nessuna parte")
    start = params.get("start", "").strip("<>")
    root = next((p for p in parts if p.headers.get("content-id", "").strip("<>") == start), parts[0])
    if content_type_params(root.headers.get("content-type", ""))[""] != "application/xop+xml":
        raise InvalidMessageError("MULTIPART", "la parte radice non è application/xop+xml")
    others = {p.headers.get("content-id", "").strip("<>"): p.body for p in parts if p is not root}
    return (root.param("content-type", "type") or "").lower(), root.body, others


def soap_app(contract: SoapContract, desk: AgencyDesk) -> Starlette:
    """The Starlette app of one simulated SOAP agency."""
    endpoint = _SoapEndpoint(contract, desk)
    desk.replies = endpoint
    return Starlette(
        routes=[
            Route("/soap", endpoint.soap, methods=["GET", "POST"]),
            Route("/wsdl", endpoint.document, methods=["GET"]),
            Route("/{name:str}.xsd", endpoint.document, methods=["GET"]),
            *late_routes(desk),
            *control_routes(desk),
        ]
    )
