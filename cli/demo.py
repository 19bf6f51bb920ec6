"""The main job: the embedded hub, the four agency simulators (and the sandbox for agencies
configured `sandbox = true`, as `hub.py serve --with-simulators`), one filing of each kind.

Everything is real: the simulators are HTTP servers in a child process, the API listens on
loopback, the filings go over HTTP, the worker delivers through the adapters, SQLite stores.
The demo fails (exit 1) when a filing does not settle, or a recipient ends undeliverable
without a `--fault` asking for it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bootstrap import build_hub, portal_signer
from cli.client import PortalClient
from cli.table import filings_table
from config.settings import PROJECT_ROOT, Settings
from runner import run_api_and_workers

__all__ = ["DEMO_FAULTS", "EXAMPLES_DIR", "UNDELIVERABLE_FAULTS", "run_demo", "unasked_undeliverable"]

EXAMPLES_DIR = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
DEMO_FILES = [
    "business_start.xml",
    "runts_registration.xml",
    "durc_request.xml",
    "responsibility_declaration.xml",
    "runts_deposit_accounts.xml",
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


#: Faults that ask for recipients to end undeliverable; any other undeliverable one fails the demo.
UNDELIVERABLE_FAULTS = frozenset({"down"})


def _demo_settings(settings: Settings, endpoints: dict[str, str], database_url: str,
                   version_endpoints: dict[str, dict[str, str]] | None = None) -> Settings:
    """Short schedules so that a retried or failing agency settles within seconds."""
    update: dict[str, Any] = {"database": settings.database.model_copy(update={"url": database_url})}
    agencies = {}
    for name, conf in settings.agencies.items():
        agencies[name] = conf.model_copy(
            update={
                "endpoint": endpoints.get(name, conf.endpoint),
                "endpoints": {**conf.endpoints, **(version_endpoints or {}).get(name, {})},
                "read_timeout": 3.0,
                "schedule": conf.schedule.model_copy(update={"initial_delay": 0.5, "max_delay": 2.0, "max_rounds": 3}),
                "circuit": conf.circuit.model_copy(update={"cool_down": 2.0}),
            }
        )
    update["agencies"] = agencies
    return settings.model_copy(update=update)


class _Agencies:
    """What plays the agencies, as `hub.py serve --with-simulators` starts them: the built-in
    simulators for the four agencies, the sandbox for every agency configured `sandbox = true`
    (each on free loopback ports here, and the endpoints pointed at them)."""

    def __init__(self, settings: Settings) -> None:
        from cli.contracts import sandbox_ports
        from simulators.launcher import start_simulators
        from simulators.sandbox_server import start_sandbox

        self.endpoints: dict[str, str] = {}
        self.version_endpoints: dict[str, dict[str, str]] = {}
        self._fault_targets: dict[str, tuple[Any, str]] = {}
        self.sandbox: Any = None
        self.sims = start_simulators()
        try:
            refs = list(sandbox_ports(settings, ()))
            if refs:
                self.sandbox = start_sandbox(refs, agencies_dir=settings.path(settings.agencies_dir),
                                             external_dir=settings.path(settings.external_dir))
        except BaseException:
            self.sims.stop()
            raise
        for agency in self.sims.urls:
            conf = settings.agencies.get(agency)
            if conf is None or not conf.sandbox:
                self.endpoints[agency] = self.sims.soap_endpoint(agency)
                self._fault_targets[agency] = (self.sims, agency)
        for ref in refs:
            agency, _, version = ref.partition("/")
            url = self.sandbox.endpoint(ref)
            if version in settings.agencies[agency].endpoints:
                self.version_endpoints.setdefault(agency, {})[version] = url
            else:  # the agency's current version, at its main endpoint
                self.endpoints[agency] = url
                self._fault_targets[agency] = (self.sandbox, ref)

    def set_faults(self, agency: str, rules: list[dict[str, Any]]) -> None:
        """Raises:
            ValueError: nothing here plays `agency` (it is neither simulated nor sandboxed).
        """
        if agency not in self._fault_targets:
            raise ValueError(f"{agency} is neither simulated nor sandboxed here: no fault can be injected")
        handle, key = self._fault_targets[agency]
        handle.set_faults(key, rules)

    def stop(self) -> None:
        for handle in (self.sandbox, self.sims):
            if handle is not None:
                handle.stop()


def unasked_undeliverable(views: dict[str, Any], faults: dict[str, str]) -> list[tuple[str, str]]:
    """(filing reference, agency) of each recipient that ended undeliverable although no
    `--fault` asked for it."""
    return [(reference, recipient["agency"]) for reference, view in views.items()
            for recipient in view["recipients"]
            if recipient["state"] == "undeliverable" and faults.get(recipient["agency"]) not in UNDELIVERABLE_FAULTS]


def run_demo(settings: Settings, *, faults: dict[str, str], database_url: str | None = None,
             timeout: float = 60.0, out=sys.stdout) -> int:
    """Returns:
        0 when every filing settled and no recipient ended undeliverable unless a `--fault`
        asked for it (`down`); 1 otherwise, saying why.
    """
    agencies = _Agencies(settings)
    try:
        for agency, mode in faults.items():
            try:
                agencies.set_faults(agency, DEMO_FAULTS[mode])
            except ValueError as exc:
                print(f"--fault {agency}={mode}: {exc}", file=out)
                return 1
        workdir = Path(tempfile.mkdtemp(prefix="crocevia-demo-"))
        url = database_url or f"sqlite:///{workdir / 'crocevia.db'}"
        demo = _demo_settings(settings, agencies.endpoints, url, agencies.version_endpoints)
        hub = build_hub(demo)
        port = free_port()
        stop = asyncio.Event()
        started = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            ready = asyncio.Event()
            task = asyncio.create_task(run_api_and_workers(hub, stop, host="127.0.0.1", port=port, started=ready))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            started.set()
            waiter.cancel()
            await task

        def run() -> None:
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # noqa: BLE001 - reported below, after the table
                failure.append(exc)
                started.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if not started.wait(timeout=30) or failure:
            print(f"the hub did not start: {failure[0] if failure else 'no answer in 30 s'}", file=out)
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
        code = 0
        if failure:
            print(f"the hub failed while running: {failure[0]}", file=out)
            code = 1
        unsettled = [r for r in references if views[r]["state"] not in
                     {"protocolled", "partially_rejected", "rejected", "undeliverable"}]
        if unsettled:
            print(f"not settled within {timeout:.0f}s: {', '.join(unsettled)}", file=out)
            code = 1
        unasked = unasked_undeliverable({r: views[r] for r in references}, faults)
        if unasked:
            print("undeliverable without a --fault asking for it: "
                  + ", ".join(f"{agency} ({reference})" for reference, agency in unasked), file=out)
            code = 1
        return code
    finally:
        agencies.stop()
