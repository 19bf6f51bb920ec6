"""`hub.py filings search|archive|unarchive` as a portal (`--user`, the portal's ModI key) against
a live hub and the simulators: tables, `--json`, pages, and one-line errors with exit codes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from bootstrap import portal_signer
from cli.client import PortalClient
from config.settings import PortalSettings
from tests.e2e.test_delivery_semantics import DURC, HubFactory, _settled, _submit, make_hub  # noqa: F401
from tests.support import RunningHub, free_port

ANNA = "CMPNNA80E59D612B"  # declarant of durc_request.xml
MARCO = "FTTMRC85C14H501X"


@pytest.fixture
def demo_hub(make_hub: HubFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningHub]:
    """A hub that knows the embedded demo portal, whose key file the command line signs with."""
    key_file = str(tmp_path / "portal-demo.pem")
    monkeypatch.setenv("PORTALS__DEMO__PRIVATE_KEY_FILE", key_file)
    from tests.support import hub_settings  # the test portals, plus the demo portal

    portals = {**hub_settings("sqlite://", {}).portals,
               "demo": PortalSettings(algorithm="ES256", private_key_file=key_file)}
    with make_hub(portals=portals) as hub:
        yield hub


class _Run:
    """A command's exit code and output, without the in-process hub's log lines (CliRunner
    captures the whole process's stdout while the command runs)."""

    def __init__(self, result: Result) -> None:
        self.exit_code = result.exit_code
        self.stdout = "".join(line for line in result.stdout.splitlines(keepends=True) if not _LOG_LINE.match(line))
        self.stderr = result.stderr
        self.output = self.stdout


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def _cli(*args: str) -> _Run:
    from hub import cli

    return _Run(CliRunner().invoke(cli, list(args)))


def test_a_portal_searches_archives_and_unarchives_from_the_command_line(demo_hub: RunningHub) -> None:
    """Anna's two DURCs through the demo portal: the table, JSON pages, archive/unarchive, and
    what goes wrong in one line each."""
    url = demo_hub.base_url
    with PortalClient(url, portal_signer(demo_hub.settings, "demo")) as client:
        first, second = _submit(client, DURC), _submit(client, DURC)
        for ref in (first, second):
            _settled(client, ref, "protocolled")

    table = _cli("filings", "search", "--user", ANNA, "--url", url)
    assert table.exit_code == 0, table.output + table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["filing", "kind", "state"]
    assert lines[2].startswith(second) and lines[3].startswith(first)  # newest first
    assert "inps:protocolled INPS_" in lines[2]  # each recipient with its protocol number

    paged = _cli("filings", "search", "--user", ANNA, "--url", url, "--json", "--limit", "1", "--all")
    assert paged.exit_code == 0, paged.stderr
    body = orjson.loads(paged.stdout)
    assert [i["reference"] for i in body["items"]] == [second, first] and body["nextCursor"] is None
    assert paged.stderr.splitlines() == ["... page 1: 1 filings so far"]

    archived = _cli("filings", "archive", first, "--user", ANNA, "--url", url)
    assert archived.exit_code == 0 and archived.stdout.startswith(f"{first}: protocolled, archived "), archived.output
    default = orjson.loads(_cli("filings", "search", "--user", ANNA, "--url", url, "--json").stdout)
    assert [i["reference"] for i in default["items"]] == [second]
    archive = orjson.loads(_cli("filings", "search", "--user", ANNA, "--url", url, "--json",
                                "--archived", "true").stdout)
    assert [i["reference"] for i in archive["items"]] == [first]
    back = _cli("filings", "unarchive", first, "--user", ANNA, "--url", url, "--json")
    assert back.exit_code == 0 and orjson.loads(back.stdout)["archived"] is False

    # Another user of the same portal sees none of them.
    nobody = _cli("filings", "search", "--user", MARCO, "--url", url)
    assert nobody.exit_code == 0 and nobody.stdout.strip() == "no filing matches"

    # One line each, never a traceback, with the operator commands' exit codes.
    bad = _cli("filings", "search", "--user", ANNA, "--url", url, "--from", "yesterday")
    assert bad.exit_code == 64 and "query:from" in bad.stderr and bad.stderr.count("\n") == 1
    missing = _cli("filings", "archive", "CRV-1999-000001", "--user", ANNA, "--url", url)
    assert missing.exit_code == 1 and missing.stderr.startswith("error: 404 ")
    away = _cli("filings", "search", "--user", ANNA, "--url", f"http://127.0.0.1:{free_port()}")
    assert away.exit_code == 69 and away.stderr.startswith("error: cannot reach the hub") and away.stderr.count("\n") == 1
    operator_only = _cli("filings", "search", "--user", ANNA, "--url", url, "--state", "pending")
    assert operator_only.exit_code == 2 and "--filing-state" in operator_only.stderr
    portal_only = _cli("filings", "search", "--url", url, "--archived", "true", "--token", "x")
    assert portal_only.exit_code == 2 and "--user" in portal_only.stderr
    for result in (bad, missing, away, operator_only, portal_only):
        assert "Traceback" not in result.output + result.stderr
