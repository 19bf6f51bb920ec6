"""Serving sandboxes: one server per sandboxed contract version, all in one process.

`python -m simulators.sandbox_server --serve agid_blocking/v1=8711 --serve inps_isee=8712`
serves those contracts (agency files from `--agencies-dir`, `external:` documents from
`--external-dir`) until SIGTERM/SIGINT; `hub.py sandbox` does the same for the agencies
configured with `sandbox = true`; `start_sandbox()` starts it in a child process for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from adapters.contracts import AgencyCatalog, ContractSpec, load_agency_catalog, split_contract_ref
from simulators.desk import AgencyDesk
from simulators.faults import parse_rules
from simulators.launcher import SimulatorHandle, SimulatorStartError, _url_host, _wait_healthy, free_ports
from simulators.sandbox import sandbox_numbering, soap_sandbox_app
from simulators.server import _Server, serve_until_signal
from simulators.signing import callback_signer

__all__ = ["SandboxHandle", "build_sandbox_apps", "main", "run_sandboxes", "serve_sandboxes",
           "start_sandbox"]

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _operations(spec: ContractSpec) -> tuple[str, ...]:
    from adapters.factory import load_contract

    return tuple(load_contract(spec).operations)


def build_sandbox_apps(
    catalog: AgencyCatalog, refs: Sequence[str], http: httpx.AsyncClient
) -> tuple[dict[str, Starlette], dict[str, AgencyDesk]]:
    """One app and one desk per contract `agency[/version]` (the version defaults to current).

    Raises:
        ContractError: an unknown agency or version, or a contract that does not load.
        InvalidRuleError: a bad `[sandbox] faults` rule.
    """
    apps: dict[str, Starlette] = {}
    desks: dict[str, AgencyDesk] = {}
    for ref in refs:
        agency, version = split_contract_ref(ref)
        spec = catalog.contract(agency, version)
        operations = _operations(spec)
        permanent = parse_rules([dict(rule) for rule in spec.sandbox.faults], operations)
        prefix = (spec.sandbox.prefix or spec.agency).upper()
        desk = AgencyDesk(spec.agency, operations, permanent, numbering=sandbox_numbering(prefix))
        desk.signer = callback_signer(catalog.agencies.get(spec.agency))
        if spec.kind == "soap":
            apps[spec.ref] = soap_sandbox_app(spec, desk, http)
        else:
            from simulators.sandbox_rest import rest_sandbox_app

            apps[spec.ref] = rest_sandbox_app(spec, desk)
        desks[spec.ref] = desk
    return apps, desks


async def run_sandboxes(catalog: AgencyCatalog, ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Serve the sandboxes of `ports` (contract ref → port) until SIGINT/SIGTERM."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        apps, desks = build_sandbox_apps(catalog, list(ports), http)
        by_ref = {split_contract_ref(ref): port for ref, port in ports.items()}
        servers = {}
        for ref, app in apps.items():
            agency, version = split_contract_ref(ref)
            port = by_ref.get((agency, version), by_ref.get((agency, None)))
            servers[ref] = _Server(uvicorn.Config(app, host=host, port=port or 0, access_log=False,
                                                  log_level="warning", lifespan="off",
                                                  timeout_graceful_shutdown=2, http="httptools"))

        await serve_until_signal(servers, desks, host, "sandbox")


def serve_sandboxes(catalog: AgencyCatalog, ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Run the sandboxes in the foreground (for `hub.py sandbox`)."""
    asyncio.run(run_sandboxes(catalog, ports, host))


def _parse_serve(items: Sequence[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for item in items:
        ref, sep, port = item.rpartition("=")
        if not sep or not ref or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(f"expected agency[/version]=port, not {item!r}")
        ports[ref] = int(port)
    return ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.sandbox_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--agencies-dir", default=str(_PROJECT_ROOT / "config" / "agencies"))
    parser.add_argument("--external-dir", default=str(_PROJECT_ROOT.parent / "shared" / "external"))
    parser.add_argument("--project-root", default=str(_PROJECT_ROOT))
    parser.add_argument("--serve", action="append", default=[], metavar="AGENCY[/VERSION]=PORT")
    args = parser.parse_args(argv)
    try:
        ports = _parse_serve(args.serve)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not ports:
        parser.error("name at least one contract with --serve")
    catalog = load_agency_catalog(Path(args.agencies_dir), project_root=Path(args.project_root),
                                  external_dir=Path(args.external_dir))
    serve_sandboxes(catalog, ports, args.host)
    return 0


@dataclass
class SandboxHandle(SimulatorHandle):
    """A running sandbox process: `urls` by contract ref (`agency/version`)."""

    kinds: dict[str, str] = field(default_factory=dict)

    def endpoint(self, ref: str) -> str:
        """Where the hub sends calls: `<base>/soap` for SOAP, the base URL for REST."""
        base = self.urls[ref]
        return f"{base}/soap" if self.kinds.get(ref) == "soap" else base

    def soap_endpoint(self, agency: str) -> str:
        """The launcher's name for `endpoint`; here `agency` is a contract ref."""
        return self.endpoint(agency)


def start_sandbox(
    refs: Sequence[str],
    *,
    agencies_dir: Path,
    external_dir: Path,
    project_root: Path = _PROJECT_ROOT,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    ports: Mapping[str, int] | None = None,
) -> SandboxHandle:
    """Start `python -m simulators.sandbox_server` for `refs` (`agency/version`) on `ports`
    (ref → port; free loopback ports otherwise); return once every sandbox is healthy.

    Raises:
        SimulatorStartError: not healthy in time, or the process exited.
    """
    catalog = load_agency_catalog(agencies_dir, project_root=project_root, external_dir=external_dir)
    specs = [catalog.contract(*split_contract_ref(ref)) for ref in refs]
    chosen = dict(zip([s.ref for s in specs], free_ports(len(specs), _url_host(host))))
    given = {catalog.contract(*split_contract_ref(ref)).ref: port for ref, port in (ports or {}).items()}
    ports = {**chosen, **given}
    command = [sys.executable, "-m", "simulators.sandbox_server", "--host", host,
               "--agencies-dir", str(agencies_dir), "--external-dir", str(external_dir),
               "--project-root", str(project_root)]
    for ref, port in ports.items():
        command += ["--serve", f"{ref}={port}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    log = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads it while the child runs
    process = subprocess.Popen(command, cwd=_PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log)
    handle = SandboxHandle(urls={ref: f"http://{_url_host(host)}:{port}" for ref, port in ports.items()},
                           process=process, _log=log, kinds={s.ref: s.kind for s in specs})
    if _wait_healthy(handle, time.monotonic() + startup_timeout):
        return handle
    log.seek(0)
    output = log.read().decode("utf-8", "replace")[-4000:]
    handle.stop()
    raise SimulatorStartError(f"sandbox did not start:\n{output}")


if __name__ == "__main__":
    sys.exit(main())
