"""What `/readyz` asks besides the store (issue 11, item 5): the broker when RabbitMQ is
configured, and whether the watched loops still come round."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from bootstrap import build_hub, readiness
from service.supervisor import Supervisor
from tests.conftest import require_server
from tests.integration.rabbit_harness import RABBITMQ_URL
from tests.support import hub_settings
from tests.tcp_proxy import TcpProxy


def test_readiness_names_an_unreachable_broker_and_recovers(tmp_path: Path) -> None:
    """With RabbitMQ configured: ready while the broker answers, `broker` named while it is cut
    off (no address or credentials in the reason), ready again once it is back."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception as exc:  # noqa: BLE001 - any failure means the broker is not usable
        require_server("RabbitMQ", f"{type(exc).__name__}: {exc}")
    target = urlsplit(RABBITMQ_URL)
    with TcpProxy((target.hostname or "127.0.0.1", target.port or 5672)) as proxy:
        settings = hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}", {})
        via_proxy = RABBITMQ_URL.replace(f":{target.port or 5672}/", f":{proxy.port}/")
        settings = settings.model_copy(update={"transport": settings.transport.model_copy(
            update={"kind": "rabbitmq", "url": SecretStr(via_proxy)})})
        hub = build_hub(settings)
        try:
            async def scenario() -> list[dict[str, str]]:
                check = readiness(hub, Supervisor(asyncio.Event()))
                seen = [dict(await check())]
                proxy.cut()
                seen.append(dict(await check()))
                proxy.restore()
                seen.append(dict(await check()))
                return seen

            before, cut, after = asyncio.run(scenario())
        finally:
            hub.dispose()
    assert before == {} and after == {}
    assert set(cut) == {"broker"} and cut["broker"].startswith("unreachable")
    assert str(proxy.port) not in cut["broker"] and "guest" not in cut["broker"]


def test_readiness_names_a_loop_that_stopped_coming_round(tmp_path: Path) -> None:
    """A loop that beat once and then hung (alive, but doing nothing) is named after
    `[supervision] stall_after` seconds; beating again makes the process ready."""
    settings = hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}", {})
    settings = settings.model_copy(update={"supervision": settings.supervision.model_copy(
        update={"stall_after": 0.2})})
    hub = build_hub(settings)
    try:
        async def scenario() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
            supervisor = Supervisor(asyncio.Event())
            check = readiness(hub, supervisor)
            supervisor.beat("worker")
            fresh = dict(await check())
            stalled: dict[str, str] = {}
            for _ in range(200):  # bounded: 2 s at most
                stalled = dict(await check())
                if stalled:
                    break
                await asyncio.sleep(0.01)
            supervisor.beat("worker")
            return fresh, stalled, dict(await check())

        fresh, stalled, beating = asyncio.run(scenario())
    finally:
        hub.dispose()
    assert fresh == {} and beating == {}
    assert set(stalled) == {"worker"} and stalled["worker"].startswith("no progress for")
