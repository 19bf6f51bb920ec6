"""The sandbox for REST contracts: any configured OpenAPI operation, played from its schemas.

As for SOAP (simulators/sandbox.py): the request body is validated against the operation's
schema, the reply generated from the receipt status's response schema with the
receipt-mapped fields filled, repeats recognised, a ledger kept, fault rules applied, and the
HTTP non-blocking patterns (202 + Location, 303 See Other, X-ReplyTo callbacks) available
through the simulators' `async_pull` / `async_push` rules.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.contracts import ContractSpec
from adapters.json_check import SchemaCheck
from adapters.openapi import OpenApiContract, RestOperation, load_openapi_contract
from simulators.control import control_routes
from simulators.desk import AgencyDesk, InvalidMessageError, Submission
from simulators.faults import FaultRule, as_text
from simulators.httpio import BodyTooLargeError, read_body
from simulators.instances import InstanceError, from_pattern
from simulators.late import late_routes, status_path
from simulators.ledger import Effect
from simulators.rest_app import MAX_JSON_DEPTH, _too_deep, _values

__all__ = ["json_instance", "rest_sandbox_app"]

_PROBLEM = "application/problem+json"
_MAX_ERROR = 300
_MAX_DEPTH = 24


def _problem(status: int, title: str, detail: str, **extra: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type=_PROBLEM)


class _Schemas:
    """Resolves `#/...` references inside one OpenAPI document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
            node: Any = self.document
            for part in str(schema["$ref"]).removeprefix("#/").split("/"):
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
            schema, seen = node, seen + 1
        return schema

    def merged(self, schema: Any) -> dict[str, Any]:
        """`allOf` folded in; `oneOf`/`anyOf` reduced to their first branch."""
        schema = dict(self.resolve(schema) or {})
        for part in schema.pop("allOf", []) or []:
            part = self.merged(part)
            schema["properties"] = {**(schema.get("properties") or {}), **(part.get("properties") or {})}
            schema["required"] = [*(schema.get("required") or []), *(part.get("required") or [])]
            for key, value in part.items():
                schema.setdefault(key, value)
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                first = self.merged(schema.pop(key)[0])
                schema = {**first, **{k: v for k, v in schema.items() if k not in first}}
        return schema


def _string(schema: Mapping[str, Any], seed: int) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return datetime.now(UTC).replace(microsecond=0).isoformat()
    if fmt == "date":
        return date.today().isoformat()
    if fmt in ("uri", "url"):
        return "urn:crocevia:sandbox"
    if fmt == "email":
        return "sandbox@example.invalid"
    if fmt == "uuid":
        return str(random.Random(seed).getrandbits(128))
    if schema.get("pattern"):
        return from_pattern(schema["pattern"].lstrip("^").rstrip("$"), seed)
    return f"SBX{seed}".ljust(int(schema.get("minLength") or 1), "0")


def json_instance(schemas: _Schemas, schema: Any, wanted: set[tuple[str, ...]],
                  path: tuple[str, ...] = (), seed: int = 0, depth: int = 0) -> Any:
    """A minimal instance of `schema`, with the `wanted` paths (tuples of keys) present.

    Raises:
        InstanceError: nesting deeper than the generator goes.
    """
    if depth > _MAX_DEPTH:
        raise InstanceError(f"schema nesting deeper than {_MAX_DEPTH} at {'.'.join(path)}")
    schema = schemas.merged(schema)
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        required = set(schema.get("required") or [])
        found = {}
        for name, sub in (schema.get("properties") or {}).items():
            below = (*path, name)
            if name in required or any(w[: len(below)] == below for w in wanted):
                found[name] = json_instance(schemas, sub, wanted, below, seed, depth + 1)
        return found
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        if count == 0 and any(w[: len(path)] == path and len(w) > len(path) for w in wanted):
            count = 1
        return [json_instance(schemas, schema.get("items") or {}, wanted, path, seed, depth + 1)
                for _ in range(count)]
    if kind == "integer":
        low = schema.get("minimum")
        return int(low) + (1 if schema.get("exclusiveMinimum") is True else 0) if low is not None else seed
    if kind == "number":
        return float(schema.get("minimum") or 0) + 1.0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, seed)


