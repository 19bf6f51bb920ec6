"""The four seed services as a portal sees them, over real HTTP: the live hub and the agency
simulators, on SQLite and PostgreSQL (`database_url`).

RUNTS deposit of acts (annual accounts, statute changes); the Registro Imprese → RUNTS
communication of a social enterprise, carrying the REA number and the chamber's protocol;
DURC On Line decided by rule (regular with 120 days of validity, irregular); DiResCo numbered
in the order the agency received the declarations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from cli.client import PortalClient, declarant_of, demo_user
from config.settings import PROJECT_ROOT
from simulators.services import DURC_DEBTORS
from storage.tables import audit_log, deliveries, filings
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

RUNTS_PROTOCOL = re.compile(r"RUNTS-[0-9]{4}-[0-9]{7}")
REPERTORY = re.compile(r"[0-9]{7}")
DURC_PROTOCOL = re.compile(r"INPS_[0-9]{8}")
INPS_PROTOCOL = re.compile(r"INPS\.0001\.([0-9]{4})\.([0-9]{7})")


def _example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


def _settled(client: PortalClient, document: str) -> dict[str, Any]:
    response = client.submit(document.encode())
    assert response.status_code == 202, response.text
    reference = response.json()["reference"]
    view = client.wait_settled([reference], timeout=30)[reference]
    assert view["state"] == "protocolled", view
    return view


def _by_agency(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["agency"]: r for r in view["recipients"]}


def _effect(sims, agency: str, reference: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    found = [e for e in sims.ledger(agency)["effects"] if e["filingReference"] == reference]
    assert len(found) == 1, found
    return found[0]


def _rome_date(instant: str) -> date:
    return datetime.fromisoformat(instant).astimezone(ZoneInfo("Europe/Rome")).date()


# ----- RUNTS: deposit of acts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "act", "year"),
    [("runts_deposit_accounts.xml", "rendiconto_per_cassa", "2025"),
     ("runts_deposit_statute.xml", "modifica_statuto", None)],
    ids=["annual-accounts", "statute-change"],
)
def test_a_registered_ente_deposits_an_act_at_its_repertory_position(
    client: PortalClient, hub: RunningHub, sims, example: str, act: str, year: str | None,  # type: ignore[no-untyped-def]
) -> None:
    """One DepositoAtto to RUNTS: a RUNTS protocol number, the ente's own repertory number
    and the act it took in the receipt, the act's data in the message as sent."""
    document = _example(example)
    repertory = re.search(r"<repertoryNumber>([0-9]{7})</repertoryNumber>", document).group(1)  # type: ignore[union-attr]
    view = _settled(client, document)
    (runts,) = view["recipients"]
    assert (runts["agency"], runts["operation"]) == ("runts", "DepositoAtto")
    assert RUNTS_PROTOCOL.fullmatch(runts["protocolNumber"])
    assert runts["references"]["numeroRepertorio"] == repertory
    assert runts["references"]["tipoAtto"] == act
    assert runts["references"].get("esercizio") == year
    effect = _effect(sims, "runts", view["reference"])
    assert effect["operation"] == "DepositoAtto" and effect["protocollo"] == runts["protocolNumber"]
    with hub.hub.engine.connect() as conn:
        sent = conn.execute(deliveries.select()).one().content
    assert sent["ente"]["numeroRepertorio"] == repertory
    if act == "modifica_statuto":
        assert sent["atto"] == {"tipo": "modifica_statuto", "dataDelibera": "2026-03-12",
                                "notaio": {"nome": "Ettore", "cognome": "Esempio", "distretto": "Napoli",
                                           "repertorio": "48213/15977"}}
    else:
        assert sent["atto"] == {"tipo": "rendiconto_per_cassa", "esercizio": "2025",
                                "dataApprovazione": "2026-04-28"}


