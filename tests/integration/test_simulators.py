"""The agency simulators against their own contracts, over real HTTP on loopback."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import yaml
import zeep
from lxml import etree
from zeep.transports import Transport

from simulators.launcher import SimulatorHandle, start_simulators

ROOT = Path(__file__).resolve().parents[2]
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SETTINGS = zeep.Settings(strict=True, forbid_dtd=True)

#: agency -> (SOAP version, binding QName)
SOAP_AGENCIES = {
    "inps": ("1.2", "{urn:crocevia:agency:inps:v1}InpsBinding"),
    "inail": ("1.1", "{urn:crocevia:agency:inail:v1}InailBinding"),
    "cciaa": ("1.1", "{urn:crocevia:agency:cciaa:v1}RegistroImpreseBinding"),
}
#: agency -> (protocol number pattern, reference name, reference pattern)
FORMATS = {
    "inps": (r"INPS\.[0-9]{4}\.[0-9]{4}\.[0-9]{7}", None, None),
    "inail": (r"INAIL/[0-9]{4}/[0-9]{8}", "numeroPAT", r"[0-9]{9}"),
    "cciaa": (r"MI/RI/[0-9]{4}/[0-9]{6}", "numeroREA", r"MI-[0-9]{7}"),
    "runts": (r"RUNTS-[0-9]{4}-[0-9]{7}", "numeroRepertorio", r"[0-9]{7}"),
}
OPERATIONS = [
    ("inps", "IscrizioneAzienda"),
    ("inps", "RichiestaDurc"),
    ("inps", "DichiarazioneResponsabilita"),
    ("inail", "AperturaPAT"),
    ("cciaa", "IscrizioneImpresa"),
]
FIRST_OPERATION = {
    "inps": "IscrizioneAzienda", "inail": "AperturaPAT", "cciaa": "IscrizioneImpresa",
}

PERSONA = {"codiceFiscale": "RSSMRA80A01H501U", "nome": "Mario", "cognome": "Rossi"}
SEDE_RM = {
    "indirizzo": "Via del Corso 1", "codiceComune": "H501", "cap": "00186", "provincia": "RM",
}
SEDE_MI = {"indirizzo": "Via Dante 7", "codiceComune": "F205", "cap": "20121", "provincia": "MI"}
BUSINESS_CF = "01234567890"

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<e:Envelope xmlns:e="%s"><e:Body><x>&lol9;</x></e:Body></e:Envelope>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<e:Envelope xmlns:e="%s"><e:Body><x>&xxe;</x></e:Body></e:Envelope>"""


# ----- fixtures -----


@pytest.fixture(scope="module", autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fail any connection that would leave the machine."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise RuntimeError(f"test tried to reach {address}")
        return real_connect(self, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]
    yield
    socket.socket.connect = real_connect  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def sims() -> Iterator[SimulatorHandle]:
    handle = start_simulators()
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _clean(sims: SimulatorHandle) -> None:
    sims.reset()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment for loopback
    return session


def wsdl_path(agency: str) -> str:
    return str(ROOT / "schemas" / "agencies" / agency / "v1" / f"{agency}.wsdl")


def xsd_schema(agency: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(wsdl_path(agency).replace(".wsdl", ".xsd")))


def zeep_client(agency: str, timeout: float = 5.0) -> zeep.Client:
    transport = Transport(session=_session(), timeout=timeout, operation_timeout=timeout)
    return zeep.Client(wsdl_path(agency), settings=SETTINGS, transport=transport)


def service(sims: SimulatorHandle, agency: str, timeout: float = 5.0) -> Any:
    """A zeep service proxy on the stored WSDL, pointed at the simulator (as the hub does)."""
    client = zeep_client(agency, timeout)
    return client.create_service(SOAP_AGENCIES[agency][1], sims.soap_endpoint(agency))


# ----- messages -----


def header(operation: str, kind: str = "business_start") -> dict[str, Any]:
    return {
        "messageId": uuid.uuid4().hex,
        "filingReference": "CRV-2026-000042",
        "filingKind": kind,
        "operation": operation,
        "portal": "portale-test",
        "declarant": {"taxCode": "RSSMRA80A01H501U", "role": "legal_representative"},
        "sentAt": datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc),
    }


