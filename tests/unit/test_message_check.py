"""The intake's message check names the agency field and why, whichever validator refused it
(zeep building the envelope, the declared XSD, an OpenAPI request schema). Real contracts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest

from adapters.message_check import MessageChecker
from bootstrap import checked_routes, load_contracts
from config.settings import PROJECT_ROOT, load_settings
from routing.plan import FilingFacts, plan_deliveries
from routing.routes import load_route_table
from schemas.filing import FilingValidator

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


@pytest.fixture(scope="module")
def setup() -> tuple[MessageChecker, dict[str, Any]]:
    settings = load_settings()
    validator = FilingValidator()
    contracts = load_contracts(settings)
    routes = checked_routes(settings, load_route_table(settings.path(settings.routes_file),
                                                       settings.path(settings.mappings_dir)), contracts, validator)
    planned = {}
    for example in ("business_start.xml", "runts_registration.xml"):
        parsed = validator.parse((EXAMPLES / example).read_bytes())
        facts = FilingFacts("CRV-2026-000001", parsed.kind, "test", parsed.declarant_tax_code,
                            parsed.declarant_role, datetime.now(timezone.utc))
        planned.update({p.agency: p for p in plan_deliveries(routes, parsed.root, facts)})
    return MessageChecker(contracts), planned


def _problem(setup: tuple[MessageChecker, dict[str, Any]], agency: str, change: Any) -> Any:
    checker, planned = setup
    p = planned[agency]
    content = change(dict(p.content))
    return checker.problem(p.agency, p.contract_version, p.operation, content)


def test_mapped_sample_messages_pass(setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    """The example filings' messages pass every agency schema."""
    checker, planned = setup
    assert {p.agency for p in planned.values()} == {"cciaa", "inps", "inail", "runts"}
    for p in planned.values():
        assert checker.problem(p.agency, p.contract_version, p.operation, p.content) is None


def test_a_missing_soap_field_is_named(setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    problem = _problem(setup, "cciaa", lambda c: {k: v for k, v in c.items() if k != "dataInizioAttivita"})
    assert (problem.agency, problem.operation, problem.field) == ("cciaa", "IscrizioneImpresa", "dataInizioAttivita")
    assert "required" in problem.detail


def test_a_value_failing_an_xsd_facet_is_named(setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    problem = _problem(setup, "cciaa", lambda c: {**c, "pec": "not an address"})
    assert problem.field == "pec" and "not an address" in problem.detail


def test_a_missing_rest_field_is_named(setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    _, planned = setup
    required = next(k for k in planned["runts"].content if k != "messageHeader")
    problem = _problem(setup, "runts", lambda c: {k: v for k, v in c.items() if k != required})
    assert problem.agency == "runts" and problem.field == required and "required" in problem.detail


def test_a_contract_is_resolved_once_not_per_message(setup: tuple[MessageChecker, dict[str, Any]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs for every recipient of every filing: the contract lookup is kept."""
    checker, planned = setup
    fresh = MessageChecker(checker._contracts)
    loads: list[str] = []
    real = fresh._contracts.load
    monkeypatch.setattr(fresh._contracts, "load", lambda spec: loads.append(spec.agency) or real(spec))
    for _ in range(3):
        for p in planned.values():
            assert fresh.problem(p.agency, p.contract_version, p.operation, p.content) is None
    assert sorted(loads) == sorted(planned)


def test_an_unknown_agency_is_not_a_message_problem_and_is_not_kept(setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    checker, planned = setup
    p = planned["inps"]
    fresh = MessageChecker(checker._contracts)
    assert fresh.problem("nowhere", None, p.operation, p.content) is None
    assert fresh._loaded == {}


def test_threads_checking_at_once_each_get_their_own_messages_problem(
        setup: tuple[MessageChecker, dict[str, Any]]) -> None:
    """The intake's threads check messages against one agency's schema at once, valid and not
    mixed: each gets its own message's answer (an invalid one's error is read under a lock,
    from a copy of the schema whose log only that reader fills)."""
    checker, planned = setup
    p = planned["cciaa"]
    messages = [p.content, {**p.content, "pec": "not an address"},
                {k: v for k, v in p.content.items() if k != "dataInizioAttivita"}]

    def answer(content: dict[str, Any]) -> tuple[str | None, str] | None:
        problem = checker.problem(p.agency, p.contract_version, p.operation, content)
        return None if problem is None else (problem.field, problem.detail)

    alone = [answer(m) for m in messages]
    assert alone[0] is None and alone[1] is not None and alone[2] is not None and alone[1] != alone[2]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(answer, messages * 100))
    assert together == alone * 100
