"""The operator API's read side over real HTTP, on SQLite and PostgreSQL: filings delivered to
the simulators with faults (an undeliverable recipient, a throttled one retrying, a duplicated
protocol number) are seen in the per-agency summary, found by search (cursor pages, CSV), shown
in full (attempts, message, receipt, anomalies, events), grouped as problems; and read through
`hub.py filings search|show`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from api.problems import problem_response
from cli.client import PortalClient
from storage.tables import audit_log
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixture: client_for
    DURC,
    RUNTS,
    _by_agency,
    _settled,
    _submit,
    _wait_view,
    client_for,
)
from tests.support import RunningHub, free_port, hub_settings

_ROLES = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class _Operator:
    name: str
    role: str


class HeaderGuardForTests:
    """Stands in for the operator guard (api.ops.auth) in these tests only: the operator is
    named by `X-Test-Operator: NAME ROLE`, or by a bearer token `NAME.ROLE` (the CLI's)."""

    async def require(self, request: Request, role: str) -> _Operator | Response:
        claim = request.headers.get("x-test-operator", "")
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            claim = auth[7:].replace(".", " ")
        name, _, has = claim.partition(" ")
        if not name or has not in _ROLES:
            return problem_response(401, "operator-unauthenticated", "Unauthorized", "no operator credential",
                                    instance=request.url.path)
        if _ROLES[has] < _ROLES[role]:
            return problem_response(403, "operator-role-too-low", "Forbidden", f"needs {role}",
                                    instance=request.url.path)
        return _Operator(name, has)


@dataclass
class _Scene:
    hub: RunningHub
    http: httpx.Client
    first: str  # DURC, INPS protocolled
    duplicate: str  # DURC, INPS gave the first one's number again: an anomaly
    undeliverable: str  # RUNTS always 503
    retrying: str  # RUNTS 503 with Retry-After 600


@pytest.fixture
def scene(database_url: str, client_for, sims) -> Iterator[_Scene]:  # type: ignore[no-untyped-def]
    """Four filings in known states, on a hub whose operator API is guarded by the test guard."""
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
    hub = RunningHub(settings)
    hub.hub.ops_guard = HeaderGuardForTests()
    with hub as running:
        client: PortalClient = client_for(running)
        first = _submit(client, DURC)
        _settled(client, first, "protocolled")
        sims.set_faults("inps", [{"kind": "duplicate_number", "times": 1}])
        duplicate = _submit(client, DURC)
        _settled(client, duplicate, "protocolled")
        sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
        undeliverable = _submit(client, RUNTS)
        _settled(client, undeliverable, "undeliverable")
        sims.set_faults("runts", [{"kind": "http_status", "status": 503, "retry_after": 600}])
        retrying = _submit(client, RUNTS)
        _wait_view(client, retrying, lambda v: _by_agency(v)["runts"]["state"] == "retrying", what="runts retrying")
        with httpx.Client(base_url=running.base_url, trust_env=False, timeout=10.0,
                          headers={"X-Test-Operator": "alice viewer"}) as http:
            yield _Scene(running, http, first, duplicate, undeliverable, retrying)


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith(":" + slug)
    return body


def _search(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/v1/ops/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_operator_reads_summary_search_detail_and_problems(scene: _Scene) -> None:
    """One run with faults, read every way an operator reads it."""
    http, hub = scene.http, scene.hub

    # -- per-agency summary ----------------------------------------------------------------------
    response = http.get("/v1/ops/agencies")
    assert response.status_code == 200, response.text
    lines = {line["agency"]: line for line in response.json()["agencies"]}
    assert {"inps", "inail", "cciaa", "runts"} <= lines.keys()
    inps, runts = lines["inps"], lines["runts"]
    assert inps["counts"]["anomalies"] == 1
    assert inps["lastHour"]["deliveries"] == 2 and inps["lastHour"]["successRatio"] == 1.0
    assert inps["oldestOpenAgeSeconds"] is None  # nothing open
    assert runts["counts"]["undeliverable"] == 1 and runts["counts"]["retrying"] == 1
    assert runts["counts"]["anomalies"] == 0
    assert runts["oldestOpenAgeSeconds"] is not None and runts["oldestOpenAgeSeconds"] >= 0
    assert runts["lastHour"]["deliveries"] == 2 and runts["lastHour"]["successRatio"] == 0.0
    assert runts["circuit"]["state"] in {"closed", "open", "half_open"}
    assert lines["inail"]["counts"]["pending"] == 0

    # -- search, each filter ---------------------------------------------------------------------
    everything = _search(http, limit=500)
    assert [r["reference"] for r in everything] == [scene.retrying, scene.undeliverable, scene.duplicate, scene.first]
    number = _search(http, reference=scene.first)[0]["protocolNumber"]
    assert {r["reference"] for r in _search(http, protocolNumber=number)} == {scene.first, scene.duplicate}
    assert [r["reference"] for r in _search(http, state="undeliverable", agency="runts")] == [scene.undeliverable]
    assert [r["reference"] for r in _search(http, state="retrying")] == [scene.retrying]
    assert [r["reference"] for r in _search(http, filingState="undeliverable")] == [scene.undeliverable]
    assert [r["reference"] for r in _search(http, kind="durc_request")] == [scene.duplicate, scene.first]
    assert len(_search(http, portal="test")) == 4 and _search(http, portal="other") == []
    message_id = everything[0]["messageId"]
    assert [r["reference"] for r in _search(http, messageId=message_id)] == [scene.retrying]
    subject = everything[0]["subjectTaxCode"]
    assert scene.retrying in {r["reference"] for r in _search(http, subjectTaxCode=subject.lower())}
    now = datetime.now(timezone.utc)
    assert _search(http, **{"from": (now + timedelta(minutes=1)).isoformat()}) == []
    assert len(_search(http, **{"from": (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
                                "to": (now + timedelta(minutes=1)).isoformat()})) == 4

    # -- the filing's full history ------------------------------------------------------------------
    detail = http.get(f"/v1/ops/filings/{scene.undeliverable}").json()
    assert detail["state"] == "undeliverable" and detail["portal"] == "test"
    [recipient] = detail["recipients"]
    assert recipient["agency"] == "runts" and recipient["state"] == "undeliverable"
    assert recipient["message"]["content"] and recipient["message"]["messageId"] == recipient["messageId"]
    assert len(recipient["attempts"]) == recipient["attemptCount"] >= 2
    for attempt in recipient["attempts"]:
        assert (attempt["result"], attempt["errorClass"], attempt["httpStatus"]) == (
            "transient", "AgencyUnreachable", 503)
        assert attempt["errorCode"] == "HTTP503" and attempt["durationMs"] >= 0
        assert attempt["startedAt"].endswith("Z")
        assert recipient["messageId"] in attempt["sent"]  # the exact body sent, each time
        assert attempt["received"] is not None
    assert [e["seq"] for e in detail["events"]] == sorted(e["seq"] for e in detail["events"])
    assert detail["events"][0]["type"] and detail["createdAt"].endswith("Z")
    dup = http.get(f"/v1/ops/filings/{scene.duplicate}").json()
    [inps_recipient] = dup["recipients"]
    assert inps_recipient["receipt"]["protocolNumber"] == number
    assert [a["kind"] for a in inps_recipient["anomalies"]] == ["duplicate_protocol_number"]
    ok = inps_recipient["attempts"][0]
    assert inps_recipient["messageId"] in ok["sent"] and ok["sent"].lstrip().startswith("<")  # the SOAP envelope
    assert number in ok["received"]  # the receipt as the agency sent it
    assert (ok["result"], ok["errorClass"], ok["httpStatus"], ok["errorCode"]) == ("ok", None, None, None)
    retried = http.get(f"/v1/ops/filings/{scene.retrying}").json()["recipients"][0]["attempts"]
    assert (retried[-1]["errorClass"], retried[-1]["httpStatus"]) == ("AgencyThrottled", 503)
    _problem(http.get("/v1/ops/filings/CRV-2000-999999"), 404, "not-found")
    with hub.hub.engine.connect() as conn:
        reads = conn.execute(select(audit_log.c.actor, audit_log.c.subject, audit_log.c.outcome)
                             .where(audit_log.c.action == "ops_filing_read").order_by(audit_log.c.id)).all()
    assert [tuple(r) for r in reads] == [("operator:alice", scene.undeliverable, "ok"),
                                         ("operator:alice", scene.duplicate, "ok"),
                                         ("operator:alice", scene.retrying, "ok"),
                                         ("operator:alice", "CRV-2000-999999", "not_found")]

    # -- problems by cause -----------------------------------------------------------------------
    problems = http.get("/v1/ops/problems").json()
    runts_groups = [g for g in problems["problems"] if g["agency"] == "runts"]
    assert sum(g["count"] for g in runts_groups) == problems["total"] == 2
    causes = {(g["errorClass"], g["code"]): (g["count"], g["states"], g["newestReference"]) for g in runts_groups}
    assert causes == {("AgencyUnreachable", "HTTP503"): (1, {"undeliverable": 1}, scene.undeliverable),
                      ("AgencyThrottled", "HTTP503"): (1, {"retrying": 1}, scene.retrying)}
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert http.get("/v1/ops/problems", params={"since": later}).json() == {"problems": [], "total": 0}


def test_cursor_pages_never_repeat_or_skip_and_csv_has_the_same_rows(scene: _Scene, client_for) -> None:  # type: ignore[no-untyped-def]
    """Pages of one row, with a filing accepted between two pages, give exactly the rows of one
    big page; the CSV export (by Accept or by format) parses to the same rows."""
    http = scene.http
    whole = _search(http, limit=500)
    seen: list[dict[str, Any]] = []
    response = http.get("/v1/ops/search", params={"limit": 1})
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        seen.extend(body["items"])
        pages += 1
        if pages == 2:  # a new filing arrives mid-way: it is newer than the first page, never inside
            client = client_for(scene.hub)
            newer = _submit(client, DURC)
        if body["next"] is None:
            assert body["cursor"] is None and "link" not in response.headers
            break
        assert response.headers["link"] == f'<{body["next"]}>; rel="next"'
        response = http.get(body["next"])
    assert [r["deliveryId"] for r in seen] == [r["deliveryId"] for r in whole]
    assert pages == len(whole)
    _settled(client, newer, "protocolled")  # the export below reads a settled store

    for csv_response in (http.get("/v1/ops/search", headers={"Accept": "text/csv"}),
                         http.get("/v1/ops/search", params={"format": "csv", "agency": "runts"})):
        assert csv_response.status_code == 200
        assert csv_response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(csv_response.text)))
        expected = _search(http, limit=500, **({"agency": "runts"} if "agency" in str(csv_response.url) else {}))
        assert [r["deliveryId"] for r in rows] == [r["deliveryId"] for r in expected]
        assert [(r["reference"], r["state"], r["protocolNumber"]) for r in rows] == [
            (e["reference"], e["state"], e["protocolNumber"] or "") for e in expected]
    with scene.hub.hub.engine.connect() as conn:
        exports = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "ops_search_exported")).all()
    assert [r.actor for r in exports] == ["operator:alice", "operator:alice"]


