"""The AgID non-blocking SOAP patterns (ModI NONBLOCK_PULL_SOAP, NONBLOCK_PUSH_SOAP), for any
agency whose contract declares them, over issue 4's late-outcome machinery.

PULL: the request is acknowledged with an `X-Correlation-ID` SOAP header; the hub then calls
the contract's status operation with that header until the status (read at `status_path`)
is one of `done_values`, and reads the outcome from the result operation. PUSH: the request
carries the hub's callback address in an `X-ReplyTo` SOAP header; the agency acknowledges
with an `X-Correlation-ID` and later calls the callback WSDL's operation at that address,
whose body the contract's receipt mapping reads. Over plain HTTP (202 + Location, 303 See
Other) the base adapters already follow the headers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urldefrag

import structlog
import zeep.exceptions as zx
from lxml import etree

from adapters.base import ErrorContext
from adapters.receipts import check_acknowledgment
from adapters.replies import Reply, callback_headers, check_body_size
from adapters.soap import SoapAgencyAdapter
from adapters.wsdl import ENVELOPE_NS, parse_reply
from domain.errors import AdapterMisconfigured, AgencyProtocolError, AgencyRejected
from domain.messages import OutgoingMessage, Receipt

__all__ = ["SoapNonBlockingAdapter", "correlation_from_envelope"]

log = structlog.get_logger(__name__)


def correlation_from_envelope(content: bytes, header_name: str) -> str | None:
    """The text of the SOAP header element `header_name` (any namespace), or None."""
    root = parse_reply(content)
    if root is None:
        return None
    for namespace in ENVELOPE_NS.values():
        header = root.find(f"{{{namespace}}}Header")
        if header is None:
            continue
        found = next(header.iter(f"{{*}}{header_name}", header_name), None)
        if found is not None and (found.text or "").strip():
            return (found.text or "").strip()
    return None


def _body_payload(content: bytes) -> etree._Element | None:
    root = parse_reply(content)
    if root is None:
        return None
    for namespace in ENVELOPE_NS.values():
        body = root.find(f"{{{namespace}}}Body")
        if body is not None and len(body):
            return body[0]
    return None


class SoapNonBlockingAdapter(SoapAgencyAdapter):
    """A `SoapAgencyAdapter` whose contract declares `pattern = "pull"` or `"push"`.

    `deliver` returns an acknowledgment (`Receipt.acknowledgment`) carrying the agency's
    correlation id; `poll` (PULL) and `read_result` (PUSH) turn the late outcome into the
    receipt, as `service.delivery_port.LateOutcomeAdapter` asks.
    """

    def __init__(self, contract: Any, **kwargs: Any) -> None:
        super().__init__(contract, **kwargs)
        spec = contract.spec
        assert spec.nonblocking is not None, "a non-blocking contract declares [nonblocking]"
        self._nb = spec.nonblocking
        self._pattern = spec.pattern
        self._status_path = (etree.XPath(self._nb.status_path, namespaces=dict(spec.receipt.namespaces))
                             if self._nb.status_path else None)

    def __repr__(self) -> str:
        return (f"SoapNonBlockingAdapter(contract={self.contract.spec.ref!r}, "
                f"pattern={self._pattern!r}, endpoint={self._endpoint!r})")

    async def _exchange(self, name: str, content: dict[str, Any], ctx: ErrorContext,
                        soap_headers: dict[str, str], message_id: str | None = None) -> Reply:
        """One call of operation `name` on the shared send path; faults and HTTP failures
        raised as delivery errors. The SOAP headers carry what HTTP headers carry in the
        blocking pattern (`X-ReplyTo`, `X-Correlation-ID`)."""
        operation = self._operation(name, ctx)
        payload = self._envelope(name, content, ctx, soap_headers)
        request = self._soap_request(operation, payload, message_id or None, {})
        response = await self._send(request, ctx, name)
        self._raise_for_status(response, ctx)
        try:
            self.contract.binding.process_reply(self.contract.client, operation.binding_operation,
                                                response)
        except (zx.Error, etree.LxmlError) as exc:
            raise self._failure(exc, ctx) from exc
        return response

    def _poll_url(self, correlation_id: str) -> str:
        # The status "resource" of a SOAP exchange is the endpoint plus the correlation id,
        # kept in the fragment: it is never sent, only read back by `poll`.
        base, _ = urldefrag(self._endpoint)
        return f"{base}#{quote(self._nb.correlation_header)}={quote(correlation_id)}"

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        """Send the request; the agency's acknowledgment comes back (no protocol number yet).

        Raises:
            AdapterMisconfigured: PUSH without the hub's callback address (`api.public_url`).
            AgencyProtocolError: the acknowledgment carries no correlation id.
            DeliveryError: as `SoapAgencyAdapter.deliver`.
        """
        ctx = ErrorContext(self.agency, message.operation, message.delivery_id)
        header = message.content.get("messageHeader")
        if isinstance(header, dict) and header.get("messageId") != message.message_id:
            return await super().deliver(message)  # refused there, with the usual error
        soap_headers: dict[str, str] = {}
        if self._pattern == "push":
            if not self._reply_to:
                raise ctx.build(AdapterMisconfigured, "a PUSH contract needs the hub's callback "
                                                      "address (api.public_url)", code="NO_REPLY_TO")
            soap_headers[self._nb.reply_to_header] = self._reply_to
        response = await self._exchange(message.operation, message.content, ctx, soap_headers,
                                        message.message_id)
        correlation_id = correlation_from_envelope(response.content, self._nb.correlation_header)
        if not correlation_id:
            raise ctx.build(AgencyProtocolError, f"the acknowledgment carries no "
                                                 f"{self._nb.correlation_header}", code="PROTOCOL")
        poll_url = self._poll_url(correlation_id) if self._pattern == "pull" else None
        return check_acknowledgment(Receipt.acknowledgment(correlation_id=correlation_id,
                                                           poll_url=poll_url), ctx)

    async def poll(self, message: OutgoingMessage, poll_url: str) -> Receipt:
        """Ask the status operation once; once done, read the result operation's receipt.

        Raises:
            AgencyRejected: the status says the agency failed the request (`failed_values`).
            DeliveryError: as `deliver`.
        """
        ctx = ErrorContext(self.agency, message.operation, message.delivery_id)
        _, fragment = urldefrag(poll_url)
        name, _, value = fragment.partition("=")
        correlation_id = unquote(value)
        if unquote(name) != self._nb.correlation_header or not correlation_id:
            raise ctx.build(AdapterMisconfigured, f"poll URL {poll_url!r} names no correlation id",
                            code="POLL_URL")
        headers = {self._nb.correlation_header: correlation_id}
        assert self._nb.status_operation and self._nb.result_operation
        response = await self._exchange(self._nb.status_operation, {}, ctx, headers)
        payload = self.contract.payload(response.content)
        status = ""
        if payload is not None and self._status_path is not None:
            found = self._status_path(payload)
            first = found[0] if isinstance(found, list) and found else found
            status = ((first.text or "") if isinstance(first, etree._Element) else str(first or "")).strip()
        if status in self._nb.failed_values:
            raise ctx.build(AgencyRejected, f"the agency reports {status!r}", code=status)
        if status not in self._nb.done_values:
            return Receipt.acknowledgment(correlation_id=correlation_id, poll_url=poll_url)
        result = await self._exchange(self._nb.result_operation, {}, ctx, headers)
        return self._read_receipt(result, message, ctx)

    def read_result(self, operation: str, content_type: str, body: bytes, message_id: str) -> Receipt:
        """Read the callback the agency POSTed (the callback WSDL's message).

        Raises:
            AgencyRejected: the callback is a SOAP fault (Sender/Client).
            AgencyProtocolError: not a SOAP message with a body.
        """
        ctx = ErrorContext(self.agency, operation)
        check_body_size(body, self._max_reply, ctx)
        payload = _body_payload(body)
        if payload is None:
            raise ctx.build(AgencyProtocolError, "the callback is not a SOAP message with a body",
                            code="PROTOCOL")
        if etree.QName(payload).localname == "Fault":
            response = Reply(500, callback_headers(content_type, body), body, "")
            raise self._failure(response, ctx)
        return self.contract.receipt.receipt(payload, {}, message_id, ctx, self._overrides)

    def correlation_id(self, content_type: str, body: bytes) -> str | None:
        """The correlation id of a callback: in its SOAP header, as the callback WSDL says."""
        return correlation_from_envelope(body, self._nb.correlation_header)
