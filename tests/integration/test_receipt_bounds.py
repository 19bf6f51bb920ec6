"""Receipts are bounded before they are stored (issue 10, item 5), against real loopback agencies.

A misbehaving agency (tests/agency_server.py) answers the real adapters with valid but
oversized replies: a 10 MB receipt, a 100,000-character protocol number, too many or too long
references. Each is an `AgencyProtocolError` naming the reason, so the worker retries it and
then parks the delivery undeliverable (tests/e2e/test_reply_bounds.py); the same readers
refuse an oversized callback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from service.delivery_port import AgencyAdapter
from adapters.contracts import load_agency_catalog
from adapters.factory import ContractSet, build_contract_adapter
from bootstrap import build_adapter
from config.settings import PROJECT_ROOT
from domain.errors import AgencyProtocolError
from domain.messages import OutgoingMessage
from tests.agency_server import Recorded, Reply, agency_server
from tests.integration.test_adapters import build_message
from tests.external import EXTERNAL_DIR, repository_catalog

INAIL_NS = "urn:crocevia:agency:inail:v1"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TIMEOUT = httpx.Timeout(connect=2.0, read=10.0, write=5.0, pool=5.0)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """httpx's own transport: it streams, so the hub can stop reading an oversized reply."""
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def _message_id(request: Recorded) -> str:
    root = etree.fromstring(request.body)
    return root.findtext(f".//{{urn:crocevia:envelope:v1}}messageId") or root.findtext(
        ".//{*}messageId") or ""


def inail_receipt(protocol: str = "INAIL/2026/00000001", references: int = 1, *,
                  reference_value: str = "000000001", motivo: str = "",
                  stream: bool = False) -> Callable[[Recorded], Reply]:
    """An INAIL agency answering a schema-valid receipt of the given shape."""

    def answer(request: Recorded) -> Reply:
        env = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11, "i": INAIL_NS})
        body = etree.SubElement(env, f"{{{SOAP11}}}Body")
        ricevuta = etree.SubElement(etree.SubElement(body, f"{{{INAIL_NS}}}AperturaPATResponse"),
                                    f"{{{INAIL_NS}}}ricevuta")
        for name, value in (("messageId", _message_id(request)), ("protocollo", protocol),
                            ("dataProtocollo", "2026-12-04T10:00:00Z"), ("esito", "ACQUISITA")):
            etree.SubElement(ricevuta, f"{{{INAIL_NS}}}{name}").text = value
        for i in range(references):
            etree.SubElement(ricevuta, f"{{{INAIL_NS}}}riferimento",
                             nome="numeroPAT" if i == 0 else f"rif{i:06d}", valore=reference_value)
        if motivo:
            etree.SubElement(ricevuta, f"{{{INAIL_NS}}}motivo").text = motivo
        content = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
        return Reply(200, content, "text/xml; charset=utf-8", stream=stream)

    return answer


async def _deliver_inail(answer: Callable[[Recorded], Reply], http: httpx.AsyncClient,
                         agencies_dir: Path | None = None) -> Any:
    with agency_server(answer, "/soap") as agency:
        if agencies_dir is None:
            adapter: AgencyAdapter = build_adapter(ContractSet(repository_catalog()), "inail", endpoint=agency.url,
                                                   http=http)
        else:
            catalog = load_agency_catalog(agencies_dir, project_root=PROJECT_ROOT,
                                          external_dir=EXTERNAL_DIR)
            adapter = build_contract_adapter(catalog.contract("inail"), endpoint=agency.url, http=http)
        return await adapter.deliver(build_message("inail"))


@pytest.mark.anyio
async def test_a_well_formed_receipt_still_goes_through(http: httpx.AsyncClient) -> None:
    """The bounds leave an ordinary receipt alone (the loopback agency itself is sound)."""
    receipt = await _deliver_inail(inail_receipt(), http)
    assert receipt.protocol_number == "INAIL/2026/00000001"
    assert receipt.references == {"numeroPAT": "000000001"}


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["content-length", "streamed"])
async def test_a_10_mb_receipt_is_refused_before_it_is_parsed(http: httpx.AsyncClient,
                                                              stream: bool) -> None:
    """A valid 10 MB receipt with 174,763 references is a protocol error, not a receipt."""
    answer = inail_receipt(references=174_763, reference_value="x" * 8, stream=stream)
    with pytest.raises(AgencyProtocolError) as caught:
        await _deliver_inail(answer, http)
    assert caught.value.code == "REPLY_TOO_LARGE"
    assert "1048576" in caught.value.text


@pytest.mark.anyio
async def test_a_100000_character_protocol_number_is_a_protocol_error(http: httpx.AsyncClient) -> None:
    """The protocol number's column is 64 characters: a longer one is refused, with the reason."""
    with pytest.raises(AgencyProtocolError) as caught:
        await _deliver_inail(inail_receipt(protocol="7" * 100_000), http)
    assert caught.value.code == "PROTOCOL_NUMBER_TOO_LONG"
    assert "100000 characters" in caught.value.text and len(str(caught.value)) < 300