@pytest.mark.parametrize(("params", "status", "name"), [
    ({"limit": "0"}, 422, "limit"),
    ({"limit": "501"}, 422, "limit"),
    ({"limit": "ten"}, 400, "limit"),
    ({"from": "yesterday"}, 400, "from"),
    ({"from": "2026-03-01T10:00:00"}, 400, "from"),  # no offset: not an instant
    ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, 422, "to"),
    ({"cursor": "not-a-cursor"}, 400, "cursor"),
    ({"state": "lost"}, 422, "state"),
    ({"colour": "red"}, 400, "colour"),
    ({"format": "xml"}, 422, "format"),
    ({"agency": "x" * 40}, 422, "agency"),
])
def test_bad_search_parameters_are_problems_naming_the_parameter(scene: _Scene, params: dict[str, str],
                                                                 status: int, name: str) -> None:
    """Each bad parameter is 400 (malformed) or 422 (out of range), and names itself."""
    body = _problem(scene.http.get("/v1/ops/search", params=params), status, "invalid-parameter")
    assert body["errors"][0]["location"] == f"query:{name}"


def test_without_an_operator_credential_the_reads_are_401(scene: _Scene) -> None:
    """No credential, not even a parameter check: 401 on each read."""
    with httpx.Client(base_url=scene.hub.base_url, trust_env=False, timeout=10.0) as anonymous:
        for path in ("/v1/ops/agencies", "/v1/ops/search", "/v1/ops/search?limit=0",
                     f"/v1/ops/filings/{scene.first}", "/v1/ops/problems"):
            _problem(anonymous.get(path), 401, "operator-unauthenticated")
    _problem(scene.http.get("/v1/ops/problems", params={"since": "soon"}), 400, "invalid-parameter")


