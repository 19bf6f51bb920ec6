"""The ModI recipe proven outside Python: the Node.js portal (examples/node-portal, standard
library only) signs and submits filings to a live hub with the agency simulators, follows each
until settled, and prints protocol numbers that are the hub's own, in each agency's format.

Each run registers fresh key pairs for two test portals (ES256 and RS256) in the hub's
configuration. Skips when `node` is absent; under CI=true that is a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT, PortalSettings
from security.keys import generate_private_key, private_pem, public_pem
from security.modi import ModiSigner
from tests.conftest import IN_CI
from tests.support import AUDIENCE, RunningHub, free_port, hub_settings

PORTAL_SCRIPT = PROJECT_ROOT / "examples" / "node-portal" / "portal.mjs"
EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
#: Each simulated agency's protocol number format (simulators/numbering.py).
FORMATS = {
    # INPS's own (INPS.<office>.<year>.<seq>), or DURC On Line's for a DURC (INPS_<8 digits>).
    "inps": r"INPS\.\d{4}\.\d{4}\.\d{7}|INPS_\d{8}",
    "inail": r"INAIL/\d{4}/\d{8}",
    "cciaa": r"[A-Z]{2}/RI/\d{4}/\d{6}",
    "runts": r"RUNTS-\d{4}-\d{7}",
}
MARCO = "FTTMRC85C14H501X"  # declarant of business_start.xml
ANNA = "CMPNNA80E59D612B"  # declarant of durc_request.xml


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        message = "node (Node.js 20) is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: .ci/run installs Debian's nodejs)")
        pytest.skip(message)
    return found


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Any, Path]]:
    """Fresh key pairs of two Node portals, the private halves written where the script reads them."""
    out = {}
    for portal, algorithm in (("node-ec", "ES256"), ("node-rsa", "RS256")):
        key = generate_private_key(algorithm)
        path = tmp_path / f"{portal}.pem"
        path.write_bytes(private_pem(key))
        out[portal] = (key, path)
    return out


@pytest.fixture
def hub(database_url: str, sims: Any, keys: dict[str, tuple[Any, Path]]) -> Iterator[RunningHub]:
    settings = hub_settings(database_url, {agency: sims.soap_endpoint(agency) for agency in sims.urls})
    portals = dict(settings.portals)
    for portal, (key, _) in keys.items():
        portals[portal] = PortalSettings(algorithm="ES256" if portal == "node-ec" else "RS256",
                                         public_key=public_pem(key).decode())
    with RunningHub(settings.model_copy(update={"portals": portals})) as running:
        yield running


def _run(node: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(PORTAL_SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def _printed(stdout: str) -> tuple[str, str, dict[str, tuple[str, str]]]:
    """The reference, the final state and each recipient's (state, protocol number) printed."""
    reference = re.search(r"^reference (\S+)$", stdout, re.M)
    state = re.search(r"^state (\S+)$", stdout, re.M)
    assert reference and state, stdout
    recipients = {m[1]: (m[2], m[3]) for m in re.finditer(r"^recipient (\S+) (\S+) (\S+)$", stdout, re.M)}
    return reference[1], state[1], recipients


def _hub_view(hub: RunningHub, key: Any, portal: str, user: str, reference: str) -> dict[str, Any]:
    signer = ModiSigner(issuer=portal, private_key=key, audience=AUDIENCE)
    with PortalClient(hub.base_url, signer, user=demo_user(user)) as client:
        response = client.status(reference)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("portal", "example", "user", "as_json"), [
    ("node-rsa", "business_start.xml", MARCO, False),
    ("node-ec", "durc_request.xml", ANNA, True),
], ids=["rs256-xml-three-agencies", "es256-json"])
def test_the_node_portal_files_and_reads_the_protocol_numbers(
    node: str, hub: RunningHub, keys: dict[str, tuple[Any, Path]], tmp_path: Path,
    portal: str, example: str, user: str, as_json: bool,
) -> None:
    """Submit (XML, or the same filing in JSON) and poll to the end: the protocol numbers the
    script prints are the hub's, one per recipient, each in its agency's format."""
    key, key_file = keys[portal]
    document = EXAMPLES / example
    if as_json:
        document = tmp_path / (document.stem + ".json")
        document.write_bytes(orjson.dumps(hub.hub.validator.xml_to_json((EXAMPLES / example).read_bytes())))
    # Options on the command line for one, the environment for the other (both documented).
    env = {"CROCEVIA_URL": hub.base_url, "CROCEVIA_PORTAL": portal, "CROCEVIA_PORTAL_KEY": str(key_file)}
    args = [str(document)] if as_json else ["--url", hub.base_url, "--portal", portal, "--key", str(key_file),
                                            str(document)]
    done = _run(node, *args, env=env if as_json else None)
    assert done.returncode == 0, done.stdout + done.stderr
    reference, state, printed = _printed(done.stdout)
    assert re.fullmatch(r"CRV-\d{4}-\d{6}", reference) and state == "protocolled"
    assert f"... {reference}: protocolled" in done.stderr  # progress while waiting

    view = _hub_view(hub, key, portal, user, reference)
    assert view["state"] == "protocolled"
    assert printed == {r["agency"]: (r["state"], r["protocolNumber"]) for r in view["recipients"]}
    expected = {"business_start.xml": {"cciaa", "inps", "inail"}, "durc_request.xml": {"inps"}}[example]
    assert set(printed) == expected
    for agency, (_, number) in printed.items():
        assert re.fullmatch(FORMATS[agency], number), (agency, number)


def test_the_node_portal_says_in_one_line_why_it_was_refused(
    node: str, hub: RunningHub, keys: dict[str, tuple[Any, Path]], tmp_path: Path,
) -> None:
    """Signed with a key the hub does not hold for that portal: exit 1 and the problem in one
    line; an unreachable hub: exit 2; nothing is stored."""
    _, wrong_key = keys["node-rsa"]
    refused = _run(node, "--url", hub.base_url, "--portal", "node-ec", "--key", str(wrong_key),
                   str(EXAMPLES / "durc_request.xml"))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: 401 Unauthorized: Authorization must be signed with ES256")
    assert refused.stderr.count("\n") == 1
    away = _run(node, "--url", f"http://127.0.0.1:{free_port()}", "--portal", "node-ec",
                "--key", str(keys["node-ec"][1]), str(EXAMPLES / "durc_request.xml"))
    assert away.returncode == 2 and away.stderr.startswith("error: cannot reach the hub")