def test_accounts_approved_before_their_year_closed_are_refused_at_intake(
    client: PortalClient, hub: RunningHub, sims,  # type: ignore[no-untyped-def]
) -> None:
    """A 422 naming the approval date; nothing stored, nothing sent to RUNTS."""
    document = _example("runts_deposit_accounts.xml").replace(
        "<approvalDate>2026-04-28</approvalDate>", "<approvalDate>2025-11-30</approvalDate>")
    response = client.submit(document.encode())
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert [e["code"] for e in errors] == ["approval_before_year_end"]
    assert "approvalDate" in errors[0]["location"]
    assert (hub.count(filings), hub.count(deliveries), hub.count(audit_log)) == (0, 0, 1)
    assert sims.ledger("runts")["calls"] == 0


# ----- Registro Imprese → RUNTS for social enterprises ----------------------------------------


@pytest.mark.parametrize("example", ["runts_registration.xml", "business_start_social_enterprise.xml"])
def test_the_registro_imprese_hands_a_social_enterprise_on_to_runts(
    client: PortalClient, sims, example: str,  # type: ignore[no-untyped-def]
) -> None:
    """The chamber registers it first; RUNTS then receives the REA number and the chamber's
    protocol number (not a registration of its own) and enters it in section imprese sociali."""
    document = _example(example)
    province = re.search(r"<province>([A-Z]{2})</province>", document).group(1)  # type: ignore[union-attr]
    view = _settled(client, document)
    recipients = _by_agency(view)
    assert set(recipients) == {"cciaa", "runts"}
    cciaa, runts = recipients["cciaa"], recipients["runts"]
    assert cciaa["operation"] == "IscrizioneImpresa"
    assert runts["operation"] == "ComunicazioneImpresaSociale"
    assert re.fullmatch(rf"{province}/RI/[0-9]{{4}}/[0-9]{{6}}", cciaa["protocolNumber"])
    rea = cciaa["references"]["numeroREA"]
    assert re.fullmatch(rf"{province}-[0-9]{{7}}", rea)
    assert RUNTS_PROTOCOL.fullmatch(runts["protocolNumber"])
    assert REPERTORY.fullmatch(runts["references"]["numeroRepertorio"])
    assert runts["references"]["sezione"] == "impresa_sociale"
    # What RUNTS received is what the chamber gave, and nothing reached the RUNTS directly.
    effect = _effect(sims, "runts", view["reference"])
    assert effect["received"] == {"numeroREA": rea, "protocolloRI": cciaa["protocolNumber"]}
    assert _effect(sims, "cciaa", view["reference"])["operation"] == "IscrizioneImpresa"
    assert not [e for e in sims.ledger("runts")["effects"] if e["operation"] == "IscrizioneEnte"]


def _odv_registration() -> str:
    """The ODV example, filed by its legal representative himself."""
    return _example("runts_registration_odv.xml").replace(
        "<role>delegate</role>", "<role>legal_representative</role>").replace(
        "<taxCode>BLLPRI95H11G273L</taxCode>\n    <givenName>Piero</givenName>\n    <familyName>Bello</familyName>",
        "<taxCode>MDLGNN60A30A944O</taxCode>\n    <givenName>Giovanni</givenName>\n    <familyName>Modello</familyName>")


@pytest.mark.parametrize(
    ("example", "edit", "where"),
    [("runts_registration.xml", ("<section>impresa_sociale</section>", "<section>aps</section>"), "section"),
     ("business_start_social_enterprise.xml",
      ("<registrationSection>speciale</registrationSection>", "<registrationSection>ordinaria</registrationSection>"),
      "registrationSection")],
    ids=["runts-section", "ri-section"],
)
def test_a_social_enterprise_outside_its_section_is_refused(
    client: PortalClient, hub: RunningHub, example: str, edit: tuple[str, str], where: str,
) -> None:
    """A 422 naming the section: the chamber and the RUNTS would file it where it cannot be."""
    response = client.submit(_example(example).replace(*edit).encode())
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == "social_enterprise_section" and error["location"].endswith(where)
    assert hub.count(filings) == 0


