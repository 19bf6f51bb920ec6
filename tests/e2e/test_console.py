"""The web console over plain HTTP (the browser tests are in test_console_browser.py): login
by form, language choice, forms refused without their CSRF token or for a viewer, the
package's own assets only. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from storage.tables import audit_log
from tests.support import FakeClock, RunningHub, hub_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def hub(database_url: str) -> Iterator[RunningHub]:
    with RunningHub(hub_settings(database_url, {}), clock=FakeClock(), with_workers=False) as running:
        assert running.hub.operators is not None
        running.hub.operators.add("mrossi", "operator", "operator:setup", password=PASSWORD)
        running.hub.operators.add("lbianchi", "viewer", "operator:setup", password=PASSWORD)
        yield running


def _client(hub: RunningHub, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=hub.base_url, timeout=10.0, trust_env=False, headers=headers)


def _login(client: httpx.Client, name: str) -> str:
    """Log in by the console's form; returns the CSRF token the dashboard's logout form holds."""
    done = client.post("/console/login", data={"name": name, "password": PASSWORD, "next": "/console/"})
    assert done.status_code == 303 and done.headers["location"] == "/console/", done.text
    page = client.get("/console/")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return token.group(1)


def _audit(hub: RunningHub, action: str) -> list:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log.c.actor, audit_log.c.outcome)
                            .where(audit_log.c.action == action)).all()


def test_pages_need_a_login_and_a_wrong_password_says_so(hub: RunningHub) -> None:
    """Without a session every page sends to the login page; a wrong password is a 401 page."""
    with _client(hub) as client:
        page = client.get("/console/search")
        assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
        wrong = client.post("/console/login", data={"name": "mrossi", "password": "nope"})
        assert wrong.status_code == 401 and "Nome, password o codice monouso non accettati" in wrong.text
        assert "crocevia_session" not in client.cookies
        off_site = client.post("/console/login", data={"name": "mrossi", "password": PASSWORD,
                                                       "next": "//evil.example/"})
        assert off_site.headers["location"] == "/console/"


def test_italian_by_default_english_by_lang_cookie_or_header(hub: RunningHub) -> None:
    """Labels are Italian by default; `?lang=en` switches (and is remembered); Accept-Language
    picks English when asked first."""
    with _client(hub) as client:
        page = client.get("/console/login")
        assert '<html lang="it">' in page.text and "Accedi" in page.text and "Log in" not in page.text
        english = client.get("/console/login?lang=en")
        assert '<html lang="en">' in english.text and "Log in" in english.text
        assert client.get("/console/login").text.count("Log in") >= 1  # the cookie remembers
    with _client(hub, **{"Accept-Language": "en-GB,en;q=0.9,it;q=0.5"}) as client:
        assert "Log in" in client.get("/console/login").text
    with _client(hub, **{"Accept-Language": "de-DE,fr;q=0.8"}) as client:
        assert "Accedi" in client.get("/console/login").text


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(hub: RunningHub) -> None:
    """Pausing an agency without the session's CSRF token: a 403 page, the agency not paused,
    the refusal audited; with the token it is paused, audited with the operator's name."""
    with _client(hub) as client:
        token = _login(client, "mrossi")
        refused = client.post("/console/agencies/inps/pause", data={"reason": "maintenance"})
        assert refused.status_code == 403 and 'data-problem="csrf-token-invalid"' in refused.text
        assert hub.hub.store.paused_agencies() == {}
        assert ("operator:mrossi", "csrf-token-invalid") in _audit(hub, "operator_request_refused")

        confirm = client.get("/console/agencies/inps/pause")
        assert confirm.status_code == 200 and 'name="csrf_token"' in confirm.text
        assert hub.hub.store.paused_agencies() == {}  # the confirmation step changes nothing
        done = client.post("/console/agencies/inps/pause", data={"reason": "maintenance", "csrf_token": token})
        assert done.status_code == 303, done.text
        assert "inps" in hub.hub.store.paused_agencies()
        assert any(actor == "operator:mrossi" for actor, _ in _audit(hub, "agency_paused"))


