"""The RabbitMQ transport against the real broker: topology, confirms, acks, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pika
import pytest

from service.ports import Completion
from service.relay import OutboxJob, TransportError
from storage.engine import build_engine
from storage.store import SqlStore
from tests.integration.rabbit_harness import RABBITMQ_URL, pg_url, rabbit_prefix  # noqa: F401 - fixtures
from tests.integration.test_store import _new, _planner
from transport.rabbitmq import RabbitJobSource, RabbitPublisher, Topology, amqp_parameters

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

AGENCIES = ("cciaa", "inail", "inps", "runts")


@pytest.fixture
def store(pg_url: str) -> Iterator[SqlStore]:  # noqa: F811
    engine = build_engine(pg_url)
    yield SqlStore(engine)
    engine.dispose()


def _params(name: str) -> pika.URLParameters:
    return amqp_parameters(RABBITMQ_URL, name=name, heartbeat=10, timeout=5)


def _queue_depth(queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def _raw_publish(exchange: str, routing_key: str, body: bytes) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Bounded wait on a condition inside the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _source(store: SqlStore, topology: Topology, **kwargs) -> RabbitJobSource:  # type: ignore[no-untyped-def]
    return RabbitJobSource(parameters=_params("test-worker"), topology=topology,
                           prefetch={a: 8 for a in topology.agencies}, store=store, **kwargs)


def test_published_jobs_reach_a_worker_which_acks_only_after_the_commit(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """Confirmed jobs arrive as ClaimedJobs; the queue empties only once complete() committed."""
    topology = Topology(rabbit_prefix, AGENCIES)
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    jobs = store.claim_unpublished("relay", 10, 30)

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        assert sorted(await publisher.publish(jobs)) == sorted(j.job_id for j in jobs)
        await publisher.publish(jobs)  # published twice: a relay died before its mark
        await publisher.close()
        source = _source(store, topology)
        await source.start()
        claimed: list = []
        try:
            async def take() -> bool:
                claimed.extend(await source.claim("w", list(AGENCIES), 10))
                return len(claimed) >= 2

            deadline = asyncio.get_running_loop().time() + 10
            while not await take():
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            # The second copies are held back with the first: each job is handed out once.
            assert sorted(j.job_id for j in claimed) == sorted(j.job_id for j in jobs)
            assert await source.claim("w", list(AGENCIES), 10) == []
            await source.complete([Completion(job=j, owner="w", new_state="protocolled", protocol_number="P")
                                   for j in claimed])
        finally:
            await source.close()

    asyncio.run(main())
    assert [_queue_depth(topology.queue(a)) for a in ("inps", "inail")] == [0, 0]
    assert _queue_depth(topology.dead_queue("inps")) == 0
    assert store.load_jobs([j.job_id for j in jobs])[1] == {j.job_id for j in jobs}


def test_a_message_for_a_done_job_is_acked_without_being_handed_out(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """A duplicate publish of a job that is already done is dropped, not delivered again."""
    topology = Topology(rabbit_prefix, AGENCIES)
    store.accept_filing(_new(), _planner(["inps"]))
    [job] = store.claim_unpublished("relay", 10, 30)
    [loaded], _ = store.load_jobs([job.job_id])
    store.complete_jobs([Completion(job=loaded, owner="w", new_state="protocolled", protocol_number="P")])

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        assert await publisher.publish([job]) == [job.job_id]
        await publisher.close()
        source = _source(store, topology)
        seen: list[int] = []
        source.listen(lambda: seen.append(1))
        await source.start()
        try:
            await _until(lambda: seen)
            assert await source.claim("w", list(AGENCIES), 10) == []
        finally:
            await source.close()

    asyncio.run(main())
    assert _queue_depth(topology.queue("inps")) == 0
    assert _queue_depth(topology.dead_queue("inps")) == 0


def test_unreadable_messages_and_unknown_jobs_go_to_the_dead_letter_queue(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """Rejected without requeue: they land in the agency's dead-letter queue, never loop."""
    topology = Topology(rabbit_prefix, AGENCIES)

    async def declare() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        await publisher.publish([])  # nothing to send
        await publisher._ensure()  # noqa: SLF001 - declares the topology
        await publisher.close()

    asyncio.run(declare())
    _raw_publish(topology.exchange, "inail", b"not json")
    _raw_publish(topology.exchange, "inail", json.dumps({"job_id": 424242, "delivery_id": "x", "agency": "inail"}).encode())

    async def main() -> None:
        source = _source(store, topology)
        seen: list[int] = []
        source.listen(lambda: seen.append(1))
        await source.start()
        try:
            await _until(lambda: seen)  # the readable one arrived
            await _until(lambda: _queue_depth(topology.dead_queue("inail")) >= 1)
            assert await source.claim("w", list(AGENCIES), 10) == []
        finally:
            await source.close()

    asyncio.run(main())
    assert _queue_depth(topology.dead_queue("inail")) == 2
    assert _queue_depth(topology.queue("inail")) == 0


