"""Overload at the intake over real HTTP: beyond `[api] max_inflight_submissions` and
`max_queue_wait_ms` a submission is answered 503 with `Retry-After` and leaves nothing; every
accepted one is stored and delivered once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from cli.client import PortalClient
from tests.integration.rabbit_harness import (  # noqa: F401 - fixtures
    EXAMPLES,
    Cluster,
    cluster,
    pg_url,
    rabbit_prefix,
)
from tests.support import TEST_PORTAL_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

MIX = ("business_start.xml", "durc_request.xml", "runts_registration.xml", "responsibility_declaration.xml")
CLIENTS = 24
EACH = 3


def test_submissions_beyond_the_limit_get_503_retry_after_and_leave_nothing(cluster: Cluster) -> None:
    """24 portals at once against 2 slots and a 1 ms wait: some refused, the rest all delivered."""
    cluster.env.update({"API__MAX_INFLIGHT_SUBMISSIONS": "2", "API__MAX_QUEUE_WAIT_MS": "1"})
    cluster.start_api()
    cluster.start_relay()
    cluster.start_worker()
    answers: list[tuple[str, int, str | None, str | None]] = []  # key, status, Retry-After, reference
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def portal(n: int) -> None:
        with PortalClient(cluster.base_url, TEST_PORTAL_KEY, timeout=30) as client:
            start.wait(30)
            for i in range(EACH):
                key = f"overload-{n}-{i}-{uuid.uuid4().hex[:8]}"
                r = client.submit((EXAMPLES / MIX[(n + i) % len(MIX)]).read_bytes(), idempotency_key=key)
                ref = r.json()["reference"] if r.status_code == 202 else None
                with lock:
                    answers.append((key, r.status_code, r.headers.get("retry-after"), ref))
                if r.status_code == 503:
                    assert r.headers["content-type"] == "application/problem+json"

    threads = [threading.Thread(target=portal, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == CLIENTS * EACH, cluster.logs()
    statuses = {status for _, status, _, _ in answers}
    assert statuses <= {202, 503}, answers
    refused = [a for a in answers if a[1] == 503]
    accepted = [a for a in answers if a[1] == 202]
    assert refused, "the gate refused nothing"
    assert accepted, "the gate accepted nothing"
    assert all(retry_after == "1" for _, _, retry_after, _ in refused)
    with cluster.engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT idempotency_key, reference FROM filings")).all())
    # Every accepted filing is stored under its reference; no refused one left a filing.
    assert stored == {key: ref for key, _, _, ref in accepted}
    cluster.wait_all_settled(timeout=90)
    cluster.assert_exactly_one_effect_each()
