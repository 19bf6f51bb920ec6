"""Agency declarations, receipt mappings and sandbox values: the parts that need no server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from adapters.base import ErrorContext
from adapters.contracts import ContractConfigError, load_agency_catalog, split_contract_ref
from adapters.receipts import JsonReceiptReader, XmlReceiptReader
from config.settings import PROJECT_ROOT
from domain.errors import (
    AgencyProtocolError,
    AgencyRejected,
    AgencyUnreachable,
    MessageRejectedAsInvalid,
)
from routing.routes import MappingError, load_route_table
from simulators.instances import from_pattern, path_steps
from tests.external import EXTERNAL_DIR

CTX = ErrorContext("inps_isee", "ConsultazioneSogliaIndicatore", "dlv-1")
ISEE = "http://inps.it/ConsultazioneISEE"


def _catalog(tmp_path: Path, text: str, name: str = "acme.toml"):  # type: ignore[no-untyped-def]
    (tmp_path / name).write_text(text)
    return load_agency_catalog(tmp_path, project_root=tmp_path, external_dir=tmp_path / "ext")


def test_the_repository_declares_every_builtin_agency() -> None:
    """The four built-in agencies are data too: one file each, version v1 current."""
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    for name, kind in {"inps": "soap", "inail": "soap", "cciaa": "soap", "runts": "rest"}.items():
        spec = catalog.contract(name)
        assert (spec.version, spec.kind, spec.envelope) == ("v1", kind, True)
    assert catalog.contract("inps_isee").document.parts[-2:] == ("inps-isee", "ConsultazioneISEE.wsdl")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[contracts.v1]\nkind = "soap"\nwsdl = "a.wsdl"\n', r"acme.toml: \[contracts.v1.receipt\] is required"),
        ('[contracts.v1]\nkind = "ftp"\n', r"contracts.v1.kind: expected one of"),
        ('[contracts.v1]\nkind = "soap"\nwsdl = "a.wsdl"\ncolour = 1\n[contracts.v1.receipt]\n'
         'protocol_number = "x"\n', r"unknown keys \['colour'\]"),
        ('[contracts.v1]\nkind = "soap"\nwsdl = "a.wsdl"\npattern = "pull"\n[contracts.v1.receipt]\n'
         'protocol_number = "x"\n', r"a SOAP pull contract names status_operation"),
        ('current = "v3"\n[contracts.v1]\nkind = "rest"\nopenapi = "a.yaml"\n[contracts.v1.receipt]\n'
         'protocol_number = "x"\n', r"'v3' is not a declared version"),
        ('[contracts.v1]\nkind = "rest"\nopenapi = "a.yaml"\n[contracts.v1.receipt]\n'
         'protocol_number = "x"\n[contracts.v1.fault_overrides]\nR1 = "maybe"\n', r"unknown kind 'maybe'"),
    ],
    ids=["no-receipt", "kind", "unknown-key", "pull-without-operations", "current", "override-kind"],
)
def test_a_malformed_agency_file_is_refused_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Every mistake in an agency file is named with the file and the key, at load."""
    with pytest.raises(ContractConfigError, match=message):
        _catalog(tmp_path, text)


def test_external_documents_resolve_under_the_external_dir(tmp_path: Path) -> None:
    """`external:` paths are read in place under external_dir, others under the project."""
    catalog = _catalog(tmp_path, '[contracts.v1]\nkind = "soap"\nwsdl = "external:x/y.wsdl"\n'
                                 'xsd = "schemas/y.xsd"\n[contracts.v1.receipt]\nprotocol_number = "p"\n')
    spec = catalog.contract("acme", "v1")
    assert spec.document == tmp_path / "ext" / "x" / "y.wsdl" and spec.xsd == tmp_path / "schemas" / "y.xsd"
    assert split_contract_ref("acme/v1") == ("acme", "v1") and split_contract_ref("acme") == ("acme", None)


