"""`[embedded] worker_processes`: `hub.py serve` delivers through worker child processes on the
same SQLite file. Every filing reaches each agency exactly once (the simulators count every
call, not only distinct messages); a killed child is noticed (the API stops, exit 70, naming
it, and the other child is stopped with it); a killed API leaves no child behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, free_port, portal_env, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
KINDS = ("durc_request.xml", "business_start.xml", "responsibility_declaration.xml")
#: hub.py's exit status when a background task died.
EXIT_TASK_DIED = 70


class _Serve:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, base_url: str) -> None:
        self.proc, self.log, self.base_url = proc, log, base_url

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
        return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def serve(tmp_path: Path, sims) -> Iterator[_Serve]:  # type: ignore[no-untyped-def]
    """`hub.py serve` with two worker processes on a fresh SQLite file."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENCIES__", "DATABASE__", "WORKER__", "API__", "EMBEDDED__", "PORTALS__"))}
    env.update({"DATABASE__URL": f"sqlite:///{tmp_path / 'crocevia.db'}", "LOG_LEVEL": "info",
                "EMBEDDED__WORKER_PROCESSES": "2", **portal_env()})
    for agency in sims.urls:
        env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "hub.py"), "serve", "--port", str(port)],
                                env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    running = _Serve(proc, log, f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _ready(running), timeout=60, what="the API and its two worker processes")
        yield running
    finally:
        children = running.children()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for pid in children:  # never leave one behind, whatever the test did
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _ready(running: _Serve) -> bool:
    if running.proc.poll() is not None:
        raise AssertionError(f"hub.py serve ended:\n{running.log.read_text()[-3000:]}")
    try:
        up = httpx.get(f"{running.base_url}/health", trust_env=False, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
    return up and len(running.events("worker_started")) == 2


def test_worker_processes_deliver_every_filing_exactly_once(serve: _Serve, sims) -> None:  # type: ignore[no-untyped-def]
    """48 filings submitted at once: all protocolled, each recipient called exactly once (no
    job claimed by both children), by the two `hub.py worker` children, not by the API."""
    assert len(serve.children()) == 2
    with PortalClient(serve.base_url, TEST_PORTAL_KEY) as client:
        def submit(i: int) -> str:
            response = client.submit((EXAMPLES / KINDS[i % len(KINDS)]).read_bytes())
            assert response.status_code == 202, response.text
            return str(response.json()["reference"])

        with ThreadPoolExecutor(8) as pool:
            references = list(pool.map(submit, range(48)))
        views = client.wait_settled(references, timeout=90)
    assert Counter(views[r]["state"] for r in references) == {"protocolled": 48}
    expected = Counter(recipient["agency"] for r in references for recipient in views[r]["recipients"])
    for agency, deliveries in expected.items():
        ledger = sims.ledger(agency)
        assert ledger["calls"] == deliveries, agency  # a job handed to both would be called twice
        assert len([e for e in ledger["effects"] if e["filingReference"] in set(references)]) == deliveries
    owners = {e["owner"] for e in serve.events("worker_started")}
    assert len(owners) == 2
    assert len(serve.events("worker_process_started")) == 2


def test_a_killed_worker_process_stops_the_api_naming_it(serve: _Serve) -> None:
    """SIGKILL one child: the API logs the dead `worker-process-<i>`, stops the other child and
    exits 70 (the orchestrator restarts it) instead of accepting filings nobody delivers."""
    first, second = serve.children()
    os.kill(first, signal.SIGKILL)
    code = serve.proc.wait(60)
    assert code == EXIT_TASK_DIED, serve.log.read_text()[-3000:]
    died = serve.events("background_task_died")
    assert [e["task"] for e in died] == [f"worker-process-{_index_of(serve, first)}"]
    assert "killed by signal 9" in died[0]["exception"]
    wait_for(lambda: not _alive(second), timeout=30, what="the other worker process to stop")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{serve.base_url}/health", trust_env=False, timeout=2)


def test_a_killed_api_leaves_no_worker_process_behind(serve: _Serve) -> None:
    """SIGKILL the API (no chance to stop anything): each child reads its wake socket's end
    and stops on its own."""
    children = serve.children()
    assert len(children) == 2, children  # else the wait below would pass at once, proving nothing
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30, what="the orphaned workers to stop")
    # Both children log at the same instant into the API's stream: each event must stay a line
    # of its own (config/logging.py writes it whole), else neither is read back here.
    assert len(serve.events("api_process_gone")) == 2, serve.log.read_text(errors="replace")[-4000:]


def _index_of(serve: _Serve, pid: int) -> int:
    return next(e["index"] for e in serve.events("worker_process_started") if e["pid"] == pid)
