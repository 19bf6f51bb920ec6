"""Start the simulators in a child process and drive them over their control API (for tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from simulators.server import AGENCIES, serve_simulators

# serve_simulators is re-exported: the hub's CLI runs the simulators in the foreground from here.
__all__ = [
    "SimulatorHandle",
    "SimulatorStartError",
    "free_ports",
    "serve_simulators",
    "start_simulators",
]

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Pause between two rounds of health checks while waiting for startup.
_POLL_S = 0.05
#: Attempts with fresh ports when the chosen ones were taken in the meantime.
_ATTEMPTS = 3


class SimulatorStartError(RuntimeError):
    """The simulators did not become healthy in time (the child's output is in the message)."""


@dataclass
class SimulatorHandle:
    """A running simulator process and its agencies' base URLs."""

    urls: dict[str, str]
    process: subprocess.Popen
    _client: httpx.Client = field(init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        self._client = httpx.Client(timeout=10.0, trust_env=False)

    def soap_endpoint(self, agency: str) -> str:
        """Where the hub sends calls: `<base>/soap`, or the base URL for REST (RUNTS)."""
        base = self.urls[agency]
        return base if agency == "runts" else f"{base}/soap"

    def contract_url(self, agency: str) -> str:
        """The served WSDL, or the OpenAPI document for RUNTS."""
        base = self.urls[agency]
        return f"{base}/openapi.yaml" if agency == "runts" else f"{base}/wsdl"

    def ledger(self, agency: str) -> dict[str, Any]:
        response = self._client.get(f"{self.urls[agency]}/_sim/ledger")
        response.raise_for_status()
        return response.json()

    def set_faults(self, agency: str, rules: list[dict[str, Any]]) -> None:
        """Replace the agency's runtime fault rules.

        Raises:
            ValueError: the simulator refused the rules (the message says why).
        """
        response = self._client.post(f"{self.urls[agency]}/_sim/faults", json=rules)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()

    def reset(self) -> None:
        """Clear ledgers and runtime faults of all agencies."""
        for base in self.urls.values():
            self._client.post(f"{base}/_sim/reset").raise_for_status()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process and wait for it, killing it if it overstays `timeout`."""
        self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS reports free now; held open together so that they are distinct."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_healthy(handle: SimulatorHandle, deadline: float) -> bool:
    """True once every agency answers /_sim/health; False if the process died first."""
    pending = set(handle.urls)
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while pending and time.monotonic() < deadline:
            if handle.process.poll() is not None:
                return False
            for agency in sorted(pending):
                try:
                    if client.get(f"{handle.urls[agency]}/_sim/health").status_code == 200:
                        pending.discard(agency)
                except httpx.TransportError:
                    pass
            if pending:
                time.sleep(_POLL_S)  # waiting on a condition, bounded by the deadline
    return not pending


def _url_host(host: str) -> str:
    """Where to reach servers bound to `host`: loopback for the wildcard address."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _launch(ports: dict[str, int], host: str, rules: str | Path | None,
            durc_debtors: Iterable[str] | None = None) -> SimulatorHandle:
    command = [
        sys.executable, "-m", "simulators", "--host", host,
        "--ports", ",".join(f"{agency}={ports[agency]}" for agency in AGENCIES),
    ]
    if rules is not None:
        command += ["--rules", str(rules)]
    if durc_debtors is not None:
        command += ["--durc-debtors", ",".join(sorted(durc_debtors))]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    # A file rather than a pipe: nobody reads the child's output while it runs, and a full
    # pipe would block it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command, cwd=_PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    urls = {agency: f"http://{_url_host(host)}:{ports[agency]}" for agency in AGENCIES}
    return SimulatorHandle(urls=urls, process=process, _log=log)


def _output(handle: SimulatorHandle) -> str:
    if handle._log is None:
        return ""
    handle._log.seek(0)
    return handle._log.read().decode("utf-8", "replace")[-4000:]


def start_simulators(
    ports: dict[str, int] | None = None,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 15.0,
    rules: str | Path | None = None,
    durc_debtors: Iterable[str] | None = None,
) -> SimulatorHandle:
    """Start `python -m simulators` and return once all four agencies are healthy.

    Args:
        ports: agency -> port; agencies left out (or given 0) get a free port chosen here, since
            the parent must know every port.
        host: address to bind; loopback unless told otherwise.
        startup_timeout: seconds to wait for health, per attempt.
        rules: optional JSON file of permanent rules per agency (`--rules`).
        durc_debtors: tax codes INPS knows as debtors (`--durc-debtors`); None: the default list.

    Raises:
        SimulatorStartError: not healthy in time, or the process exited.
    """
    given = {agency: port for agency, port in (ports or {}).items() if port}
    unknown = set(given) - set(AGENCIES)
    if unknown:
        raise ValueError(f"unknown agencies: {sorted(unknown)}")
    attempts = _ATTEMPTS if len(given) < len(AGENCIES) else 1
    probe_host = _url_host(host)
    for attempt in range(1, attempts + 1):
        chosen = dict(zip(AGENCIES, free_ports(len(AGENCIES), probe_host)))
        handle = _launch({**chosen, **given}, host, rules, durc_debtors)
        if _wait_healthy(handle, time.monotonic() + startup_timeout):
            return handle
        died = handle.process.poll() is not None
        output = _output(handle)
        handle.stop()
        if not died or attempt == attempts:
            reason = "exited" if died else f"not healthy after {startup_timeout} s"
            raise SimulatorStartError(f"simulators {reason}:\n{output}")
    raise AssertionError("unreachable")  # pragma: no cover