def _set(body: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    node = body
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return
    if isinstance(node, dict):
        node[parts[-1]] = value


def _sequence(protocol: str) -> int:
    match = re.search(r"(\d+)$", protocol)
    return int(match.group(1)) if match else 0


class RestSandbox:
    """Answers one REST contract's operations; also the desk's replies."""

    def __init__(self, spec: ContractSpec, desk: AgencyDesk) -> None:
        self.spec = spec
        self.desk = desk
        self.contract: OpenApiContract = load_openapi_contract(spec)
        self.schemas = _Schemas(self.contract.document)
        self.operations = {
            name: op for name, op in self.contract.operations.items()
            if op.request is not None and (not spec.operations or name in spec.operations)
        }
        receipt = spec.receipt
        self.paths = [v.path for v in (receipt.protocol_number, receipt.protocolled_at,
                                       receipt.message_id, receipt.outcome,
                                       receipt.status.value if receipt.status else None)
                      if v is not None and v.path]

    def routes(self) -> list[Route]:
        return [Route(op.path, self._handler(op), methods=[op.method]) for op in self.operations.values()]

    def _refuse(self, operation: str, status: int, code: str, error: str) -> Response:
        self.desk.ledger.record_invalid(operation, code, error)
        return _problem(status, "Invalid request", error, codice=code)

    def _key(self, request: Request, data: Any) -> str:
        rule = self.spec.sandbox.dedupe or (f"header:{self.spec.message_id_header}"
                                            if self.spec.message_id_header else
                                            "field:messageId" if self.spec.envelope else "digest")
        kind, _, name = rule.partition(":")
        if kind == "header" and request.headers.get(name):
            return request.headers[name]
        if kind == "field":
            found = next((as_text(v) for v in _values(data, name)), None)
            if found:
                return found
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def _handler(self, operation: RestOperation) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            self.desk.ledger.calls += 1
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return self._refuse(operation.name, 415, "MEDIA_TYPE", f"media type {media!r}")
            try:
                data = orjson.loads(await read_body(request))
            except BodyTooLargeError as exc:
                return self._refuse(operation.name, 413, "JSON", str(exc))
            except orjson.JSONDecodeError as exc:
                return self._refuse(operation.name, 400, "JSON", f"not JSON: {exc}")
            if _too_deep(data):
                return self._refuse(operation.name, 400, "JSON", f"nested deeper than {MAX_JSON_DEPTH}")

            def matches(name: str, value: str) -> bool:
                return any(as_text(v) == value for v in _values(data, name))

            def lookup(name: str) -> str | None:
                return next((as_text(v) for v in _values(data, name)), None)

            def check() -> Submission:
                assert operation.request is not None
                error = operation.request.error(data)
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
                    raise InvalidMessageError("SCHEMA", f"{where}: {error.message}"[:_MAX_ERROR])
                reference = lookup("filingReference") or ""
                return Submission(operation.name, self._key(request, data), reference, lookup)

            return await self.desk.process(request, operation.name, matches, check, self)

        return handle

    # ----- replies (simulators.desk.Replies) -----

    def technical_fault(self, operation: str, rule: FaultRule) -> Response:
        return _problem(500, "Internal Server Error", rule.text or "Internal error of the sandboxed service")

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response:
        return _problem(400, "Invalid request", exc.error, codice=exc.code)

    def rejection(self, operation: str, code: str, reason: str) -> Response:
        return _problem(422, "Rejected", reason, codice=code, motivo=reason)

    def acknowledged(self, effect: Effect) -> Response:
        headers = {"X-Correlation-ID": effect.correlation_id or ""}
        if effect.mode == "pull":
            headers["Location"] = status_path(effect.correlation_id or "")
        return Response(b"", status_code=202, headers=headers)

    def receipt(self, effect: Effect, first: bool) -> Response:
        operation = self.contract.operations[effect.operation]
        statuses = sorted(operation.receipt_statuses, key=list(self.contract.receipt_statuses).index)
        status = statuses[0] if first or len(statuses) == 1 else statuses[1]
        validator = operation.receipts.get(status)
        if validator is None:
            return Response(b"", status_code=status)
        seq = _sequence(effect.protocol_number)
        response = self._spec_of(operation, status)
        try:
            body = json_instance(self.schemas, response, {tuple(p.split(".")) for p in self.paths}, seed=seq)
        except InstanceError as exc:
            return _problem(500, "Sandbox", f"sandbox: {exc}")
        self._fill(body, effect, validator)
        problem = validator.error(body)
        if problem is not None:
            return _problem(500, "Sandbox", f"sandbox reply invalid: {problem.message}")
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    def _spec_of(self, operation: RestOperation, status: int) -> Any:
        item = self.contract.document["paths"][operation.path][operation.method.lower()]
        return item["responses"][str(status)]["content"]["application/json"]["schema"]

    def _fill(self, body: Any, effect: Effect, validator: SchemaCheck) -> None:
        receipt = self.spec.receipt
        seq = _sequence(effect.protocol_number)

        def put(value: Any, path: str | None, *alternatives: Any) -> Any:
            if not path:
                return None
            for candidate in (value, *alternatives):
                _set(body, path, candidate)
                if not any(tuple(str(p) for p in e.absolute_path) == tuple(path.split("."))
                           for e in validator.iter_errors(body)):
                    return candidate
            return None

        chosen = put(effect.protocol_number, receipt.protocol_number.path, seq, str(seq))
        if chosen is not None and str(chosen) != effect.protocol_number:
            effect.protocol_number = str(chosen)
        put(effect.protocolled_at, receipt.protocolled_at.path if receipt.protocolled_at else None)
        put(effect.message_id, receipt.message_id.path if receipt.message_id else None)
        if receipt.status is not None:
            put(receipt.status.ok[0], receipt.status.value.path)
        if receipt.references_object and effect.references:
            _set(body, receipt.references_object, dict(effect.references))
        for path, value in self.spec.sandbox.values:
            _set(body, path, value)


def rest_sandbox_app(spec: ContractSpec, desk: AgencyDesk) -> Starlette:
    """The Starlette app of one sandboxed REST contract (its operations, `/_sim/*`)."""
    endpoint = RestSandbox(spec, desk)
    desk.replies = endpoint
    return Starlette(routes=[*endpoint.routes(), *late_routes(desk), *control_routes(desk)])