def test_a_viewer_sees_no_action_and_is_refused_if_it_posts(hub: RunningHub) -> None:
    """A viewer's dashboard has no pause button; posting the form anyway is a 403 page."""
    with _client(hub) as client:
        token = _login(client, "lbianchi")
        dashboard = client.get("/console/")
        assert "/agencies/inps/pause" not in dashboard.text
        assert client.get("/console/agencies/inps/pause").status_code == 403
        refused = client.post("/console/agencies/inps/pause", data={"csrf_token": token})
        assert refused.status_code == 403 and 'data-problem="insufficient-role"' in refused.text
        assert hub.hub.store.paused_agencies() == {}


def test_everything_served_comes_from_the_package(hub: RunningHub) -> None:
    """The stylesheet is served by the hub; no page refers to another site."""
    with _client(hub) as client:
        css = client.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        _login(client, "mrossi")
        for path in ("/console/", "/console/search", "/console/problems", "/console/login"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert not re.search(r'(src|href)="(https?:)?//', page.text), path


def test_search_form_refuses_a_bad_field_precisely(hub: RunningHub) -> None:
    """A filter out of range is named on the page (422), as the operator API names it."""
    with _client(hub) as client:
        _login(client, "mrossi")
        page = client.get("/console/search", params={"subjectTaxCode": "X" * 40})
        assert page.status_code == 422 and "subjectTaxCode" in page.text
        empty = client.get("/console/search", params={"reference": "CRV-1900-000001"})
        assert empty.status_code == 200 and "Nessun risultato" in empty.text


def test_cancel_needs_a_reason_and_resume_undoes_a_pause(hub: RunningHub) -> None:
    """Cancel without a reason: the confirmation page again (422), nothing changed; with one,
    the recipient is cancelled and the reason audited. A paused agency is resumed."""
    from cli.client import PortalClient
    from tests.e2e.test_delivery_semantics import RUNTS
    from tests.support import TEST_PORTAL_KEY

    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as portal:
        reference = portal.submit(RUNTS).json()["reference"]
    path = f"/console/filings/{reference}/recipients/runts/cancel"
    with _client(hub) as client:
        token = _login(client, "mrossi")
        page = client.get(f"/console/filings/{reference}")
        assert page.status_code == 200 and f'href="{path}"' in page.text
        no_reason = client.post(path, data={"csrf_token": token, "reason": "  "})
        assert no_reason.status_code == 422 and "Serve una motivazione" in no_reason.text
        assert hub.hub.store.ops_recipient(reference, "runts").state == "pending"
        done = client.post(path, data={"csrf_token": token, "reason": "duplicate filing"})
        assert done.status_code == 303 and done.headers["location"].endswith("?done=cancel-runts")
        assert hub.hub.store.ops_recipient(reference, "runts").state == "cancelled"
        with hub.hub.engine.connect() as conn:
            lines = conn.execute(select(audit_log.c.actor, audit_log.c.detail)
                                 .where(audit_log.c.action == "recipient_cancelled")).all()
        assert [(a, d.get("reason")) for a, d in lines] == [("operator:mrossi", "duplicate filing")]

        assert client.post("/console/agencies/inail/pause", data={"csrf_token": token}).status_code == 303
        assert "inail" in hub.hub.store.paused_agencies()
        dashboard = client.get("/console/")
        assert "/console/agencies/inail/resume" in dashboard.text
        assert client.post("/console/agencies/inail/resume", data={"csrf_token": token}).status_code == 303
        assert hub.hub.store.paused_agencies() == {}


def test_search_pages_follow_the_cursor_and_keep_the_filters(hub: RunningHub) -> None:
    """Two filings, one a page: the next-page link keeps the filters and shows the other one;
    the language switch keeps the filters too."""
    from cli.client import PortalClient
    from tests.e2e.test_delivery_semantics import RUNTS
    from tests.support import TEST_PORTAL_KEY

    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as portal:
        refs = {portal.submit(RUNTS).json()["reference"] for _ in range(2)}
    with _client(hub) as client:
        _login(client, "mrossi")
        first = client.get("/console/search", params={"agency": "runts", "limit": "1"})
        assert first.status_code == 200
        shown = set(re.findall(r'href="/console/filings/(CRV-[0-9-]+)"', first.text))
        link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
        assert len(shown) == 1 and link is not None
        assert "agency=runts" in link.group(1) and "limit=1" in link.group(1)
        assert 'href="/console/search?agency=runts&amp;limit=1&amp;lang=en"' in first.text
        second = client.get(link.group(1).replace("&amp;", "&"))
        shown |= set(re.findall(r'href="/console/filings/(CRV-[0-9-]+)"', second.text))
        assert shown == refs
