"""One process, four simulated agencies: uvicorn servers side by side on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from simulators.contracts import RUNTS_OPERATIONS, SOAP_CONTRACTS
from simulators.desk import AgencyDesk
from simulators.faults import parse_rules
from simulators.rest_app import runts_app
from simulators.signing import callback_signers
from simulators.soap_app import soap_app

__all__ = [
    "AGENCIES",
    "DEFAULT_PORTS",
    "build_apps",
    "load_rules",
    "run_simulators",
    "serve_simulators",
    "serve_until_signal",
]

#: The simulated agencies, by their config key.
AGENCIES = ("inps", "inail", "cciaa", "runts")
#: Ports for `python -m simulators` when none are given.
DEFAULT_PORTS = {"inps": 8701, "inail": 8702, "cciaa": 8703, "runts": 8704}


def _operations(agency: str) -> tuple[str, ...]:
    if agency == "runts":
        return tuple(RUNTS_OPERATIONS)
    return SOAP_CONTRACTS[agency].operations


def load_rules(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read a rules file: `{"inps": [rule, ...], "runts": [...]}`, checked against the contract.

    Raises:
        ValueError: unreadable JSON, an unknown agency or a bad rule.
    """
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or set(raw) - set(AGENCIES):
        raise ValueError(f"a rules file maps agencies ({', '.join(AGENCIES)}) to lists of rules")
    for agency, rules in raw.items():
        parse_rules(rules, _operations(agency))
    return raw


def build_apps(
    rules: Mapping[str, list[dict[str, Any]]] | None = None,
    durc_debtors: frozenset[str] | None = None,
) -> tuple[dict[str, Starlette], dict[str, AgencyDesk]]:
    """One app and one desk per agency; `rules` are the permanent rules of each;
    `durc_debtors` replaces INPS's list of subjects with unpaid contributions (DURC On Line).
    Each desk signs its callbacks with the key pair its agency file names (`simulators.signing`)."""
    apps: dict[str, Starlette] = {}
    desks: dict[str, AgencyDesk] = {}
    signers = callback_signers(AGENCIES)
    for agency in AGENCIES:
        operations = _operations(agency)
        permanent = parse_rules((rules or {}).get(agency, []), operations)
        desk = desks[agency] = AgencyDesk(agency, operations, permanent)
        desk.signer = signers[agency]
        if durc_debtors is not None:
            desk.debtors = durc_debtors
        if agency == "runts":
            apps[agency] = runts_app(desk)
        else:
            apps[agency] = soap_app(SOAP_CONTRACTS[agency], desk)
    return apps, desks


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the process and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Four servers share one process: one handler (in run_simulators) stops them all.
        yield

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    def url(self, host: str) -> str:
        port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
        return f"http://{host}:{port}"


async def run_simulators(
    ports: Mapping[str, int],
    host: str = "127.0.0.1",
    *,
    rules: Mapping[str, list[dict[str, Any]]] | None = None,
    durc_debtors: frozenset[str] | None = None,
) -> None:
    """Serve the four simulators until SIGINT/SIGTERM; a second signal forces the exit."""
    apps, desks = build_apps(rules, durc_debtors)
    servers = {
        agency: _Server(
            uvicorn.Config(
                apps[agency], host=host, port=ports[agency], access_log=False,
                log_level="warning", lifespan="off", timeout_graceful_shutdown=2,
                # httptools' C parser: h11 took a third of the simulators' CPU, which the
                # benchmarks' hub shares the machine with (an agency runs elsewhere).
                http="httptools",
            )
        )
        for agency in AGENCIES
    }

    await serve_until_signal(servers, desks, host, "simulators")


async def serve_until_signal(
    servers: Mapping[str, _Server], desks: Mapping[str, Any], host: str, label: str
) -> None:
    """Serve every server until SIGINT/SIGTERM (a second signal forces the exit), printing
    `<label> ready: name=url …` once all listen, so a parent process can wait on it."""

    def stop() -> None:
        for server in servers.values():
            server.force_exit = server.should_exit
            server.should_exit = True
        for desk in desks.values():
            desk.wake_sleepers()  # requests held by a fault let go at once

    async def announce() -> None:
        await asyncio.gather(*(server.listening.wait() for server in servers.values()))
        urls = " ".join(f"{name}={server.url(host)}" for name, server in servers.items())
        print(f"{label} ready: {urls}", flush=True)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    announcer = asyncio.ensure_future(announce())
    try:
        await asyncio.gather(*(server.serve() for server in servers.values()))
    finally:
        announcer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_simulators(
    ports: Mapping[str, int],
    host: str = "127.0.0.1",
    *,
    rules: Mapping[str, list[dict[str, Any]]] | None = None,
    durc_debtors: frozenset[str] | None = None,
) -> None:
    """Run the simulators in the foreground until SIGINT/SIGTERM (for `hub.py simulators`)."""
    missing = set(AGENCIES) - set(ports)
    if missing:
        raise ValueError(f"no port for {', '.join(sorted(missing))}")
    if sys.platform == "win32":  # pragma: no cover - loop signal handlers are POSIX only
        raise RuntimeError("the simulators run on POSIX systems")
    asyncio.run(run_simulators(ports, host, rules=rules, durc_debtors=durc_debtors))