def test_a_route_names_its_contract_version(tmp_path: Path) -> None:
    """`contract = "agency/version"` names the agency too; a contradiction is refused."""
    mappings = tmp_path / "m"
    mappings.mkdir()
    (mappings / "x.toml").write_text('[fields]\nb = "f:subject/f:name"\n')
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nkind = "durc_request"\ncontract = "acme/v2"\noperation = "Op"\nmapping = "x"\n')
    route = load_route_table(routes, mappings).for_kind("durc_request")[0]
    assert (route.agency, route.contract_version, route.where) == ("acme", "v2", "routes.toml route #1")
    routes.write_text('[[route]]\nkind = "durc_request"\nagency = "other"\ncontract = "acme/v2"\n'
                      'operation = "Op"\nmapping = "x"\n')
    with pytest.raises(MappingError, match="belongs to 'acme', not to agency 'other'"):
        load_route_table(routes, mappings)


def _isee_reader() -> XmlReceiptReader:
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    spec = catalog.contract("inps_isee")
    return XmlReceiptReader(spec.receipt, spec)


def _isee_reply(esito: str, extra: str = "") -> etree._Element:
    return etree.fromstring(
        f'<r:ConsultazioneSogliaIndicatoreResponse xmlns:r="{ISEE}"><r:ConsultazioneSogliaIndicatoreResult>'
        f"<r:IdRichiesta>4711</r:IdRichiesta><r:Esito>{esito}</r:Esito>{extra}"
        "</r:ConsultazioneSogliaIndicatoreResult></r:ConsultazioneSogliaIndicatoreResponse>")


def test_a_business_status_in_a_200_reply_is_classified() -> None:
    """ISEE answers 200 with an Esito: OK is a receipt, the others map to the error tree."""
    reader = _isee_reader()
    receipt = reader.receipt(_isee_reply("OK"), {}, "m1", CTX)
    assert receipt.protocol_number == "4711" and receipt.references == {"esito": "OK"}
    assert receipt.protocolled_at  # the reply has none: when the hub read it
    expected = {"DATI_NON_TROVATI": AgencyRejected, "RICHIESTA_INVALIDA": MessageRejectedAsInvalid,
                "DATABASE_OFFLINE": AgencyUnreachable, "BOH": AgencyProtocolError}
    for esito, error in expected.items():
        text = f"<r:DescrizioneErrore xmlns:r='{ISEE}'>perché</r:DescrizioneErrore>"
        with pytest.raises(error) as caught:
            reader.receipt(_isee_reply(esito, text), {}, "m1", CTX)
        assert caught.value.code == esito and "perché" in caught.value.text


def test_a_json_receipt_reads_paths_headers_and_the_hubs_own_id() -> None:
    """Dotted paths, a references object, an echo check; `own` stands in for a bodiless reply."""
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    runts = JsonReceiptReader(catalog.contract("runts").receipt)
    body = {"messageId": "m1", "protocollo": "RUNTS-2026-0000001", "dataProtocollo": "2026-01-01T00:00:00Z",
            "esito": "ACQUISITA", "riferimenti": {"numeroRepertorio": "0000001"}}
    receipt = runts.receipt(body, {}, "m1", CTX)
    assert receipt.references == {"numeroRepertorio": "0000001"}
    with pytest.raises(AgencyProtocolError, match="another message id"):
        runts.receipt(body, {}, "m2", CTX)
    waas = JsonReceiptReader(catalog.contract("inps_waas").receipt)
    assert waas.receipt({}, {}, "m9", CTX).protocol_number == "m9"


@pytest.mark.parametrize("pattern", [
    r"([A-Z]{6}\d{2}[A-Z]\d{2}[A-Z][A-Z0-9]{3}[A-Z])|(\d{11} {0,5})",
    r"INPS-ISEE-[0-9]{4}-[0-9]{8}[A-Z]-[0-9]{2}",
    r"[A-Z][0-9]{3}",
    r"[^@\s]+@[^@\s]+\.[^@\s]+",
])
def test_the_sandbox_generates_strings_that_match_a_pattern(pattern: str) -> None:
    """Values for pattern-restricted types come from the pattern itself."""
    for seed in range(5):
        assert re.fullmatch(pattern, from_pattern(pattern, seed))


