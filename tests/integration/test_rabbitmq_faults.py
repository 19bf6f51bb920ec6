"""RabbitMQ + PostgreSQL with the hub as real OS processes: production faults lose nothing.

Each test starts the API (`hub.py serve`), relay(s) and worker(s) against the simulators, feeds
filings, injects one fault while they flow, and then checks every delivery is protocolled with
exactly one effect in its agency's ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

from cli.client import PortalClient
from tests.conftest import require_server
from tests.integration.rabbit_harness import (  # noqa: F401 - fixtures
    Cluster,
    cluster,
    deadline_loop,
    pg_url,
    rabbit_prefix,
    submit,
)
from tests.support import TEST_PORTAL_KEY, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

MIX = ("business_start.xml", "durc_request.xml", "runts_registration.xml", "responsibility_declaration.xml")


def _slow(sims: Any, delay_ms: int) -> None:
    for agency in ("inps", "inail", "cciaa", "runts"):
        sims.set_faults(agency, [{"operation": "*", "kind": "latency", "delay_ms": delay_ms}] if delay_ms else [])


def _calls(sims: Any) -> int:
    return sum(sims.ledger(a)["calls"] for a in ("inps", "inail", "cciaa", "runts"))


class _Feeder:
    """Submits filings from a thread until stopped (bounded in time); records every answer."""

    def __init__(self, base_url: str, *, limit_s: float = 60.0) -> None:
        self.base_url = base_url
        self.limit_s = limit_s
        self.references: list[str] = []
        self.statuses: list[int] = []
        self.retry_after: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tests.integration.rabbit_harness import EXAMPLES

        with PortalClient(self.base_url, TEST_PORTAL_KEY, timeout=15) as client:
            for i in deadline_loop(self.limit_s):
                if self._stop.is_set():
                    return
                try:
                    response = client.submit((EXAMPLES / MIX[i % len(MIX)]).read_bytes())
                except Exception:  # noqa: BLE001 - a refused connection counts as "no answer"
                    self.statuses.append(0)
                    self._stop.wait(0.05)
                    continue
                self.statuses.append(response.status_code)
                if response.status_code == 202:
                    self.references.append(response.json()["reference"])
                else:
                    self.retry_after.append(response.headers.get("retry-after"))
                self._stop.wait(0.02)  # pacing the load, not synchronising

    def __enter__(self) -> _Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_workers_killed_mid_delivery_lose_nothing_and_duplicate_no_effect(cluster: Cluster, sims: Any) -> None:
    """SIGKILL a worker three times while it has calls in flight: all filings complete, one effect each."""
    cluster.start_api()
    cluster.start_relay()
    _slow(sims, 1500)  # the victim is surely in the middle of calls when it dies
    with PortalClient(cluster.base_url, TEST_PORTAL_KEY) as client:
        for i in range(8):
            submit(client, MIX[i % len(MIX)])
        for round_ in range(3):
            victim = cluster.start_worker("--concurrency", "16")
            before = _calls(sims)
            wait_for(lambda: _calls(sims) > before, timeout=30, what=f"calls in flight (round {round_})")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            submit(client, MIX[round_ % len(MIX)])  # filings keep flowing
    _slow(sims, 0)
    survivors = [cluster.start_worker(), cluster.start_worker()]
    cluster.wait_all_settled(timeout=60)
    cluster.assert_exactly_one_effect_each()
    for worker in survivors:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0  # a SIGTERM drains and exits cleanly


def test_a_rabbitmq_restart_while_filings_flow_loses_nothing(cluster: Cluster, sims: Any) -> None:
    """`rabbitmqctl stop_app` / `start_app` mid-stream: relay and workers reconnect; nothing is lost."""
    cluster.start_api()
    cluster.start_relay()
    cluster.start_worker()
    cluster.start_worker()
    _slow(sims, 200)
    with _Feeder(cluster.base_url) as feeder:
        wait_for(lambda: cluster.scalar("SELECT count(*) FROM deliveries WHERE state = 'protocolled'") >= 5,
                 timeout=60, what="deliveries flowing")
        try:
            subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=120)
            stopped_at = len(feeder.references)
            # Intake does not need the broker: filings are accepted into the outbox meanwhile.
            wait_for(lambda: len(feeder.references) >= stopped_at + 5, timeout=30, what="intake while the broker is down")
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
        after = len(feeder.references)
        wait_for(lambda: len(feeder.references) >= after + 5, timeout=30, what="intake after the restart")
    assert set(feeder.statuses) == {202}
    _slow(sims, 0)
    cluster.wait_all_settled(timeout=90)
    cluster.assert_exactly_one_effect_each()


def test_a_relay_killed_between_publish_and_mark_loses_and_duplicates_nothing(cluster: Cluster, sims: Any) -> None:
    """The relay dies after the broker confirmed but before it marked the rows: another relay
    publishes them again; the second copies do no harm."""
    cluster.start_api()
    holder = cluster.start_relay(RELAY__HOLD_BEFORE_MARK="300", RELAY__LEASE_SECONDS="1")
    with PortalClient(cluster.base_url, TEST_PORTAL_KEY) as client:
        for i in range(8):
            submit(client, MIX[i % len(MIX)])
    jobs = cluster.scalar("SELECT count(*) FROM outbox")
    # Given every job confirmed by the broker and none marked published ...
    wait_for(lambda: cluster.queued() == jobs, timeout=30, what="every job confirmed by the broker")
    assert cluster.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 0
    # ... when the relay dies there, another relay publishes every job a second time ...
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    cluster.start_relay(RELAY__LEASE_SECONDS="1")
    wait_for(lambda: cluster.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == jobs,
             timeout=30, what="the second relay to publish and mark")
    assert cluster.queued() == 2 * jobs
    assert cluster.scalar("SELECT min(claims) FROM outbox") == 2
    # ... then the workers deliver each job once: the second copy of a job is not sent again.
    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_all_settled(timeout=60)
    cluster.assert_exactly_one_effect_each()
    wait_for(lambda: cluster.queued() == 0, timeout=20, what="every copy acknowledged")
    assert cluster.queued(dead=True) == 0


def _postgres_cluster_version() -> str:
    try:
        return sorted(os.listdir("/etc/postgresql"))[0]
    except (FileNotFoundError, IndexError):
        require_server("PostgreSQL (local cluster to restart)", "no /etc/postgresql")
        raise


def test_a_postgresql_restart_answers_503_meanwhile_and_loses_nothing(cluster: Cluster, sims: Any) -> None:
    """Intake answers 503 + Retry-After while the database is away, never a 500; then carries on."""
    version = _postgres_cluster_version()
    cluster.start_api()
    cluster.start_relay()
    cluster.start_worker()
    cluster.start_worker()
    with _Feeder(cluster.base_url) as feeder:
        wait_for(lambda: len(feeder.references) >= 10, timeout=30, what="filings flowing")
        try:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast"],
                           check=True, capture_output=True, timeout=60)
            wait_for(lambda: 503 in feeder.statuses, timeout=30, what="a 503 while the database is down")
        finally:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                           check=True, capture_output=True, timeout=60)
        seen = len(feeder.references)
        wait_for(lambda: len(feeder.references) >= seen + 10, timeout=60, what="intake after the restart")
    assert set(feeder.statuses) <= {202, 503}, sorted(set(feeder.statuses))
    assert feeder.retry_after and all(value for value in feeder.retry_after)
    cluster.wait_all_settled(timeout=90)
    cluster.assert_exactly_one_effect_each()
    answered = cluster.scalar("SELECT count(*) FROM filings")
    assert answered == len(feeder.references)  # every 202 was stored, no 503 stored anything


def test_an_agency_down_for_long_waits_in_the_database_while_the_others_flow(cluster: Cluster, sims: Any) -> None:
    """INAIL answers 503 for a long stretch: its deliveries wait on the persisted schedule (not in
    unacked messages) while the other agencies' deliveries complete at full speed."""
    slow_schedule = {"AGENCIES__INAIL__SCHEDULE__INITIAL_DELAY": "1.0", "AGENCIES__INAIL__SCHEDULE__MAX_DELAY": "2.0",
                     "AGENCIES__INAIL__SCHEDULE__MAX_ROUNDS": "1000"}
    cluster.env.update(slow_schedule)
    cluster.start_api()
    cluster.start_relay()
    cluster.start_worker()
    sims.set_faults("inail", [{"operation": "*", "kind": "http_status", "status": 503}])
    started = time.monotonic()
    with PortalClient(cluster.base_url, TEST_PORTAL_KEY) as client:
        for i in range(40):
            submit(client, MIX[i % len(MIX)])
    others = "SELECT count(*) FROM deliveries WHERE agency <> 'inail' AND state <> 'protocolled'"
    wait_for(lambda: cluster.scalar(others) == 0, timeout=60, what="the other agencies' deliveries")
    others_done = time.monotonic() - started
    inail_open = cluster.open_deliveries("inail")
    assert inail_open == 10
    # Every open INAIL job waits in the database, unpublished and due later: none sits in RabbitMQ.
    waiting = ("SELECT count(*) FROM outbox WHERE agency = 'inail' AND done_at IS NULL "
               "AND published_at IS NULL AND available_at > :now")
    wait_for(lambda: cluster.scalar(waiting, now=time.time()) == inail_open, timeout=10,
             what="INAIL's retries parked on the persisted schedule")
    # Each INAIL delivery goes through several scheduled jobs (failed passes, or passes deferred
    # while the agency's circuit is open), each a row that waited in the database.
    jobs_each = "SELECT min(n) FROM (SELECT count(*) AS n FROM outbox WHERE agency = 'inail' GROUP BY delivery_id) j"
    wait_for(lambda: cluster.scalar(jobs_each) >= 3, timeout=60, what="several scheduled passes")
    assert cluster.open_deliveries("inail") == 10
    sims.set_faults("inail", [])
    cluster.wait_all_settled(timeout=30)
    cluster.assert_exactly_one_effect_each()
    assert others_done < 30, f"the healthy agencies took {others_done:.1f}s"
