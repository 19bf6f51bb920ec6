"""The portal's command line against a live hub with the simulators: `status --wait`, `events`
(`--after`, `--follow`), `resend` with the portal's credentials (and `--corrected`), and
`delegations list|grant|subdelegate|revoke`; `--json`, tables, progress on stderr, one-line
errors. The commands sign with a fresh portal key found as `submit` finds it (the portal's
private key file in the configuration, here through the environment).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from structlog.testing import capture_logs

from config.settings import PROJECT_ROOT, PortalSettings
from security.keys import generate_private_key, private_pem, public_pem
from storage.tables import deliveries, filings
from tests.support import RunningHub, free_port, hub_settings

DURC = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml"
ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request.xml)
ELENA = "DLGLNE88D50L219Q"  # a delegate (an accountant)
BRUNO = "CLLBRT85M10F205L"  # Elena's collaborator
DURC_SUBJECT = "06543210485"
INPS_PROTOCOL = r"INPS_\d{8}"  # DURC On Line numbers its own (simulators/services.py)


@pytest.fixture
def portal_key(tmp_path: Path) -> Any:
    key = generate_private_key("ES256")
    (tmp_path / "cli-portal.pem").write_bytes(private_pem(key))
    return key


@pytest.fixture
def hub(database_url: str, sims: Any, portal_key: Any) -> Iterator[RunningHub]:
    settings = hub_settings(database_url, {agency: sims.soap_endpoint(agency) for agency in sims.urls})
    portals = {**settings.portals, "cli": PortalSettings(algorithm="ES256", public_key=public_pem(portal_key).decode())}
    with RunningHub(settings.model_copy(update={"portals": portals})) as running:
        yield running


@pytest.fixture
def hub_cli(hub: RunningHub, tmp_path: Path, portal_key: Any) -> Iterator[Any]:
    """`hub.py ARGS` in process, as portal `cli` (its key file from the environment), on `hub`.

    The hub runs in this process too: its logs are captured apart, so that what a command
    prints is all its output holds."""
    from hub import cli

    runner = CliRunner()
    env = {"PORTALS__CLI__ALGORITHM": "ES256", "PORTALS__CLI__PRIVATE_KEY_FILE": str(tmp_path / "cli-portal.pem"),
           "CROCEVIA_OPERATOR_TOKEN": None}

    def run(*args: str, user: str | None = ANNA, url: str | None = None) -> Result:
        more = ["--url", url or hub.base_url, "--portal", "cli"]
        if user is not None:
            more += ["--user", user]
        return runner.invoke(cli, [*args, *more], env=env)

    with capture_logs():
        yield run


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result


def _one_line_error(result: Result, code: int, starts: str) -> None:
    assert result.exit_code == code, result.output + result.stderr
    assert result.stderr.startswith(starts) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr


def _submit(hub_cli: Any, document: Path = DURC) -> str:
    submitted = _ok(hub_cli("submit", str(document), "--json", user=None))
    reference = json.loads(submitted.stdout)["reference"]
    assert re.fullmatch(r"CRV-\d{4}-\d{6}", reference), submitted.stdout
    return str(reference)


def _protocol_in_store(hub: RunningHub, reference: str) -> str:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(deliveries.c.protocol_number).join(filings, deliveries.c.filing_id == filings.c.id)
                            .where(filings.c.reference == reference)).scalar_one()


def test_a_portal_follows_its_filing_from_the_command_line(hub: RunningHub, hub_cli: Any) -> None:
    """status --wait shows progress then the protocol number the store holds; events lists the
    feed (--after narrows it, --json is the API's answer); --follow streams until settled."""
    reference = _submit(hub_cli)
    waited = _ok(hub_cli("status", reference, "--wait"))
    assert f"... {reference}: protocolled (inps protocolled)" in waited.stderr
    protocol = _protocol_in_store(hub, reference)
    assert re.fullmatch(INPS_PROTOCOL, protocol) and protocol in waited.stdout
    assert "protocol number" in waited.stdout.splitlines()[0]  # a table with its header
    as_json = json.loads(_ok(hub_cli("status", reference, "--json")).stdout)
    assert as_json["recipients"][0]["protocolNumber"] == protocol

    feed = json.loads(_ok(hub_cli("events", reference, "--json")).stdout)
    events = feed["events"]
    assert feed["reference"] == reference and len(events) >= 2
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    table = _ok(hub_cli("events", reference)).stdout
    assert table.splitlines()[0].split() == ["seq", "at", "event", "data"]
    assert all(e["type"] in table for e in events) and protocol in table
    later = json.loads(_ok(hub_cli("events", reference, "--after", str(events[0]["sequence"]), "--json")).stdout)
    assert later["events"] == events[1:]

    # A new filing followed from its submission: every event, one JSON object a line, to the end.
    second = _submit(hub_cli)
    followed = _ok(hub_cli("events", second, "--follow", "--json"))
    streamed = [json.loads(line) for line in followed.stdout.splitlines()]
    assert streamed == json.loads(_ok(hub_cli("events", second, "--json")).stdout)["events"]
    assert _protocol_in_store(hub, second) in followed.stdout
    assert f"... {second}: protocolled" in followed.stderr  # progress while waiting


def test_errors_are_one_line(hub: RunningHub, hub_cli: Any) -> None:
    """A filing that does not exist, a hub that is not there, a portal without a key: one line."""
    _one_line_error(hub_cli("status", "CRV-2000-999999"), 1, "error: 404 Not Found: ")
    _one_line_error(hub_cli("events", "CRV-2000-999999"), 1, "error: 404 Not Found: ")
    away = f"http://127.0.0.1:{free_port()}"
    _one_line_error(hub_cli("events", "CRV-2000-999999", url=away), 69, f"error: cannot reach the hub at {away}")
    _one_line_error(hub_cli("delegations", "list", "--subject", DURC_SUBJECT, url=away), 69, "error: cannot reach")
    reference = _submit(hub_cli)
    # Another user may not read Anna's filing: the hub's refusal, in one line.
    _one_line_error(hub_cli("events", reference, user=BRUNO), 1, "error: 404 Not Found: ")


def test_a_portal_resends_a_rejected_recipient_with_a_correction(hub: RunningHub, hub_cli: Any, sims: Any,
                                                                 tmp_path: Path) -> None:
    """`resend` with --portal/--user is the portal's: a plain resend of a rejection is refused
    (409, one line), a corrected filing goes as a new message that names the refused one."""
    sims.set_faults("inps", [{"kind": "reject", "code": "R017", "text": "motivo non ammesso",
                              "match": {"motivo": "appalto_pubblico"}}])
    reference = _submit(hub_cli)
    assert "rejected" in _ok(hub_cli("status", reference, "--wait")).stderr
    _one_line_error(hub_cli("resend", reference, "inps"), 70, "error: 409 Conflict: ")

    corrected = tmp_path / "durc-corrected.xml"
    corrected.write_bytes(DURC.read_bytes().replace(b"<purpose>appalto_pubblico</purpose>",
                                                    b"<purpose>appalto_privato</purpose>"))
    resent = json.loads(_ok(hub_cli("resend", reference, "inps", "--corrected", str(corrected), "--json")).stdout)
    refused_id = resent["recipient"]["corrects"]["messageId"]
    assert resent["reference"] == reference and resent["recipient"]["messageId"] != refused_id
    settled = json.loads(_ok(hub_cli("status", reference, "--wait", "--json")).stdout)
    assert settled["state"] == "protocolled"
    assert re.fullmatch(INPS_PROTOCOL, settled["recipients"][0]["protocolNumber"])

    # Operator and portal credentials are never mixed; --corrected is the portal's only.
    mixed = hub_cli("resend", reference, "inps", "--token", "some.token")
    assert mixed.exit_code == 2 and "one or the other" in mixed.stderr
    from hub import cli

    operator = CliRunner().invoke(cli, ["resend", reference, "inps", "--url", hub.base_url, "--token", "x",
                                        "--corrected", str(corrected)])
    assert operator.exit_code == 2 and "--corrected is a portal's resend" in operator.stderr


def test_delegations_from_the_command_line(hub: RunningHub, hub_cli: Any) -> None:
    """Anna grants, Elena lists and sub-delegates to Bruno, Anna revokes: tables and JSON."""
    valid_to = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    granted = json.loads(_ok(hub_cli("delegations", "grant", "--subject", DURC_SUBJECT, "--delegate", ELENA,
                                     "--agency", "inps", "--valid-to", valid_to, "--json")).stdout)
    assert (granted["status"], granted["grantedBy"], granted["agencies"]) == ("active", ANNA, ["inps"])

    listed = _ok(hub_cli("delegations", "list", "--subject", DURC_SUBJECT, user=ELENA)).stdout
    header, _, row = listed.splitlines()[:3]
    assert header.split()[:4] == ["id", "parent", "subject", "delegate"]
    assert granted["id"] in row and "active" in row and ELENA in row

    sub = _ok(hub_cli("delegations", "subdelegate", granted["id"], "--collaborator", BRUNO, user=ELENA)).stdout
    assert granted["id"] in sub and BRUNO in sub  # the parent column names it
    _one_line_error(hub_cli("delegations", "subdelegate", granted["id"], "--collaborator", ANNA, user=BRUNO),
                    1, "error: 404 Not Found: ")
    wider = hub_cli("delegations", "subdelegate", granted["id"], "--collaborator", BRUNO, "--agency", "inail",
                    user=ELENA)
    _one_line_error(wider, 64, "error: 422 ")

    revoked = _ok(hub_cli("delegations", "revoke", granted["id"])).stdout
    assert "revoked" in revoked
    statuses = {d["id"]: d["status"] for d in json.loads(_ok(hub_cli(
        "delegations", "list", "--subject", DURC_SUBJECT, "--json", user=ELENA)).stdout)["delegations"]}
    assert statuses[granted["id"]] == "revoked" and len(statuses) == 2
