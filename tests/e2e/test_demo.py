"""`hub.py demo`: it starts what `serve --with-simulators` starts, and fails when a recipient ends
undeliverable without a `--fault` asking for it.

Each test runs the real command (simulators, sandbox and hub on loopback, SQLite in a temporary
folder), with the demo's files kept under the test's own folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config.settings import PROJECT_ROOT
from tests.external import require_external
from tests.support import free_port

#: A DURC request also goes to an agency added with configuration only (config/agencies/).
_EXTRA_ROUTE = """
[[route]]
kind = "durc_request"
contract = "agid_blocking/v1"
operation = "MRequest"
mapping = "agid-blocking-mrequest"
"""


def _demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "IDENTITY__", "ROUTES_FILE", "DATA_DIR"))}
    clean.update({
        "DATA_DIR": str(tmp_path),
        "PORTALS__DEMO__PRIVATE_KEY_FILE": str(tmp_path / "portal-demo.pem"),
        "IDENTITY__SIGNING_KEY_FILE": str(tmp_path / "hub-signing.pem"),
        "IDENTITY__SIGNING_CERTIFICATE_FILE": str(tmp_path / "hub-signing.crt"),
        **env,
    })
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), "demo", "--timeout", "60", *args],
                          env=clean, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)


def _rows(output: str) -> dict[tuple[str, str], str]:
    """(kind, recipient) → the recipient's state, from the demo's table."""
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if len(cells) >= 5 and cells[0].startswith("CRV-"):
            rows[(cells[1], cells[3])] = cells[4]
    return rows


def _with_agid_blocking(tmp_path: Path, *, sandbox: bool) -> dict[str, str]:
    """Settings (as environment) routing DURC requests also to agid_blocking, whose endpoint is
    a loopback port where nothing listens; `sandbox` says whether the sandbox plays it."""
    require_external()
    routes = tmp_path / "routes.toml"
    routes.write_text((PROJECT_ROOT / "config" / "routes.toml").read_text() + _EXTRA_ROUTE)
    return {"ROUTES_FILE": str(routes),
            "AGENCIES__AGID_BLOCKING__ENDPOINT": f"http://127.0.0.1:{free_port()}/soap",
            "AGENCIES__AGID_BLOCKING__SANDBOX": "true" if sandbox else "false"}


def test_an_undeliverable_recipient_asked_for_with_a_fault_exits_zero(tmp_path: Path) -> None:
    """`--fault runts=down`: RUNTS ends undeliverable, as asked, and the demo succeeds."""
    done = _demo(tmp_path, "--fault", "runts=down")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(done.stdout)[("runts_registration", "runts")] == "undeliverable"
    assert _rows(done.stdout)[("durc_request", "inps")] == "protocolled"


def test_an_undeliverable_recipient_nobody_asked_for_fails_the_demo(tmp_path: Path) -> None:
    """An agency nothing plays (not simulated, not sandboxed) ends undeliverable: exit 1, named."""
    done = _demo(tmp_path, **_with_agid_blocking(tmp_path, sandbox=False))
    assert _rows(done.stdout)[("durc_request", "agid_blocking")] == "undeliverable", done.stdout + done.stderr
    assert done.returncode == 1
    assert "undeliverable without a --fault asking for it: agid_blocking" in done.stdout


def test_the_demo_starts_the_sandboxed_agencies_as_serve_does(tmp_path: Path) -> None:
    """An agency configured `sandbox = true` is played by the sandbox, as with
    `serve --with-simulators`: it protocols, and the demo succeeds."""
    done = _demo(tmp_path, **_with_agid_blocking(tmp_path, sandbox=True))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(done.stdout)[("durc_request", "agid_blocking")] == "protocolled"
    assert _rows(done.stdout)[("durc_request", "inps")] == "protocolled"
