"""REST machinery for the REST agencies: the stored OpenAPI contract, delivery, `classify_http`."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import structlog
import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from adapters.base import (
    ErrorContext,
    check_fault_overrides,
    classify_httpx_error,
    classify_status,
    effective_timeout,
)
from domain.errors import (
    AdapterMisconfigured,
    AgencyProtocolError,
    AgencyRejected,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
)
from domain.messages import OutgoingMessage, Receipt

__all__ = ["RestAgencyAdapter", "RestContract", "classify_http", "load_rest_contract"]

log = structlog.get_logger(__name__)

#: Statuses whose JSON body is the agency's receipt (docs/agency-contracts.md: 201 first
#: filing, 200 the first receipt again for a repeated messageId).
_RECEIPT_STATUSES = ("201", "200")


@dataclass(frozen=True, slots=True)
class RestContract:
    """Where an agency's stored OpenAPI document lives and which operationIds the hub calls."""

    agency: str
    openapi: Path
    operations: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Operation:
    name: str
    method: str
    path: str
    request: Draft4Validator
    receipts: Mapping[int, Draft4Validator]


def _pointer(*parts: str) -> str:
    # RFC 6901: "~" then "/" are escaped inside a reference token.
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def load_rest_contract(contract: RestContract) -> Mapping[str, _Operation]:
    """Read the OpenAPI document once and build one validator per request and receipt body.

    OpenAPI 3.0 schema objects are validated as JSON Schema draft 4, whose keywords they
    extend; references resolve inside the document.

    Raises:
        ValueError: an operationId of `contract` is missing from the document.
    """
    with open(contract.openapi, "rb") as fh:
        document = yaml.safe_load(fh)
    base = f"urn:crocevia:openapi:{contract.agency}"
    registry = Registry().with_resource(base, Resource(document, specification=DRAFT4))

    def validator(*parts: str) -> Draft4Validator:
        return Draft4Validator(
            {"$ref": f"{base}#{_pointer(*parts)}"},
            registry=registry,
            format_checker=Draft4Validator.FORMAT_CHECKER,
        )

    operations: dict[str, _Operation] = {}
    for path, item in (document.get("paths") or {}).items():
        for method, spec in item.items():
            name = spec.get("operationId") if isinstance(spec, dict) else None
            if name not in contract.operations:
                continue
            responses = spec.get("responses") or {}
            receipts = {
                int(status): validator("paths", path, method, "responses", status, "content",
                                       "application/json", "schema")
                for status in _RECEIPT_STATUSES
                if "application/json" in ((responses.get(status) or {}).get("content") or {})
            }
            operations[name] = _Operation(
                name=name,
                method=method.upper(),
                path=path,
                request=validator("paths", path, method, "requestBody", "content",
                                  "application/json", "schema"),
                receipts=receipts,
            )
    missing = contract.operations - operations.keys()
    if missing:
        raise ValueError(f"{contract.agency}: {sorted(missing)} not in {contract.openapi.name}")
    return operations


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
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


