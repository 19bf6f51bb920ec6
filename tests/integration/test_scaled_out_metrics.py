"""Every process of the scaled-out hub serves its metrics (issue 11, item 5): API, relay and
worker as OS processes on RabbitMQ and PostgreSQL, each scraped while filings flow."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.client import PortalClient
from tests.integration.rabbit_harness import Cluster, cluster, pg_url, rabbit_prefix, submit  # noqa: F401 - fixtures
from tests.support import TEST_PORTAL_KEY, free_port, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
    try:
        response = httpx.get(f"{url}/metrics", timeout=5, trust_env=False)
    except httpx.TransportError:
        return None
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def _sum(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_api_relay_and_worker_each_serve_metrics(cluster: Cluster, sims: Any) -> None:
    """The worker's counters follow its calls; the relay's listener is ready (broker and store
    answer); the API's gauges show the outbox drained and nothing open."""
    worker_port, relay_port = free_port(), free_port()
    cluster.start_api()
    cluster.start_relay(METRICS__RELAY_PORT=str(relay_port))
    cluster.start_worker("--metrics-port", str(worker_port))
    worker, relay = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{relay_port}"
    with PortalClient(cluster.base_url, TEST_PORTAL_KEY) as client:
        refs = [submit(client, "durc_request.xml") for _ in range(3)]
        client.wait_settled(refs, timeout=60)
    calls = wait_for(lambda: (s := _samples(worker)) is not None
                     and _sum(s, "crocevia_agency_attempts_total", agency="inps", result="ok") == 3 and s,
                     timeout=30, what="the worker's counters")
    assert _sum(calls, "crocevia_delivery_outcomes_total", agency="inps", state="protocolled") == 3
    ready = wait_for(lambda: _ready(relay), timeout=30, what="the relay's readiness")
    assert ready == {"status": "ready"}
    relayed = _samples(relay)
    assert relayed is not None and _sum(relayed, "crocevia_relay_published_total") >= 3
    assert _sum(relayed, "process_resident_memory_bytes") > 0
    api = _samples(cluster.base_url)
    assert api is not None
    assert _sum(api, "crocevia_intake_requests_total", status="202") == 3
    assert _sum(api, "crocevia_outbox_unpublished_jobs") == 0
    assert _sum(api, "crocevia_deliveries", agency="inps", state="pending") == 0


def _ready(url: str) -> dict[str, str] | None:
    try:
        response = httpx.get(f"{url}/readyz", timeout=5, trust_env=False)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None