def test_a_body_that_is_no_social_enterprise_registers_at_runts_directly(client: PortalClient, sims) -> None:  # type: ignore[no-untyped-def]
    """An ODV: IscrizioneEnte at RUNTS with a new repertory number, the Registro Imprese untouched."""
    view = _settled(client, _odv_registration())
    (runts,) = view["recipients"]
    assert (runts["agency"], runts["operation"]) == ("runts", "IscrizioneEnte")
    assert REPERTORY.fullmatch(runts["references"]["numeroRepertorio"])
    assert not [e for e in sims.ledger("cciaa")["effects"] if e["filingReference"] == view["reference"]]


def test_an_ente_deposits_at_the_position_its_registration_gave_and_no_other_may(client: PortalClient) -> None:
    """Register, then deposit with the repertory number from the registration's receipt: taken.
    Another ente naming that number: RUNTS refuses it (rejected, with RUNTS's code)."""
    registered = _settled(client, _odv_registration())["recipients"][0]["references"]["numeroRepertorio"]
    accounts = _example("runts_deposit_accounts.xml").replace(
        "<repertoryNumber>0004217</repertoryNumber>", f"<repertoryNumber>{registered}</repertoryNumber>")
    deposited = _settled(client, accounts)["recipients"][0]
    assert deposited["references"]["numeroRepertorio"] == registered

    statute = _example("runts_deposit_statute.xml").replace(
        "<repertoryNumber>0011830</repertoryNumber>", f"<repertoryNumber>{registered}</repertoryNumber>")
    reference = client.submit(statute.encode()).json()["reference"]
    view = client.wait_settled([reference], timeout=30)[reference]
    (runts,) = view["recipients"]
    assert view["state"] == "rejected" and runts["state"] == "rejected"
    assert (runts["outcome"], runts["outcomeCode"]) == ("rejected", "ENTE_NON_CORRISPONDENTE")
    assert registered in runts["outcomeText"] and runts["protocolNumber"] is None


def test_runts_refuses_a_communication_without_the_rea_number(sims) -> None:  # type: ignore[no-untyped-def]
    """Straight to the simulated RUNTS: the communication must carry what the chamber gave."""
    message_id = "ab" * 16
    body = {
        "messageHeader": {"messageId": message_id, "filingReference": "CRV-2026-000901",
                          "filingKind": "runts_registration", "operation": "ComunicazioneImpresaSociale",
                          "portal": "test", "declarant": {"taxCode": "PRVCHR70T45F839G", "role": "legal_representative"},
                          "sentAt": "2026-11-28T09:00:00+01:00"},
        "impresa": {"codiceFiscale": "97123450633", "denominazione": "Gamma Solidale Impresa Sociale",
                    "sede": {"indirizzo": "Piazza delle Prove 3", "codiceComune": "F839", "cap": "80133",
                             "provincia": "NA"},
                    "pec": "gammasolidale@pec.example.it",
                    "legaleRappresentante": {"codiceFiscale": "PRVCHR70T45F839G", "nome": "Chiara", "cognome": "Prova"}},
    }
    with httpx.Client(trust_env=False, timeout=10) as http:
        reply = http.post(f"{sims.urls['runts']}/v1/imprese-sociali/comunicazioni", json=body,
                          headers={"Idempotency-Key": message_id})
    assert reply.status_code == 422 and reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["codice"] == "REA_MANCANTE"
    ledger = sims.ledger("runts")
    assert not ledger["effects"] and ledger["rejected"][0]["operation"] == "ComunicazioneImpresaSociale"


# ----- DURC On Line -------------------------------------------------------------------------


def _durc(client: PortalClient, document: str) -> dict[str, Any]:
    view = _settled(client, document)
    (inps,) = view["recipients"]
    assert (inps["agency"], inps["operation"]) == ("inps", "RichiestaDurc")
    assert DURC_PROTOCOL.fullmatch(inps["protocolNumber"]), inps["protocolNumber"]
    # An irregular subject is an answer, not a refusal: the request is decided, accepted.
    assert inps["state"] == "protocolled" and inps["outcome"] == "accepted"
    issued = date.fromisoformat(inps["references"]["dataEmissione"])
    assert issued == _rome_date(inps["protocolledAt"])
    return inps


