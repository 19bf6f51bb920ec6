"""Routing: which recipients each filing kind gets, and how common data are mapped."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from lxml import etree

from config.settings import PROJECT_ROOT
from routing import load_route_table, plan_deliveries
from routing.mapping import MappingError, compile_field_map
from routing.plan import FilingFacts

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
ROUTES = load_route_table(PROJECT_ROOT / "config" / "routes.toml", PROJECT_ROOT / "config" / "mappings")


def _plan(name: str, kind: str) -> list:
    root = etree.parse(str(EXAMPLES / name)).getroot()
    facts = FilingFacts("CRV-2026-000001", kind, "test", "FTTMRC85C14H501X", "legal_representative",
                        datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc))
    return plan_deliveries(ROUTES, root, facts)


@pytest.mark.parametrize(
    ("example", "kind", "recipients"),
    [
        ("business_start.xml", "business_start", ["cciaa", "inps", "inail"]),
        ("business_start_no_employees.xml", "business_start", ["cciaa"]),
        ("business_start_social_enterprise.xml", "business_start", ["cciaa", "runts"]),
        ("runts_registration.xml", "runts_registration", ["cciaa", "runts"]),
        ("runts_registration_odv.xml", "runts_registration", ["runts"]),
        ("runts_deposit_accounts.xml", "runts_deposit", ["runts"]),
        ("runts_deposit_statute.xml", "runts_deposit", ["runts"]),
        ("durc_request.xml", "durc_request", ["inps"]),
        ("responsibility_declaration.xml", "responsibility_declaration", ["inps"]),
    ],
)
def test_each_kind_is_routed_to_its_recipients(example: str, kind: str, recipients: list[str]) -> None:
    """Every kind yields exactly the planned recipients, conditions included."""
    assert [p.agency for p in _plan(example, kind)] == recipients


def test_planned_messages_carry_the_envelope_and_mapped_data() -> None:
    """The INPS message has the common envelope and the employees mapped as a list."""
    inps = next(p for p in _plan("business_start.xml", "business_start") if p.agency == "inps")
    header = inps.content["messageHeader"]
    assert header["messageId"] == inps.message_id and len(inps.message_id) == 32
    assert header["filingReference"] == "CRV-2026-000001"
    assert header["operation"] == "IscrizioneAzienda"
    assert inps.content["codiceFiscale"] == "09182730581"
    assert inps.content["sede"]["codiceComune"] == "H501"
    assert [d["tipoContratto"] for d in inps.content["dipendenti"]["dipendente"]] == ["indeterminato", "apprendistato"]
    assert inps.content["ateco"] == ["62.01.00", "62.02"]


def test_each_delivery_gets_its_own_message_id() -> None:
    """Message ids are unique per delivery so agencies can recognise repeats."""
    plans = _plan("business_start.xml", "business_start")
    assert len({p.message_id for p in plans}) == len(plans)


def test_typed_fields_are_converted() -> None:
    """Counts become integers and conditions booleans."""
    inail = next(p for p in _plan("business_start.xml", "business_start") if p.agency == "inail")
    assert inail.content["numeroDipendenti"] == 2
    cciaa = next(p for p in _plan("runts_registration.xml", "runts_registration") if p.agency == "cciaa")
    assert cciaa.content["impresaSociale"] is True


def test_a_broken_xpath_fails_at_load_time_naming_the_field() -> None:
    """A typo in a mapping is caught when the routes load, not when a filing arrives."""
    with pytest.raises(MappingError, match="broken.toml.denominazione"):
        compile_field_map({"denominazione": "f:subject/f:name[["}, "broken.toml")


def test_a_route_naming_a_missing_mapping_fails_at_load(tmp_path: Path) -> None:
    """A route whose mapping file does not exist is refused at start-up."""
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nkind="durc_request"\nagency="inps"\noperation="RichiestaDurc"\nmapping="nope"\n')
    with pytest.raises(MappingError, match="nope.toml"):
        load_route_table(routes, tmp_path)


def test_a_new_condition_needs_only_configuration(tmp_path: Path) -> None:
    """A route added in TOML with an XPath condition routes without any Python change."""
    (tmp_path / "m.toml").write_text('[fields]\ncodiceFiscale = "f:subject/f:taxCode"\n')
    (tmp_path / "routes.toml").write_text(
        '[[route]]\nkind="durc_request"\nagency="inail"\noperation="RichiestaDurc"\nmapping="m"\n'
        "when = \"f:subject/f:registeredOffice/f:province = 'MI'\"\n"
    )
    table = load_route_table(tmp_path / "routes.toml", tmp_path)
    root = etree.parse(str(EXAMPLES / "durc_request.xml")).getroot()
    province = root.findtext("{urn:crocevia:filing:v1}subject/{urn:crocevia:filing:v1}registeredOffice/{urn:crocevia:filing:v1}province")
    applies = table.for_kind("durc_request")[0].applies_to(root)
    assert applies is (province == "MI")