def payload(operation: str, **overrides: Any) -> dict[str, Any]:
    """A valid request for `operation`, as zeep keyword arguments."""
    content: dict[str, dict[str, Any]] = {
        "IscrizioneAzienda": {
            "codiceFiscale": BUSINESS_CF, "partitaIva": BUSINESS_CF,
            "denominazione": "Rossi Software S.r.l.", "sede": SEDE_RM,
            "legaleRappresentante": PERSONA, "dataInizioAttivita": date(2026, 12, 1),
            "ateco": ["62.01", "62.02.0"],
            "dipendenti": {"dipendente": [{
                "codiceFiscale": "VRDLGU85B02F205X", "dataAssunzione": date(2026, 12, 1),
                "tipoContratto": "indeterminato",
            }]},
            "numeroREA": "RM-1234567",
        },
        "RichiestaDurc": {
            "codiceFiscale": BUSINESS_CF, "denominazione": "Rossi Software S.r.l.",
            "motivo": "appalto_pubblico",
        },
        "DichiarazioneResponsabilita": {
            "codiceFiscale": BUSINESS_CF, "denominazione": "Rossi Software S.r.l.",
            "dichiarante": {**PERSONA, "ruolo": "legale rappresentante"},
            "tipoDichiarazione": "regolarità contributiva",
            "testo": "Il sottoscritto dichiara di essere in regola con i versamenti.",
            "periodoRiferimento": "2026-11",
        },
        "AperturaPAT": {
            "codiceFiscale": BUSINESS_CF, "denominazione": "Rossi Software S.r.l.",
            "sede": SEDE_RM, "legaleRappresentante": PERSONA,
            "dataInizioAttivita": date(2026, 12, 1), "ateco": ["62.01"], "numeroDipendenti": 3,
        },
        "IscrizioneImpresa": {
            "codiceFiscale": BUSINESS_CF, "partitaIva": BUSINESS_CF,
            "denominazione": "Rossi Software S.r.l.", "formaGiuridica": "SRL", "sede": SEDE_MI,
            "pec": "rossisoftware@pec.it", "ateco": ["62.01"],
            "dataInizioAttivita": date(2026, 12, 1), "legaleRappresentante": PERSONA,
            "impresaSociale": False,
        },
    }
    return {"messageHeader": header(operation), **content[operation], **overrides}


def runts_body(**ente: Any) -> dict[str, Any]:
    head = header("IscrizioneEnte", "runts_registration")
    head["sentAt"] = head["sentAt"].isoformat()
    return {
        "messageHeader": head,
        "ente": {
            "codiceFiscale": "97123456789", "denominazione": "Amici del Quartiere ODV",
            "sezione": "odv", "sede": SEDE_RM, "pec": "amici@pec.it",
            "legaleRappresentante": PERSONA, **ente,
        },
    }


def post_runts(sims: SimulatorHandle, http: httpx.Client, body: dict[str, Any],
               key: str | None = None, timeout: float | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key or body["messageHeader"]["messageId"]}
    extra = {"timeout": timeout} if timeout else {}
    return http.post(f"{sims.urls['runts']}/v1/iscrizioni", json=body, headers=headers, **extra)


def raw_request(agency: str, operation: str, **overrides: Any) -> etree._Element:
    """The envelope zeep would send, to be tampered with before posting by hand."""
    client = zeep_client(agency)
    return client.create_message(client.service, operation, **payload(operation, **overrides))


