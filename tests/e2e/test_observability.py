"""Observability over real HTTP (issue 11, item 5): `/metrics` moves with the deliveries,
`X-Request-ID` on every answer and in the logs, the circuit view marks a stopped worker's
breaker stale, and a worker process serves its own metrics and health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from cli.client import DEMO_OPERATOR, PortalClient, declarant_of, demo_user
from config.settings import PROJECT_ROOT
from storage.store import SqlStore
from tests.support import TEST_PORTAL_KEY, RunningHub, free_port, hub_settings, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


def scrape(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`/metrics`, parsed by prometheus_client's own text parser: (sample, labels) → value."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
def hub(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    settings = hub_settings(database_url, endpoints)
    # Every scrape reads the store afresh: the test compares readings taken moments apart.
    settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"store_ttl": 0.0})})
    with RunningHub(settings) as running:
        yield running


def test_metrics_counters_move_as_deliveries_do_under_faults(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """Two 503s from INAIL, one rejection from INPS: attempts, outcomes, latencies and intake
    counts in `/metrics` match what the simulators saw, and the backlog gauges empty."""
    before = scrape(hub.base_url)
    assert value(before, "crocevia_store_up") == 1
    assert value(before, "crocevia_agency_attempts_total") == 0
    sims.set_faults("inail", [{"operation": "*", "kind": "http_status", "status": 503, "times": 2}])
    sims.set_faults("inps", [{"operation": "*", "kind": "reject", "code": "E42", "times": 1}])
    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        refs = [client.submit((EXAMPLES / "business_start.xml").read_bytes()).json()["reference"] for _ in range(2)]
        refused = client.submit(b"<filing xmlns='urn:crocevia:filing:v1'><subject>")
        assert refused.status_code == 400
        views = client.wait_settled(refs, timeout=40)
    states = sorted(r["state"] for ref in refs for r in views[ref]["recipients"])
    assert states.count("rejected") == 1 and states.count("protocolled") == 5, states

    def counted() -> dict | None:
        samples = scrape(hub.base_url)
        return samples if value(samples, "crocevia_delivery_outcomes_total", state="protocolled") == 5 else None

    after = wait_for(counted, what="the outcome counters")
    # Intake: two accepted, one malformed, counted by status.
    assert value(after, "crocevia_intake_requests_total", status="202") == 2
    assert value(after, "crocevia_intake_requests_total", status="400") == 1
    # Attempts by agency and class, exactly as the agencies were called.
    assert value(after, "crocevia_agency_attempts_total", agency="inail", result="transient",
                 error_class="AgencyUnreachable") == 2
    assert value(after, "crocevia_agency_attempts_total", agency="inail", result="ok") == 2
    assert value(after, "crocevia_agency_attempts_total", agency="inps", result="permanent",
                 error_class="AgencyRejected") == 1
    assert value(after, "crocevia_agency_attempts_total", agency="inps", result="ok") == 1
    assert value(after, "crocevia_agency_attempts_total", agency="cciaa", result="ok") == 2
    calls = sum(len(sims.ledger(a)["effects"]) for a in ("inps", "inail", "cciaa"))
    assert calls == 5  # the 503s left no effect; the rejection neither
    # Every call is timed: the histograms count as many calls as the attempt counters.
    assert value(after, "crocevia_agency_call_duration_seconds_count", agency="inail") == 4
    assert value(after, "crocevia_delivery_outcomes_total", agency="inps", state="rejected") == 1
    # Gauges read from the store: nothing open any more, no job waiting.
    assert value(after, "crocevia_deliveries", state="pending") == 0
    assert value(after, "crocevia_deliveries", state="retrying") == 0
    assert value(after, "crocevia_queue_jobs", state="due") == 0
    assert value(after, "crocevia_circuit_state", agency="inail", state="closed") == 1
    assert value(after, "crocevia_circuit_stale", agency="inail") == 0


def test_undeliverable_recipients_show_in_the_backlog_gauge(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """An agency down past its retries leaves an undeliverable recipient the gauge counts."""
    sims.set_faults("inps", [{"operation": "*", "kind": "http_status", "status": 503}])
    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
        view = client.wait_settled([ref], timeout=40)[ref]
    assert view["recipients"][0]["state"] == "undeliverable"
    samples = scrape(hub.base_url)
    assert value(samples, "crocevia_deliveries", agency="inps", state="undeliverable") == 1
    assert value(samples, "crocevia_delivery_outcomes_total", agency="inps", state="undeliverable") == 1
    assert value(samples, "crocevia_agency_attempts_total", agency="inps", result="transient") >= 3


def test_request_id_is_echoed_or_generated_and_bound_in_the_logs(sims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A sane X-Request-ID comes back and names the request's log lines; an unsafe or
    missing one is replaced by a generated id, on errors as on successes."""
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with capture_logs(processors=[merge_contextvars]) as events:
        with RunningHub(hub_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", endpoints)) as hub:
            with PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
                accepted = client.submit((EXAMPLES / "durc_request.xml").read_bytes())
                given = client._send("GET", "/v1/filings/CRV-0000-000000", user=None,
                                     headers={"X-Request-ID": "portal-42.a:b"})
            plain = httpx.get(f"{hub.base_url}/healthz", headers={"X-Request-ID": "evil id <script>"})
            long_id = httpx.get(f"{hub.base_url}/nowhere", headers={"X-Request-ID": "x" * 129})
            alias = httpx.get(f"{hub.base_url}/health")
    assert given.headers["x-request-id"] == "portal-42.a:b"
    generated = accepted.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert plain.status_code == 200 and plain.json() == {"status": "ok"}
    assert plain.headers["x-request-id"] != "evil id <script>" and len(plain.headers["x-request-id"]) == 32
    assert long_id.status_code == 404 and len(long_id.headers["x-request-id"]) == 32
    assert alias.status_code == 200 and alias.headers["x-request-id"]
    # The request's log lines carry its id.
    accepted_lines = [e for e in events if e["event"] == "filing_accepted"]
    assert accepted_lines and accepted_lines[0]["request_id"] == generated
    refused = [e for e in events if e.get("request_id") == "portal-42.a:b"]
    assert refused, "no log line names the caller's request id"


def test_circuit_of_a_stopped_worker_is_marked_stale(database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    """A worker reports its breakers while it runs; once it stops, the circuit view (and
    `/metrics`) mark its report stale after the configured horizon."""
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    settings = hub_settings(database_url, endpoints)
    settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(
        update={"circuit_report_interval": 0.2, "circuit_stale_after": 1.5, "store_ttl": 0.0})})
    with RunningHub(settings) as with_worker, PortalClient(with_worker.base_url, TEST_PORTAL_KEY) as client:
        def reported() -> list[dict]:
            listing = [a for a in client.agencies().json()["agencies"] if a["reportedBy"]]
            return listing if {a["agency"] for a in listing} >= {"inps", "inail", "cciaa", "runts"} else []

        listing = wait_for(reported, what="the worker's circuit reports")
        assert not any(a["stale"] for a in listing)
        assert all(a["updatedAt"].endswith("Z") for a in listing)
        worker_name = listing[0]["reportedBy"]
    # The worker is gone; an API without workers keeps serving the last reports.
    with RunningHub(settings, with_workers=False) as api_only, \
            PortalClient(api_only.base_url, TEST_PORTAL_KEY) as client:
        def marked() -> list[dict]:
            stale = [a for a in client.agencies().json()["agencies"] if a["stale"]]
            return stale if {a["agency"] for a in stale} >= {"inps", "inail", "cciaa", "runts"} else []

        stale = wait_for(marked, timeout=10, what="the stale mark")
        assert all(a["reportedBy"] == worker_name for a in stale)
        assert value(scrape(api_only.base_url), "crocevia_circuit_stale", agency="inps") == 1


