"""Agencies added with configuration only, end to end over real HTTP on loopback.

A DURC request is routed (tests/data/agencies/routes.toml) to the AgID reference SOAP 1.2
services — blocking, PULL and PUSH — and to the INPS ISEE SOAP 1.1 service, whose WSDLs are
read in place from ../shared/external; each is played by the schema-driven sandbox. The
agencies and mappings are files (config/agencies/, config/mappings/), no Python.
Each test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from cli.client import PortalClient, declarant_of, demo_user
from config.settings import PROJECT_ROOT, Settings
from simulators.sandbox_server import SandboxHandle, start_sandbox
from storage.tables import deliveries
from tests.external import require_external
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

DATA = PROJECT_ROOT / "tests" / "data" / "agencies"
DURC = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml").read_bytes()
REFS = ("agid_blocking/v1", "agid_pull/v1", "agid_push/v1", "inps_isee/v1")


def _client(hub: RunningHub) -> PortalClient:
    """The test portal, vouching for the DURC's declarant on every request (so that any client
    may read a filing another one submitted)."""
    return PortalClient(hub.base_url, TEST_PORTAL_KEY, user=demo_user(declarant_of(DURC)))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    """The four configured agencies, served by the sandbox on loopback for this module."""
    handle = start_sandbox(REFS, agencies_dir=PROJECT_ROOT / "config" / "agencies",
                           external_dir=require_external())
    try:
        yield handle
    finally:
        handle.stop()


def _settings(database_url: str, endpoints: dict[str, str], routes: str, **extra: Any) -> Settings:
    """The test hub's settings, with the configured agencies at `endpoints` (name → URL)."""
    settings = hub_settings(database_url, {})
    agencies = dict(settings.agencies)
    template = agencies["inps"]  # hub_settings made its retries and polls fast
    for name, url in endpoints.items():
        agencies[name] = template.model_copy(update={"endpoint": url, **extra.pop(name, {})})
    return settings.model_copy(update={"agencies": agencies, "routes_file": routes, **extra})


@pytest.fixture
def hub(database_url: str, sandbox: SandboxHandle) -> Iterator[RunningHub]:
    sandbox.reset()
    endpoints = {ref.split("/")[0]: sandbox.endpoint(ref) for ref in REFS}
    with RunningHub(_settings(database_url, endpoints, str(DATA / "routes.toml"))) as running:
        yield running


def _effects(sandbox: SandboxHandle, ref: str) -> list[dict[str, Any]]:
    return sandbox.ledger(ref)["effects"]


def test_a_filing_reaches_every_configured_agency(hub: RunningHub, sandbox: SandboxHandle) -> None:
    """Blocking, PULL, PUSH (SOAP 1.2) and ISEE (SOAP 1.1): a receipt from each, one effect each."""
    with _client(hub) as client:
        response = client.submit(DURC)
        assert response.status_code == 202, response.text
        reference = response.json()["reference"]
        view = client.wait_settled([reference], timeout=30)[reference]
    assert view["state"] == "protocolled", view
    by_agency = {r["agency"]: r for r in view["recipients"]}
    assert set(by_agency) == {ref.split("/")[0] for ref in REFS}
    for ref in REFS:
        recipient = by_agency[ref.split("/")[0]]
        effects = _effects(sandbox, ref)
        assert [e["messageId"] for e in effects] == [recipient["messageId"]], ref
        assert effects[0]["protocollo"] == recipient["protocolNumber"] and effects[0]["duplicates"] == 0
    assert by_agency["agid_blocking"]["protocolNumber"].startswith("AGID-")
    # ISEE: IdRichiesta stands for the acknowledgment; the Esito and DSU data are references.
    isee = by_agency["inps_isee"]
    assert isee["protocolNumber"].isdigit() and isee["references"]["esito"] == "OK"
    assert isee["references"]["protocolloDSU"].startswith("INPS-ISEE-")
    # PULL: acknowledged, then polled with MProcessingStatus until done, then MResponse.
    pull = sandbox.ledger("agid_pull/v1")
    assert pull["effects"][0]["mode"] == "pull" and pull["polls"] >= 2
    # PUSH: acknowledged, then the sandbox called the hub back (X-ReplyTo) once, successfully.
    push = _effects(sandbox, "agid_push/v1")[0]
    assert push["mode"] == "push" and push["callbacks"][-1]["status"] == 200


