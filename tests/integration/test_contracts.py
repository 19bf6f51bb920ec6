"""Agencies as configuration: every declared contract loads, every route resolves its operation
and maps the sample filings into a message its contract accepts, at start-up and in
`hub.py contracts check`; a broken mapping or a missing operation is named, not sent."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.base import ErrorContext
from adapters.contracts import ContractError
from adapters.openapi import load_openapi_contract
from bootstrap import build_hub, load_contracts
from cli.contracts import run_contracts_check
from config.settings import PROJECT_ROOT, AgencySettings, Settings
from domain.errors import MessageRejectedAsInvalid
from service.contracts_check import ContractCheckFailed
from tests.external import require_external
from tests.support import hub_settings

DATA = PROJECT_ROOT / "tests" / "data" / "agencies"
#: The example agencies added with configuration only (config/agencies/).
CONFIGURED = ("agid_blocking", "agid_pull", "agid_push", "inps_isee", "inps_waas")


@pytest.fixture(autouse=True)
def _external() -> Path:
    return require_external()


def _settings(tmp_path: Path, **changes: object) -> Settings:
    settings = hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}", {})
    agencies = dict(settings.agencies)
    for name in CONFIGURED:
        agencies[name] = AgencySettings(endpoint=f"http://127.0.0.1:9/{name}")
    return settings.model_copy(update={"agencies": agencies, **changes})


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "hub.py", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_contracts_check_passes_on_every_configured_contract() -> None:
    """`hub.py contracts check` loads every WSDL/OpenAPI document and checks every route."""
    for routes in (None, DATA / "routes.toml"):
        result = _hub("contracts", "check", *(["--routes", str(routes)] if routes else []))
        assert result.returncode == 0, result.stdout + result.stderr
        for name in ("inps", "inail", "cciaa", "runts", *CONFIGURED):
            assert f"ok    {name}/v1 " in result.stdout
        assert "contracts check: passed" in result.stdout
    assert "agid_push/v1 MRequest (agid-nonblocking-mrequest.toml, durc_request.xml): ok" in result.stdout


def test_a_route_naming_a_missing_operation_fails_naming_file_and_operation() -> None:
    """Exit 1, and the line names the agency file, the WSDL and the operation."""
    result = _hub("contracts", "check", "--routes", str(DATA / "broken" / "missing-operation.toml"))
    assert result.returncode == 1, result.stdout
    failure = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert "config/agencies/agid_blocking.toml" in failure
    assert "external:agid-modi-patterns/soap-blocking.wsdl" in failure
    assert "operation 'MNotThere'" in failure and "['MRequest']" in failure
    assert "contracts check: FAILED" in result.stdout


def test_an_unknown_contract_version_is_named(tmp_path: Path) -> None:
    """A route naming a version nobody declares fails the check, naming route and versions."""
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nkind = "durc_request"\ncontract = "inps_isee/v9"\n'
                      'operation = "ConsultazioneSogliaIndicatore"\nmapping = "inps-isee-soglia"\n')
    lines: list[str] = []
    assert run_contracts_check(_settings(tmp_path), routes, lines.append) == 1
    assert any("routes.toml route #1" in line and "'v9'" in line and "['v1']" in line for line in lines)


def test_a_broken_mapping_stops_the_start(tmp_path: Path) -> None:
    """The hub does not start; the error names the route, the mapping file and the violation."""
    settings = _settings(tmp_path, routes_file=str(DATA / "broken" / "routes.toml"),
                         mappings_dir=str(DATA / "broken"))
    with pytest.raises(ContractCheckFailed) as caught:
        build_hub(settings)
    message = str(caught.value)
    assert "routes.toml route #1" in message
    assert "inps-isee-bad-threshold.toml" in message and "durc_request.xml" in message
    assert "CodiceSoglia" in message or "BONUS" in message


def test_the_inps_waas_openapi_loads_as_a_rest_contract(tmp_path: Path) -> None:
    """The real INPS WaaS document (OpenAPI 3.0.3) is a REST contract: its operations resolve,
    a valid NotificaEsiti body passes, an invalid one is refused before sending."""
    spec = load_contracts(_settings(tmp_path)).spec("inps_waas")
    contract = load_openapi_contract(spec)
    assert {"Flussi", "NotificaEsiti", "healthCheck"} <= set(contract.operations)
    operation = contract.operation("NotificaEsiti")
    assert (operation.method, operation.path, set(operation.receipt_statuses)) == ("POST", "/esiti", {204})
    ctx = ErrorContext("inps_waas", "NotificaEsiti", "dlv-1")
    entry = {"id_flusso": "H501.PS.20210520.0000002", "tipo": "PS_PSA_SINA",
             "ts_flusso": "2023-11-27T11:04:56Z", "ts_acquisizione": "2023-11-27T11:04:56Z",
             "codice_esito": "OK"}
    assert contract.serialize("NotificaEsiti", {"elenco_esiti": [entry]}, ctx).startswith(b'{"elenco_esiti"')
    with pytest.raises(MessageRejectedAsInvalid, match="codice_esito"):
        contract.serialize("NotificaEsiti", {"elenco_esiti": [{**entry, "codice_esito": "FORSE"}]}, ctx)
    with pytest.raises(ContractError, match="'Flussi': in the document, but not among"):
        contract.operation("Flussi")
    # Without the allow-list, GET /flussi is known but cannot carry a filing.
    everything = load_openapi_contract(dataclasses.replace(spec, operations=()))
    with pytest.raises(ContractError, match="'Flussi': GET /flussi takes no JSON body"):
        everything.operation("Flussi")


def test_every_declared_document_loads(tmp_path: Path) -> None:
    """The contract set loads each declared version once and reports none failing."""
    contracts = load_contracts(_settings(tmp_path))
    loaded = contracts.documents()
    assert {spec.ref for spec, _ in loaded} >= {f"{name}/v1" for name in CONFIGURED}
    assert [str(error) for _, error in loaded if error is not None] == []
    blocking = contracts.load(contracts.spec("agid_blocking"))
    assert blocking.soap_version == "1.2" and blocking.operation("MRequest").input_headers == ()
    isee = contracts.load(contracts.spec("inps_isee"))
    assert isee.soap_version == "1.1"
    assert isee.operation("ConsultazioneSogliaIndicatore").headers["SOAPAction"] == (
        '"http://inps.it/ConsultazioneISEE/ISvcConsultazione/ConsultazioneSogliaIndicatore"')
    push = contracts.load(contracts.spec("agid_push"))
    assert push.operation("MRequest").input_headers == (
        "{http://ente.example/nomeinterfacciaservizio}X-ReplyTo",)
