"""`classify_http` and the REST (RUNTS) adapter over httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from adapters.factory import ContractSet
from adapters.rest import classify_http
from bootstrap import build_adapter
from domain.errors import (
    AdapterMisconfigured,
    AgencyProtocolError,
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
    OutcomeUnknown,
)
from domain.messages import OutgoingMessage
from tests.external import repository_catalog

ENDPOINT = "http://127.0.0.1:9"
MESSAGE_ID = "fedcba9876543210fedcba9876543210"
TAX_CODE = "RSSMRA80A01H501U"


def build_runts_adapter(**kwargs):  # type: ignore[no-untyped-def]
    """RUNTS's adapter, from its declaration in config/agencies/runts.toml."""
    return build_adapter(ContractSet(repository_catalog()), "runts", **kwargs)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def runts_message(**ente_changes: object) -> OutgoingMessage:
    ente: dict[str, Any] = {
        "codiceFiscale": "97012345678",
        "denominazione": "Amici del Parco APS",
        "sezione": "aps",
        "sede": {"indirizzo": "Via Verdi 3", "codiceComune": "F205", "cap": "20121",
                 "provincia": "MI"},
        "pec": "amicidelparco@pec.it",
        "legaleRappresentante": {"codiceFiscale": TAX_CODE, "nome": "Mario", "cognome": "Rossi"},
    }
    ente.update(ente_changes)
    header = {
        "messageId": MESSAGE_ID,
        "filingReference": "CRV-2026-000043",
        "filingKind": "runts_registration",
        "operation": "IscrizioneEnte",
        "portal": "demo",
        "declarant": {"taxCode": TAX_CODE, "role": "legal_representative"},
        "sentAt": "2026-11-28T09:00:00+00:00",
    }
    return OutgoingMessage(MESSAGE_ID, "dlv-9", "CRV-2026-000043", "runts", "IscrizioneEnte",
                           {"messageHeader": header, "ente": ente})


RECEIPT = {
    "messageId": MESSAGE_ID,
    "protocollo": "RUNTS-2026-0000123",
    "dataProtocollo": "2026-11-28T09:00:01+00:00",
    "esito": "ACQUISITA",
    "riferimenti": {"numeroRepertorio": "0000042"},
}


def _problem(status: int, **extra: object) -> httpx.Response:
    body = {"type": "about:blank", "title": "Errore", "status": status, **extra}
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/problem+json"})


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler),
                             timeout=httpx.Timeout(connect=1, read=2, write=1, pool=1))


class _Recorder:
    """A mock-transport handler that records requests and answers from a script."""

    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


async def _through_mock(reply: httpx.Response) -> httpx.Response:
    """The reply as the hub's client receives it from httpx.MockTransport."""
    async with _client(_Recorder(reply)) as http:
        return await http.post(ENDPOINT + "/v1/iscrizioni", content=b"{}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "expected", "code"),
    [
        (_problem(400, detail="ente.cap: pattern", codice="SCHEMA"), MessageRejectedAsInvalid,
         "SCHEMA"),
        (_problem(422, codice="R001", motivo="Ente gia' iscritto"), AgencyRejected, "R001"),
        (_problem(409, detail="conflitto"), AgencyRejected, "HTTP409"),
        (httpx.Response(429, headers={"Retry-After": "3"}), AgencyThrottled, "HTTP429"),
        (httpx.Response(503, headers={"Retry-After": "5"}), AgencyThrottled, "HTTP503"),
        (httpx.Response(503), AgencyUnreachable, "HTTP503"),
        (_problem(500, detail="errore tecnico"), AgencyUnreachable, "HTTP500"),
        (httpx.Response(502, text="<html>bad gateway</html>"), AgencyUnreachable, "HTTP502"),
        (httpx.Response(401), AdapterMisconfigured, "HTTP401"),
        (httpx.Response(403), AdapterMisconfigured, "HTTP403"),
        (_problem(404), AdapterMisconfigured, "HTTP404"),
        (httpx.Response(200, text="<html>ok</html>"), AgencyProtocolError, "PROTOCOL"),
    ],
)
async def test_replies_follow_the_table(reply, expected, code) -> None:
    """Each failed RUNTS reply (mock transport) maps to one class with its code."""
    error = classify_http(await _through_mock(reply), agency="runts", operation="IscrizioneEnte")
    assert type(error) is expected
    assert error.code == code
    assert error.agency == "runts"