def test_receipt_paths_become_steps_the_sandbox_can_materialise() -> None:
    assert path_steps("i:A/i:B[@x='1']/@C") == ("A", "B", "@C")
    assert path_steps("return/c") == ("return", "c")
    assert path_steps("//c") is None and path_steps("/a/b") is None


_RECURSIVE_OPENAPI = """
openapi: 3.0.3
info: {title: t, version: '1'}
paths:
  /alberi:
    post:
      operationId: Pianta
      requestBody:
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Nodo'}
      responses:
        '201':
          description: ok
          content:
            application/json:
              schema:
                type: object
                required: [protocollo]
                properties: {protocollo: {$ref: '#/components/schemas/Testo'}}
components:
  schemas:
    Testo: {type: string, minLength: 1}
    Nodo:
      type: object
      additionalProperties: false
      required: [nome]
      properties:
        nome: {$ref: '#/components/schemas/Testo'}
        figli: {type: array, items: {$ref: '#/components/schemas/Nodo'}}
"""


def test_a_recursive_schema_keeps_its_references_and_still_validates(tmp_path: Path) -> None:
    """References are inlined once where they can be; a cycle is left to the registry."""
    from adapters.openapi import load_openapi_contract

    (tmp_path / "alberi.yaml").write_text(_RECURSIVE_OPENAPI)
    catalog = _catalog(tmp_path, '[contracts.v1]\nkind = "rest"\nopenapi = "alberi.yaml"\n'
                                 '[contracts.v1.receipt]\nprotocol_number = "protocollo"\n')
    operation = load_openapi_contract(catalog.contract("acme")).operation("Pianta")
    assert "$ref" in str(operation.request.schema)
    assert "$ref" not in str(operation.receipts[201].schema)
    assert operation.request.is_valid({"nome": "a", "figli": [{"nome": "b", "figli": []}]})
    assert not operation.request.is_valid({"nome": "a", "figli": [{"nome": ""}]})
    assert not operation.request.is_valid({"nome": "a", "figli": [{"nome": "b", "x": 1}]})
    assert not operation.receipts[201].is_valid({"protocollo": ""})


_PLAIN = '[contracts.v1]\nkind = "rest"\nopenapi = "a.yaml"\n[contracts.v1.receipt]\nprotocol_number = "x"\n'


def test_an_agency_file_declares_its_callback_credential(tmp_path: Path) -> None:
    """`[callback]`: the profile, the registered certificate, the ModI issuer (default: the
    agency); without it the agency has no callback credential. Mistakes name file and key."""
    catalog = _catalog(tmp_path, _PLAIN + '[callback]\nprofile = "modi"\ncertificate = "keys/acme.crt"\n')
    spec = catalog.agency("acme").callback
    assert spec is not None and (spec.profile, spec.issuer, spec.private_key) == ("modi", "acme", None)
    assert spec.certificate == tmp_path / "keys" / "acme.crt"
    assert _catalog(tmp_path, _PLAIN, "plain.toml").agency("plain").callback is None
    with pytest.raises(ContractConfigError, match=r"acme.toml: agency.callback.profile: expected one of"):
        _catalog(tmp_path, _PLAIN + '[callback]\nprofile = "hmac"\ncertificate = "a.crt"\n')
    with pytest.raises(ContractConfigError, match=r"agency.callback.certificate: missing"):
        _catalog(tmp_path, _PLAIN + '[callback]\nprofile = "wss"\n')


def test_the_shipped_push_agencies_declare_a_callback_credential() -> None:
    """The agencies that call back today (the four simulated ones, AgID PUSH) say how they sign."""
    catalog = load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                                  external_dir=EXTERNAL_DIR)
    profiles = {name: a.callback.profile for name, a in catalog.agencies.items() if a.callback is not None}
    assert profiles == {"inps": "wss", "inail": "wss", "cciaa": "wss", "runts": "modi", "agid_push": "wss"}
