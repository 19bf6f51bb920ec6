"""`hub.py resend|retry|cancel`, `agencies pause|resume`, `dlq list|replay` over the operator API
(real HTTP to a running hub with the simulators): previews without `--yes`, the action with
it, `--json`, one-line errors for refusals and for a hub that cannot be reached."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from config.settings import PROJECT_ROOT
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    DURC,
    RUNTS,
    HubFactory,
    _by_agency,
    _one_effect,
    _settled,
    _submit,
    _view,
    _wait_view,
    client_for,
    make_hub,
)
from tests.ops_support import OpsServer

TOKEN = "operator:dora"  # what HeaderGuardForTests reads from the bearer token


def _hub(url: str, *args: str) -> tuple[int, str, str]:
    """`hub.py ARGS --url URL` as an operator runs it: its own process, the token from the env."""
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), *args, "--url", url],
                            env={**os.environ, "CROCEVIA_OPERATOR_TOKEN": TOKEN}, capture_output=True,
                            text=True, timeout=60, cwd=PROJECT_ROOT)
    return result.returncode, result.stdout, result.stderr


def test_the_cli_previews_then_acts_and_says_what_went_wrong_in_one_line(
        make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """Pause INPS (preview, then --yes), a DURC waits; resume; RUNTS undeliverable → resend with
    --yes → protocolled once; a refusal and an unreachable hub are one line each."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub, OpsServer(hub) as ops:
        client, url = client_for(hub), ops.base_url
        code, out, _ = _hub(url, "agencies", "pause", "inps", "--reason", "planned")
        assert code == 0 and "preview only" in out and "wouldPause" in out
        code, out, _ = _hub(url, "agencies", "pause", "inps", "--yes", "--json")
        assert code == 0 and json.loads(out)["paused"] is True
        ref = _submit(client, DURC)
        _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["nextAttemptAt"] is not None, what="held")
        assert sims.ledger("inps")["calls"] == 0
        assert _hub(url, "agencies", "resume", "inps", "--yes")[0] == 0
        _settled(client, ref, "protocolled")

        runts_ref = _submit(client, RUNTS)
        _settled(client, runts_ref, "undeliverable")
        code, out, _ = _hub(url, "resend", runts_ref, "runts")
        assert code == 0 and "undeliverable" in out and "preview only" in out
        sims.set_faults("runts", [])
        code, out, _ = _hub(url, "resend", runts_ref, "runts", "--yes", "--reason", "RUNTS is back")
        assert code == 0, out
        _one_effect(sims, _by_agency(_settled(client, runts_ref, "protocolled"))["runts"], runts_ref)

        code, out, err = _hub(url, "retry", runts_ref, "runts", "--yes")
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "409" in err
        code, _, err = _hub(url, "cancel", runts_ref, "runts", "--reason", "x", "--yes")
        assert code == 1 and "protocolled" in err
        code, _, err = _hub(url, "dlq", "list")
        assert code == 1 and err.startswith("error: 404") and len(err.strip().splitlines()) == 1
        assert _view(client, runts_ref)["state"] == "protocolled"

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, out, err = _hub(f"http://127.0.0.1:{port}", "dlq", "replay", "--yes")
    assert code == 2 and out == "" and "cannot reach the hub" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
