"""Processes that cannot die silently: a dead background task ends the process non-zero with its
traceback in the log; `/readyz` names what is failing while `/health` answers liveness only.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap import build_hub, readiness
from service.supervisor import Supervisor
from tests.conftest import _postgres_schema_url
from tests.support import RunningHub, free_port, hub_process, hub_settings, wait_for
from tests.tcp_proxy import TcpProxy

#: hub.py's exit status when a background task died.
EXIT_TASK_DIED = 70


def _events(log: Path) -> list[dict]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@pytest.mark.parametrize(("command", "task", "env"), [
    (["serve"], "worker", {}),
    (["serve"], "notifier", {}),
    (["serve"], "api", {}),
    (["worker"], "worker", {}),
    # The relay dies before it opens a connection: no queue is declared on the shared broker.
    (["relay"], "relay", {"TRANSPORT__KIND": "rabbitmq"}),
])
def test_a_dead_background_task_ends_the_process_non_zero_with_its_traceback(
    tmp_path: Path, command: list[str], task: str, env: dict[str, str]
) -> None:
    """A background task that raises (fault injected by the test-only setting) is logged with
    its traceback, the rest drains, and the process exits 70 instead of running on."""
    port = free_port()
    proc, log = hub_process(tmp_path, [*command, *(["--port", str(port)] if command == ["serve"] else [])],
                             SUPERVISION__FAIL_TASK_FOR_TESTS=task, **env)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"`hub.py {' '.join(command)}` ran on with a dead {task}:\n{log.read_text()[-3000:]}")
    assert code == EXIT_TASK_DIED, log.read_text()[-3000:]
    died = [e for e in _events(log) if e.get("event") == "background_task_died"]
    assert [e["task"] for e in died] == [task]
    assert "Traceback" in died[0]["exception"] and "InjectedTaskFailure" in died[0]["exception"]
    if command == ["serve"]:  # and nothing accepts filings any more
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2)


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, TcpProxy]]:
    for url in _postgres_schema_url():
        proxy = TcpProxy(("127.0.0.1", 5432))
        try:
            yield url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/"), proxy
        finally:
            proxy.close()


def test_readyz_names_an_unreachable_store_while_health_stays_live(proxied_postgres: tuple[str, TcpProxy]) -> None:
    """/readyz is 200 while the store answers, 503 naming `store` while it is away, 200 again
    once it is back; /health answers 200 throughout (liveness asks nothing)."""
    url, proxy = proxied_postgres
    assert f":{proxy.port}/" in url
    with RunningHub(hub_settings(url, {})) as hub, httpx.Client(base_url=hub.base_url, trust_env=False) as http:
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        proxy.cut()
        refused = wait_for(lambda: (r := http.get("/readyz")).status_code == 503 and r, timeout=15,
                           what="/readyz to report the store")
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == "urn:crocevia:problem:not-ready"
        assert set(problem["components"]) == {"store"} and "store" in problem["detail"]
        assert "5432" not in refused.text and str(proxy.port) not in refused.text  # no connection details
        assert http.get("/health").status_code == 200
        proxy.restore()
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15, what="/readyz to recover")


def test_readiness_names_a_dead_task_beside_a_live_store(tmp_path: Path) -> None:
    """What /readyz reports while the process drains after a death: the task, by name."""
    async def dies() -> None:
        raise KeyError("agency")

    hub = build_hub(hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}", {}))
    try:
        async def scenario() -> tuple[dict[str, str], dict[str, str]]:
            supervisor = Supervisor(asyncio.Event())
            check = readiness(hub, supervisor)
            before = dict(await check())
            supervisor.watch("worker", dies())
            await supervisor.join()
            return before, dict(await check())

        assert asyncio.run(scenario()) == ({}, {"worker": "task died: KeyError"})
    finally:
        hub.dispose()