@pytest.mark.anyio
async def test_business_rejection_keeps_the_agency_reason() -> None:
    """422 problem+json: `codice` is the code, `motivo` the text (mock transport)."""
    reply = _problem(422, codice="R001", motivo="Ente gia' iscritto", detail="generico")
    error = classify_http(await _through_mock(reply))
    assert (error.code, error.text) == ("R001", "Ente gia' iscritto")


@pytest.mark.anyio
async def test_throttle_carries_retry_after() -> None:
    """429 with Retry-After: the delay survives into the error (mock transport)."""
    error = classify_http(await _through_mock(httpx.Response(429, headers={"Retry-After": "12"})))
    assert isinstance(error, AgencyThrottled) and error.retry_after == 12.0


@pytest.mark.anyio
async def test_codice_override_applies_to_rest_rejections() -> None:
    """`{"R999": "transient"}` turns that 422 into a retry (mock transport)."""
    reply = _problem(422, codice="R999", motivo="manutenzione")
    error = classify_http(await _through_mock(reply), fault_overrides={"R999": "transient"})
    assert isinstance(error, AgencyUnreachable)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), AgencyUnreachable),
        (httpx.ConnectTimeout("slow"), AgencyUnreachable),
        (httpx.ReadTimeout("slow"), OutcomeUnknown),
        (httpx.RemoteProtocolError("closed"), OutcomeUnknown),
        (ValueError("Expecting value"), AgencyProtocolError),
    ],
)
def test_exceptions_follow_the_table(exc: Exception, expected: type) -> None:
    """Transport and decoding exceptions keep their cause."""
    error = classify_http(exc, agency="runts")
    assert type(error) is expected and error.__cause__ is exc


# --- the adapter over a mock transport ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [201, 200])
async def test_adapter_reads_receipt_and_sends_idempotency_key(status: int) -> None:
    """201 (first) and 200 (repeat) both carry the receipt (mock transport)."""
    recorder = _Recorder(httpx.Response(status, json=RECEIPT))
    async with _client(recorder) as http:
        receipt = await build_runts_adapter(endpoint=ENDPOINT, http=http).deliver(runts_message())
    assert receipt.protocol_number == "RUNTS-2026-0000123"
    assert receipt.references == {"numeroRepertorio": "0000042"}
    sent = recorder.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/v1/iscrizioni")
    assert sent.headers["Idempotency-Key"] == MESSAGE_ID
    assert json.loads(sent.content) == runts_message().content


@pytest.mark.anyio
async def test_conflict_carrying_the_first_receipt_is_a_success() -> None:
    """A 409 whose body is our receipt means the agency already has it (mock transport)."""
    async with _client(_Recorder(httpx.Response(409, json=RECEIPT))) as http:
        receipt = await build_runts_adapter(endpoint=ENDPOINT, http=http).deliver(runts_message())
    assert receipt.protocol_number == RECEIPT["protocollo"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "changes", [{"sezione": "circolo"}, {"pec": "non-una-pec"}, {"extra": 1}],
)
async def test_invalid_body_never_leaves(changes: dict[str, object]) -> None:
    """The OpenAPI request schema is checked before sending (mock transport never called)."""
    recorder = _Recorder()
    async with _client(recorder) as http:
        with pytest.raises(MessageRejectedAsInvalid):
            await build_runts_adapter(endpoint=ENDPOINT, http=http).deliver(
                runts_message(**changes))
    assert recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_problem(422, codice="R001", motivo="Ente gia' iscritto"), AgencyRejected),
        (httpx.Response(201, json={**RECEIPT, "messageId": "0" * 32}), AgencyProtocolError),
        (httpx.Response(201, json={**RECEIPT, "protocollo": "X"}), AgencyProtocolError),
        (httpx.Response(201, text="not json"), AgencyProtocolError),
        (httpx.ReadTimeout("slow"), OutcomeUnknown),
    ],
)
async def test_adapter_raises_only_delivery_errors(reply, expected) -> None:
    """Rejections, bad receipts and timeouts (mock transport) are DeliveryErrors."""
    async with _client(_Recorder(reply)) as http:
        with pytest.raises(DeliveryError) as caught:
            await build_runts_adapter(endpoint=ENDPOINT, http=http).deliver(runts_message())
    assert type(caught.value) is expected