def test_worker_process_serves_metrics_health_and_readiness(tmp_path, sims) -> None:  # type: ignore[no-untyped-def]
    """`hub.py worker --metrics-port` answers /healthz, /readyz and /metrics, then stops on SIGTERM."""
    port = free_port()
    env = {**os.environ, "DATABASE__URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "LOG_LEVEL": "warning",
           **{f"AGENCIES__{a.upper()}__ENDPOINT": sims.soap_endpoint(a) for a in sims.urls}}
    process = subprocess.Popen([sys.executable, "hub.py", "worker", "--metrics-port", str(port)],
                               cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def answers(path: str) -> httpx.Response | None:
        try:
            return httpx.get(base + path, timeout=5)
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            return None

    try:
        health = wait_for(lambda: answers("/healthz"), timeout=60, what="the worker's listener")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert health.headers["x-request-id"]
        ready = wait_for(lambda: (r := answers("/readyz")) is not None and r.status_code == 200 and r,
                         what="the worker's readiness")
        assert ready.json() == {"status": "ready"}
        metrics = answers("/metrics")
        assert metrics is not None and metrics.status_code == 200
        names = {f.name for f in text_string_to_metric_families(metrics.text)}
        assert {"crocevia_agency_attempts", "crocevia_agency_call_duration_seconds",
                "crocevia_delivery_outcomes"} <= names
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, process.stdout.read().decode()  # type: ignore[union-attr]


class _Portal:
    """A portal's callback endpoint on loopback that refuses pushes until told to accept them."""

    def __init__(self) -> None:
        self.accepting = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(204 if owner.accepting else 503)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_notifier_backlog_grows_while_the_portal_refuses_and_drains_after(database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    """Events wait for a portal whose callback answers 503: the backlog gauge counts them, with
    the oldest one's age; once the portal accepts, it drains to zero."""
    portal = _Portal()
    try:
        settings = hub_settings(database_url, {agency: sims.soap_endpoint(agency) for agency in sims.urls})
        portals = dict(settings.portals)
        portals["test"] = portals["test"].model_copy(update={"callback_url": portal.url,
                                                             "callback_secret": SecretStr("s3cret-for-tests")})
        settings = settings.model_copy(update={"portals": portals, "metrics": settings.metrics.model_copy(
            update={"store_ttl": 0.0})})
        with RunningHub(settings) as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            ref = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
            client.wait_settled([ref], timeout=30)
            waiting = wait_for(lambda: (s := scrape(hub.base_url))
                               and value(s, "crocevia_notifier_backlog_events", portal="test") >= 2 and s,
                               what="the notifier backlog")
            assert value(waiting, "crocevia_notifier_oldest_age_seconds", portal="test") >= 0
            assert value(waiting, "crocevia_notifier_backlog_events", portal="other") == 0
            portal.accepting = True
            wait_for(lambda: value(scrape(hub.base_url), "crocevia_notifier_backlog_events", portal="test") == 0,
                     what="the backlog to drain")
    finally:
        portal.close()


class _FailingReads(SqlStore):
    """The real store, with a bug injected into filing reads (the path to a 500)."""

    def get_filing(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug in get_filing")


def test_a_server_error_carries_the_request_id_too(sims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bug answered 500 by the outer error handler still echoes the request id, and the
    `request_failed` line (with its traceback) names it; the 500 is counted."""
    settings = hub_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", {a: sims.soap_endpoint(a) for a in sims.urls})
    running = RunningHub(settings, with_workers=False)
    running.hub.store = _FailingReads(running.hub.engine)
    with capture_logs(processors=[merge_contextvars]) as events:
        with running as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            failed = client._send("GET", "/v1/filings/CRV-2026-000001", user=demo_user(DEMO_OPERATOR),
                                  headers={"X-Request-ID": "trace-500"})
            samples = scrape(hub.base_url)
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "trace-500"
    assert failed.headers["content-type"] == "application/problem+json"
    logged = [e for e in events if e["event"] == "request_failed"]
    assert logged and logged[0]["request_id"] == "trace-500"
    assert value(samples, "crocevia_http_requests_total", method="GET", status="500") == 1


class _FailingIntake(SqlStore):
    """The real store, with a bug injected into the intake's commit (a 500 on `POST /v1/filings`)."""

    def accept_filings(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug in accept_filings")


def test_a_server_error_on_a_submission_carries_the_request_id_too(sims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`POST /v1/filings` (served past Starlette's router) fails as any route does: a 500 problem
    with the request id, the `request_failed` line naming it, the 500 counted."""
    settings = hub_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", {a: sims.soap_endpoint(a) for a in sims.urls})
    running = RunningHub(settings, with_workers=False)
    running.hub.store = _FailingIntake(running.hub.engine)
    document = (EXAMPLES / "durc_request.xml").read_bytes()
    with capture_logs(processors=[merge_contextvars]) as events:
        with running as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            failed = client._send("POST", "/v1/filings", user=demo_user(declarant_of(document)), content=document,
                                  headers={"Content-Type": "application/xml", "X-Request-ID": "trace-post-500"})
            samples = scrape(hub.base_url)
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "trace-post-500"
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["type"] == "urn:crocevia:problem:internal-error"
    logged = [e for e in events if e["event"] == "request_failed"]
    assert logged and logged[0]["request_id"] == "trace-post-500"
    assert value(samples, "crocevia_http_requests_total", method="POST", status="500") == 1
