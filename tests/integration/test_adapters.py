"""Every agency adapter against the real simulators on loopback (no mocks on the wire)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from adapters.base import RetryPolicy, deliver_with_retries
from adapters.factory import ContractSet
from bootstrap import build_adapter
from domain.errors import (
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    MessageRejectedAsInvalid,
    OutcomeUnknown,
)
from domain.messages import OutgoingMessage
from tests.external import repository_catalog

AGENCIES = ["inps", "inail", "cciaa", "runts"]
NO_WAIT = RetryPolicy.without_waits(attempts=3)
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=2.0, pool=2.0)

#: Protocol numbers and references in each agency's format (docs/agency-contracts.md).
PROTOCOL = {
    "inps": re.compile(r"INPS\.[0-9]{4}\.[0-9]{4}\.[0-9]{7}"),
    "inail": re.compile(r"INAIL/[0-9]{4}/[0-9]{8}"),
    "cciaa": re.compile(r"MI/RI/[0-9]{4}/[0-9]{6}"),  # the chamber of the registered office
    "runts": re.compile(r"RUNTS-[0-9]{4}-[0-9]{7}"),
}
REFERENCES = {
    "inps": {},
    "inail": {"numeroPAT": re.compile(r"[0-9]{9}")},
    "cciaa": {"numeroREA": re.compile(r"MI-[0-9]{7}")},
    "runts": {"numeroRepertorio": re.compile(r"[0-9]{7}")},
}
OPERATION = {
    "inps": "IscrizioneAzienda",
    "inail": "AperturaPAT",
    "cciaa": "IscrizioneImpresa",
    "runts": "IscrizioneEnte",
}
LEGAL_REP = {"codiceFiscale": "RSSMRA80A01H501U", "nome": "Mario", "cognome": "Rossi"}


def _sede(cap: str) -> dict[str, str]:
    return {"indirizzo": "Via Dante 7", "codiceComune": "F205", "cap": cap, "provincia": "MI"}


def _content(agency: str, header: dict[str, Any], cap: str) -> dict[str, Any]:
    """The request element's content for `agency`, as docs/agency-contracts.md lays it out."""
    common = {"messageHeader": header, "codiceFiscale": "01234567890",
              "denominazione": "Rossi Costruzioni SRL"}
    if agency == "inps":
        return {**common, "partitaIva": "01234567890", "sede": _sede(cap),
                "legaleRappresentante": LEGAL_REP, "dataInizioAttivita": "2026-12-01",
                "ateco": ["41.20", "43.21.01"],
                "dipendenti": {"dipendente": [
                    {"codiceFiscale": "VRDLGU90B02F205X", "dataAssunzione": "2026-12-01",
                     "tipoContratto": "indeterminato"},
                    {"codiceFiscale": "BNCLRA95C43F205Y", "dataAssunzione": "2026-12-01",
                     "tipoContratto": "apprendistato"},
                ]}}
    if agency == "inail":
        return {**common, "sede": _sede(cap), "legaleRappresentante": LEGAL_REP,
                "dataInizioAttivita": "2026-12-01", "ateco": ["41.20"], "numeroDipendenti": 2}
    if agency == "cciaa":
        return {**common, "partitaIva": "01234567890", "formaGiuridica": "SRL",
                "sede": _sede(cap), "pec": "rossicostruzioni@pec.it", "ateco": ["41.20"],
                "dataInizioAttivita": "2026-12-01", "legaleRappresentante": LEGAL_REP,
                "impresaSociale": False}
    return {"messageHeader": header, "ente": {
        "codiceFiscale": "97012345678", "denominazione": "Amici del Naviglio APS",
        "sezione": "aps", "sede": _sede(cap), "pec": "amicidelnaviglio@pec.it",
        "legaleRappresentante": LEGAL_REP}}


def build_message(agency: str, *, cap: str = "20121") -> OutgoingMessage:
    """A fresh message (new id) for `agency`; `cap` lets a test break the agency schema."""
    message_id = uuid.uuid4().hex
    filing_reference = "CRV-2026-000777"
    operation = OPERATION[agency]
    header = {
        "messageId": message_id,
        "filingReference": filing_reference,
        "filingKind": "runts_registration" if agency == "runts" else "business_start",
        "operation": operation,
        "portal": "demo",
        "declarant": {"taxCode": "RSSMRA80A01H501U", "role": "legal_representative"},
        "sentAt": "2026-11-28T09:00:00+00:00",
    }
    return OutgoingMessage(message_id, f"dlv-{agency}", filing_reference, agency, operation,
                           _content(agency, header, cap))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def simulators_handle() -> Iterator[Any]:
    """The four simulators, started once for this module and stopped at its end."""
    from simulators.launcher import start_simulators

    handle = start_simulators()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sims(simulators_handle: Any) -> Any:
    """The module's simulators with empty ledgers and no faults."""
    simulators_handle.reset()
    return simulators_handle


def _endpoint(sims: Any, agency: str) -> str:
    return sims.urls[agency] if agency == "runts" else sims.soap_endpoint(agency)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        yield client