def _classify_response(
    response: httpx.Response, ctx: ErrorContext, overrides: Mapping[str, type[DeliveryError]]
) -> DeliveryError:
    status = response.status_code
    body = _json_object(response)
    agency_code = str(body.get("codice") or "") if body else ""
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
    exc_or_response: BaseException | httpx.Response,
    ctx: ErrorContext,
    overrides: Mapping[str, type[DeliveryError]],
) -> DeliveryError:
    if isinstance(exc_or_response, httpx.Response):
        return _classify_response(exc_or_response, ctx, overrides)
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
) -> DeliveryError:
    """Translate a REST exchange's failure into the delivery error tree.

    A 200/201 receipt, or a 409 whose body is a receipt, is not a failure: the adapter reads
    those before it calls this.

    Args:
        exc_or_response: an httpx or jsonschema exception, or the agency's failed reply.
        agency, operation, delivery_id: copied into the error.
        fault_overrides: `{codice: kind}` for the agency's own codes, kinds as in
            `adapters.base.OVERRIDE_KINDS`.

    Returns:
        The error to raise (`raise classify_http(exc) from exc`). Its `__cause__` is set.
    """
    ctx = ErrorContext(agency, operation, delivery_id)
    return _classify(exc_or_response, ctx, check_fault_overrides(fault_overrides or {}))


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class RestAgencyAdapter:
    """Delivers messages to one REST agency through its stored OpenAPI contract.

    Args:
        contract: the agency's OpenAPI document and the operationIds the hub calls.
        endpoint: the base URL; the document's paths are appended to it.
        http: the hub's client; its timeouts apply, unset ones default to `DEFAULT_TIMEOUT`.
        fault_overrides: `{codice: kind}` for this agency's rejection codes.
    """

    def __init__(
        self,
        contract: RestContract,
        *,
        endpoint: str,
        http: httpx.AsyncClient,
        fault_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.agency = contract.agency
        self._operations = load_rest_contract(contract)
        self._endpoint = endpoint.rstrip("/")
        self._http = http
        self._timeout = effective_timeout(http.timeout)
        self._overrides = check_fault_overrides(fault_overrides or {})

    def __repr__(self) -> str:
        return f"RestAgencyAdapter(agency={self.agency!r}, endpoint={self._endpoint!r})"

    def _read_receipt(
        self, response: httpx.Response, operation: _Operation, message: OutgoingMessage,
        ctx: ErrorContext,
    ) -> Receipt | None:
        """The receipt in a 200/201 (or a 409 repeating one); None when it is not a receipt."""
        status = response.status_code
        validator = operation.receipts.get(status)
        if validator is None and status == 409:
            validator = next(iter(operation.receipts.values()), None)
        if validator is None:
            return None
        body = _json_object(response)
        error = best_match(validator.iter_errors(body)) if body is not None else None
        if body is None or error is not None:
            if status == 409:
                return None  # an ordinary conflict: classified as a rejection
            reason = error.message if error is not None else "not a JSON object"
            raise ctx.build(AgencyProtocolError, f"HTTP {status} receipt fails the contract: "
                                                 f"{reason}", code="PROTOCOL")
        if body["messageId"] != message.message_id:
            raise ctx.build(AgencyProtocolError, "the receipt is for another message id",
                            code="PROTOCOL")
        return Receipt(
            protocol_number=body["protocollo"],
            protocolled_at=body["dataProtocollo"],
            outcome=body["esito"],
            references={str(k): str(v) for k, v in (body.get("riferimenti") or {}).items()},
        )

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        """Validate, send and read the receipt of one message.

        Raises:
            MessageRejectedAsInvalid: the body fails the OpenAPI schema; nothing was sent.
            AdapterMisconfigured: the operation is not in the contract, or 401/403/404.
            DeliveryError: any other failure, classified by `classify_http`.
        """
        ctx = ErrorContext(self.agency, message.operation, message.delivery_id)
        operation = self._operations.get(message.operation)
        if operation is None:
            raise ctx.build(AdapterMisconfigured,
                            f"operation {message.operation!r} is not in the {self.agency} contract",
                            code="UNKNOWN_OPERATION")
        header = message.content.get("messageHeader")
        if isinstance(header, Mapping) and header.get("messageId") != message.message_id:
            raise ctx.build(MessageRejectedAsInvalid,
                            "messageHeader.messageId differs from the delivery's message id")
        invalid = best_match(operation.request.iter_errors(message.content))
        if invalid is not None:
            where = invalid.json_path
            raise ctx.build(MessageRejectedAsInvalid,
                            f"the message fails the {self.agency} contract at {where}: "
                            f"{invalid.message}") from invalid
        try:
            body = orjson.dumps(message.content)
        except TypeError as exc:
            raise ctx.build(MessageRejectedAsInvalid, f"the message is not JSON: {exc}") from exc
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, application/problem+json",
            # The agency drops a repeat with the same key (docs/agency-contracts.md).
            "Idempotency-Key": message.message_id,
        }
        try:
            response = await self._http.request(
                operation.method, self._endpoint + operation.path,
                content=body, headers=headers, timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise _classify(exc, ctx, self._overrides) from exc
        log.debug("rest_reply_received", agency=self.agency, operation=message.operation,
                  status=response.status_code)
        receipt = self._read_receipt(response, operation, message, ctx)
        if receipt is not None:
            return receipt
        raise _classify(response, ctx, self._overrides)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to the hub, the contract is shared."""
