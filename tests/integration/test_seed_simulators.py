"""The seed services' rules in the simulators themselves, over real HTTP (zeep on the stored
WSDL, as the hub calls them): DURC On Line decided by the configured debtors and the declared
amount, the DURC numbering, DiResCo numbered in order of arrival."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import pytest

from simulators.launcher import SimulatorHandle, start_simulators
from tests.integration.test_simulators import payload, references_of, service

#: A subject only this test's INPS knows as a debtor (not in the default list).
CONFIGURED_DEBTOR = "RSSMRA80A01H501U"


@pytest.fixture(scope="module")
def own_sims() -> Iterator[SimulatorHandle]:
    """Simulators started with `--durc-debtors`, replacing the default list."""
    handle = start_simulators(durc_debtors=[CONFIGURED_DEBTOR])
    try:
        yield handle
    finally:
        handle.stop()


def _durc(sims: SimulatorHandle, tax_code: str, declared: Decimal | None = None) -> dict[str, str]:
    extra = {"importoScopertoDichiarato": declared} if declared is not None else {}
    receipt = service(sims, "inps").RichiestaDurc(**payload("RichiestaDurc", codiceFiscale=tax_code, **extra))
    assert receipt.esito == "ACCOLTA" and re.fullmatch(r"INPS_[0-9]{8}", receipt.protocollo)
    return references_of(receipt)


def test_the_configured_debtors_decide_an_irregular_durc(own_sims: SimulatorHandle) -> None:
    """The list given at start-up replaces the default one: its debtor is irregular, a subject
    of the default list is now regular (valid 120 days)."""
    assert _durc(own_sims, CONFIGURED_DEBTOR)["esitoDurc"] == "IRREGOLARE"
    regular = _durc(own_sims, "02468135799")
    assert regular["esitoDurc"] == "REGOLARE"
    issued = date.fromisoformat(regular["dataEmissione"])
    assert date.fromisoformat(regular["dataScadenza"]) == issued + timedelta(days=120)


@pytest.mark.parametrize(("declared", "outcome"), [(Decimal("150.00"), "REGOLARE"), (Decimal("150.01"), "IRREGOLARE")])
def test_a_declared_debt_over_150_euro_is_irregular(own_sims: SimulatorHandle, declared: Decimal, outcome: str) -> None:
    """The tolerance (scostamento non grave) is inclusive: 150.00 regular, a cent more irregular."""
    assert _durc(own_sims, "06543210485", declared)["esitoDurc"] == outcome


def test_durc_numbers_are_consecutive_and_apart_from_the_inps_protocol(own_sims: SimulatorHandle) -> None:
    """DURC On Line has its own sequence; INPS's other protocol numbers do not consume it."""
    proxy = service(own_sims, "inps")
    first = proxy.RichiestaDurc(**payload("RichiestaDurc")).protocollo
    other = proxy.DichiarazioneResponsabilita(**payload("DichiarazioneResponsabilita")).protocollo
    second = proxy.RichiestaDurc(**payload("RichiestaDurc")).protocollo
    assert re.fullmatch(r"INPS\.0001\.[0-9]{4}\.[0-9]{7}", other)
    assert int(second.removeprefix("INPS_")) == int(first.removeprefix("INPS_")) + 1
