"""The main job: the embedded hub, the four agency simulators, one filing of each kind.

Everything is real: the simulators are HTTP servers in a child process, the API listens on
loopback, the filings go over HTTP, the worker delivers through the adapters, SQLite stores.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bootstrap import build_hub, portal_signer, run_api_and_workers
from cli.client import PortalClient
from cli.table import filings_table
from config.settings import PROJECT_ROOT, Settings

__all__ = ["DEMO_FAULTS", "EXAMPLES_DIR", "run_demo"]

EXAMPLES_DIR = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
DEMO_FILES = [
    "business_start.xml",
    "runts_registration.xml",
    "durc_request.xml",
    "responsibility_declaration.xml",
]

# Faults the demo can inject into one agency, as simulator rules.
DEMO_FAULTS: dict[str, list[dict[str, Any]]] = {
    "flaky": [{"operation": "*", "kind": "http_status", "status": 503, "times": 2}],
    "outage": [{"operation": "*", "kind": "http_status", "status": 503, "times": 4}],
    "reject": [{"operation": "*", "kind": "reject", "code": "R042", "text": "posizione gia' esistente"}],
    "down": [{"operation": "*", "kind": "http_status", "status": 503}],
    "slow": [{"operation": "*", "kind": "latency", "delay_ms": 800}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _demo_settings(settings: Settings, endpoints: dict[str, str], database_url: str) -> Settings:
    """Short schedules so that a retried or failing agency settles within seconds."""
    update: dict[str, Any] = {"database": settings.database.model_copy(update={"url": database_url})}
    agencies = {}
    for name, conf in settings.agencies.items():
        agencies[name] = conf.model_copy(
            update={
                "endpoint": endpoints.get(name, conf.endpoint),
                "read_timeout": 3.0,
                "schedule": conf.schedule.model_copy(update={"initial_delay": 0.5, "max_delay": 2.0, "max_rounds": 3}),
                "circuit": conf.circuit.model_copy(update={"cool_down": 2.0}),
            }
        )
    update["agencies"] = agencies
    return settings.model_copy(update=update)


def run_demo(settings: Settings, *, faults: dict[str, str], database_url: str | None = None,
             timeout: float = 60.0, out=sys.stdout) -> int:
    from simulators.launcher import start_simulators

    sims = start_simulators()
    try:
        for agency, mode in faults.items():
            sims.set_faults(agency, DEMO_FAULTS[mode])
        workdir = Path(tempfile.mkdtemp(prefix="crocevia-demo-"))
        url = database_url or f"sqlite:///{workdir / 'crocevia.db'}"
        demo = _demo_settings(settings, {a: sims.soap_endpoint(a) for a in sims.urls}, url)
        hub = build_hub(demo)
        port = free_port()
        stop = asyncio.Event()
        started = threading.Event()
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            ready = asyncio.Event()
            task = asyncio.create_task(run_api_and_workers(hub, stop, host="127.0.0.1", port=port, started=ready))
            await ready.wait()
            started.set()
            await task

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        if not started.wait(timeout=30):
            print("the hub did not start", file=out)
            return 1
        try:
            with PortalClient(f"http://127.0.0.1:{port}", portal_signer(settings, "demo")) as client:
                references = []
                for name in DEMO_FILES:
                    response = client.submit((EXAMPLES_DIR / name).read_bytes())
                    if response.status_code != 202:
                        print(f"{name}: refused {response.status_code} {response.text}", file=out)
                        return 1
                    references.append(response.json()["reference"])
                views = client.wait_settled(references, timeout=timeout)
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
            hub.dispose()
        print(filings_table(views[r] for r in references), file=out)
        if faults:
            print(f"\nfaults injected: {', '.join(f'{a}={m}' for a, m in faults.items())}", file=out)
        print(f"store: {url}", file=out)
        unsettled = [r for r in references if views[r]["state"] not in
                     {"protocolled", "partially_rejected", "rejected", "undeliverable"}]
        if unsettled:
            print(f"not settled within {timeout:.0f}s: {', '.join(unsettled)}", file=out)
            return 1
        return 0
    finally:
        sims.stop()