def test_sandbox_faults_are_retried_like_any_agency(hub: RunningHub, sandbox: SandboxHandle) -> None:
    """Two 503s from the sandboxed ISEE, then its receipt: three tries, one effect."""
    sandbox.set_faults("inps_isee/v1", [{"operation": "*", "kind": "http_status", "status": 503, "times": 2}])
    with _client(hub) as client:
        reference = client.submit(DURC).json()["reference"]
        view = client.wait_settled([reference], timeout=30)[reference]
    isee = next(r for r in view["recipients"] if r["agency"] == "inps_isee")
    assert isee["state"] == "protocolled" and isee["attempts"] == 3
    assert len(_effects(sandbox, "inps_isee/v1")) == 1


def test_a_sandbox_rejection_is_recorded_not_retried(hub: RunningHub, sandbox: SandboxHandle) -> None:
    """A business rejection (a SOAP Sender fault) rejects the recipient after one try."""
    sandbox.set_faults("agid_blocking/v1", [{"operation": "MRequest", "kind": "reject", "text": "no"}])
    with _client(hub) as client:
        reference = client.submit(DURC).json()["reference"]
        view = client.wait_settled([reference], timeout=30)[reference]
    blocking = next(r for r in view["recipients"] if r["agency"] == "agid_blocking")
    assert blocking["state"] == "rejected" and blocking["attempts"] == 1
    assert view["state"] == "partially_rejected"
    assert _effects(sandbox, "agid_blocking/v1") == []


def test_old_filings_finish_on_the_contract_version_they_were_planned_with(database_url: str) -> None:
    """Filed while routes named v1, delivered after v2 became current: it still goes to v1;
    a new filing goes to v2. Each delivery records its version."""
    versioned = DATA / "versioned"
    handle = start_sandbox(["agid_blocking/v1", "agid_blocking/v2"], agencies_dir=versioned / "agencies",
                           external_dir=require_external())
    try:
        endpoints = {"agid_blocking": handle.endpoint("agid_blocking/v2")}
        extra = {"agencies_dir": str(versioned / "agencies"),
                 "agid_blocking": {"endpoints": {"v1": handle.endpoint("agid_blocking/v1")}}}
        # Given a filing planned with v1, accepted while no worker runs
        first = _settings(database_url, endpoints, str(versioned / "routes-v1.toml"), **dict(extra))
        with RunningHub(first, with_workers=False) as running, _client(running) as client:
            old = client.submit(DURC).json()["reference"]
        # When the routes move to the current version (v2) and the workers start
        second = _settings(database_url, endpoints, str(versioned / "routes-current.toml"), **dict(extra))
        with RunningHub(second) as running, _client(running) as client:
            new = client.submit(DURC).json()["reference"]
            views = client.wait_settled([old, new], timeout=30)
            with running.hub.engine.connect() as conn:
                versions = dict(conn.execute(select(deliveries.c.message_id,
                                                    deliveries.c.contract_version)).all())
        # Then the old filing was delivered with v1, the new one with v2
        assert views[old]["state"] == views[new]["state"] == "protocolled"
        old_id = views[old]["recipients"][0]["messageId"]
        new_id = views[new]["recipients"][0]["messageId"]
        assert [e["messageId"] for e in handle.ledger("agid_blocking/v1")["effects"]] == [old_id]
        assert [e["messageId"] for e in handle.ledger("agid_blocking/v2")["effects"]] == [new_id]
        assert views[old]["recipients"][0]["protocolNumber"].startswith("AGIDV1-")
        assert versions == {old_id: "v1", new_id: "v2"}
    finally:
        handle.stop()