def test_cli_searches_and_shows_over_the_operator_api(scene: _Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hub.py filings search|show`: tables, --json, the token from the environment, exit codes,
    and one line (no traceback) when the hub cannot be reached or refuses the token."""
    from hub import cli

    runner = CliRunner()
    url = scene.hub.base_url
    monkeypatch.setenv("CROCEVIA_OPERATOR_TOKEN", "bob.viewer")

    found = runner.invoke(cli, ["filings", "search", "--url", url, "--state", "undeliverable"])
    assert found.exit_code == 0, found.output + found.stderr
    assert scene.undeliverable in found.output and "runts" in found.output and "recipient" in found.output
    assert scene.first not in found.output

    as_json = runner.invoke(cli, ["filings", "search", "--url", url, "--kind", "durc_request", "--json",
                                  "--limit", "1", "--all"])
    assert as_json.exit_code == 0, as_json.stderr
    import orjson

    assert [r["reference"] for r in orjson.loads(as_json.stdout)["items"]] == [scene.duplicate, scene.first]
    assert as_json.stderr.splitlines() == ["... page 1: 1 rows so far"]  # progress of a long export

    shown = runner.invoke(cli, ["filings", "show", scene.undeliverable, "--url", url])
    assert shown.exit_code == 0, shown.stderr
    assert scene.undeliverable in shown.output and "undeliverable" in shown.output
    assert "AgencyUnreachable" in shown.output and "503" in shown.output
    detail = orjson.loads(runner.invoke(cli, ["filings", "show", scene.duplicate, "--url", url, "--json"]).output)
    assert detail["recipients"][0]["anomalies"][0]["kind"] == "duplicate_protocol_number"

    missing = runner.invoke(cli, ["filings", "show", "CRV-2000-999999", "--url", url])
    assert missing.exit_code == 1 and missing.stderr.strip().startswith("the hub answered 404")
    bad = runner.invoke(cli, ["filings", "search", "--url", url, "--from", "yesterday"])
    assert bad.exit_code == 64 and "query:from" in bad.stderr
    refused = runner.invoke(cli, ["filings", "search", "--url", url, "--token", "nobody"])
    assert refused.exit_code == 77 and refused.stderr.count("\n") == 1
    away = runner.invoke(cli, ["filings", "search", "--url", f"http://127.0.0.1:{free_port()}"])
    assert away.exit_code == 69
    assert away.stderr.strip().startswith("cannot reach the hub") and away.stderr.count("\n") == 1
    assert "Traceback" not in away.stderr + away.output
    monkeypatch.delenv("CROCEVIA_OPERATOR_TOKEN")
    untokened = runner.invoke(cli, ["filings", "search", "--url", url])
    assert untokened.exit_code == 2 and "token" in untokened.stderr
