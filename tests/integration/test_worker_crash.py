"""A worker process killed with SIGKILL in the middle of a delivery loses nothing.

The job's lease expires, another worker takes it, and the agency, seeing the same message
id, answers with its first receipt: exactly one effect per delivery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
#: Short, so the killed worker's jobs come back soon; still longer than the worst pass the
#: agency settings below allow (one try of at most 2.5 s; a poll's two exchanges: 5 s), which
#: the start-up check requires.
LEASE_SECONDS = 6


def _worker_env(database_url: str, sims) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENCIES__", "DATABASE__", "WORKER__"))}
    env.update({
        "DATABASE__URL": database_url,
        "WORKER__LEASE_SECONDS": str(LEASE_SECONDS),
        "WORKER__POLL_INTERVAL": "0.02",
        "WORKER__MAX_POLL_INTERVAL": "0.1",
        "LOG_LEVEL": "warning",
    })
    for agency in sims.urls:
        env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
        env[f"AGENCIES__{agency.upper()}__READ_TIMEOUT"] = "10"
        env[f"AGENCIES__{agency.upper()}__CALL_DEADLINE"] = "2.5"
        env[f"AGENCIES__{agency.upper()}__RETRY__ATTEMPTS"] = "1"
    return env


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "hub.py"), "worker"],
        env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def api(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints), with_workers=False) as running:
        yield running


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(api: RunningHub, database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL twice mid-delivery; every filing still completes with one effect per delivery."""
    with PortalClient(api.base_url, TEST_PORTAL_KEY) as client:
        references = [
            client.submit((EXAMPLES / name).read_bytes()).json()["reference"]
            for name in ("durc_request.xml", "business_start.xml", "responsibility_declaration.xml")
        ]
        # Slow agencies: the worker is certainly in the middle of calls when it dies.
        for agency in ("inps", "inail", "cciaa"):
            sims.set_faults(agency, [{"operation": "*", "kind": "latency", "delay_ms": 1500}])
        env = _worker_env(database_url, sims)
        for _ in range(2):
            worker = _start_worker(env)
            calls_before = sims.ledger("inps")["calls"]
            wait_for(lambda: sims.ledger("inps")["calls"] > calls_before, timeout=20, what="a call in flight")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        for agency in ("inps", "inail", "cciaa"):
            sims.set_faults(agency, [])
        survivor = _start_worker(env)
        try:
            views = client.wait_settled(references, timeout=40)
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(20)
    assert [views[r]["state"] for r in references] == ["protocolled"] * 3
    for reference in references:
        for recipient in views[reference]["recipients"]:
            effects = [e for e in sims.ledger(recipient["agency"])["effects"] if e["filingReference"] == reference]
            assert len(effects) == 1, (reference, recipient["agency"])
            assert effects[0]["protocollo"] == recipient["protocolNumber"]
    assert survivor.returncode == 0  # a SIGTERM drains and exits cleanly


def test_a_job_that_keeps_killing_its_workers_becomes_visibly_undeliverable(
    api: RunningHub, database_url: str, sims  # type: ignore[no-untyped-def]
) -> None:
    """A poison job is not sent a third time: its recipient turns undeliverable with the
    reason, the filing settles, and a resend (same message id) completes it with one effect."""
    env = {**_worker_env(database_url, sims), "WORKER__MAX_HANDOUTS": "2"}
    with PortalClient(api.base_url, TEST_PORTAL_KEY) as client:
        reference = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
        sims.set_faults("inps", [{"operation": "*", "kind": "latency", "delay_ms": 5000}])
        for _ in range(2):  # each worker dies while INPS holds the call
            worker = _start_worker(env)
            calls_before = sims.ledger("inps")["calls"]
            wait_for(lambda: sims.ledger("inps")["calls"] > calls_before, timeout=20, what="a call in flight")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        sims.set_faults("inps", [])
        calls_before = sims.ledger("inps")["calls"]
        survivor = _start_worker(env)
        try:
            view = client.wait_settled([reference], timeout=40)[reference]
            inps = next(r for r in view["recipients"] if r["agency"] == "inps")
            assert inps["state"] == "undeliverable"
            assert inps["outcomeCode"] == "POISON_JOB"
            assert "2 times without an outcome" in inps["outcomeText"]
            assert sims.ledger("inps")["calls"] == calls_before  # not sent a third time
            assert view["state"] != "in_progress"

            assert client.resend(reference, "inps").status_code == 202
            view = client.wait_settled([reference], timeout=40)[reference]
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(20)
    inps = next(r for r in view["recipients"] if r["agency"] == "inps")
    assert inps["state"] == "protocolled"
    effects = [e for e in sims.ledger("inps")["effects"] if e["filingReference"] == reference]
    assert len(effects) == 1 and effects[0]["protocollo"] == inps["protocolNumber"]
