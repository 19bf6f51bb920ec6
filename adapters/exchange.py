"""The one send path of the contract-driven adapters (SOAP, non-blocking SOAP, REST).

Every exchange with an agency goes the same way: look the operation up in the contract, check
the message id, encode the request, send it within the call deadline reading at most the
contract's reply bound, classify a transport failure, log the reply, and read the receipt (or
take a 202 as an acknowledgment). `ContractAdapter` holds that skeleton once; each protocol
adds only its hooks: how a request is encoded, how a failure is classified, how a reply
becomes a receipt, and its log line.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx

from adapters.base import (
    ErrorContext,
    acknowledgment,
    check_fault_overrides,
    effective_timeout,
    fetch_late_result,
)
from adapters.attachments import BlobPart, StreamedBody
from adapters.contracts import ContractError, ContractSpec
from adapters.receipts import check_acknowledgment
from adapters.replies import Reply, callback_headers, check_body_size, read_reply
from domain.errors import AdapterMisconfigured, DeliveryError, MessageRejectedAsInvalid
from domain.messages import OutgoingMessage, Receipt
from service.attachments import BlobStore
from service.delivery_port import AgencyAdapter, LateOutcomeAdapter

__all__ = ["ContractAdapter", "DeclaredContract", "OutgoingRequest"]

_Op = TypeVar("_Op")
_Op_co = TypeVar("_Op_co", covariant=True)


class DeclaredContract(Protocol[_Op_co]):
    """What the shared path needs of a loaded contract (`WsdlContract`, `OpenApiContract`)."""

    spec: ContractSpec

    def operation(self, name: str) -> _Op_co:
        """The declared operation `name`.

        Raises:
            ContractError: the contract does not declare it.
        """
        ...


_C = TypeVar("_C", bound=DeclaredContract[Any])


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """One encoded request, ready to send."""

    method: str
    url: httpx.URL | str
    content: bytes
    headers: dict[str, str]
    #: What a 202's `Location` is resolved against: the address as configured, unnormalised.
    address: str
    #: A body streamed with its attachments (then `content` is empty), read afresh per send.
    stream: StreamedBody | None = None


class ContractAdapter(AgencyAdapter, LateOutcomeAdapter, Generic[_C, _Op]):
    """Delivers messages to one agency through one declared contract version.

    Args:
        contract: the loaded contract, from `config/agencies/`.
        endpoint: the service address (the subclass decides how requests use it).
        http: the hub's client; its timeouts apply, unset ones default to `DEFAULT_TIMEOUT`.
        fault_overrides: `{code: kind}` for this agency's codes; they win over the contract's
            own `fault_overrides`.
        timeout: this contract's timeouts, or None for the client's.
        signer: the agency's outgoing identity (the subclass applies it), or None.
        reply_to: the hub's callback address for this agency's late outcomes (`X-ReplyTo`,
            AgID NONBLOCK_PUSH), or None.
        blobs: where the attachments a message lists are read from (None: a message that
            lists attachments is refused as misconfigured).
    """

    def __init__(
        self,
        contract: _C,
        *,
        endpoint: str,
        http: httpx.AsyncClient,
        fault_overrides: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        signer: Any = None,
        reply_to: str | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.agency = contract.spec.agency
        self._blobs = blobs
        self.contract = contract
        self._signer = signer
        self._reply_to = reply_to
        self._endpoint = endpoint
        self._http = http
        self._timeout = effective_timeout(timeout or http.timeout)
        self._overrides = check_fault_overrides(
            {**dict(contract.spec.fault_overrides), **(fault_overrides or {})},
            contract.spec.fault_code_fields,
        )
        self._max_reply = contract.spec.receipt.limits.max_reply_bytes

    # ----- hooks -----

    @abstractmethod
    def _encode(self, message: OutgoingMessage, operation: _Op, ctx: ErrorContext) -> OutgoingRequest:
        """The request carrying `message`: body, headers and signature.

        Raises:
            MessageRejectedAsInvalid: the message fails the contract; nothing is sent.
        """

    @abstractmethod
    def _failure(self, exc_or_response: BaseException | Reply,
                 ctx: ErrorContext) -> DeliveryError:
        """This protocol's classifier: the delivery error for a failed exchange."""

    @abstractmethod
    def _receipt(self, response: Reply, operation: _Op, message: OutgoingMessage,
                 ctx: ErrorContext) -> Receipt:
        """The receipt in a reply (not a 202).

        Raises:
            DeliveryError: the reply is a failure, or not a receipt of this operation.
        """

    @abstractmethod
    def _accept(self, operation: _Op) -> str:
        """The `Accept` header of a late outcome's result."""

    @abstractmethod
    def _log_reply(self, operation: str, response: Reply, started: float) -> None:
        """One debug line per reply; `started` is the `time.perf_counter()` of the send."""

    # ----- the shared path -----

    def _attachment_parts(self, message: OutgoingMessage, ctx: ErrorContext) -> list[BlobPart]:
        """The attachments the message lists (the contract's `[attachments] element`), each
        checked to be in the blob store; empty when the contract carries none.

        Raises:
            AdapterMisconfigured: no blob store is wired, or a listed blob is missing.
        """
        spec = self.contract.spec.attachments
        listed = message.content.get(spec.element) if spec is not None else None
        if not listed:
            return []
        if self._blobs is None:
            raise ctx.build(AdapterMisconfigured, "the message lists attachments and no blob store is wired",
                            code="ATTACHMENT_STORE")
        items = listed if isinstance(listed, list) else [listed]
        parts = [BlobPart(str(item.get("sha256", "")), str(item.get("mediaType") or "application/octet-stream"),
                          str(item.get("nome") or "")) for item in items if isinstance(item, Mapping)]
        for part in parts:
            try:
                present = self._blobs.exists(part.sha256)
            except ValueError:
                present = False
            if not present:
                raise ctx.build(AdapterMisconfigured, f"attachment {part.sha256} is not in the blob store",
                                code="ATTACHMENT_MISSING")
        return parts

    def _operation(self, name: str, ctx: ErrorContext) -> _Op:
        try:
            operation: _Op = self.contract.operation(name)
        except ContractError as exc:
            raise ctx.build(AdapterMisconfigured, str(exc), code="UNKNOWN_OPERATION") from exc
        return operation

    async def _send(self, request: OutgoingRequest, ctx: ErrorContext, operation: str) -> Reply:
        """Send within the call deadline; transport failures come back classified.

        Raises:
            DeliveryError: the request failed or the reply exceeds the contract's bound.
        """
        started = time.perf_counter()
        try:
            # Read within the contract's bound: an oversized reply is never parsed.
            content = request.stream.stream() if request.stream is not None else request.content
            response = await read_reply(
                self._http, request.method, request.url, content=content,
                headers=request.headers, timeout=self._timeout, max_bytes=self._max_reply,
                ctx=ctx,
            )
        except httpx.HTTPError as exc:
            raise self._failure(exc, ctx) from exc
        self._log_reply(operation, response, started)
        return response

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        """Validate, send and read the receipt of one message.

        Raises:
            MessageRejectedAsInvalid: the message fails the contract; nothing was sent.
            AdapterMisconfigured: the operation is not in the contract, or 401/403/404.
            DeliveryError: any other failure, classified by the protocol's classifier.
        """
        ctx = ErrorContext(self.agency, message.operation, message.delivery_id)
        operation = self._operation(message.operation, ctx)
        header = message.content.get("messageHeader")
        if isinstance(header, Mapping) and header.get("messageId") != message.message_id:
            raise ctx.build(MessageRejectedAsInvalid,
                            "messageHeader.messageId differs from the delivery's message id")
        request = self._encode(message, operation, ctx)
        response = await self._send(request, ctx, message.operation)
        if response.status_code == 202:
            # Taken in charge, protocol number later (AgID non-blocking patterns).
            return check_acknowledgment(acknowledgment(response, request.address), ctx)
        return self._receipt(response, operation, message, ctx)

    async def poll(self, message: OutgoingMessage, poll_url: str) -> Receipt:
        """Ask the agency's status resource for a late outcome (NONBLOCK_PULL), once.

        Raises:
            DeliveryError: the status or result could not be read, or is not a receipt.
        """
        ctx = ErrorContext(self.agency, message.operation, message.delivery_id)
        operation = self._operation(message.operation, ctx)
        found = await fetch_late_result(self._http, poll_url, timeout=self._timeout, ctx=ctx,
                                        accept=self._accept(operation), max_bytes=self._max_reply)
        if isinstance(found, Receipt):
            return found
        return self._receipt(found, operation, message, ctx)

    def read_result(self, operation: str, content_type: str, body: bytes, message_id: str) -> Receipt:
        """Read the reply an agency POSTed to the hub's callback (NONBLOCK_PUSH).

        Raises:
            DeliveryError: AgencyRejected for a refusal, AgencyProtocolError for a body that is
                not this operation's receipt for `message_id`.
        """
        ctx = ErrorContext(self.agency, operation)
        check_body_size(body, self._max_reply, ctx)
        message = OutgoingMessage(message_id, "", "", self.agency, operation, {})
        response = Reply(200, callback_headers(content_type, body), body, "")
        return self._callback_receipt(response, self._operation(operation, ctx), message, ctx)

    def _callback_receipt(self, response: Reply, operation: _Op,
                          message: OutgoingMessage, ctx: ErrorContext) -> Receipt:
        """The receipt in a callback's body: by default, read as a reply's."""
        return self._receipt(response, operation, message, ctx)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the hub, the contract is shared."""
