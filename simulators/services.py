"""The seed services' own rules, beside the desk's generic protocol: what DURC On Line decides,
how it numbers, what RUNTS refuses in a communication from the Registro Imprese, and how a
deposit of acts is receipted (docs/agency-contracts.md, schemas/README.md).

Each rule is keyed by (agency, operation) and sees the request through a `Lookup` (RUNTS rules
name JSON paths, `ente/codiceFiscale`: a body holds several codiceFiscale); it answers
with a `Verdict` the desk applies instead of (or before) its usual numbering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simulators.numbering import Counters, Lookup

__all__ = [
    "DURC_DEBTORS",
    "DURC_TOLERANCE",
    "DURC_VALIDITY",
    "SERVICE_RULES",
    "ServiceContext",
    "Verdict",
    "assess_durc",
]

#: Subjects INPS's own records show with unpaid contributions (fictitious, valid check digits):
#: a DURC asked for any of them is irregular whatever the request declares.
DURC_DEBTORS = frozenset({"02468135799", "01357924685", "09753186429"})
#: Unpaid contributions up to this amount do not make a subject irregular: the "scostamento
#: non grave" of the DURC rules (D.M. 30 gennaio 2015, art. 3 c. 3).
DURC_TOLERANCE = Decimal("150.00")
#: A regular DURC is valid for 120 days from its issue (D.M. 30 gennaio 2015, art. 7).
DURC_VALIDITY = timedelta(days=120)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a rule may read or move besides the request: the agency's counters, its records
    (`registry`: RUNTS repertory number → the ente's tax code, for the positions it gave)."""

    counters: Counters
    debtors: frozenset[str]
    today: date
    registry: dict[str, str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer: a refusal (`code`, `reason`), or the protocol number and references
    to give, with a decision already taken (`decision` "accepted") when the agency decides at
    once."""

    protocol: str = ""
    references: dict[str, str] = field(default_factory=dict)
    decision: str | None = None
    code: str = ""
    reason: str = ""

    @property
    def refused(self) -> bool:
        return bool(self.code)


def today_in_rome() -> date:
    """The agencies' calendar day: issue and expiry dates are Italian dates."""
    try:
        return datetime.now(ZoneInfo("Europe/Rome")).date()
    except ZoneInfoNotFoundError:  # no tz database: UTC is at most a day off
        return datetime.now(timezone.utc).date()


def assess_durc(tax_code: str, declared: str | None, debtors: frozenset[str],
                issued: date) -> dict[str, str]:
    """The DURC On Line outcome as receipt references.

    Irregular when the subject is among `debtors`, or declares more than `DURC_TOLERANCE`
    outstanding; regular otherwise, valid `DURC_VALIDITY` from `issued`. An irregular outcome
    has no expiry: no certificate is issued, the subject asks again once regularised.
    """
    try:
        owed = Decimal(declared) if declared else Decimal(0)
    except InvalidOperation:
        owed = Decimal(0)  # the schema vouches for a decimal; this only guards the rule
    references = {"dataEmissione": issued.isoformat()}
    if tax_code in debtors:
        references.update(esitoDurc="IRREGOLARE",
                          motivoIrregolarita="Risultano contributi non versati negli archivi INPS")
    elif owed > DURC_TOLERANCE:
        references.update(esitoDurc="IRREGOLARE",
                          motivoIrregolarita=f"Importo scoperto dichiarato {owed:.2f} euro oltre "
                                             f"la soglia di {DURC_TOLERANCE} euro")
    else:
        references.update(esitoDurc="REGOLARE", dataScadenza=(issued + DURC_VALIDITY).isoformat())
    return references


def _durc(lookup: Lookup, context: ServiceContext) -> Verdict:
    """DURC On Line: its own protocol (`INPS_` and 8 digits) and a decision at once. Both
    outcomes are decisions on a request the agency took (ACCOLTA): an irregular subject is
    the answer asked for, not a message to correct."""
    protocol = f"INPS_{context.counters.next('durc'):08d}"
    references = assess_durc(lookup("codiceFiscale") or "", lookup("importoScopertoDichiarato"),
                             context.debtors, context.today)
    return Verdict(protocol=protocol, references=references, decision="accepted")


def _runts_protocol(counters: Counters) -> str:
    year = datetime.now(timezone.utc).year
    return f"RUNTS-{year}-{counters.next('protocollo'):07d}"


def _registration(lookup: Lookup, context: ServiceContext) -> Verdict:
    """A new position in the repertory, remembered with its ente for later deposits."""
    repertory = f"{context.counters.next('repertorio'):07d}"
    context.registry[repertory] = lookup("ente/codiceFiscale") or ""
    return Verdict(protocol=_runts_protocol(context.counters), references={"numeroRepertorio": repertory})


def _deposit(lookup: Lookup, context: ServiceContext) -> Verdict:
    """A deposit is filed at the ente's existing position: the receipt repeats its number and
    says which act it took (and, for accounts, which year). A position this RUNTS gave to
    another ente is refused; a number it does not know is taken (a position older than the
    simulator's memory)."""
    repertory, tax_code = lookup("ente/numeroRepertorio") or "", lookup("ente/codiceFiscale") or ""
    owner = context.registry.get(repertory)
    if owner is not None and owner != tax_code:
        return Verdict(code="ENTE_NON_CORRISPONDENTE",
                       reason=f"Il numero di repertorio {repertory} non corrisponde all'ente {tax_code}")
    references = {"numeroRepertorio": repertory, "tipoAtto": lookup("atto/tipo") or ""}
    if lookup("atto/esercizio"):
        references["esercizio"] = lookup("atto/esercizio") or ""
    return Verdict(protocol=_runts_protocol(context.counters), references=references)


def _social_enterprise(lookup: Lookup, context: ServiceContext) -> Verdict:
    """RUNTS enters in section "imprese sociali" only what the Registro Imprese registered:
    without the REA number and the RI protocol there is nothing to enter."""
    if not lookup("registroImprese/numeroREA"):
        return Verdict(code="REA_MANCANTE", reason="Numero REA dell'impresa sociale mancante")
    if not lookup("registroImprese/protocolloRI"):
        return Verdict(code="PROTOCOLLO_RI_MANCANTE",
                       reason="Protocollo dell'iscrizione al Registro Imprese mancante")
    repertory = f"{context.counters.next('repertorio'):07d}"
    context.registry[repertory] = lookup("impresa/codiceFiscale") or ""
    return Verdict(protocol=_runts_protocol(context.counters),
                   references={"numeroRepertorio": repertory, "sezione": "impresa_sociale"})


#: (agency, operation) → its rule; operations not here are numbered by the desk as usual.
SERVICE_RULES: dict[tuple[str, str], Callable[[Lookup, ServiceContext], Verdict]] = {
    ("inps", "RichiestaDurc"): _durc,
    ("runts", "IscrizioneEnte"): _registration,
    ("runts", "DepositoAtto"): _deposit,
    ("runts", "ComunicazioneImpresaSociale"): _social_enterprise,
}