def test_a_job_never_completed_is_requeued_then_dead_lettered_at_the_delivery_limit(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """A pass that crashes leaves no outcome: after its lease the job returns, and the
    quorum queue's delivery limit turns a job that always crashes into a dead letter. Each
    hand-out tells the worker how often the job came back (its poison-job guard)."""
    topology = Topology(rabbit_prefix, AGENCIES, delivery_limit=2)
    store.accept_filing(_new(), _planner(["runts"]))
    jobs = store.claim_unpublished("relay", 10, 30)

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        assert await publisher.publish(jobs) == [jobs[0].job_id]
        await publisher.close()
        source = _source(store, topology, lease_seconds=0.05)
        await source.start()
        handed: list[int] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while _queue_depth(topology.dead_queue("runts")) == 0:
                assert loop.time() < deadline, f"not dead-lettered after hand-outs {handed}"
                handed += [j.handed_out for j in await source.claim("w", list(AGENCIES), 10)]  # never completed
                await asyncio.sleep(0.06)
        finally:
            await source.close()
        assert handed == [0, 1, 2]  # the first delivery and two redeliveries, each counted

    asyncio.run(main())


def test_an_unroutable_job_is_refused_not_confirmed(store: SqlStore, rabbit_prefix: str) -> None:  # noqa: F811
    """`mandatory`: a job for an agency with no queue is not taken as published."""
    topology = Topology(rabbit_prefix, ("inps",))

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        try:
            confirmed = await publisher.publish([OutboxJob(1, "d1", "inps"), OutboxJob(2, "d2", "nowhere")])
        finally:
            await publisher.close()
        assert confirmed == [1]

    asyncio.run(main())


def test_a_queue_declared_otherwise_is_a_typed_transport_error(rabbit_prefix: str) -> None:  # noqa: F811
    """An existing classic queue by the same name: the declaration fails with TransportError, not pika's."""
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    conn.channel().queue_declare(f"{rabbit_prefix}.delivery.cciaa.dead", durable=True)
    conn.close()

    async def main() -> None:
        publisher = RabbitPublisher(_params("test-relay"), Topology(rabbit_prefix, ("cciaa",)))
        try:
            with pytest.raises(TransportError):
                await publisher.publish([OutboxJob(1, "d1", "cciaa")])
        finally:
            await publisher.close()

    asyncio.run(main())


def test_the_queues_command_shows_open_jobs_ready_messages_and_dead_letters(
    store: SqlStore, pg_url: str, rabbit_prefix: str  # noqa: F811
) -> None:
    """What operations watch: per agency, jobs due and leased in the store, messages ready
    in the broker and messages dead-lettered."""
    import os
    import subprocess
    import sys

    from config.settings import PROJECT_ROOT

    topology = Topology(rabbit_prefix, AGENCIES)
    for _ in range(3):
        store.accept_filing(_new(), _planner(["runts"]))
    jobs = store.claim_unpublished("relay", 1, 30)  # one leased by a relay and published

    async def publish() -> None:
        publisher = RabbitPublisher(_params("test-relay"), topology)
        assert await publisher.publish(jobs) == [jobs[0].job_id]
        await publisher.close()

    asyncio.run(publish())
    _raw_publish(topology.dead_exchange, "inail", b"not json")
    env = {**os.environ, "DATABASE__URL": pg_url, "TRANSPORT__KIND": "rabbitmq",
           "TRANSPORT__URL": RABBITMQ_URL, "TRANSPORT__PREFIX": rabbit_prefix}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), "queues"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, _, *lines = done.stdout.splitlines()
    assert header.split() == ["agency", "due", "scheduled", "leased", "ready", "consumers", "dead"]
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines}
    assert rows["runts"] == [2, 0, 1, 1, 0, 0]
    assert rows["inail"] == [0, 0, 0, 0, 0, 1]
