"""The hub on a three-node RabbitMQ cluster (ops/rabbitmq-cluster/cluster.sh) with quorum queues:
stopping or killing the node that leads the queues while filings flow loses nothing, duplicates
no effect, and the workers carry on through the other nodes (`[transport] urls`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import PROJECT_ROOT, load_settings
from tests.conftest import require_server
from tests.integration.rabbit_harness import RABBITMQ_URL, Cluster, pg_url  # noqa: F401 - fixture
from tests.integration.test_rabbitmq_faults import _Feeder, _slow
from tests.support import wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SCRIPT = PROJECT_ROOT / "ops" / "rabbitmq-cluster" / "cluster.sh"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """An AMQP port p with p..p+2 and their distribution ports (p+20000..) all free."""
    for base in range(5700 + os.getpid() % 200 * 3, 6400, 3):
        if all(_free(p) and _free(p + 20000) for p in range(base, base + 3)):
            return base
    raise RuntimeError("no free ports for the cluster")


class RabbitCluster:
    """The three nodes started by the script, in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.env = {**os.environ, "CLUSTER_DIR": str(directory),
                    "CLUSTER_NAME": f"crvt{uuid.uuid4().hex[:6]}", "CLUSTER_PORT": str(_base_port())}
        self.urls: list[str] = []

    def run(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        return done.stdout

    def leaders(self, prefix: str, *, ask: int = 1) -> dict[str, str]:
        """Queue name → the node that leads it, as node `ask` sees it."""
        name = self.env["CLUSTER_NAME"]
        ctl = ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", "-n", f"{name}{ask}@localhost",
               "list_queues", "name", "leader", "--formatter", "json"]
        env = {**self.env, "HOME": self.env["CLUSTER_DIR"],
               "RABBITMQ_CONF_ENV_FILE": str(Path(self.env["CLUSTER_DIR"]) / "empty.env"),
               "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
        out = subprocess.run(ctl, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
        return {q["name"]: q["leader"] for q in json.loads(out) if q["name"].startswith(prefix)}


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three nodes on loopback ports of their own; fails under CI=true if they cannot start."""
    directory = Path(tempfile.mkdtemp(prefix="crocevia-rmq-cluster-"))
    running = RabbitCluster(directory)
    try:
        running.urls = running.run("start").split()[-1].split(",")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        subprocess.run([str(SCRIPT), "stop"], env=running.env, capture_output=True, timeout=180)
        shutil.rmtree(directory, ignore_errors=True)
        require_server("a three-node RabbitMQ cluster", str(exc)[:500])
    try:
        yield running
    finally:
        try:
            running.run("stop")
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def test_urls_setting_lists_the_other_nodes_of_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TRANSPORT__URLS` (JSON list) gives the nodes tried after `TRANSPORT__URL`."""
    monkeypatch.setenv("TRANSPORT__URLS", '["amqp://a:5682/%2F", "amqp://a:5683/%2F"]')
    urls = load_settings().transport.urls
    assert [u.get_secret_value() for u in urls] == ["amqp://a:5682/%2F", "amqp://a:5683/%2F"]


def test_a_connection_skips_an_address_that_does_not_answer() -> None:
    """The first address refuses; the connection is opened on the next one."""
    import pika

    from service.relay import BrokerUnavailable
    from transport.amqp import AmqpConnection, amqp_parameters

    dead = f"amqp://guest:guest@127.0.0.1:{_base_port()}/%2F"

    async def connect() -> None:
        try:
            conn = await AmqpConnection.open([amqp_parameters(dead, name="t"), amqp_parameters(RABBITMQ_URL, name="t")])
        except BrokerUnavailable as exc:
            require_server("RabbitMQ", str(exc))
        assert conn.raw.params.port == pika.URLParameters(RABBITMQ_URL).port
        await conn.close()
        with pytest.raises(BrokerUnavailable):
            await AmqpConnection.open([amqp_parameters(dead, name="t")])

    asyncio.run(connect())


def _leader_lost_under_flow(rabbit_cluster: RabbitCluster, pg_url: str, sims: Any, how: str) -> None:
    """Relay and two workers on the cluster; the node leading the queues goes (`how`:
    stop-node or kill-node) while filings flow; everything is delivered exactly once."""
    rabbit_cluster.run("start")  # every node up (a previous test may have left one down)
    prefix = f"crvtest-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="crocevia-rabbit-") as workdir:
        hub = Cluster(pg_url, prefix, sims, Path(workdir))
        hub.env["TRANSPORT__URL"] = rabbit_cluster.urls[0]
        hub.env["TRANSPORT__URLS"] = json.dumps(rabbit_cluster.urls[1:])
        try:
            hub.start_api()
            hub.start_relay()
            workers = [hub.start_worker("--concurrency", "16"), hub.start_worker("--concurrency", "16")]
            _slow(sims, 50)  # calls are in flight when the node goes
            protocolled = "SELECT count(*) FROM deliveries WHERE state = 'protocolled'"
            with _Feeder(hub.base_url) as feeder:
                wait_for(lambda: hub.scalar(protocolled) >= 10, timeout=60, what="deliveries flowing")
                leaders = rabbit_cluster.leaders(prefix)
                assert len(leaders) == 8, leaders  # four agencies, each a queue and its dead letters
                leader = leaders[f"{prefix}.delivery.inps"]
                victim = int(leader.split("@")[0][-1])
                rabbit_cluster.run(how, str(victim))
                after_stop = hub.scalar(protocolled)
                # The workers carry on through the two nodes left (new leaders elected).
                wait_for(lambda: hub.scalar(protocolled) >= after_stop + 30, timeout=60,
                         what="deliveries after the node went")
                survivor = 1 if victim != 1 else 2
                assert rabbit_cluster.leaders(prefix, ask=survivor)[f"{prefix}.delivery.inps"] != leader
            assert set(feeder.statuses) == {202}, feeder.statuses
            assert feeder.references
            _slow(sims, 0)
            hub.wait_all_settled(timeout=90)
            hub.assert_exactly_one_effect_each()
            assert all(w.poll() is None for w in workers), hub.logs()
            assert hub.scalar("SELECT count(*) FROM filings") == len(feeder.references)
        finally:
            hub.stop_all()


def test_stopping_the_queue_leader_under_flow_loses_nothing_and_the_workers_carry_on(
        rabbit_cluster: RabbitCluster, pg_url: str, sims: Any) -> None:  # noqa: F811
    """The node leading the queues is stopped (`rabbitmqctl stop`) mid-stream."""
    _leader_lost_under_flow(rabbit_cluster, pg_url, sims, "stop-node")


def test_killing_the_queue_leader_under_flow_loses_nothing_and_the_workers_carry_on(
        rabbit_cluster: RabbitCluster, pg_url: str, sims: Any) -> None:  # noqa: F811
    """The node leading the queues is killed (SIGKILL) mid-stream: the relay reopens a channel
    that the broker keeps nacking, the workers take their redelivered messages once."""
    _leader_lost_under_flow(rabbit_cluster, pg_url, sims, "kill-node")