def post_soap(sims: SimulatorHandle, http: httpx.Client, agency: str, data: bytes,
              operation: str | None = None, version: str | None = None,
              action: str | None = None) -> httpx.Response:
    """POST bytes to /soap with the headers of `version` (the agency's own by default)."""
    version = version or SOAP_AGENCIES[agency][0]
    operation = operation or FIRST_OPERATION[agency]
    expected = f"urn:crocevia:agency:{agency}:v1/{operation}"
    if version == "1.1":
        headers = {"Content-Type": "text/xml; charset=utf-8",
                   "SOAPAction": f'"{action if action is not None else expected}"'}
    else:
        media = f'application/soap+xml; charset=utf-8; action="{action or expected}"'
        headers = {"Content-Type": media}
    return http.post(sims.soap_endpoint(agency), content=data, headers=headers)


def fault_of(response: httpx.Response) -> dict[str, str | None]:
    """faultcode, faultstring and Rifiuto codice of a SOAP 1.1 or 1.2 fault."""
    doc = etree.fromstring(response.content)
    if doc.tag == f"{{{SOAP11}}}Envelope":
        fault = doc.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
        code, text = fault.findtext("faultcode"), fault.findtext("faultstring")
    else:
        fault = doc.find(f"{{{SOAP12}}}Body/{{{SOAP12}}}Fault")
        code = fault.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value")
        text = fault.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text")
    return {"code": code, "text": text, "codice": fault.findtext(".//{*}Rifiuto/{*}codice")}


def assert_receipt(agency: str, protocol: str, references: dict[str, str]) -> None:
    pattern, name, ref_pattern = FORMATS[agency]
    assert re.fullmatch(pattern, protocol), protocol
    if name:
        assert re.fullmatch(ref_pattern, references[name]), references


def references_of(receipt: Any) -> dict[str, str]:
    return {ref.nome: ref.valore for ref in receipt.riferimento}


# ----- contracts -----


@pytest.mark.parametrize(("agency", "operation"), OPERATIONS)
def test_zeep_builds_schema_valid_requests(agency: str, operation: str) -> None:
    """Every operation of the stored WSDLs yields a Body child valid against the agency XSD."""
    envelope = raw_request(agency, operation)
    ns = SOAP12 if SOAP_AGENCIES[agency][0] == "1.2" else SOAP11
    body = envelope.find(f"{{{ns}}}Body")
    assert len(body) == 1
    xsd_schema(agency).assertValid(body[0])


# ----- acceptance, numbering, duplicates -----


@pytest.mark.parametrize(("agency", "operation"), OPERATIONS)
def test_soap_agency_protocols_a_valid_message(
    sims: SimulatorHandle, agency: str, operation: str
) -> None:
    """A valid message gets a receipt with a protocol number in the agency's format."""
    kwargs = payload(operation)
    receipt = getattr(service(sims, agency), operation)(**kwargs)
    assert receipt.messageId == kwargs["messageHeader"]["messageId"]
    if operation == "RichiestaDurc":  # DURC On Line decides at once, and numbers its own way
        assert receipt.esito == "ACCOLTA" and re.fullmatch(r"INPS_[0-9]{8}", receipt.protocollo)
        assert references_of(receipt)["esitoDurc"] in {"REGOLARE", "IRREGOLARE"}
    else:
        assert receipt.esito == "ACQUISITA"
        assert_receipt(agency, receipt.protocollo, references_of(receipt))
    [effect] = sims.ledger(agency)["effects"]
    assert effect["protocollo"] == receipt.protocollo
    assert effect["operation"] == operation and effect["duplicates"] == 0


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_soap_receipt_is_valid_against_the_agency_xsd(
    sims: SimulatorHandle, http: httpx.Client, agency: str
) -> None:
    """The response Body child validates against the agency XSD, not only zeep's reading of it."""
    data = etree.tostring(raw_request(agency, FIRST_OPERATION[agency]))
    response = post_soap(sims, http, agency, data)
    assert response.status_code == 200
    media = "application/soap+xml" if SOAP_AGENCIES[agency][0] == "1.2" else "text/xml"
    assert response.headers["content-type"].startswith(media)
    ns = SOAP12 if SOAP_AGENCIES[agency][0] == "1.2" else SOAP11
    answer = etree.fromstring(response.content).find(f"{{{ns}}}Body")[0]
    xsd_schema(agency).assertValid(answer)


