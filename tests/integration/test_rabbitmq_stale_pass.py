"""RabbitMQ: a pass that outlived its lease (its message was requeued and handed out again)
never commits or acknowledges for the newer pass (issue 10, item 4); only its calls are
counted."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from structlog.testing import capture_logs

from service.ports import AttemptRecord, Completion
from storage.store import SqlStore
from tests.integration.rabbit_harness import pg_url, rabbit_prefix  # noqa: F401 - fixtures
from tests.integration.test_rabbitmq_transport import AGENCIES, _params, _queue_depth, _source, store  # noqa: F401
from tests.integration.test_store import _new, _planner
from transport.rabbitmq import RabbitPublisher, Topology

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _call() -> list[AttemptRecord]:
    return [AttemptRecord(1, datetime.now(timezone.utc), 10.0, "ok")]


def test_a_pass_whose_lease_expired_is_dropped_and_the_redelivered_one_commits(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """Lease 0.3 s: the job comes back while the first pass runs; the first pass's outcome is
    dropped (the delivery unchanged but for its call, the message still held), the second's is
    committed: two calls, one protocol."""
    topology = Topology(rabbit_prefix, AGENCIES)
    ref = store.accept_filing(_new(), _planner(["inps"])).reference
    jobs = store.claim_unpublished("relay", 10, 30)

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        await publisher.publish(jobs)
        await publisher.close()
        source = _source(store, topology, lease_seconds=0.3)
        await source.start()
        try:
            taken = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while len(taken) < 2:  # bounded: the first hand-out, then the redelivery
                assert loop.time() < deadline, f"hand-outs so far: {taken}"
                taken += await source.claim("w", ["inps"], 10)
                await asyncio.sleep(0.05)
            stale, fresh = taken
            assert (stale.job_id, stale.handed_out, fresh.handed_out) == (fresh.job_id, 0, 1)
            with capture_logs() as logs:
                await source.complete([Completion(stale, "w", "protocolled", _call(), protocol_number="P-STALE",
                                                  outcome="ACQUISITA")])
            assert [e["reason"] for e in logs if e["event"] == "stale_pass_dropped"] == ["lease_expired"]
            view = store.get_filing(ref, "test")
            assert view is not None and view.deliveries[0].state == "pending" and view.deliveries[0].attempts == 1
            await source.complete([Completion(fresh, "w", "protocolled", _call(), protocol_number="P-FRESH",
                                              outcome="ACQUISITA")])
            view = store.get_filing(ref, "test")
            assert view is not None and view.deliveries[0].protocol_number == "P-FRESH"
            assert view.deliveries[0].attempts == 2
        finally:
            await source.close()
        assert _queue_depth(topology.queue("inps")) == 0

    asyncio.run(main())
