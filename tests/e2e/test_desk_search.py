"""The portal's desk over real HTTP against a live hub and the simulators, on SQLite and
PostgreSQL: `GET /v1/filings` by each filter with keyset pages, archive and unarchive, other
portals' and users' filings out of sight, and precise problems for bad parameters."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import func, select

from api.openapi import build_document
from cli.client import PortalClient, demo_user
from storage.tables import audit_log, filings
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    BUSINESS_START,
    DURC,
    HubFactory,
    _settled,
    _submit,
    client_for,
    make_hub,
)
from tests.support import OTHER_PORTAL_KEY, TEST_PORTAL_KEY, RunningHub

MARCO = "FTTMRC85C14H501X"  # declarant of business_start.xml (legal representative of its subject)
ANNA = "CMPNNA80E59D612B"  # declarant of durc_request.xml
START_SUBJECT = "09182730581"
DURC_SUBJECT = "06543210485"


@functools.cache
def _document() -> dict[str, Any]:
    """The whole OpenAPI document (search.yaml refers to the shared FilingState, FilingKind...)."""
    return build_document()


def _conforms(body: dict[str, Any], schema: str = "FilingSearchPage") -> None:
    """The answer matches its schema in the document (api/openapi/search.yaml)."""
    document = _document()
    jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}",
                                     "components": document["components"]}).validate(body)


def _as(hub: RunningHub, tax_code: str, key: Any = TEST_PORTAL_KEY) -> PortalClient:
    return PortalClient(hub.base_url, key, user=demo_user(tax_code))


def _search(client: PortalClient, **params: str) -> dict[str, Any]:
    response = client.search(params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "nextCursor"}
    return body


def _refs(body: dict[str, Any]) -> list[str]:
    return [item["reference"] for item in body["items"]]


def _audit(hub: RunningHub, action: str) -> list[Any]:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)).all()


def test_each_filter_finds_the_users_filings_newest_first(make_hub: HubFactory, client_for) -> None:  # type: ignore[no-untyped-def]
    """Marco's three business starts and Anna's two DURCs: each filter narrows to what it says,
    newest first, each item with its recipients' states and protocol numbers."""
    with make_hub() as hub:
        client = client_for(hub)
        marco = [_submit(client, BUSINESS_START) for _ in range(3)]
        anna = [_submit(client, DURC) for _ in range(2)]
        for ref in marco + anna:
            _settled(client, ref, "protocolled")
        as_marco, as_anna = _as(hub, MARCO), _as(hub, ANNA)

        everything = _search(as_marco)
        _conforms(everything)
        assert _refs(everything) == marco[::-1] and everything["nextCursor"] is None
        first = everything["items"][-1]
        assert first["kind"] == "business_start" and first["state"] == "protocolled"
        assert first["subjectTaxCode"] == START_SUBJECT and first["archived"] is False
        assert first["createdAt"].endswith("Z") and first["payloadPurgedAt"] is None
        assert sorted(r["agency"] for r in first["recipients"]) == ["cciaa", "inail", "inps"]
        assert all(r["state"] == "protocolled" and r["protocolNumber"] for r in first["recipients"])
        assert _refs(_search(as_anna)) == anna[::-1]

        # A protocol number, whichever recipient gave it, finds that filing alone.
        inail = next(r["protocolNumber"] for r in first["recipients"] if r["agency"] == "inail")
        assert _refs(_search(as_marco, protocolNumber=inail)) == [marco[0]]
        assert _refs(_search(as_anna, protocolNumber=inail)) == []  # not Anna's filing
        assert _refs(_search(as_marco, reference=marco[1])) == [marco[1]]
        assert _refs(_search(as_marco, reference=anna[0])) == []
        assert _refs(_search(as_marco, subjectTaxCode=START_SUBJECT)) == marco[::-1]
        assert _refs(_search(as_anna, subjectTaxCode=START_SUBJECT)) == []
        assert _refs(_search(as_anna, subjectTaxCode=DURC_SUBJECT.lower())) == anna[::-1]
        assert _refs(_search(as_marco, kind="business_start")) == marco[::-1]
        assert _refs(_search(as_marco, kind="durc_request")) == []
        assert _refs(_search(as_marco, agency="inail")) == marco[::-1]
        assert _refs(_search(as_anna, agency="inail")) == []
        assert _refs(_search(as_anna, agency="inps")) == anna[::-1]
        assert _refs(_search(as_marco, state="protocolled")) == marco[::-1]
        assert _refs(_search(as_marco, state="in_progress")) == []

        # The date range: `from` inclusive, `to` exclusive, any offset.
        middle = datetime.fromisoformat(everything["items"][1]["createdAt"])
        rome = middle.astimezone(timezone(timedelta(hours=1))).isoformat()  # the same instant, +01:00
        assert _refs(_search(as_marco, **{"from": rome})) == [marco[2], marco[1]]
        assert _refs(_search(as_marco, to=middle.isoformat())) == [marco[0]]
        assert _refs(_search(as_marco, **{"from": (middle - timedelta(days=1)).isoformat(),
                                          "to": (middle + timedelta(microseconds=1)).isoformat(),
                                          "kind": "business_start"})) == [marco[1], marco[0]]
        assert _refs(_search(as_marco, **{"from": (middle + timedelta(days=1)).isoformat()})) == []