@pytest.mark.anyio
async def test_adapter_logs_no_payload_or_tax_code() -> None:
    """Whatever the adapter logs carries neither the content nor a tax code (mock transport)."""
    with capture_logs() as logs:
        async with _client(_Recorder(httpx.Response(201, json=RECEIPT))) as http:
            await build_runts_adapter(endpoint=ENDPOINT, http=http).deliver(runts_message())
    assert TAX_CODE not in repr(logs)


# --- the request and receipt validators --------------------------------------------------------


def _runts_contract():  # type: ignore[no-untyped-def]
    from adapters.openapi import load_openapi_contract

    return load_openapi_contract(repository_catalog().contract("runts", "v1"))


def _variants(value: Any) -> list[Any]:
    """`value` broken in one place at a time: each leaf retyped, emptied, nulled, lengthened,
    dropped, and an unknown key added to each object."""
    found: list[Any] = []
    if isinstance(value, dict):
        found.append({**value, "sconosciuto": 1})
        for key, child in value.items():
            found.append({k: v for k, v in value.items() if k != key})
            found.extend({**value, key: variant} for variant in _variants(child))
        return found
    return [12345, "", None, "x" * 300, [value], {"v": value}]


def test_validators_are_built_once_with_their_references_resolved() -> None:
    """One validator per operation and schema, kept; its `$ref`s replaced by their targets."""
    contract = _runts_contract()
    operation = contract.operation("IscrizioneEnte")
    assert contract.operation("IscrizioneEnte").request is operation.request
    for validator in (operation.request, *operation.receipts.values()):
        assert "$ref" not in json.dumps(validator.schema)


def test_inlined_references_judge_like_resolved_ones() -> None:
    """On every one-place break of a message and a receipt, the inlined schema reports the
    errors and the best match that resolving the references reports."""
    from jsonschema import Draft4Validator
    from jsonschema.exceptions import best_match

    from adapters.openapi import _pointer

    contract = _runts_contract()
    operation = contract.operation("IscrizioneEnte")
    checks = [(("requestBody", "content"), operation.request, runts_message().content),
              (("responses", "201", "content"), operation.receipts[201], RECEIPT)]
    def errors(validator, instance):  # type: ignore[no-untyped-def]
        return [(e.message, e.json_path, e.validator) for e in validator.iter_errors(instance)]

    def best(validator, instance):  # type: ignore[no-untyped-def]
        error = best_match(validator.iter_errors(instance))
        return error and (error.message, error.json_path)

    for where, inlined, valid in checks:
        pointer = _pointer("paths", "/v1/iscrizioni", "post", *where, "application/json", "schema")
        resolving = Draft4Validator({"$ref": f"{contract._base}#{pointer}"},
                                    registry=contract._registry,
                                    format_checker=Draft4Validator.FORMAT_CHECKER)
        assert inlined.is_valid(valid) and resolving.is_valid(valid)
        for instance in _variants(valid):
            assert errors(inlined, instance) == errors(resolving, instance)
            assert best(inlined, instance) == best(resolving, instance)


@pytest.mark.anyio
async def test_a_reused_validator_still_rejects_an_invalid_message() -> None:
    """Valid, invalid, valid again through one adapter: the kept validator judges each anew."""
    recorder = _Recorder(httpx.Response(201, json=RECEIPT), httpx.Response(201, json=RECEIPT))
    async with _client(recorder) as http:
        adapter = build_runts_adapter(endpoint=ENDPOINT, http=http)
        await adapter.deliver(runts_message())
        with pytest.raises(MessageRejectedAsInvalid, match="sezione"):
            await adapter.deliver(runts_message(sezione="circolo"))
        await adapter.deliver(runts_message())
    assert len(recorder.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((), AgencyUnreachable),  # `codice` only: the faultCode is not read, a 500 is retried
        (("faultCode",), AgencyRejected),
        (("fault.faultCode",), AgencyUnreachable),  # no such path in this body: the default
    ],
)
async def test_declared_body_fields_carry_the_agencys_code(fields, expected) -> None:
    """pagoPA `faultCode` in an error body picks the kind when the contract names the field."""
    reply = _problem(500, faultCode="PAA_PAGAMENTO_SCONOSCIUTO", faultString="sconosciuto")
    error = classify_http(await _through_mock(reply), fault_code_fields=fields,
                          fault_overrides={"PAA_PAGAMENTO_SCONOSCIUTO": "rejected"})
    assert type(error) is expected