@pytest.mark.anyio
@pytest.mark.parametrize(("reply", "code"), [
    ({"references": 65}, "TOO_MANY_REFERENCES"),
    ({"reference_value": "9" * 257}, "REFERENCE_TOO_LONG"),
    ({"protocol": "INAIL/2026/0000\x7f001"}, "PROTOCOL_NUMBER_INVALID"),
    ({"motivo": "m" * 40_000}, "RECEIPT_TOO_LARGE"),
], ids=["references", "reference-size", "characters", "receipt-size"])
async def test_default_bounds_refuse_what_no_receipt_needs(http: httpx.AsyncClient,
                                                           reply: dict[str, Any], code: str) -> None:
    """Without configuration: 64 references of 256 characters, printable protocol numbers, 32 KiB."""
    with pytest.raises(AgencyProtocolError) as caught:
        await _deliver_inail(inail_receipt(**reply), http)
    assert caught.value.code == code


def _inail_file(tmp_path: Path, limits: str) -> Path:
    directory = tmp_path / "agencies"
    directory.mkdir()
    shutil.copy(PROJECT_ROOT / "config" / "agencies" / "inail.toml", directory / "inail.toml")
    with (directory / "inail.toml").open("a") as fh:
        fh.write(f"\n[contracts.v1.receipt.limits]\n{limits}\n")
    return directory


@pytest.mark.anyio
@pytest.mark.parametrize(("reply", "code"), [
    ({"protocol": "INAIL-2026-00000001"}, "PROTOCOL_NUMBER_INVALID"),
    ({"protocol": "INAIL/2026/000000001"}, "PROTOCOL_NUMBER_TOO_LONG"),
    ({"references": 3}, "TOO_MANY_REFERENCES"),
    ({"reference_value": "0123456789"}, "REFERENCE_TOO_LONG"),
    ({"motivo": "m" * 600}, "RECEIPT_TOO_LARGE"),
    ({"references": 2, "reference_value": "x" * 9, "stream": True}, None),
], ids=["pattern", "length", "references", "reference-size", "receipt-size", "within"])
async def test_the_agency_file_sets_each_bound(tmp_path: Path, http: httpx.AsyncClient,
                                               reply: dict[str, Any], code: str | None) -> None:
    """`[contracts.<v>.receipt.limits]` narrows every bound for the agency."""
    directory = _inail_file(tmp_path, (
        'protocol_number_pattern = "INAIL/[0-9]{4}/[0-9]{8,9}"\nprotocol_number_max_length = 19\n'
        "max_references = 2\nreference_max_length = 9\nmax_receipt_bytes = 512\n"
        "max_reply_bytes = 4096\n"))
    if code is None:
        receipt = await _deliver_inail(inail_receipt(**reply), http, directory)
        assert len(receipt.references) == 2
        return
    with pytest.raises(AgencyProtocolError) as caught:
        await _deliver_inail(inail_receipt(**reply), http, directory)
    assert caught.value.code == code


@pytest.mark.anyio
async def test_the_reply_cap_is_the_agency_files(tmp_path: Path, http: httpx.AsyncClient) -> None:
    """A reply of a few KiB is too large for an agency whose file says 1 KiB."""
    directory = _inail_file(tmp_path, "max_reply_bytes = 1024\n")
    with pytest.raises(AgencyProtocolError) as caught:
        await _deliver_inail(inail_receipt(references=30), http, directory)
    assert caught.value.code == "REPLY_TOO_LARGE" and "1024" in caught.value.text


def _runts_body(message_id: str, references: int, protocol: str = "RUNTS-2026-0000001") -> bytes:
    refs = {"numeroRepertorio": "0000001", **{f"r{i:06d}": "v" for i in range(references)}}
    return json.dumps({"messageId": message_id, "protocollo": protocol,
                       "dataProtocollo": "2026-12-04T10:00:00Z", "esito": "ACQUISITA",
                       "riferimenti": refs}).encode()


@pytest.mark.anyio
@pytest.mark.parametrize(("references", "code"), [(100, "TOO_MANY_REFERENCES"),
                                                  (120_000, "REPLY_TOO_LARGE")])
async def test_an_oversized_callback_is_refused_by_the_same_reader(http: httpx.AsyncClient,
                                                                   references: int, code: str) -> None:
    """A late outcome POSTed to the hub (NONBLOCK_PUSH) meets the same bounds as a reply."""
    adapter = build_adapter(ContractSet(repository_catalog()), "runts", endpoint="http://127.0.0.1:9", http=http)
    message: OutgoingMessage = build_message("runts")
    ok = adapter.read_result("IscrizioneEnte", "application/json",
                             _runts_body(message.message_id, 1), message.message_id)
    assert ok.protocol_number == "RUNTS-2026-0000001"
    with pytest.raises(AgencyProtocolError) as caught:
        adapter.read_result("IscrizioneEnte", "application/json",
                            _runts_body(message.message_id, references), message.message_id)
    assert caught.value.code == code


@pytest.mark.anyio
async def test_a_rest_receipt_with_too_many_references_is_a_protocol_error(http: httpx.AsyncClient) -> None:
    """REST (RUNTS): a 201 whose `riferimenti` object is longer than allowed is refused."""

    def answer(request: Recorded) -> Reply:
        return Reply(201, _runts_body(request.headers["idempotency-key"], 500))

    with agency_server(answer) as agency:
        adapter = build_adapter(ContractSet(repository_catalog()), "runts", endpoint=agency.url, http=http)
        with pytest.raises(AgencyProtocolError) as caught:
            await adapter.deliver(build_message("runts"))
    assert caught.value.code == "TOO_MANY_REFERENCES"