def _adapter(sims: Any, agency: str, http: httpx.AsyncClient, **overrides: str) -> Any:
    return build_adapter(ContractSet(repository_catalog()), agency, endpoint=_endpoint(sims, agency), http=http,
                         fault_overrides=overrides)


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_valid_message_gets_a_protocol_number(sims: Any, http: httpx.AsyncClient,
                                                    agency: str) -> None:
    """Each adapter delivers a valid message and reads the receipt in the agency's format."""
    message = build_message(agency)
    receipt = await _adapter(sims, agency, http).deliver(message)
    assert PROTOCOL[agency].fullmatch(receipt.protocol_number), receipt.protocol_number
    assert receipt.outcome == "ACQUISITA" and receipt.protocolled_at
    assert receipt.references.keys() == REFERENCES[agency].keys()
    for name, pattern in REFERENCES[agency].items():
        assert pattern.fullmatch(receipt.references[name])
    effects = sims.ledger(agency)["effects"]
    assert [e["messageId"] for e in effects] == [message.message_id]
    assert effects[0]["protocollo"] == receipt.protocol_number


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_repeat_gets_the_first_receipt_and_no_second_effect(
    sims: Any, http: httpx.AsyncClient, agency: str
) -> None:
    """The stable message id lets the agency drop a repeat: same protocol, one effect."""
    adapter = _adapter(sims, agency, http)
    message = build_message(agency)
    first = await adapter.deliver(message)
    again = await adapter.deliver(message)
    assert again.protocol_number == first.protocol_number
    effects = sims.ledger(agency)["effects"]
    assert len(effects) == 1 and effects[0]["duplicates"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_business_rejection_is_agency_rejected(sims: Any, http: httpx.AsyncClient,
                                                     agency: str) -> None:
    """A reject rule comes back as AgencyRejected with the agency's code and reason."""
    sims.set_faults(agency, [{"operation": "*", "kind": "reject", "code": "R001",
                              "text": "Soggetto gia' registrato"}])
    with pytest.raises(AgencyRejected) as caught:
        await _adapter(sims, agency, http).deliver(build_message(agency))
    assert caught.value.code == "R001"
    assert caught.value.text == "Soggetto gia' registrato"
    assert caught.value.agency == agency
    assert sims.ledger(agency)["effects"] == []


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_two_503_then_ok_succeeds_on_the_third_try(sims: Any, http: httpx.AsyncClient,
                                                         agency: str) -> None:
    """deliver_with_retries rides out two 503s; the agency records exactly one effect."""
    sims.set_faults(agency, [{"operation": "*", "kind": "http_status", "status": 503,
                              "times": 2}])
    message = build_message(agency)
    result = await deliver_with_retries(_adapter(sims, agency, http), message, NO_WAIT)
    assert result.receipt is not None, result.error
    assert [type(t.error) for t in result.tries] == [AgencyUnreachable, AgencyUnreachable,
                                                     type(None)]
    ledger = sims.ledger(agency)
    assert [e["messageId"] for e in ledger["effects"]] == [message.message_id]
    assert ledger["effects"][0]["duplicates"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_schema_violation_never_reaches_the_agency(sims: Any, http: httpx.AsyncClient,
                                                         agency: str) -> None:
    """A CAP of four digits fails the agency schema in the hub: the simulator sees no call."""
    with pytest.raises(MessageRejectedAsInvalid):
        await _adapter(sims, agency, http).deliver(build_message(agency, cap="2012"))
    ledger = sims.ledger(agency)
    assert ledger["calls"] == 0 and ledger["effects"] == []


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_read_timeout_is_outcome_unknown(sims: Any, agency: str) -> None:
    """A reply slower than the client's read timeout leaves the outcome unknown."""
    sims.set_faults(agency, [{"operation": "*", "kind": "timeout", "delay_ms": 5_000}])
    short = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    async with httpx.AsyncClient(timeout=short) as http:
        with pytest.raises(OutcomeUnknown):
            await _adapter(sims, agency, http).deliver(build_message(agency))


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_lost_reply_is_retried_with_the_same_id_without_a_second_effect(
    sims: Any, agency: str
) -> None:
    """The agency protocols, the reply is lost; the retry gets the first receipt back."""
    sims.set_faults(agency, [{"operation": "*", "kind": "timeout", "delay_ms": 5_000,
                              "times": 1, "after_effect": True}])
    short = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)
    message = build_message(agency)
    async with httpx.AsyncClient(timeout=short) as http:
        result = await deliver_with_retries(_adapter(sims, agency, http), message, NO_WAIT)
    assert result.receipt is not None, result.error
    assert isinstance(result.tries[0].error, OutcomeUnknown)
    effects = sims.ledger(agency)["effects"]
    assert len(effects) == 1 and effects[0]["duplicates"] == 1
    assert effects[0]["protocollo"] == result.receipt.protocol_number


@pytest.mark.anyio
@pytest.mark.parametrize("agency", ["inps", "inail", "cciaa"])
async def test_server_fault_is_transient(sims: Any, http: httpx.AsyncClient, agency: str) -> None:
    """A Server/Receiver fault is a technical failure: retried, not recorded as a rejection."""
    sims.set_faults(agency, [{"operation": "*", "kind": "soap_fault", "times": 1}])
    message = build_message(agency)
    result = await deliver_with_retries(_adapter(sims, agency, http), message, NO_WAIT)
    assert isinstance(result.tries[0].error, AgencyUnreachable)
    assert result.receipt is not None and len(result.tries) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("agency", AGENCIES)
async def test_long_retry_after_stops_in_process_retries(sims: Any, http: httpx.AsyncClient,
                                                         agency: str) -> None:
    """429 with Retry-After 30: one try, the throttle returned for the persistent schedule."""
    sims.set_faults(agency, [{"operation": "*", "kind": "http_status", "status": 429,
                              "retry_after": 30}])
    result = await deliver_with_retries(_adapter(sims, agency, http), build_message(agency),
                                        RetryPolicy())
    assert isinstance(result.error, AgencyThrottled) and result.error.retry_after == 30.0
    assert len(result.tries) == 1 and sims.ledger(agency)["calls"] == 1