def test_pages_keep_a_stable_order_while_new_filings_arrive(make_hub: HubFactory, client_for) -> None:  # type: ignore[no-untyped-def]
    """Pages of three over seven filings, with new filings submitted between the pages: every
    filing exactly once, newest first; the new ones head the next fresh search."""
    with make_hub() as hub:
        client = client_for(hub)
        first = [_submit(client, DURC) for _ in range(7)]
        as_anna = _as(hub, ANNA)
        seen: list[str] = []
        page = _search(as_anna, limit="3")
        pages = 1
        arrived: list[str] = []
        while True:
            seen += _refs(page)
            assert len(page["items"]) <= 3
            if page["nextCursor"] is None:
                break
            arrived.append(_submit(client, DURC))  # arrives while Anna pages
            page = _search(as_anna, limit="3", cursor=page["nextCursor"])
            pages += 1
        assert pages == 3 and seen == first[::-1]
        assert _refs(_search(as_anna, limit="200"))[:len(arrived)] == arrived[::-1]
        # The Link header names the next page with the same filters.
        response = as_anna.search({"limit": "2", "agency": "inps"})
        assert 'rel="next"' in response.headers["link"] and "agency=inps" in response.headers["link"]


def test_archive_and_unarchive_a_settled_filing(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """Only a settled filing is archived (409 before); archived, it leaves the default list and
    stays findable by `archived=true|any` and by reference; both actions are idempotent and
    audited; another portal or user finds nothing to archive."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        client = client_for(hub)
        waiting = _submit(client, DURC)  # INPS answers 503: retrying, not settled
        as_anna = _as(hub, ANNA)
        refused = as_anna.archive(waiting)
        assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:crocevia:problem:filing-not-settled"
        assert refused.json()["state"] == "in_progress"
        sims.reset()

        kept, done = _submit(client, BUSINESS_START), _submit(client, BUSINESS_START)
        for ref in (kept, done):
            _settled(client, ref, "protocolled")
        as_marco = _as(hub, MARCO)
        archived = as_marco.archive(done)
        assert archived.status_code == 200, archived.text
        item = archived.json()
        _conforms(item, "FilingSummary")
        assert item["reference"] == done and item["archived"] is True and item["archivedAt"].endswith("Z")
        again = as_marco.archive(done)
        assert again.status_code == 200 and again.json()["archivedAt"] == item["archivedAt"]

        assert _refs(_search(as_marco)) == [kept]
        assert _refs(_search(as_marco, archived="true")) == [done]
        assert _refs(_search(as_marco, archived="any")) == [done, kept]
        assert _refs(_search(as_marco, reference=done)) == [done]
        assert _refs(_search(as_marco, reference=done, archived="false")) == []
        assert client.status(done).json()["archivedAt"] == item["archivedAt"]

        # Not theirs: another portal, another user, an unknown reference: 404, nothing changes.
        for other, ref in ((_as(hub, MARCO, OTHER_PORTAL_KEY), kept), (as_anna, kept), (as_marco, "CRV-1999-000001"),
                           (as_marco, "CRV%00" + "9" * 40)):
            response = other.archive(ref)
            assert response.status_code == 404 and response.json()["type"] == "urn:crocevia:problem:not-found"
        assert _search(_as(hub, MARCO, OTHER_PORTAL_KEY), archived="any")["items"] == []
        assert _refs(_search(as_marco)) == [kept]

        back = as_marco.unarchive(done)
        assert back.status_code == 200 and back.json()["archived"] is False and back.json()["archivedAt"] is None
        assert as_marco.unarchive(done).status_code == 200
        assert _refs(_search(as_marco)) == [done, kept]

        lines = [(r.actor, r.subject, r.outcome) for r in _audit(hub, "filing_archived")]
        assert lines == [(ANNA, waiting, "not_settled"), (MARCO, done, "ok"), (MARCO, done, "unchanged"),
                         (MARCO, kept, "not_found"), (ANNA, kept, "not_found"), (MARCO, "CRV-1999-000001", "not_found"),
                         (MARCO, "CRV?" + "9" * 40, "not_found")]
        assert [(r.subject, r.outcome) for r in _audit(hub, "filing_unarchived")] == [(done, "ok"), (done, "unchanged")]


@pytest.mark.parametrize(("params", "status", "name"), [
    ({"colour": "red"}, 400, "colour"),
    ({"col\x00our": "red"}, 400, "col?our"),
    ({"limit": "0"}, 422, "limit"),
    ({"limit": "201"}, 422, "limit"),
    ({"limit": "ten"}, 400, "limit"),
    ({"limit": "\u00b2"}, 400, "limit"),  # a digit to str.isdigit, not to int()
    ({"protocolNumber": "INPS\x00"}, 422, "protocolNumber"),
    ({"cursor": "A" * 201}, 400, "cursor"),
    ({"state": "lost"}, 422, "state"),
    ({"kind": "marriage"}, 422, "kind"),
    ({"agency": "nasa"}, 422, "agency"),
    ({"subjectTaxCode": "12345"}, 422, "subjectTaxCode"),
    ({"from": "2026-01-01T00:00:00"}, 400, "from"),
    ({"to": "yesterday"}, 400, "to"),
    ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 422, "to"),
    ({"archived": "maybe"}, 422, "archived"),
    ({"cursor": "not-a-cursor"}, 400, "cursor"),
    ({"reference": ""}, 422, "reference"),
])
def test_a_bad_parameter_is_a_problem_naming_it(make_hub: HubFactory, params: dict[str, str], status: int,
                                                name: str) -> None:
    """Each malformed or out-of-range parameter: 400/422 naming it, and only an audit line."""
    with make_hub() as hub, _as(hub, ANNA) as as_anna:
        before = hub.count(filings)
        response = as_anna.search(params)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:crocevia:problem:invalid-parameter" and problem["status"] == status
        assert problem["errors"][0]["location"] == f"query:{name}" and name in problem["detail"]
        assert hub.count(filings) == before
        assert [(r.actor, r.outcome, r.detail["parameter"]) for r in _audit(hub, "filings_searched")] == [
            (ANNA, "invalid-parameter", name)]


def test_an_unsigned_search_is_refused(make_hub: HubFactory) -> None:
    """No ModI signature: 401, and nothing is listed."""
    with make_hub() as hub:
        response = httpx.get(f"{hub.base_url}/v1/filings", trust_env=False)
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
        with hub.hub.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(filings)).scalar_one() == 0


def test_the_documented_example_is_a_valid_page() -> None:
    """The example in api/openapi/search.yaml validates against the page's own schema."""
    _conforms(_document()["components"]["examples"]["FilingSearchPage"]["value"])
