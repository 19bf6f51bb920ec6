"""Expected faults log one warning line each, as the hub's processes write them (JSON lines):
a broker that goes away and refuses reconnections, an agency that refuses connections."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.integration.rabbit_harness import RABBITMQ_URL, rabbit_prefix  # noqa: F401 - fixture
from tests.support import TEST_PORTAL_KEY, RunningHub, free_port, hub_settings, process_logging
from tests.tcp_proxy import TcpProxy
from transport.amqp import Topology, amqp_parameters
from transport.rabbitmq import RabbitJobSource

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


@pytest.fixture
def process_log() -> Iterator[io.StringIO]:
    """The logging of a hub process (`configure_logging`) written to a buffer; the test
    runner's own logging is put back afterwards."""
    stream = io.StringIO()
    with process_logging(stream):
        yield stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_lost_broker_is_one_warning_line_per_reconnect_attempt(process_log: io.StringIO, rabbit_prefix: str) -> None:  # noqa: F811
    """The connection drops, then three attempts are refused: pika writes one WARNING line for
    the loss and one per attempt (not seven ERROR lines each), and nothing carries a traceback."""
    topology = Topology(rabbit_prefix, ("inps",))

    async def scenario(proxy: TcpProxy) -> None:
        source = RabbitJobSource(
            parameters=amqp_parameters(_via(proxy), name="test", timeout=2),
            topology=topology, prefetch={"inps": 1}, store=None, reconnect_initial=0.05, reconnect_max=0.1,
        )
        await source.start()
        try:
            await asyncio.wait_for(source.connected.wait(), 20)
            await asyncio.to_thread(proxy.cut)
            deadline = time.monotonic() + 20
            while sum(e["event"] == "broker_unavailable" for e in _lines(process_log)) < 3:
                assert time.monotonic() < deadline, "no reconnect attempts"
                await asyncio.sleep(0.02)
            proxy.restore()
            await asyncio.wait_for(_reconnected(source), 20)
        finally:
            await source.close()

    broker = urlsplit(RABBITMQ_URL)
    with TcpProxy((broker.hostname or "127.0.0.1", broker.port or 5672)) as proxy:
        asyncio.run(scenario(proxy))
    lines = _lines(process_log)
    pika_lines = [e for e in lines if e.get("logger", "").startswith("pika")]
    attempts = [e for e in lines if e["event"] == "broker_unavailable"]
    lost = [e for e in lines if e["event"] == "broker_connection_lost"]
    assert len(lost) == 1 and len(attempts) >= 3
    assert len(pika_lines) == len(lost) + len(attempts), [e["event"][:60] for e in pika_lines]
    assert {e["level"] for e in pika_lines + attempts + lost} == {"warning"}
    assert all("Connection refused" in e["error"] for e in attempts)
    assert not [e for e in lines if "exception" in e or e["level"] in ("error", "critical")]


def _via(proxy: TcpProxy) -> str:
    parts = urlsplit(RABBITMQ_URL)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def _reconnected(source: RabbitJobSource) -> None:
    while not source.connected.is_set():
        await asyncio.sleep(0.02)


def test_an_agency_that_refuses_connections_is_one_warning_per_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every pass against an agency that is down logs one warning (its retry scheduled) and no
    traceback, until the delivery is given up as undeliverable."""
    closed = f"http://127.0.0.1:{free_port()}/soap"
    settings = hub_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", {"inps": closed})
    with capture_logs() as events:
        with RunningHub(settings) as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
            reference = client.submit((EXAMPLES / "durc_request.xml").read_bytes()).json()["reference"]
            view = client.wait_settled([reference], timeout=30)[reference]
    inps = next(r for r in view["recipients"] if r["agency"] == "inps")
    assert inps["state"] == "undeliverable"
    passes = [e for e in events if e["event"] in ("delivery_retry_scheduled", "delivery_undeliverable")
              and e["log_level"] != "info"]
    warnings = [e for e in events if e["log_level"] == "warning"]
    assert passes and warnings == [e for e in passes if e["log_level"] == "warning"]
    assert len(passes) == settings.agencies["inps"].schedule.max_rounds
    assert not [e for e in events if "exc_info" in e]
