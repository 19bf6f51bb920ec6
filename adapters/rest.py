"""REST machinery for the REST agencies: the stored OpenAPI contract, delivery, `classify_http`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import jsonschema
import orjson
import structlog

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
)
from adapters.attachments import form_data_body
from adapters.exchange import ContractAdapter, OutgoingRequest
from adapters.replies import Reply
from adapters.openapi import OpenApiContract, RestOperation
from domain.messages import OutgoingMessage, Receipt
from security.modi import body_digest_of_hash
from service.attachments import BlobStore

__all__ = ["RestAgencyAdapter", "classify_http"]

log = structlog.get_logger(__name__)

# Loading a declared contract lives in `adapters.openapi` (shared with the contracts check).
_Operation = RestOperation


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _json_object(response: Reply | httpx.Response) -> dict[str, Any] | None:
    try:
        body = orjson.loads(response.content)
    except (orjson.JSONDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _problem_text(body: Mapping[str, Any] | None, status: int) -> str:
    if body:
        for key in ("motivo", "detail", "title"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()
    return f"HTTP {status}"


#: Where a REST agency puts its own code when its contract names no `fault_code_fields`.
_DEFAULT_CODE_FIELDS = ("codice",)


def _agency_code(body: Mapping[str, Any] | None, fields: tuple[str, ...]) -> str:
    """The first non-empty scalar at one of the dotted `fields` of an error body, or ""."""
    for path in fields or _DEFAULT_CODE_FIELDS:
        node: Any = body
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, (str, int)) and not isinstance(node, bool) and str(node).strip():
            return str(node).strip()
    return ""


def _classify_response(
    response: Reply | httpx.Response, ctx: ErrorContext, overrides: FaultCodes
) -> DeliveryError:
    status = response.status_code
    body = _json_object(response)
    agency_code = _agency_code(body, overrides.fields)
    text = _problem_text(body, status)
    code = agency_code or f"HTTP{status}"
    if 200 <= status < 300:
        what = "a JSON body that is not a receipt" if body is not None else "a non-JSON body"
        return ctx.build(AgencyProtocolError, f"HTTP {status} with {what}", code="PROTOCOL")
    if agency_code and agency_code in overrides:
        return ctx.build(overrides[agency_code], text, code=code)
    error = classify_status(status, response.headers, ctx)
    if error is not None:
        return error
    if status in (400, 413, 414):
        return ctx.build(MessageRejectedAsInvalid, text, code=code)
    if status == 408:
        return ctx.build(AgencyUnreachable, text, code=code)
    if 400 <= status < 500:
        # 409 and 422 included: the agency refused this message for a reason of its own.
        if body is None and status != 422:
            return ctx.build(AdapterMisconfigured, f"HTTP {status} without a body", code=code)
        return ctx.build(AgencyRejected, text, code=code)
    if status >= 500:
        return ctx.build(AgencyUnreachable, text, code=code)
    return ctx.build(AgencyProtocolError, f"unexpected HTTP {status}", code=code)


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
        if isinstance(exc, jsonschema.ValidationError):
            error = ctx.build(MessageRejectedAsInvalid, f"the message fails the contract: "
                                                        f"{exc.message}")
        elif isinstance(exc, ValueError):  # JSON decoding, orjson's included
            error = ctx.build(AgencyProtocolError, f"the reply is not JSON: {exc}")
        else:
            log.error("delivery_unclassified_error", agency=ctx.agency,
                      operation=ctx.operation, error_class=type(exc).__name__, exc_info=exc)
            error = ctx.build(AgencyProtocolError, f"unclassified {type(exc).__name__}",
                              code="UNCLASSIFIED")
    error.__cause__ = exc
    return error


def classify_http(
    exc_or_response: BaseException | httpx.Response,
    *,
    agency: str = "",
    operation: str = "",
    delivery_id: str = "",
    fault_overrides: Mapping[str, str] | None = None,
    fault_code_fields: tuple[str, ...] = (),
) -> DeliveryError:
    """Translate a REST exchange's failure into the delivery error tree.

    A 200/201 receipt, or a 409 whose body is a receipt, is not a failure: the adapter reads
    those before it calls this.

    Args:
        exc_or_response: an httpx or jsonschema exception, or the agency's failed reply.
        agency, operation, delivery_id: copied into the error.
        fault_overrides: `{codice: kind}` for the agency's own codes, kinds as in
            `adapters.base.OVERRIDE_KINDS`.
        fault_code_fields: dotted paths of the error body where the agency's code is (pagoPA
            `faultCode`); default `codice`.

    Returns:
        The error to raise (`raise classify_http(exc) from exc`). Its `__cause__` is set.
    """
    ctx = ErrorContext(agency, operation, delivery_id)
    return _classify(exc_or_response, ctx,
                     check_fault_overrides(fault_overrides or {}, fault_code_fields))


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class RestAgencyAdapter(ContractAdapter[OpenApiContract, RestOperation]):
    """Delivers messages to one REST agency through one declared OpenAPI contract version.

    Args:
        contract: the loaded contract (`adapters.openapi.load_openapi_contract`): operations,
            request and receipt schemas, receipt mapping, from `config/agencies/`.
        endpoint: the base URL; the document's paths are appended to it.
        http: the hub's client; its timeouts apply, unset ones default to `DEFAULT_TIMEOUT`.
        fault_overrides: `{codice: kind}` for this agency's rejection codes; they win over the
            contract's own `fault_overrides`.
        timeout: this contract's timeouts, or None for the client's.
        signer: signs each request the ModI way (`security.modi.ModiSigner`: ID_AUTH_REST_02
            token, Digest and Agid-JWT-Signature), or None.
        reply_to: the hub's callback address for this agency's late outcomes (`X-ReplyTo`,
            AgID NONBLOCK_PUSH), or None.
    """

    def __init__(
        self,
        contract: OpenApiContract,
        *,
        endpoint: str,
        http: httpx.AsyncClient,
        fault_overrides: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        signer: Any = None,
        reply_to: str | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        super().__init__(contract, endpoint=endpoint.rstrip("/"), http=http,
                         fault_overrides=fault_overrides, timeout=timeout, signer=signer,
                         reply_to=reply_to, blobs=blobs)
        self._operations = contract.operations
        self._urls: dict[str, httpx.URL] = {}  # per operation path, parsed once

    def __repr__(self) -> str:
        return (f"RestAgencyAdapter(contract={self.contract.spec.ref!r}, "
                f"endpoint={self._endpoint!r})")

    def _read_receipt(
        self, response: Reply, operation: _Operation, message: OutgoingMessage,
        ctx: ErrorContext,
    ) -> Receipt | None:
        """The receipt in a receipt status (201/200 unless the contract says otherwise), or
        in a 409 repeating one; None when the reply is not a receipt."""
        status = response.status_code
        validator = operation.receipts.get(status)
        if validator is None and status == 409:
            validator = next(iter(operation.receipts.values()), None)
            if validator is None:
                return None
        elif status not in operation.receipt_statuses:
            return None
        body = _json_object(response) if validator is not None or response.content else {}
        error = (validator.error(body)
                 if body is not None and validator is not None else None)
        if body is None or error is not None:
            if status == 409:
                return None  # an ordinary conflict: classified as a rejection
            reason = error.message if error is not None else "not a JSON object"
            raise ctx.build(AgencyProtocolError, f"HTTP {status} receipt fails the contract: "
                                                 f"{reason}", code="PROTOCOL")
        return self.contract.receipt.receipt(body, response.headers, message.message_id, ctx,
                                             self._overrides)

    def _encode(self, message: OutgoingMessage, operation: _Operation,
                ctx: ErrorContext) -> OutgoingRequest:
        body = self.contract.serialize(message.operation, message.content, ctx)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, application/problem+json",
        }
        if self.contract.spec.message_id_header:
            # The agency drops a repeat with the same key (RUNTS: Idempotency-Key).
            headers[self.contract.spec.message_id_header] = message.message_id
        if self._reply_to:
            headers[REPLY_TO_HEADER] = self._reply_to
        stream = None
        parts = self._attachment_parts(message, ctx)
        if parts:
            # The contract's form (multipart/form-data): the JSON message, then each file.
            spec = self.contract.spec.attachments
            assert spec is not None and self._blobs is not None
            headers["Content-Type"], stream = form_data_body(body, parts, self._blobs, file_part=spec.file_part)
        if self._signer is not None:
            # New tokens for every try: each carries its own jti. A streamed body is hashed in
            # a pass of its own: its Digest goes out before it.
            digest = body_digest_of_hash(stream.sha256()) if stream is not None else None
            headers.update(self._signer.headers(body=body, content_type=headers["Content-Type"], digest=digest))
        url = self._urls.get(operation.path)
        if url is None:
            url = self._urls[operation.path] = httpx.URL(self._endpoint + operation.path)
        if stream is not None:
            return OutgoingRequest(operation.method, url, b"", headers, self._endpoint + operation.path, stream)
        return OutgoingRequest(operation.method, url, body, headers, self._endpoint + operation.path)

    def _failure(self, exc_or_response: BaseException | Reply,
                 ctx: ErrorContext) -> DeliveryError:
        return _classify(exc_or_response, ctx, self._overrides)

    def _log_reply(self, operation: str, response: Reply, started: float) -> None:
        log.debug("rest_reply_received", agency=self.agency, operation=operation,
                  status=response.status_code)

    def _accept(self, operation: _Operation) -> str:
        return "application/json, application/problem+json"

    def _receipt(self, response: Reply, operation: _Operation,
                 message: OutgoingMessage, ctx: ErrorContext) -> Receipt:
        """The receipt in the reply, else the reply classified as a failure."""
        receipt = self._read_receipt(response, operation, message, ctx)
        if receipt is not None:
            return receipt
        raise self._failure(response, ctx)

    def _callback_receipt(self, response: Reply, operation: _Operation,
                          message: OutgoingMessage, ctx: ErrorContext) -> Receipt:
        receipt = self._read_receipt(response, operation, message, ctx)
        if receipt is None:  # pragma: no cover - the contract always describes a 200 receipt
            raise ctx.build(AgencyProtocolError, "the callback holds no receipt", code="PROTOCOL")
        return receipt
