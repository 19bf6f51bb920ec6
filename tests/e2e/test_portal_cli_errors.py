"""Every portal command of `hub.py` ends a failure the same way: ONE line on stderr, no
traceback, and the exit code README's table documents (cli/portal.py) — for an unknown
portal, a key it cannot sign with, a malformed user, a hub that is not listening, a hub that
does not answer in time, and the hub's refusal (problem+json) from a live hub. And `--json`
prints JSON only on stdout.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from config.settings import PROJECT_ROOT, PortalSettings
from security.keys import generate_private_key, private_pem, public_pem
from tests.support import RunningHub, free_port, hub_settings

DURC = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml"
ANNA = "CMPNNA80E59D612B"  # the declarant of durc_request.xml, legal representative of its subject
SUBJECT = "06543210485"
NO_FILING = "CRV-2000-999999"
NO_DRAFT = "0" * 32
NO_DELEGATION = "0" * 32

#: README's exit codes for the portal commands: the hub's status → the command's exit code.
EXIT_FOR_STATUS = {400: 64, 401: 77, 403: 77, 404: 1, 409: 70, 412: 70, 422: 64, 502: 69, 503: 69, 504: 69}
EXIT_UNREACHABLE = 69
EXIT_CONFIG = 78
EXIT_TIMEOUT = 75
EXIT_USAGE = 64


def _commands(files: dict[str, Path]) -> dict[str, list[str]]:
    """Every portal command, with arguments the live hub refuses (a filing, draft or delegation
    that does not exist, a malformed document, filter or date)."""
    return {
        "submit": ["submit", str(files["garbage"])],
        "status": ["status", NO_FILING],
        "status --wait": ["status", NO_FILING, "--wait"],
        "receipt": ["receipt", NO_FILING, "-o", str(files["pdf"])],
        "drafts create": ["drafts", "create", str(files["garbage"])],
        "drafts update": ["drafts", "update", NO_DRAFT, str(files["durc"])],
        "drafts show": ["drafts", "show", NO_DRAFT],
        "drafts list": ["drafts", "list", "--cursor", "not-a-cursor"],
        "drafts delete": ["drafts", "delete", NO_DRAFT],
        "drafts check": ["drafts", "check", NO_DRAFT],
        "drafts submit": ["drafts", "submit", NO_DRAFT],
        "filings search": ["filings", "search", "--from", "yesterday"],
        "filings archive": ["filings", "archive", NO_FILING],
        "filings unarchive": ["filings", "unarchive", NO_FILING],
        "events": ["events", NO_FILING],
        "events --follow": ["events", NO_FILING, "--follow"],
        "delegations list": ["delegations", "list", "--subject", "not a subject"],
        "delegations grant": ["delegations", "grant", "--subject", SUBJECT, "--delegate", "DLGLNE88D50L219Q",
                              "--agency", "inps", "--valid-to", "2001-01-01"],
        "delegations subdelegate": ["delegations", "subdelegate", NO_DELEGATION, "--collaborator", "CLLBRT85M10F205L"],
        "delegations revoke": ["delegations", "revoke", NO_DELEGATION],
        "resend": ["resend", NO_FILING, "inps"],
    }


#: The refusal each command's arguments above meet at the live hub.
REFUSED_WITH = {
    "submit": 400, "status": 404, "status --wait": 404, "receipt": 404, "drafts create": 400,
    "drafts update": 404, "drafts show": 404, "drafts list": 400, "drafts delete": 404, "drafts check": 404,
    "drafts submit": 404, "filings search": 400, "filings archive": 404, "filings unarchive": 404,
    "events": 404, "events --follow": 404, "delegations list": 422, "delegations grant": 422,
    "delegations subdelegate": 404, "delegations revoke": 404, "resend": 404,
}
COMMANDS = sorted(REFUSED_WITH)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-files")
    (folder / "garbage.xml").write_bytes(b"<filing>not closed")
    (folder / "durc.xml").write_bytes(DURC.read_bytes())
    key = generate_private_key("ES256")
    (folder / "cli-portal.pem").write_bytes(private_pem(key))
    (folder / "cli-portal.pub").write_bytes(public_pem(key))
    (folder / "not-a-key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    return {"garbage": folder / "garbage.xml", "durc": folder / "durc.xml", "pdf": folder / "receipt.pdf",
            "key": folder / "cli-portal.pem", "public": folder / "cli-portal.pub", "bad key": folder / "not-a-key.pem"}


@pytest.fixture(scope="module")
def live_hub(simulators: Any, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub (SQLite) for the module, knowing portal `cli` by the public half of its key."""
    database = f"sqlite:///{tmp_path_factory.mktemp('db') / 'crocevia.db'}"
    settings = hub_settings(database, {agency: simulators.soap_endpoint(agency) for agency in simulators.urls})
    portals = {**settings.portals,
               "cli": PortalSettings(algorithm="ES256", public_key=files["public"].read_text())}
    with RunningHub(settings.model_copy(update={"portals": portals})) as running:
        yield running