def test_runts_protocols_a_valid_message(sims: SimulatorHandle, http: httpx.Client) -> None:
    """RUNTS answers 201 with a receipt and a numeroRepertorio."""
    body = runts_body()
    response = post_runts(sims, http, body)
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["esito"] == "ACQUISITA"
    assert receipt["messageId"] == body["messageHeader"]["messageId"]
    assert_receipt("runts", receipt["protocollo"], receipt["riferimenti"])
    assert [e["protocollo"] for e in sims.ledger("runts")["effects"]] == [receipt["protocollo"]]


def test_cciaa_numbers_by_province_of_the_sede(sims: SimulatorHandle) -> None:
    """The chamber of the registered office's province numbers the protocol and the REA."""
    proxy = service(sims, "cciaa")
    receipt = proxy.IscrizioneImpresa(**payload("IscrizioneImpresa", sede=SEDE_RM))
    assert receipt.protocollo.startswith("RM/RI/")
    assert references_of(receipt)["numeroREA"].startswith("RM-")


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_soap_repeated_message_id_returns_first_receipt(sims: SimulatorHandle, agency: str) -> None:
    """A repeat gets the first protocol number; the ledger keeps one effect, duplicates=1."""
    proxy, operation = service(sims, agency), FIRST_OPERATION[agency]
    kwargs = payload(operation)
    first = getattr(proxy, operation)(**kwargs)
    again = getattr(proxy, operation)(**kwargs)
    assert again.protocollo == first.protocollo
    assert references_of(again) == references_of(first)
    [effect] = sims.ledger(agency)["effects"]
    assert effect["duplicates"] == 1