@pytest.mark.parametrize("declared", [None, "150.00"], ids=["nothing-declared", "at-the-tolerance"])
def test_a_regular_durc_is_valid_for_120_days_from_its_issue(
    client: PortalClient, declared: str | None,
) -> None:
    """REGOLARE, with dataScadenza exactly 120 days after dataEmissione."""
    document = _example("durc_request.xml")
    if declared is not None:
        document = document.replace(
            "</purpose>", f"</purpose>\n    <declaredOutstandingAmount>{declared}</declaredOutstandingAmount>")
    inps = _durc(client, document)
    references = inps["references"]
    assert references["esitoDurc"] == "REGOLARE"
    issued = date.fromisoformat(references["dataEmissione"])
    assert date.fromisoformat(references["dataScadenza"]) - issued == timedelta(days=120)


@pytest.mark.parametrize("cause", ["known-debtor", "declared-debt"])
def test_an_irregular_durc_says_so_and_has_no_validity(client: PortalClient, cause: str) -> None:
    """IRREGOLARE, by the agency's records or by a declared debt over 150 euro: a reason, no expiry."""
    document = _example("durc_request.xml")
    if cause == "known-debtor":
        debtor = sorted(DURC_DEBTORS)[0]
        document = document.replace("06543210485", debtor)
    else:
        document = document.replace(
            "</purpose>", "</purpose>\n    <declaredOutstandingAmount>150.01</declaredOutstandingAmount>")
    references = _durc(client, document)["references"]
    assert references["esitoDurc"] == "IRREGOLARE"
    assert "dataScadenza" not in references
    assert references["motivoIrregolarita"]


# ----- DiResCo ------------------------------------------------------------------------------


def test_diresco_protocol_numbers_follow_the_order_of_arrival(
    hub: RunningHub, sims,  # type: ignore[no-untyped-def]
) -> None:
    """Eight declarations sent at once: each acknowledged on its first call, and INPS's numbers
    strictly increasing, without gaps, in the order the agency received them."""
    template = _example("responsibility_declaration.xml")
    statement = re.search(r"<statement>(.*?)</statement>", template, re.S).group(1)  # type: ignore[union-attr]
    documents = [template.replace(statement, f"{statement} (dichiarazione {n})") for n in range(8)]

    def submit(document: str) -> str:
        with PortalClient(hub.base_url, TEST_PORTAL_KEY) as own:
            response = own.submit(document.encode())
        assert response.status_code == 202, response.text
        return str(response.json()["reference"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        references = list(pool.map(submit, documents))
    declarant = declarant_of(template.encode())
    with PortalClient(hub.base_url, TEST_PORTAL_KEY, user=demo_user(declarant)) as reader:
        views = reader.wait_settled(references, timeout=60)
    recipients = {}
    for reference in references:
        assert views[reference]["state"] == "protocolled", views[reference]
        (inps,) = views[reference]["recipients"]
        assert inps["operation"] == "DichiarazioneResponsabilita" and inps["attempts"] == 1
        assert inps["outcome"] is None  # taken note of; no decision follows
        recipients[reference] = inps
    effects = sorted((e for e in sims.ledger("inps")["effects"] if e["operation"] == "DichiarazioneResponsabilita"),
                     key=lambda e: e["arrival"])
    assert [e["arrival"] for e in effects] == list(range(1, 9))
    assert {e["filingReference"] for e in effects} == set(references)
    numbers = [INPS_PROTOCOL.fullmatch(e["protocollo"]) for e in effects]
    assert all(numbers)
    sequence = [int(m.group(2)) for m in numbers if m]
    assert sequence == list(range(sequence[0], sequence[0] + 8))
    assert len({m.group(1) for m in numbers if m}) == 1  # one year's sequence
    for effect in effects:
        assert recipients[effect["filingReference"]]["protocolNumber"] == effect["protocollo"]
