"""Every operator API endpoint against every role and against portal credentials, over real
HTTP with the hub's own guard (personal access tokens): no credential or a portal's ModI
signature gets 401, a role below the endpoint's 403, and the role that may call it gets past
the guard (whatever the endpoint then answers). Nothing is confirmed, so no action happens."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from cli.client import demo_user
from tests.support import FakeClock, RunningHub, hub_settings, portal_signer

ROLES = ("viewer", "operator", "admin")
REF = "CRV-2026-999999"
#: (method, path, JSON body, the lowest role allowed)
ENDPOINTS = [
    ("GET", "/v1/ops/whoami", None, "viewer"),
    ("GET", "/v1/ops/agencies", None, "viewer"),
    ("GET", "/v1/ops/search?agency=inps", None, "viewer"),
    ("GET", f"/v1/ops/filings/{REF}", None, "viewer"),
    ("GET", "/v1/ops/problems", None, "viewer"),
    ("POST", f"/v1/ops/filings/{REF}/recipients/inps/resend", {}, "operator"),
    ("POST", f"/v1/ops/filings/{REF}/recipients/inps/retry", {}, "operator"),
    ("POST", f"/v1/ops/filings/{REF}/recipients/inps/cancel", {"reason": "check"}, "operator"),
    ("POST", "/v1/ops/agencies/inps/pause", {"reason": "check"}, "operator"),
    ("POST", "/v1/ops/agencies/inps/resume", {}, "operator"),
    ("POST", "/v1/ops/agencies/inps/resend-undeliverable",
     {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}, "operator"),
    ("GET", "/v1/ops/dead-letters", None, "operator"),
    ("POST", "/v1/ops/dead-letters/replay", {}, "operator"),
    ("GET", "/v1/ops/operators", None, "admin"),
    ("POST", "/v1/ops/operators", {"name": "nuovo", "role": "viewer"}, "admin"),
    ("POST", "/v1/ops/operators/nobody/role", {"role": "viewer"}, "admin"),
    ("POST", "/v1/ops/operators/nobody/disable", {}, "admin"),
    ("GET", "/v1/ops/lockouts", None, "admin"),
    ("POST", "/v1/ops/lockouts/address:127.0.0.9/lift", {}, "admin"),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(database_url: str, clock: FakeClock) -> Iterator[RunningHub]:
    with RunningHub(hub_settings(database_url, {}), clock=clock, with_workers=False) as running:
        yield running


def _tokens(hub: RunningHub) -> dict[str, str]:
    accounts = hub.hub.operators
    assert accounts is not None
    tokens = {}
    for role in ROLES:
        accounts.add(f"op-{role}", role, "operator:setup", password=None)
        tokens[role] = accounts.issue_token(f"op-{role}", "operator:setup").token
    return tokens


def _call(client: httpx.Client, method: str, path: str, body: dict | None, headers: dict[str, str]) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else None
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    return client.request(method, path, content=content, headers=headers)


def test_every_operator_endpoint_checks_its_role_and_refuses_portals(hub: RunningHub, clock: FakeClock) -> None:
    """Table-driven: 5 callers × every endpoint of `/v1/ops` (except login itself)."""
    tokens = _tokens(hub)
    signer = portal_signer("test", clock)
    rank = {role: i for i, role in enumerate(ROLES)}
    wrong: list[str] = []
    with httpx.Client(base_url=hub.base_url, timeout=10.0, trust_env=False) as client:
        for method, path, body, lowest in ENDPOINTS:
            content = orjson.dumps(body) if body is not None else None
            portal = (signer.headers(body=content, content_type="application/json", user=demo_user("CMPNNA80E59D612B"))
                      if content is not None else signer.headers(user=demo_user("CMPNNA80E59D612B")))
            callers = {"nobody": {}, "portal": portal,
                       **{role: {"Authorization": f"Bearer {tokens[role]}"} for role in ROLES}}
            for caller, headers in callers.items():
                answer = _call(client, method, path, body, headers)
                if caller in ("nobody", "portal"):
                    expected_ok = answer.status_code == 401
                elif rank[caller] < rank[lowest]:
                    expected_ok = answer.status_code == 403
                else:
                    expected_ok = answer.status_code not in (401, 403) and answer.status_code < 500
                if not expected_ok:
                    wrong.append(f"{caller:8} {method} {path} -> {answer.status_code} {answer.text[:120]}")
                elif answer.status_code in (401, 403):
                    assert answer.headers["content-type"] == "application/problem+json"
    assert not wrong, "\n".join(wrong)