def test_runts_repeated_message_id_returns_first_receipt(
    sims: SimulatorHandle, http: httpx.Client
) -> None:
    """A repeat gets 200 and the first receipt; the ledger keeps one effect, duplicates=1."""
    body = runts_body()
    first = post_runts(sims, http, body)
    again = post_runts(sims, http, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    [effect] = sims.ledger("runts")["effects"]
    assert effect["duplicates"] == 1


# ----- refusals of bad input -----


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_soap_schema_violation_is_a_client_fault(
    sims: SimulatorHandle, http: httpx.Client, agency: str
) -> None:
    """A message that fails the XSD gets Client/Sender with codice SCHEMA and no effect."""
    envelope = raw_request(agency, FIRST_OPERATION[agency])
    envelope.find(".//{*}codiceFiscale").text = "not-a-tax-code"
    response = post_soap(sims, http, agency, etree.tostring(envelope))
    fault = fault_of(response)
    if SOAP_AGENCIES[agency][0] == "1.2":
        assert (response.status_code, fault["code"]) == (400, "env:Sender")
    else:
        assert (response.status_code, fault["code"]) == (500, "soap:Client")
    assert fault["codice"] == "SCHEMA"
    ledger = sims.ledger(agency)
    assert ledger["effects"] == [] and ledger["rejected"] == []
    assert [entry["codice"] for entry in ledger["invalid"]] == ["SCHEMA"]


def test_runts_schema_violation_is_a_400_problem(sims: SimulatorHandle, http: httpx.Client) -> None:
    """A body that fails the JSON schema gets 400 problem+json and no effect."""
    response = post_runts(sims, http, runts_body(sezione="club_del_libro"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["codice"] == "SCHEMA"
    assert sims.ledger("runts")["effects"] == []


@pytest.mark.parametrize(
    ("data", "codice"),
    [
        (b"{not json", "JSON"),
        (json.dumps([1, 2]).encode(), "SCHEMA"),
        (b"[" * 1000 + b"]" * 1000, "JSON"),  # deeper than Python's recursion limit
    ],
    ids=["malformed", "array", "deep"],
)
def test_runts_refuses_what_is_not_a_request(
    sims: SimulatorHandle, http: httpx.Client, data: bytes, codice: str
) -> None:
    """Malformed, non-object and absurdly nested JSON are 400s, never 500s."""
    sims.set_faults("runts", [{"kind": "latency", "delay_ms": 1, "match": {"x": "y"}}])
    response = http.post(
        f"{sims.urls['runts']}/v1/iscrizioni", content=data,
        headers={"Content-Type": "application/json", "Idempotency-Key": "0" * 32},
    )
    assert (response.status_code, response.json()["codice"]) == (400, codice)


def test_runts_idempotency_key_must_be_the_message_id(
    sims: SimulatorHandle, http: httpx.Client
) -> None:
    """The Idempotency-Key header repeats the messageId, or the request is refused."""
    response = post_runts(sims, http, runts_body(), key="f" * 32)
    assert (response.status_code, response.json()["codice"]) == (400, "IDEMPOTENCY_KEY")


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
@pytest.mark.parametrize("document", [BOMB, XXE], ids=["billion-laughs", "xxe"])
def test_soap_refuses_dtds_without_crashing(
    sims: SimulatorHandle, http: httpx.Client, agency: str, document: bytes
) -> None:
    """Entity bombs and external entities are refused fast with codice XML; the server lives on."""
    ns = SOAP12 if SOAP_AGENCIES[agency][0] == "1.2" else SOAP11
    started = time.monotonic()
    response = post_soap(sims, http, agency, document % ns.encode())
    assert time.monotonic() - started < 5
    assert response.status_code in (400, 500)
    assert fault_of(response)["codice"] == "XML"
    assert b"root:" not in response.content
    assert http.get(f"{sims.urls[agency]}/_sim/health").json()["status"] == "ok"
    assert sims.ledger(agency)["effects"] == []


def test_soap_refuses_oversized_and_garbage_bodies(
    sims: SimulatorHandle, http: httpx.Client
) -> None:
    """Bodies over the size cap and non-XML bodies are Client faults, never 500 crashes."""
    huge = b"<a>" + b"x" * 2_000_000 + b"</a>"
    for data in (huge, b"\x00\xffnot xml", b""):
        response = post_soap(sims, http, "inail", data)
        assert response.status_code == 500  # SOAP 1.1 sends every fault with 500 (§6.2)
        fault = fault_of(response)
        assert (fault["code"], fault["codice"]) == ("soap:Client", "XML")


@pytest.mark.parametrize(("agency", "wrong"), [("inps", "1.1"), ("inail", "1.2")])
def test_wrong_soap_version_is_a_version_mismatch(
    sims: SimulatorHandle, http: httpx.Client, agency: str, wrong: str
) -> None:
    """An envelope of the other SOAP version gets a SOAP 1.1 VersionMismatch fault."""
    ns = SOAP11 if wrong == "1.1" else SOAP12
    data = f'<e:Envelope xmlns:e="{ns}"><e:Body/></e:Envelope>'.encode()
    response = post_soap(sims, http, agency, data, version=wrong)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/xml")
    doc = etree.fromstring(response.content)
    assert doc.findtext(f".//{{{SOAP11}}}Fault/faultcode") == "soap:VersionMismatch"
    upgrade = doc.find(f"{{{SOAP11}}}Header/{{{SOAP12}}}Upgrade")
    assert (upgrade is not None) == (agency == "inps")


def test_soap_action_naming_another_operation_is_refused(
    sims: SimulatorHandle, http: httpx.Client
) -> None:
    """A SOAPAction that does not match the body's operation is a Client fault ACTION."""
    data = etree.tostring(raw_request("inail", "AperturaPAT"))
    response = post_soap(sims, http, "inail", data, action="urn:crocevia:agency:inail:v1/Altro")
    assert fault_of(response)["codice"] == "ACTION"
    assert sims.ledger("inail")["effects"] == []


# ----- faults on demand -----


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_http_status_fault_answers_a_gateway_page(
    sims: SimulatorHandle, http: httpx.Client, agency: str
) -> None:
    """`http_status` 503 with Retry-After, no SOAP, no effect; zeep sees a TransportError."""
    sims.set_faults(agency, [{"kind": "http_status", "status": 503, "retry_after": 2, "times": 2}])
    data = etree.tostring(raw_request(agency, FIRST_OPERATION[agency]))
    response = post_soap(sims, http, agency, data)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(zeep.exceptions.TransportError) as caught:
        getattr(service(sims, agency), FIRST_OPERATION[agency])(**payload(FIRST_OPERATION[agency]))
    assert caught.value.status_code == 503
    ledger = sims.ledger(agency)
    assert ledger["effects"] == [] and ledger["calls"] == 2
    # `times` is used up: the next call goes through.
    getattr(service(sims, agency), FIRST_OPERATION[agency])(**payload(FIRST_OPERATION[agency]))


def test_runts_http_status_429_with_retry_after(sims: SimulatorHandle, http: httpx.Client) -> None:
    """A throttling RUNTS answers 429 with Retry-After and records nothing."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 429, "retry_after": 1, "times": 1}])
    response = post_runts(sims, http, runts_body())
    assert (response.status_code, response.headers["retry-after"]) == (429, "1")
    assert sims.ledger("runts")["effects"] == []


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_soap_fault_is_a_server_fault(sims: SimulatorHandle, agency: str) -> None:
    """`soap_fault` is a Server/Receiver fault without Rifiuto, and no effect."""
    sims.set_faults(agency, [{"kind": "soap_fault", "text": "Backend non disponibile"}])
    operation = FIRST_OPERATION[agency]
    with pytest.raises(zeep.exceptions.Fault) as caught:
        getattr(service(sims, agency), operation)(**payload(operation))
    expected = "env:Receiver" if SOAP_AGENCIES[agency][0] == "1.2" else "soap:Server"
    assert (caught.value.code, caught.value.message) == (expected, "Backend non disponibile")
    assert caught.value.detail is None
    assert sims.ledger(agency)["effects"] == []


def test_runts_soap_fault_kind_is_a_500_problem(sims: SimulatorHandle, http: httpx.Client) -> None:
    """On REST the technical fault is a 500 problem."""
    sims.set_faults("runts", [{"kind": "soap_fault"}])
    response = post_runts(sims, http, runts_body())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert sims.ledger("runts")["effects"] == []


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_reject_is_a_client_fault_with_rifiuto(sims: SimulatorHandle, agency: str) -> None:
    """`reject` is Client/Sender with a Rifiuto detail; recorded in `rejected`, not `effects`."""
    sims.set_faults(agency, [{"kind": "reject", "code": "R042", "text": "Impresa cessata"}])
    operation = FIRST_OPERATION[agency]
    with pytest.raises(zeep.exceptions.Fault) as caught:
        getattr(service(sims, agency), operation)(**payload(operation))
    expected = "env:Sender" if SOAP_AGENCIES[agency][0] == "1.2" else "soap:Client"
    assert (caught.value.code, caught.value.message) == (expected, "Impresa cessata")
    ns = f"urn:crocevia:agency:{agency}:v1"
    assert caught.value.detail.findtext(f"{{{ns}}}Rifiuto/{{{ns}}}codice") == "R042"
    assert caught.value.detail.findtext(f"{{{ns}}}Rifiuto/{{{ns}}}motivo") == "Impresa cessata"
    ledger = sims.ledger(agency)
    assert ledger["effects"] == []
    assert [(r["codice"], r["operation"]) for r in ledger["rejected"]] == [("R042", operation)]


def test_runts_reject_is_a_422_problem(sims: SimulatorHandle, http: httpx.Client) -> None:
    """On REST a business rejection is 422 with codice and motivo."""
    sims.set_faults("runts", [{"kind": "reject", "code": "R310", "text": "Statuto non conforme"}])
    response = post_runts(sims, http, runts_body())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["codice"], problem["motivo"]) == ("R310", "Statuto non conforme")
    assert problem["status"] == 422
    ledger = sims.ledger("runts")
    assert ledger["effects"] == [] and [r["codice"] for r in ledger["rejected"]] == ["R310"]


def test_rules_match_operation_and_fields_in_order(sims: SimulatorHandle) -> None:
    """Only messages whose field equals `match` are hit; the first matching rule wins."""
    other_cf = "09876543210"
    sims.set_faults("inps", [
        {"operation": "RichiestaDurc", "kind": "reject", "code": "R001",
         "match": {"codiceFiscale": other_cf}},
        {"operation": "RichiestaDurc", "kind": "reject", "code": "R002"},
    ])
    proxy = service(sims, "inps")
    proxy.IscrizioneAzienda(**payload("IscrizioneAzienda", codiceFiscale=other_cf))
    for cf, code in ((other_cf, "R001"), (BUSINESS_CF, "R002")):
        with pytest.raises(zeep.exceptions.Fault) as caught:
            proxy.RichiestaDurc(**payload("RichiestaDurc", codiceFiscale=cf))
        assert caught.value.detail.findtext(".//{*}codice") == code
    ledger = sims.ledger("inps")
    assert [e["operation"] for e in ledger["effects"]] == ["IscrizioneAzienda"]
    assert [r["codice"] for r in ledger["rejected"]] == ["R001", "R002"]


def test_runts_rules_match_json_fields(sims: SimulatorHandle, http: httpx.Client) -> None:
    """`match` looks a field up anywhere in the JSON body too."""
    sims.set_faults("runts", [{"kind": "reject", "match": {"sezione": "aps"}, "code": "R007"}])
    assert post_runts(sims, http, runts_body(sezione="odv")).status_code == 201
    assert post_runts(sims, http, runts_body(sezione="aps")).status_code == 422


def test_latency_delays_then_answers(sims: SimulatorHandle) -> None:
    """`latency` holds the reply for delay_ms, then answers normally."""
    sims.set_faults("inail", [{"kind": "latency", "delay_ms": 300, "times": 1}])
    started = time.monotonic()
    receipt = service(sims, "inail").AperturaPAT(**payload("AperturaPAT"))
    assert time.monotonic() - started >= 0.3
    assert_receipt("inail", receipt.protocollo, references_of(receipt))
    assert len(sims.ledger("inail")["effects"]) == 1


@pytest.mark.parametrize("agency", ["inps", "cciaa"])
def test_timeout_after_effect_then_retry_gets_first_receipt(
    sims: SimulatorHandle, agency: str
) -> None:
    """The reply is lost after the effect: the retry with the same messageId is a duplicate."""
    sims.set_faults(agency, [{"kind": "timeout", "after_effect": True, "times": 1}])
    operation = FIRST_OPERATION[agency]
    kwargs = payload(operation)
    with pytest.raises(requests.exceptions.Timeout):
        getattr(service(sims, agency, timeout=0.5), operation)(**kwargs)
    [effect] = sims.ledger(agency)["effects"]
    assert effect["duplicates"] == 0
    receipt = getattr(service(sims, agency), operation)(**kwargs)
    assert receipt.protocollo == effect["protocollo"]
    [effect] = sims.ledger(agency)["effects"]
    assert effect["duplicates"] == 1


def test_timeout_before_effect_records_nothing(sims: SimulatorHandle, http: httpx.Client) -> None:
    """Without after_effect the message is never processed; the retry is the first effect."""
    sims.set_faults("runts", [{"kind": "timeout", "times": 1}])
    body = runts_body()
    with pytest.raises(httpx.ReadTimeout):
        post_runts(sims, http, body, timeout=0.5)
    assert sims.ledger("runts")["effects"] == []
    assert post_runts(sims, http, body).status_code == 201
    [effect] = sims.ledger("runts")["effects"]
    assert effect["duplicates"] == 0


def test_runts_timeout_after_effect(sims: SimulatorHandle, http: httpx.Client) -> None:
    """On REST too, a lost reply leaves one effect and the retry gets 200 with it."""
    sims.set_faults("runts", [{"kind": "timeout", "after_effect": True, "times": 1}])
    body = runts_body()
    with pytest.raises(httpx.ReadTimeout):
        post_runts(sims, http, body, timeout=0.5)
    [effect] = sims.ledger("runts")["effects"]
    again = post_runts(sims, http, body)
    assert (again.status_code, again.json()["protocollo"]) == (200, effect["protocollo"])


def test_bad_fault_rules_are_refused(sims: SimulatorHandle) -> None:
    """Rules are checked: unknown kinds, operations and keys are a 400, not a silent no-op."""
    for rules in ([{"kind": "explode"}], [{"kind": "reject", "operation": "Nope"}],
                  [{"kind": "latency", "delay": 5}], {"kind": "latency"}):
        with pytest.raises(ValueError):
            sims.set_faults("inps", rules)  # type: ignore[arg-type]


def test_reset_clears_ledger_and_faults(sims: SimulatorHandle) -> None:
    """After reset the ledger is empty and the runtime rules are gone."""
    sims.set_faults("inail", [{"kind": "reject"}])
    with pytest.raises(zeep.exceptions.Fault):
        service(sims, "inail").AperturaPAT(**payload("AperturaPAT"))
    sims.reset()
    assert sims.ledger("inail") == {
        "agency": "inail", "effects": [], "rejected": [], "invalid": [], "calls": 0, "polls": 0
    }
    service(sims, "inail").AperturaPAT(**payload("AperturaPAT"))


# ----- served contracts -----


@pytest.mark.parametrize("agency", SOAP_AGENCIES)
def test_served_wsdl_loads_in_zeep_and_points_at_the_simulator(
    sims: SimulatorHandle, agency: str
) -> None:
    """The WSDL over HTTP resolves its XSDs, and its address is the simulator's endpoint."""
    transport = Transport(session=_session(), timeout=5, operation_timeout=5)
    client = zeep.Client(sims.contract_url(agency), settings=SETTINGS, transport=transport)
    operation = FIRST_OPERATION[agency]
    receipt = getattr(client.service, operation)(**payload(operation))
    assert_receipt(agency, receipt.protocollo, references_of(receipt))


def test_served_openapi_names_the_simulator(sims: SimulatorHandle, http: httpx.Client) -> None:
    """RUNTS serves its OpenAPI document with its own address as the server."""
    document = yaml.safe_load(http.get(sims.contract_url("runts")).text)
    assert document["servers"][0]["url"] == sims.urls["runts"]
    assert document["paths"]["/v1/iscrizioni"]["post"]["operationId"] == "IscrizioneEnte"


# ----- permanent rules from a file -----


def test_rules_file_gives_permanent_rejections(tmp_path: Path) -> None:
    """Rules from --rules survive reset; runtime rules come first."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"cciaa": [
        {"kind": "reject", "code": "R900", "text": "Denominazione già in uso",
         "match": {"denominazione": "Omonima S.r.l."}},
    ]}))
    with start_simulators(rules=rules) as other:
        proxy = service(other, "cciaa")
        for _ in range(2):
            namesake = payload("IscrizioneImpresa", denominazione="Omonima S.r.l.")
            with pytest.raises(zeep.exceptions.Fault) as caught:
                proxy.IscrizioneImpresa(**namesake)
            assert caught.value.detail.findtext(".//{*}codice") == "R900"
            other.reset()
        proxy.IscrizioneImpresa(**payload("IscrizioneImpresa"))
        assert len(other.ledger("cciaa")["effects"]) == 1