def _env(files: dict[str, Path]) -> dict[str, str | None]:
    """Portal `cli` signs with its key file; `nokey` is known by its public key only (a
    production portal: the hub cannot sign for it); `badkey`'s key file holds no key."""
    return {"PORTALS__CLI__ALGORITHM": "ES256", "PORTALS__CLI__PRIVATE_KEY_FILE": str(files["key"]),
            "PORTALS__NOKEY__ALGORITHM": "ES256", "PORTALS__NOKEY__PUBLIC_KEY": files["public"].read_text(),
            "PORTALS__BADKEY__ALGORITHM": "ES256", "PORTALS__BADKEY__PRIVATE_KEY_FILE": str(files["bad key"]),
            "CROCEVIA_OPERATOR_TOKEN": None, "CROCEVIA_USER": None, "CROCEVIA_PORTAL": None}


def _invoke(files: dict[str, Path], args: list[str], *, url: str, portal: str = "cli", user: str = ANNA) -> Result:
    """`hub.py ARGS --url U --portal P --user U` in process (the group's options for `drafts`).
    `submit` is given `--user` too: it would otherwise vouch for the declarant."""
    from hub import cli

    more = ["--url", url, "--portal", portal, "--user", user]
    argv = [args[0], *more, *args[1:]] if args[0] == "drafts" else [*args, *more]
    with capture_logs():  # the in-process hub's logs, kept apart from the command's output
        return CliRunner().invoke(cli, argv, env=_env(files))


def _assert_one_line(result: Result, code: int, starts: str) -> None:
    everything = result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in everything
    assert result.exit_code == code, everything
    assert result.stderr.startswith(starts) and result.stderr.count("\n") == 1, result.stderr


#: What goes wrong before the hub answers: (the command line's change, exit code, the line's start).
#: No hub listens at the URL: the first four fail before any request, the last on connecting.
BEFORE_THE_HUB = {
    "unknown portal": ({"portal": "nope"}, EXIT_CONFIG, "error: no portal 'nope' in the configuration"),
    "portal without a private key": ({"portal": "nokey"}, EXIT_CONFIG, "error: portal 'nokey' cannot sign: "),
    "key file holding no key": ({"portal": "badkey"}, EXIT_CONFIG, "error: portal 'badkey' cannot sign: "),
    "malformed user": ({"user": "NOT-A-CODE"}, EXIT_USAGE, "error: --user 'NOT-A-CODE'"),
    "hub not listening": ({}, EXIT_UNREACHABLE, "error: cannot reach the hub at {url}: ConnectError"),
}


@pytest.mark.parametrize("case", sorted(BEFORE_THE_HUB))
@pytest.mark.parametrize("command", COMMANDS)
def test_what_fails_before_the_hub_answers_is_one_line(command: str, case: str, files: dict[str, Path]) -> None:
    change, code, starts = BEFORE_THE_HUB[case]
    away = f"http://127.0.0.1:{free_port()}"
    _assert_one_line(_invoke(files, _commands(files)[command], url=away, **change), code, starts.format(url=away))
    assert not files["pdf"].exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_the_hubs_refusal_is_one_line_with_the_documented_code(command: str, files: dict[str, Path],
                                                               live_hub: RunningHub) -> None:
    status = REFUSED_WITH[command]
    result = _invoke(files, _commands(files)[command], url=live_hub.base_url)
    named = f"{files['garbage']}: " if command == "submit" else ""  # submit names the file refused
    _assert_one_line(result, EXIT_FOR_STATUS[status], f"error: {named}{status} ")
    assert not files["pdf"].exists()


