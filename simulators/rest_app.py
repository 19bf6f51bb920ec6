"""The simulated RUNTS: REST/JSON iscrizioni, depositi and imprese-sociali communications as in
schemas/agencies/runts/v1/openapi.yaml."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import lru_cache
from typing import Any

import orjson
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT7
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.attachments import MAX_MULTIPART_BYTES, Part, content_type_params, split_multipart, verified
from simulators.contracts import RUNTS_OPENAPI, RUNTS_OPERATION, RUNTS_OPERATIONS, served_openapi
from simulators.control import control_routes
from simulators.desk import AgencyDesk, InvalidMessageError, Submission
from simulators.faults import FaultRule, as_text
from simulators.httpio import BodyTooLargeError, read_body
from simulators.late import late_routes, status_path
from simulators.ledger import Effect

__all__ = ["request_validator", "runts_app"]

_BASE_URI = "urn:crocevia:agency:runts:v1:openapi"
#: Deepest JSON nesting accepted; the contract needs 4. Deeper bodies would overflow the
#: recursive checks of jsonschema (and repr) long before the parser's own limit.
MAX_JSON_DEPTH = 32
#: Longest error text returned; a schema error quotes the offending value.
_MAX_ERROR = 300
_PROBLEM = "application/problem+json"


def request_validator(schema_name: str = "IscrizioneRequest") -> Draft7Validator:
    """A validator of one operation's request body, reading the schema from the OpenAPI
    components."""
    document = yaml.safe_load(RUNTS_OPENAPI.read_text(encoding="utf-8"))
    registry = Registry().with_resource(_BASE_URI, DRAFT7.create_resource(document))
    schema = {"$ref": f"{_BASE_URI}#/components/schemas/{schema_name}"}
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def _values(data: Any, name: str) -> Iterator[Any]:
    """Every scalar stored under key `name`, at any depth.

    A loop, not recursion: the JSON parser accepts nesting deeper than Python's stack.
    """
    pending = [data]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    pending.append(value)
                elif key == name:
                    yield value
        elif isinstance(node, list):
            pending.extend(node)


def _too_deep(data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `data` nests objects/arrays more than `limit` levels."""
    pending = [(data, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            node = list(node.values())
        for child in node if isinstance(node, list) else ():
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                pending.append((child, depth + 1))
    return False


def _problem(status: int, title: str, detail: str, **extra: str) -> Response:
    """RFC 9457 problem details."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type=_PROBLEM)


def _form_data(body: bytes, params: dict[str, str]) -> tuple[bytes, list[Part]]:
    """The JSON message (part `message`) and the document parts (`allegato`) of a form.

    Raises:
        InvalidMessageError: "MULTIPART" when the body is not such a form.
    """
    message: bytes | None = None
    files = []
    for part in split_multipart(body, params.get("boundary", "")):
        name = content_type_params(part.headers.get("content-disposition", "")).get("name")
        if name == "message":
            message = part.body
        elif name == "allegato":
            files.append(part)
    if message is None:
        raise InvalidMessageError("MULTIPART", "manca la parte message")
    return message, files


def _documents(declared: list[Any], files: list[Part]) -> list[dict[str, Any]]:
    """Each declared document matched with its part, in order, its SHA-256 checked.

    Raises:
        InvalidMessageError: "ALLEGATO" when the counts or a hash differ.
    """
    if len(declared) != len(files):
        raise InvalidMessageError("ALLEGATO", f"{len(declared)} allegati dichiarati, {len(files)} ricevuti")
    return [verified(str(item.get("nome", "")), str(item.get("mediaType", "")), str(item.get("sha256", "")),
                     part.body, "multipart")
            for item, part in zip(declared, files)]


class _RuntsEndpoint:
    """`POST` of each RUNTS operation (`RUNTS_OPERATIONS`); also the desk's replies in REST form."""

    def __init__(self, desk: AgencyDesk) -> None:
        self.desk = desk
        self.validators = {operation: request_validator(schema)
                           for operation, (_, schema) in RUNTS_OPERATIONS.items()}
        self.openapi = lru_cache(maxsize=8)(served_openapi)

    async def contract(self, request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}"
        return Response(self.openapi(base), media_type="application/yaml")

    def _refuse(self, operation: str, status: int, code: str, error: str) -> Response:
        self.desk.ledger.record_invalid(operation, code, error)
        return _problem(status, "Richiesta non valida", error, codice=code)

    def handler(self, operation: str) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint of `operation`."""

        async def handle(request: Request) -> Response:
            return await self.submit(request, operation)

        return handle

    async def submit(self, request: Request, operation: str) -> Response:
        self.desk.ledger.calls += 1
        params = content_type_params(request.headers.get("content-type", ""))
        media = params[""]
        files: list[Part] | None = None  # multipart/form-data: the documents, in order
        try:
            if media == "multipart/form-data":
                document, files = _form_data(await read_body(request, MAX_MULTIPART_BYTES), params)
            elif media == "application/json":
                document = await read_body(request)
            else:
                return self._refuse(operation, 415, "MEDIA_TYPE", f"tipo {media!r} non accettato")
            data = orjson.loads(document)
        except BodyTooLargeError as exc:
            return self._refuse(operation, 413, "JSON", str(exc))
        except InvalidMessageError as exc:
            return self._refuse(operation, 400, exc.code, exc.error)
        except orjson.JSONDecodeError as exc:
            return self._refuse(operation, 400, "JSON", f"JSON non valido: {exc}")
        if _too_deep(data):
            return self._refuse(operation, 400, "JSON", f"annidamento oltre {MAX_JSON_DEPTH} livelli")

        def matches(name: str, value: str) -> bool:
            return any(as_text(v) == value for v in _values(data, name))

        def lookup(name: str) -> str | None:
            if "/" in name:  # a path of keys from the body's root, e.g. "ente/codiceFiscale"
                node: Any = data
                for key in name.split("/"):
                    node = node.get(key) if isinstance(node, dict) else None
                return None if node is None or isinstance(node, (dict, list)) else as_text(node)
            return next((as_text(v) for v in _values(data, name)), None)

        def check() -> Submission:
            error = best_match(self.validators[operation].iter_errors(data))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(corpo)"
                raise InvalidMessageError("SCHEMA", f"{where}: {error.message}"[:_MAX_ERROR])
            header = data["messageHeader"]
            if request.headers.get("idempotency-key") != header["messageId"]:
                raise InvalidMessageError(
                    "IDEMPOTENCY_KEY", "l'intestazione Idempotency-Key deve essere il messageId"
                )
            return Submission(
                operation, header["messageId"], header["filingReference"], lookup,
                corrects=header.get("corrects"), attachments=_documents(data.get("allegati") or [], files or []),
            )

        return await self.desk.process(request, operation, matches, check, self)

    # ----- replies (simulators.desk.Replies) -----

    def technical_fault(self, operation: str, rule: FaultRule) -> Response:
        return _problem(500, "Internal Server Error", rule.text or "Errore interno del servizio")

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response:
        return _problem(400, "Richiesta non valida", exc.error, codice=exc.code)

    def rejection(self, operation: str, code: str, reason: str) -> Response:
        title = "Iscrizione respinta" if operation == RUNTS_OPERATION else "Richiesta respinta"
        return _problem(422, title, reason, codice=code, motivo=reason)

    def receipt(self, effect: Effect, first: bool) -> Response:
        receipt = {
            "messageId": effect.message_id,
            "protocollo": effect.protocol_number,
            "dataProtocollo": effect.protocolled_at,
            "esito": effect.esito,
            "riferimenti": dict(effect.references),
        }
        if effect.esito == "RESPINTA":  # a decision after the protocol: the agency's reason
            receipt.update(codice=effect.decision_code, motivo=effect.decision_text)
        return Response(
            orjson.dumps(receipt), status_code=201 if first else 200, media_type="application/json"
        )

    def acknowledged(self, effect: Effect) -> Response:
        body = {"messageId": effect.message_id, "esito": "PRESA_IN_CARICO",
                "correlationId": effect.correlation_id}
        headers = {"X-Correlation-ID": effect.correlation_id or ""}
        if effect.mode == "pull":
            headers["Location"] = status_path(effect.correlation_id or "")
        return Response(orjson.dumps(body), status_code=202, media_type="application/json", headers=headers)


def runts_app(desk: AgencyDesk) -> Starlette:
    """The Starlette app of the simulated RUNTS."""
    endpoint = _RuntsEndpoint(desk)
    desk.replies = endpoint
    return Starlette(
        routes=[
            *(Route(path, endpoint.handler(operation), methods=["POST"])
              for operation, (path, _) in RUNTS_OPERATIONS.items()),
            Route("/openapi.yaml", endpoint.contract, methods=["GET"]),
            *late_routes(desk),
            *control_routes(desk),
        ]
    )
