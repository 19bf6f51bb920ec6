"""The sandbox: any configured SOAP contract, played from its own WSDL and schema.

A portal can integrate before an agency's test environment exists: the sandbox validates each
request against the contract's schema, answers a reply generated from the output element's
schema with the receipt-mapped fields filled (a protocol number of its own, the time, the
message id), recognises a repeated message (`[sandbox] dedupe`), keeps a ledger and applies
the simulators' fault rules (`/_sim/faults`, `/_sim/ledger`, `/_sim/reset`). It plays the AgID
non-blocking SOAP patterns too: PULL (an acknowledgment with `X-Correlation-ID`, then the
status and result operations) and PUSH (an acknowledgment, then a call to the `X-ReplyTo`
address with the callback WSDL's operation). REST contracts: `simulators.sandbox_rest`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from lxml import etree
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from adapters.contracts import ContractSpec
from adapters.wsdl import (
    SoapOperation,
    WsdlContract,
    callback_contract,
    http_headers,
    load_wsdl_contract,
    types_schema,
)
from simulators.control import control_routes
from simulators.desk import AgencyDesk, InvalidMessageError, Submission
from simulators.faults import FaultRule
from simulators.httpio import BodyTooLargeError, read_body
from simulators.instances import InstanceBuilder, InstanceError, path_steps, value_for
from simulators.late import late_routes
from simulators.ledger import Effect
from simulators.numbering import Counters, Lookup
from simulators.soap import (
    ENVELOPE_NS,
    MEDIA_TYPE,
    SoapEndpointBase,
    accepted_response,
    envelope_version,
    fault_response,
    media_type,
    version_mismatch,
)
from simulators.xmlsafe import UnsafeXmlError, make_parser, parse_untrusted

__all__ = ["SoapSandbox", "dedupe_key", "sandbox_numbering", "soap_sandbox_app"]

log = structlog.get_logger("crocevia.sandbox")

_CRV = "urn:crocevia:envelope:v1"
#: Longest error text returned in a fault.
_MAX_ERROR = 300
#: Tries of one callback (PUSH), and the first pause between them (doubling).
CALLBACK_TRIES = 8
CALLBACK_BACKOFF_S = 0.1
#: WS-Addressing 1.0 and the 2004/08 submission (what WSDLs still declare).
_WSA_NS = ("http://www.w3.org/2005/08/addressing", "http://schemas.xmlsoap.org/ws/2004/08/addressing")
_XSD_NAME = re.compile(r"[A-Za-z0-9_.\-]+\.xsd")


def sandbox_numbering(prefix: str) -> Callable[[Counters, Lookup], tuple[str, dict[str, str]]]:
    """Protocol numbers `<PREFIX>-<year>-<seq, 7 digits>`, never reused (counters survive resets)."""

    def number(counters: Counters, lookup: Lookup) -> tuple[str, dict[str, str]]:
        year = datetime.now(UTC).year
        return f"{prefix}-{year}-{counters.next('protocollo'):07d}", {}

    return number


def dedupe_key(spec: ContractSpec, element: etree._Element, headers: Any) -> str:
    """What makes two requests the same message (see `SandboxSpec.dedupe`)."""
    rule = spec.sandbox.dedupe
    if not rule:
        if spec.message_id_header:
            rule = f"header:{spec.message_id_header}"
        elif spec.envelope:
            rule = "field:messageId"
        else:
            rule = "digest"
    kind, _, name = rule.partition(":")
    if kind == "header" and headers.get(name):
        return str(headers.get(name))
    if kind == "field":
        found = next(element.iter(f"{{*}}{name}", name), None)
        if found is not None and (found.text or "").strip():
            return (found.text or "").strip()
    canonical = etree.tostring(element, method="c14n2", with_comments=False)
    return hashlib.sha256(canonical).hexdigest()


def _sequence(protocol: str) -> int:
    match = re.search(r"(\d+)$", protocol)
    return int(match.group(1)) if match else 0


class _Filler:
    """Sets reply fields, by the receipt mapping's paths, to values valid for their types."""

    def __init__(self, builder: InstanceBuilder, payload: etree._Element,
                 namespaces: dict[str, str]) -> None:
        self.builder, self.payload, self.namespaces = builder, payload, namespaces

    def set(self, path: str | None, *preferred: str) -> str | None:
        """Set the nodes at `path` to the first of `preferred` their type accepts."""
        if not path:
            return None
        try:
            found = etree.XPath(path, namespaces=self.namespaces)(self.payload)
        except etree.XPathError:
            return None
        chosen = None
        for node in found if isinstance(found, list) else []:
            if isinstance(node, etree._Element):
                key: tuple[etree._Element, str | None] = (node, None)
                xsd_type = self.builder.types.get(key)
                if xsd_type is None:
                    continue
                chosen = value_for(xsd_type, seed=self.builder.seed, preferred=[p for p in preferred if p])
                node.text = chosen
            elif getattr(node, "is_attribute", False):
                parent = node.getparent()
                xsd_type = self.builder.types.get((parent, node.attrname))
                if xsd_type is None:
                    continue
                chosen = value_for(xsd_type, seed=self.builder.seed, preferred=[p for p in preferred if p])
                parent.set(node.attrname, chosen)
        return chosen