@pytest.mark.parametrize("command", [["status", "--wait"], ["events", "--follow"]])
def test_a_wait_that_runs_out_is_exit_75(command: list[str], files: dict[str, Path], live_hub: RunningHub,
                                         simulators: Any) -> None:
    """INPS answers 503 on every call: the filing stays in progress, the wait ends at --timeout
    with progress lines, then one error line."""
    simulators.set_faults("inps", [{"kind": "http_status", "status": 503, "times": 1000}])
    try:
        submitted = _invoke(files, ["submit", str(files["durc"]), "--json"], url=live_hub.base_url)
        reference = json.loads(submitted.stdout)["reference"]
        result = _invoke(files, [command[0], reference, command[1], "--timeout", "0.5"], url=live_hub.base_url)
    finally:
        simulators.reset()
    assert result.exit_code == EXIT_TIMEOUT and "Traceback" not in result.output + result.stderr, result.stderr
    *progress, last = result.stderr.splitlines()
    assert progress and all(line.startswith(f"... {reference}: ") for line in progress)
    assert last.startswith(f"error: {reference} has not settled after 0.5 s")


def test_a_hub_that_does_not_answer_in_time_is_one_line(files: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A socket that accepts connections and never answers: the wait for the answer ends."""
    from config.settings import load_settings

    from cli.portal import PortalSession, portal_client

    settings = load_settings()
    settings = settings.model_copy(update={"portals": {
        "cli": PortalSettings(algorithm="ES256", private_key_file=str(files["key"]))}})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SystemExit) as ended:
            with portal_client(settings, PortalSession(url, "cli", ANNA, "SPID2", False, timeout=0.3)) as client:
                client.status(NO_FILING)
    assert ended.value.code == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith(f"error: the hub at {url} did not answer in time (ReadTimeout)") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["submit", "--portal", "nope", str(DURC)],
                                  ["submit", "--url", "http://127.0.0.1:9", "--portal", "cli", str(DURC)]])
def test_the_known_tracebacks_are_gone_in_a_real_process(argv: list[str], files: dict[str, Path]) -> None:
    """`hub.py submit --portal nope FILE` raised KeyError, `--url http://127.0.0.1:9` httpx's
    ConnectError, each with a traceback: now one line, as a shell sees it."""
    env = {k: v for k, v in _env(files).items() if v is not None}
    done = subprocess.run([sys.executable, "hub.py", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.returncode == (EXIT_CONFIG if "nope" in argv else EXIT_UNREACHABLE) and done.stdout == ""


def test_json_is_all_stdout_holds(files: dict[str, Path], live_hub: RunningHub) -> None:
    """With --json each portal command's stdout is one JSON document (events --follow: one a
    line); progress and the in-process hub's logs stay off it."""
    url = live_hub.base_url
    submitted = _invoke(files, ["submit", str(files["durc"]), "--json"], url=url)
    assert submitted.exit_code == 0, submitted.output + submitted.stderr
    reference = json.loads(submitted.stdout)["reference"]
    waited = _invoke(files, ["status", reference, "--wait", "--json"], url=url)
    assert json.loads(waited.stdout)["state"] == "protocolled" and f"... {reference}: " in waited.stderr
    readable = _invoke(files, ["status", reference], url=url)
    assert readable.stdout.split()[:3] == ["filing", "kind", "filing"] and reference in readable.stdout
    receipt = _invoke(files, ["receipt", reference, "-o", str(files["pdf"].with_name("ok.pdf")), "--json"], url=url)
    assert json.loads(receipt.stdout)["bytes"] == files["pdf"].with_name("ok.pdf").stat().st_size
    found = json.loads(_invoke(files, ["filings", "search", "--json"], url=url).stdout)
    assert reference in [item["reference"] for item in found["items"]]
    assert json.loads(_invoke(files, ["events", reference, "--json"], url=url).stdout)["reference"] == reference
    followed = _invoke(files, ["events", reference, "--follow", "--json"], url=url)
    assert all(json.loads(line)["sequence"] for line in followed.stdout.splitlines())
    assert json.loads(_invoke(files, ["drafts", "list", "--json"], url=url).stdout)["drafts"] == []
    from hub import cli

    with capture_logs():  # the portal's options after the draft command, as after every other one
        after = CliRunner().invoke(cli, ["drafts", "list", "--url", url, "--portal", "cli", "--user", ANNA, "--json"],
                                   env=_env(files))
    assert after.exit_code == 0 and json.loads(after.stdout) == {"drafts": [], "nextCursor": None}, after.output
    listed = json.loads(_invoke(files, ["delegations", "list", "--subject", SUBJECT, "--json"], url=url).stdout)
    assert listed["delegations"] == []
