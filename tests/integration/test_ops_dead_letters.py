"""Operators' actions on the real RabbitMQ: a job's message that the broker dead-lettered is
listed (nothing moves), previewed, replayed and delivered once through the operator API; a
paused agency gets no call from any worker process until it is resumed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pika
import pytest
from sqlalchemy import select

from tests.e2e.test_delivery_semantics import DURC, _submit
from tests.integration.rabbit_harness import RABBITMQ_URL, cluster, pg_url, rabbit_prefix  # noqa: F401 - fixtures
from tests.ops_support import OpsServer
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for
from cli.client import PortalClient
from storage.tables import audit_log, outbox
from transport.amqp import Topology
from transport.dead_letters import RabbitDeadLetters

pytestmark = [pytest.mark.rabbitmq]

OPERATOR = {"x-test-role": "operator", "x-test-operator": "bob"}


def _rabbit_settings(database_url: str, sims: Any, prefix: str) -> Any:
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
    return settings.model_copy(update={"transport": settings.transport.model_copy(
        update={"kind": "rabbitmq", "prefix": prefix})})


def _dead_letter(topology: Topology, body: bytes, agency: str) -> None:
    """What the broker does to a message a consumer rejects: into `<agency>.dead`, x-death set."""
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.exchange, agency, body,
                              pika.BasicProperties(delivery_mode=2, type="crocevia.delivery.v1"), mandatory=True)
        method, _, _ = channel.basic_get(topology.queue(agency), auto_ack=False)
        assert method is not None
        channel.basic_reject(method.delivery_tag, requeue=False)
    finally:
        conn.close()


def _depth(queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_a_dead_letter_is_listed_previewed_replayed_and_delivered_once(
        rabbit_prefix: str, sims, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"
    settings = _rabbit_settings(database_url, sims, rabbit_prefix)
    topology = Topology(prefix=rabbit_prefix, agencies=("cciaa", "inail", "inps", "runts"))
    # Given a filing accepted by a hub without workers, whose job's message died on the broker
    with RunningHub(settings, with_workers=False) as hub:
        with PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            ref = _submit(client, DURC)
        with hub.hub.engine.connect() as conn:
            job = conn.execute(select(outbox.c.id, outbox.c.delivery_id)).one()
        hub.hub.store.mark_published([job.id])  # the relay had published it
        conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = conn.channel()
        channel.exchange_declare(topology.exchange, "direct", durable=True)
        channel.exchange_declare(topology.dead_exchange, "direct", durable=True)
        for agency in topology.agencies:
            channel.queue_declare(topology.dead_queue(agency), durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_bind(topology.dead_queue(agency), topology.dead_exchange, agency)
            channel.queue_declare(topology.queue(agency), durable=True, arguments=topology.queue_arguments(agency))
            channel.queue_bind(topology.queue(agency), topology.exchange, agency)
        conn.close()
        body = json.dumps({"job_id": job.id, "delivery_id": job.delivery_id, "agency": "inps"}).encode()
        _dead_letter(topology, body, "inps")

        with OpsServer(hub, dead_letters=RabbitDeadLetters(RABBITMQ_URL, topology)) as server, \
                httpx.Client(base_url=f"{server.base_url}/v1/ops", headers=OPERATOR, trust_env=False,
                             timeout=30) as op:
            # When an operator lists them: the message is shown, and stays
            listing = op.get("/dead-letters", params={"agency": "inps"})
            assert listing.status_code == 200, listing.text
            (shown,) = listing.json()["messages"]
            assert shown["jobId"] == job.id and shown["deliveryId"] == job.delivery_id
            assert shown["reason"] == "rejected" and shown["deadLetteredAt"]
            assert listing.json()["counts"] == {"inps": 1}
            assert op.get("/dead-letters").json()["total"] == 1  # again: nothing moved
            preview = op.post("/dead-letters/replay", json={"agency": "inps"})
            assert preview.status_code == 200 and preview.json()["preview"]["wouldReplay"] == 1
            assert _depth(topology.dead_queue("inps")) == 1 and _depth(topology.queue("inps")) == 0

            # Then the confirmed replay moves it back to the agency's queue
            done = op.post("/dead-letters/replay", json={"agency": "inps", "confirm": True, "reason": "INPS fixed"})
            assert done.status_code == 202, done.text
            assert done.json()["replayed"] == 1
            assert _depth(topology.dead_queue("inps")) == 0 and _depth(topology.queue("inps")) == 1
            assert op.get("/dead-letters").json()["total"] == 0
        with hub.hub.engine.connect() as conn:
            line = conn.execute(select(audit_log.c.actor, audit_log.c.detail)
                                .where(audit_log.c.action == "dead_letters_replayed")).one()
        assert line.actor == "operator:bob" and line.detail["jobIds"] == [job.id]

    # And a worker delivers the replayed job, once
    with RunningHub(settings) as hub:
        view = wait_for(lambda: (v := hub.hub.store.get_filing(ref, None)) and v.state == "protocolled" and v,
                        what="the replayed job delivered")
        (inps,) = view.deliveries
        effects = [e for e in sims.ledger("inps")["effects"] if e["filingReference"] == ref]
        assert [(e["messageId"], e["protocollo"]) for e in effects] == [(inps.message_id, inps.protocol_number)]


def test_a_pause_holds_every_worker_process_on_rabbitmq_and_resume_delivers(cluster, sims) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """API, relay and two workers as OS processes: INPS paused in the store gets no call from
    either worker (its jobs are acknowledged and parked in the outbox, nothing lost); resumed,
    every filing is protocolled with exactly one effect."""
    from storage.engine import build_engine
    from storage.store import SqlStore

    cluster.start_api()
    cluster.start_relay()
    cluster.start_worker()
    cluster.start_worker()
    store = SqlStore(build_engine(cluster.database_url))
    try:
        assert store.pause_agency("inps", actor="operator:erin", reason="INPS maintenance")
        with PortalClient(cluster.base_url, TEST_PORTAL_KEY) as client:
            refs = [_submit(client, DURC) for _ in range(3)]
        # Each worker that met a job moved it (no call): the jobs wait in the outbox, not the queue.
        wait_for(lambda: cluster.scalar("SELECT count(*) FROM deliveries WHERE agency = 'inps' "
                                        "AND next_attempt_at IS NOT NULL") == 3, timeout=30,
                 what="the paused jobs deferred")
        assert sims.ledger("inps")["calls"] == 0
        assert store.resume_agency("inps", actor="operator:erin") == 3
        cluster.wait_all_settled(timeout=60)
        cluster.assert_exactly_one_effect_each()
        assert cluster.scalar("SELECT count(*) FROM filings WHERE state = 'protocolled'") == len(refs)
    finally:
        store._engine.dispose()  # noqa: SLF001 - the test's own engine
