"""Every timestamp the hub answers with is RFC 3339 with an offset, spelled one way (UTC, `Z`).

The walk reads the JSON answers of the main endpoints over real HTTP — a filing, its events, the
delegations, the agencies and their health, the operator API's filing detail, search and
summary — on SQLite (which hands stored instants back without their zone) and on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start.xml)
ELENA = "DLGLNE88D50L219Q"  # an accountant Marco delegates to
START_SUBJECT = "09182730581"

#: Anything a reader would take for a date and time (what the walk checks).
LOOKS_LIKE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T t_]\d{2}:\d{2}")
#: RFC 3339 `date-time` (section 5.6), with the one offset spelling the hub uses.
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _timestamps(value: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(where, text) of every string in `value` that looks like a timestamp."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _timestamps(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _timestamps(item, f"{path}[{i}]")
    elif isinstance(value, str) and LOOKS_LIKE_TIMESTAMP.match(value):
        yield path, value


def _answers(hub: RunningHub, sims) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The JSON answers of the main endpoints around one settled filing with a rejection."""
    sims.set_faults("inail", [{"kind": "reject", "code": "R100", "text": "posizione non ammessa"}])
    assert hub.hub.operators is not None
    hub.hub.operators.add("tsviewer", "viewer", "operator:setup", password="correct horse battery staple")
    token = hub.hub.operators.issue_token("tsviewer", "operator:setup", days=1).token
    answers: dict[str, Any] = {}
    with PortalClient(hub.base_url, TEST_PORTAL_KEY, user=demo_user(MARCO)) as marco, \
            httpx.Client(base_url=hub.base_url, timeout=10, trust_env=False,
                         headers={"Authorization": f"Bearer {token}"}) as ops:
        response = marco.submit((EXAMPLES / "business_start.xml").read_bytes())
        assert response.status_code == 202, response.text
        reference = response.json()["reference"]
        assert marco.wait_settled([reference], timeout=30)[reference]["state"] == "partially_rejected"
        valid_to = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
        granted = marco.grant_delegation(subject=START_SUBJECT, delegate=ELENA, agencies=["inps"], valid_to=valid_to)
        assert granted.status_code == 201, granted.text
        calls = {
            "filing": marco.status(reference),
            "events": marco.events(reference),
            "delegation": granted,
            "delegations": marco.delegations(START_SUBJECT),
            "agencies": marco.agencies(),
            "agencyHealth": marco.agency_health(),
            "opsFiling": ops.get(f"/v1/ops/filings/{reference}"),
            "opsSearch": ops.get("/v1/ops/search"),
            "opsAgencies": ops.get("/v1/ops/agencies"),
            "whoami": ops.get("/v1/ops/whoami"),
        }
        for name, answer in calls.items():
            assert answer.status_code in (200, 201), f"{name}: {answer.status_code} {answer.text}"
            answers[name] = answer.json()
    return answers


def test_every_timestamp_in_the_main_answers_is_rfc3339_with_an_offset(hub: RunningHub, sims) -> None:  # type: ignore[no-untyped-def]
    """Walk the answers: each timestamp-looking string is RFC 3339 in UTC with `Z` and parses
    as an aware datetime; the walk saw the fields a portal and an operator rely on."""
    answers = _answers(hub, sims)
    seen = list(_timestamps(answers))
    wrong = [(where, text) for where, text in seen if not RFC3339_Z.match(text)]
    assert not wrong, f"timestamps not in RFC 3339 with Z: {wrong}"
    for where, text in seen:
        assert datetime.fromisoformat(text).tzinfo is not None, where
    keys = {where.rsplit(".", 1)[-1] for where, _ in seen}
    assert {"createdAt", "updatedAt", "protocolledAt", "validFrom", "validTo"} <= keys, keys
    by_endpoint = {where.split(".")[1].split("[")[0] for where, _ in seen}
    assert {"filing", "events", "delegation", "delegations", "agencies", "agencyHealth", "opsFiling",
            "opsSearch"} <= by_endpoint, by_endpoint
    # Agencies' protocol dates, as the status gives them, are instants too (not the agency's text).
    protocolled = [r["protocolledAt"] for r in answers["filing"]["recipients"] if r["protocolNumber"]]
    assert len(protocolled) == 2 and all(RFC3339_Z.match(p) for p in protocolled)