class SoapSandbox(SoapEndpointBase):
    """Answers one SOAP contract's calls; also the desk's replies (`simulators.desk.Replies`).

    Args:
        spec: the contract declaration (its sandbox section too).
        desk: ledger, fault rules and counters.
        http: the client that calls back PUSH consumers.
    """

    def __init__(self, spec: ContractSpec, desk: AgencyDesk, http: httpx.AsyncClient) -> None:
        self.spec = spec
        self.desk = desk
        self.http = http
        self.contract: WsdlContract = load_wsdl_contract(spec)
        self.version = self.contract.soap_version
        self.schema = types_schema(spec.document)
        self.parser = make_parser()
        self.by_element = {op.input_element: op for op in self.contract.operations.values()}
        self.namespaces = dict(spec.receipt.namespaces)
        receipt = spec.receipt
        self.receipt_paths = [v.path for v in (receipt.protocol_number, receipt.protocolled_at,
                                               receipt.message_id, receipt.outcome,
                                               receipt.status.value if receipt.status else None)
                              if v is not None and v.path]
        self.receipt_paths += [v.path for _, v in receipt.references if v.path]
        self.nonblocking = spec.nonblocking
        self._reply_to: dict[str, str] = {}
        self._polls: dict[str, int] = {}

    # ----- contract documents -----

    async def document(self, request: Request) -> Response:
        """The WSDL, its address pointing here; the XSDs beside it by name."""
        name = request.path_params.get("name")
        base = f"{request.url.scheme}://{request.url.netloc}"
        if name is None:
            tree = etree.parse(str(self.spec.document), self.parser)
            for address in tree.iter("{*}address"):
                if address.get("location") is not None:
                    address.set("location", f"{base}/soap")
            content = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
        else:
            path = self.spec.document.parent / f"{name}.xsd"
            if not _XSD_NAME.fullmatch(path.name) or not path.is_file():
                return PlainTextResponse("Not Found", status_code=404)
            content = path.read_bytes()
        return Response(content, headers={"content-type": "text/xml; charset=utf-8"})

    # ----- calls -----

    def _action_error(self, request: Request, media_params: dict[str, str],
                      operation: SoapOperation) -> str:
        if self.version == "1.1":
            if "soapaction" not in request.headers:
                return "SOAPAction header missing"
            action = request.headers["soapaction"].strip().strip('"')
        else:
            action = media_params.get("action", "")
        if action and operation.action and action != operation.action:
            return f"SOAP action {action!r} is not {operation.name}'s ({operation.action})"
        return ""

    async def call(self, request: Request) -> Response:
        self.desk.ledger.calls += 1
        media, media_params = media_type(request.headers.get("content-type", ""))
        if media not in MEDIA_TYPE.values():
            self.desk.ledger.record_invalid(None, "MEDIA_TYPE", media)
            return PlainTextResponse("Unsupported Media Type", status_code=415)
        try:
            root = parse_untrusted(await read_body(request), self.parser)
        except (BodyTooLargeError, UnsafeXmlError) as exc:
            return self._refuse(None, "XML", str(exc))
        version = envelope_version(root)
        if version != self.version:
            self.desk.ledger.record_invalid(None, "VERSION", str(etree.QName(root).namespace))
            return version_mismatch(self.version)
        if media != MEDIA_TYPE[version]:
            self.desk.ledger.record_invalid(None, "MEDIA_TYPE", media)
            return PlainTextResponse("Unsupported Media Type", status_code=415)
        body = root.find(f"{{{ENVELOPE_NS[version]}}}Body")
        payload = list(body) if body is not None else []
        if len(payload) != 1:
            return self._refuse(None, "XML", "the Body must hold exactly one element")
        element = payload[0]
        tag = str(element.tag)  # a comment's or PI's tag is its factory function: no operation
        operation = self.by_element.get(tag)
        if operation is None:
            return self._refuse(None, "SCHEMA", f"unexpected element {tag}")
        action_error = self._action_error(request, media_params, operation)
        if action_error:
            return self._refuse(operation.name, "ACTION", action_error)
        header = root.find(f"{{{ENVELOPE_NS[version]}}}Header")
        addressing_error = self._addressing_error(request, header)
        if addressing_error:
            return self._refuse(operation.name, "ADDRESSING", addressing_error)
        nb = self.nonblocking
        if nb is not None and operation.name in (nb.status_operation, nb.result_operation):
            return self._late_query(operation, header)
        return await self._submit(request, operation, element, header)

    def _addressing_error(self, request: Request, header: etree._Element | None) -> str:
        """Record the WS-Addressing `To` a call carries; a `To` naming another address than the
        one called is refused, as a real endpoint's address filter does (WCF, Metro)."""
        found = None if header is None else next(
            (el for ns in _WSA_NS for el in header.iter(f"{{{ns}}}To")), None)
        if found is None:
            return ""
        to = (found.text or "").strip()
        self.desk.ledger.record_addressed(to)
        called = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
        if to != called:
            return f"wsa:To {to[:200]!r} is not this endpoint ({called})"
        return ""

    def _header_value(self, header: etree._Element | None, name: str) -> str:
        if header is None:
            return ""
        found = next(header.iter(f"{{*}}{name}", name), None)
        return (found.text or "").strip() if found is not None else ""

    async def _submit(self, request: Request, operation: SoapOperation, element: etree._Element,
                      header: etree._Element | None) -> Response:
        def matches(name: str, value: str) -> bool:
            return any((el.text or "").strip() == value for el in element.iter(f"{{*}}{name}", name))

        def lookup(name: str) -> str | None:
            found = next(element.iter(f"{{*}}{name}", name), None)
            return None if found is None else (found.text or "").strip()

        def check() -> Submission:
            problem = self.contract.validator.error(element)
            if problem is not None:
                raise InvalidMessageError("SCHEMA", problem[:_MAX_ERROR])
            key = dedupe_key(self.spec, element, request.headers)
            if self.spec.pattern == "push" and self.nonblocking is not None:
                reply_to = self._header_value(header, self.nonblocking.reply_to_header)
                if not reply_to:
                    raise InvalidMessageError("REPLY_TO", f"SOAP header "
                                              f"{self.nonblocking.reply_to_header} missing (PUSH)")
                self._reply_to.setdefault(key, reply_to)
            reference = element.findtext(f"{{{_CRV}}}messageHeader/{{{_CRV}}}filingReference")
            return Submission(operation=operation.name, message_id=key,
                              filing_reference=reference or "", lookup=lookup)

        return await self.desk.process(request, operation.name, matches, check, self)

    # ----- replies (simulators.desk.Replies) -----

    def _envelope(self, payload: etree._Element | None, headers: list[etree._Element] | None = None,
                  status: int = 200, background: BackgroundTask | None = None) -> Response:
        ns = ENVELOPE_NS[self.version]
        envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={"env": ns})
        if headers:
            etree.SubElement(envelope, f"{{{ns}}}Header").extend(headers)
        body = etree.SubElement(envelope, f"{{{ns}}}Body")
        if payload is not None:
            body.append(payload)
        content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        return Response(content, status_code=status, background=background,
                        headers={"content-type": f"{MEDIA_TYPE[self.version]}; charset=utf-8"})

    def _detail(self, operation: str | None, code: str, reason: str) -> tuple[str, str, str, str] | None:
        # Our own contracts carry the Rifiuto detail the hub reads; a third-party WSDL gets a
        # plain fault (its declared fault element has no agreed place for a code).
        if self.spec.envelope:
            return self.contract.binding.name.namespace, "agency", code, reason
        return None

    def technical_fault(self, operation: str, rule: FaultRule) -> Response:
        return fault_response(self.version, sender=False,
                              text=rule.text or "Internal error of the sandboxed service")

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response:
        text = f"Invalid message ({exc.code}): {exc.error}"
        return fault_response(self.version, sender=True, text=text,
                              rejection=self._detail(operation, exc.code, exc.error))

    def rejection(self, operation: str, code: str, reason: str) -> Response:
        return fault_response(self.version, sender=True, text=reason,
                              rejection=self._detail(operation, code, reason))

    def acknowledged(self, effect: Effect) -> Response:
        return accepted_response(effect)

    def _reply(self, element_name: str | None, seq: int, paths: list[str]) -> tuple[
            etree._Element, InstanceBuilder]:
        if element_name is None:
            raise InstanceError("the operation has no output element")
        declaration = self.schema.maps.elements.get(element_name)
        if declaration is None:
            raise InstanceError(f"{element_name} is not declared in the WSDL's types")
        builder = InstanceBuilder([s for p in paths if (s := path_steps(p))], seed=seq)
        return builder.build(declaration), builder

    def _header_parts(self, names: tuple[str, ...], correlation_id: str,
                      schema: Any = None) -> list[etree._Element]:
        parts = []
        for name in names:
            declaration = (schema or self.schema).maps.elements.get(name)
            if declaration is None:
                continue
            node = InstanceBuilder().build(declaration)
            if etree.QName(name).localname == (self.nonblocking.correlation_header
                                               if self.nonblocking else "X-Correlation-ID"):
                node.text = correlation_id
            parts.append(node)
        return parts

    def _fill_receipt(self, payload: etree._Element, builder: InstanceBuilder,
                      effect: Effect) -> None:
        receipt = self.spec.receipt
        filler = _Filler(builder, payload, self.namespaces)
        chosen = filler.set(receipt.protocol_number.path, effect.protocol_number,
                            str(_sequence(effect.protocol_number)))
        if chosen and chosen != effect.protocol_number:
            effect.protocol_number = chosen  # the ledger says what the agency answered
        filler.set(receipt.protocolled_at.path if receipt.protocolled_at else None,
                   effect.protocolled_at)
        filler.set(receipt.message_id.path if receipt.message_id else None, effect.message_id)
        if receipt.status is not None:
            filler.set(receipt.status.value.path, receipt.status.ok[0])
        for path, value in self.spec.sandbox.values:
            filler.set(path, value)

    def _check_reply(self, payload: etree._Element) -> str | None:
        # xmlschema validates lxml elements; elementpath's ElementProtocol and the lxml stubs
        # disagree on the type of `tag`, so the call does not type-check as it runs.
        for error in self.schema.iter_errors(payload):  # type: ignore[arg-type]
            return error.reason or str(error)
        return None

    def _generated(self, build: Callable[[], tuple[etree._Element, list[etree._Element]]],
                   operation: str, background: BackgroundTask | None = None) -> Response:
        try:
            payload, headers = build()
        except InstanceError as exc:
            log.error("sandbox_reply_failed", agency=self.spec.agency, operation=operation, error=str(exc))
            return fault_response(self.version, sender=False, text=f"sandbox: {exc}")
        problem = self._check_reply(payload)
        if problem is not None:
            log.error("sandbox_reply_invalid", agency=self.spec.agency, operation=operation, error=problem)
            return fault_response(self.version, sender=False, text=f"sandbox reply invalid: {problem}")
        return self._envelope(payload, headers, background=background)

    def receipt(self, effect: Effect, first: bool) -> Response:
        operation = self.contract.operations[effect.operation]
        seq = _sequence(effect.protocol_number)
        if self.spec.pattern in ("pull", "push") and self.nonblocking is not None:
            return self._acknowledge(operation, effect, seq, first)

        def build() -> tuple[etree._Element, list[etree._Element]]:
            payload, builder = self._reply(operation.output_element, seq, self.receipt_paths)
            self._fill_receipt(payload, builder, effect)
            return payload, self._header_parts(operation.output_headers, effect.message_id)

        return self._generated(build, effect.operation)

    # ----- AgID non-blocking SOAP -----

    def _acknowledge(self, operation: SoapOperation, effect: Effect, seq: int, first: bool) -> Response:
        nb = self.nonblocking
        assert nb is not None
        if effect.correlation_id is None:
            effect.correlation_id = uuid.uuid4().hex
            effect.mode = self.spec.pattern
            effect.status = "acknowledged"
            effect.reply_to = self._reply_to.pop(effect.message_id, None)
            self.desk.late[effect.correlation_id] = effect
            self._polls[effect.correlation_id] = 0
        cid = effect.correlation_id
        paths = [nb.status_path] if nb.status_path else []

        def build() -> tuple[etree._Element, list[etree._Element]]:
            payload, builder = self._reply(operation.output_element, seq, paths)
            if nb.status_path:
                _Filler(builder, payload, self.namespaces).set(nb.status_path, "pending")
            return payload, self._header_parts(operation.output_headers, cid)

        background = None
        if self.spec.pattern == "push" and first and effect.reply_to:
            background = BackgroundTask(self._call_back, effect)
        return self._generated(build, operation.name, background)

    def _late_query(self, operation: SoapOperation, header: etree._Element | None) -> Response:
        nb = self.nonblocking
        assert nb is not None
        cid = self._header_value(header, nb.correlation_header)
        effect = self.desk.late.get(cid)
        self.desk.ledger.polls += 1
        if effect is None or effect.mode != "pull":
            return fault_response(self.version, sender=True, text=f"unknown {nb.correlation_header} {cid!r}")
        polls = self._polls[cid] = self._polls.get(cid, 0) + 1
        done = polls > self.spec.sandbox.pending_polls
        seq = _sequence(effect.protocol_number)
        if operation.name == nb.status_operation:
            if done:
                effect.status = "protocolled"

            def status() -> tuple[etree._Element, list[etree._Element]]:
                payload, builder = self._reply(operation.output_element, seq, [nb.status_path or ""])
                _Filler(builder, payload, self.namespaces).set(
                    nb.status_path, nb.done_values[0] if done else "pending")
                return payload, self._header_parts(operation.output_headers, cid)

            return self._generated(status, operation.name)
        if effect.status != "protocolled":
            return fault_response(self.version, sender=True, text="the result is not ready yet")

        def result() -> tuple[etree._Element, list[etree._Element]]:
            payload, builder = self._reply(operation.output_element, seq, self.receipt_paths)
            self._fill_receipt(payload, builder, effect)
            return payload, self._header_parts(operation.output_headers, cid)

        return self._generated(result, operation.name)

    def _callback_message(self, effect: Effect) -> tuple[bytes, dict[str, str]]:
        nb = self.nonblocking
        assert nb is not None and nb.callback_wsdl is not None and nb.callback_operation
        schema = types_schema(nb.callback_wsdl)
        callback = callback_contract(self.spec)
        operation = callback.operation(nb.callback_operation)
        declaration = schema.maps.elements[operation.input_element]
        builder = InstanceBuilder([s for p in self.receipt_paths if (s := path_steps(p))],
                                  seed=_sequence(effect.protocol_number))
        payload = builder.build(declaration)
        self._fill_receipt(payload, builder, effect)
        headers = self._header_parts(operation.input_headers, effect.correlation_id or "", schema)
        ns = ENVELOPE_NS[callback.soap_version]
        envelope = etree.Element(f"{{{ns}}}Envelope", nsmap={"env": ns})
        if headers:
            etree.SubElement(envelope, f"{{{ns}}}Header").extend(headers)
        etree.SubElement(envelope, f"{{{ns}}}Body").append(payload)
        content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        return content, http_headers(callback.soap_version, operation.action)

    async def _call_back(self, effect: Effect) -> None:
        """POST the outcome to the consumer's X-ReplyTo until it answers 2xx (bounded tries)."""
        try:
            content, headers = self._callback_message(effect)
        except (InstanceError, KeyError, ValueError) as exc:
            log.error("sandbox_callback_unbuildable", agency=self.spec.agency, error=str(exc))
            return
        effect.status = "protocolled"
        # The correlation id travels in the SOAP header here.
        await self.desk.post_callback(
            self.http, effect.reply_to or "", content, headers, effect.correlation_id or "",
            lambda status: effect.callbacks.append({"at": datetime.now(UTC).isoformat(), "status": status}),
            tries=CALLBACK_TRIES, backoff_s=CALLBACK_BACKOFF_S)


def soap_sandbox_app(spec: ContractSpec, desk: AgencyDesk, http: httpx.AsyncClient) -> Starlette:
    """The Starlette app of one sandboxed SOAP contract (`/soap`, `/wsdl`, `/_sim/*`)."""
    endpoint = SoapSandbox(spec, desk, http)
    desk.replies = endpoint
    return Starlette(routes=[
        Route("/soap", endpoint.soap, methods=["GET", "POST"]),
        Route("/wsdl", endpoint.document, methods=["GET"]),
        Route("/{name:str}.xsd", endpoint.document, methods=["GET"]),
        *late_routes(desk),
        *control_routes(desk),
    ])
