"""The web console in a real browser (headless Chromium driven by Selenium) against a running
hub and the agency simulators, on SQLite and PostgreSQL: log in by keyboard, resend an
undeliverable recipient and see it protocolled, search by protocol number and open the
filing; a viewer gets no action and a 403 page when it posts one; an idle session ends.

Screenshots of the dashboard and the filing's detail are saved under the test's tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("CI") != "true":  # under CI a missing selenium fails the run
    pytest.importorskip("selenium")

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from cli.client import PortalClient
from tests.browser import browser  # noqa: F401 - fixture
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    RUNTS,
    HubFactory,
    _by_agency,
    _one_effect,
    _settled,
    _submit,
    client_for,
    make_hub,
)
from tests.support import TEST_PORTAL_KEY, FakeClock, RunningHub, hub_settings, wait_for

PASSWORD = "correct horse battery staple"


def _add_operators(hub: RunningHub) -> None:
    assert hub.hub.operators is not None
    hub.hub.operators.add("mrossi", "operator", "operator:setup", password=PASSWORD)
    hub.hub.operators.add("lbianchi", "viewer", "operator:setup", password=PASSWORD)


def _log_in(driver: WebDriver, hub: RunningHub, name: str) -> None:
    """Log in with the keyboard only: type, Tab, type, Enter."""
    driver.get(f"{hub.base_url}/console/")
    assert "/console/login" in driver.current_url
    field = driver.find_element(By.ID, "name")
    assert driver.switch_to.active_element == field  # the login form takes the focus
    field.send_keys(name, Keys.TAB)
    driver.switch_to.active_element.send_keys(PASSWORD, Keys.TAB)
    driver.switch_to.active_element.send_keys(Keys.TAB)  # the optional one-time code
    driver.switch_to.active_element.send_keys(Keys.ENTER)  # the submit button
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "form[action='/console/logout']"),
             what="the dashboard after login")


def _text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "main").text


def _state_of(driver: WebDriver, agency: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#recipient-{agency} h3 .state").get_attribute("data-state") or ""


def _shows(driver: WebDriver, text: str) -> None:
    """Wait (bounded) until the page in the browser shows `text`: a form's submission returns
    before the next page has loaded."""

    def check() -> bool:
        try:
            return text in _text(driver)
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:
            # Chromium answers this, not a stale-element error, when the page is replaced between
            # finding <main> and reading its text: the next page is still loading.
            if "does not belong to the document" in str(exc):
                return False
            raise

    wait_for(check, timeout=15, what=f"the page to show {text!r}")


def test_an_operator_resends_and_finds_the_filing_by_protocol_number(
        make_hub: HubFactory, client_for, sims, browser: WebDriver, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """RUNTS down → undeliverable; in the console the operator confirms a resend after the
    fault clears, sees the recipient protocolled, then finds it by its protocol number."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        _add_operators(hub)
        client = client_for(hub)
        reference = _submit(client, RUNTS)
        _settled(client, reference, "undeliverable")

        _log_in(browser, hub, "mrossi")
        assert "Enti" in _text(browser) and "runts" in _text(browser)
        browser.save_screenshot(str(tmp_path / "dashboard.png"))

        browser.find_element(By.LINK_TEXT, "Ricerca").click()
        _shows(browser, "Cerca pratiche e consegne")
        browser.find_element(By.ID, "f-reference").send_keys(reference, Keys.ENTER)
        _shows(browser, "Risultati")
        browser.find_element(By.LINK_TEXT, reference).click()
        _shows(browser, "Enti destinatari")
        assert _state_of(browser, "runts") == "undeliverable"

        sims.set_faults("runts", [])
        resend = browser.find_element(By.CSS_SELECTOR, "#recipient-runts a.button[href$='/runts/resend']")
        resend.send_keys(Keys.ENTER)  # a real link: the keyboard follows it
        _shows(browser, "Confermi?")
        assert "Reinvia" in browser.find_element(By.TAG_NAME, "h1").text
        assert _by_agency(client.status(reference).json())["runts"]["state"] == "undeliverable"  # not yet
        browser.find_element(By.ID, "reason").send_keys("RUNTS di nuovo raggiungibile")
        browser.find_element(By.ID, "confirm").click()
        _shows(browser, "Fatto.")

        def protocolled() -> bool:
            browser.refresh()
            try:
                return _state_of(browser, "runts") == "protocolled"
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        wait_for(protocolled, timeout=30, interval=0.2, what="runts protocolled in the console")
        view = _settled(client, reference, "protocolled")
        recipient = _by_agency(view)["runts"]
        assert _one_effect(sims, recipient, reference)["duplicates"] == 0
        protocol = recipient["protocolNumber"]
        assert protocol in browser.find_element(By.CSS_SELECTOR, "#recipient-runts .protocol").text

        browser.find_element(By.LINK_TEXT, "Ricerca").click()
        _shows(browser, "Cerca pratiche e consegne")
        browser.find_element(By.ID, "f-protocolNumber").send_keys(protocol, Keys.ENTER)
        _shows(browser, "Risultati")
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(rows) == 1 and reference in rows[0].text and "protocollato" in rows[0].text
        rows[0].find_element(By.LINK_TEXT, reference).click()
        _shows(browser, "Enti destinatari")
        assert browser.find_element(By.ID, "filing-state").text == "protocollato"
        browser.save_screenshot(str(tmp_path / "filing.png"))
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000 and (tmp_path / "filing.png").stat().st_size > 10_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quiet_hub(database_url: str, clock: FakeClock) -> Iterator[RunningHub]:
    """A hub without workers (filings stay pending) whose identity clock the test moves."""
    with RunningHub(hub_settings(database_url, {}), clock=clock, with_workers=False) as running:
        _add_operators(running)
        yield running


def test_a_viewer_sees_no_action_and_is_refused_when_it_posts_one(
        quiet_hub: RunningHub, browser: WebDriver) -> None:  # noqa: F811
    """A viewer's filing page has no action; the confirmation page and a posted form (even
    with the session's CSRF token) answer the 403 page, and the recipient stays as it was."""
    with PortalClient(quiet_hub.base_url, TEST_PORTAL_KEY) as client:
        reference = _submit(client, RUNTS)
    _log_in(browser, quiet_hub, "lbianchi")
    browser.get(f"{quiet_hub.base_url}/console/filings/{reference}")
    assert _state_of(browser, "runts") == "pending"
    assert not browser.find_elements(By.CSS_SELECTOR, ".recipient .actions a")

    browser.get(f"{quiet_hub.base_url}/console/filings/{reference}/recipients/runts/cancel")
    assert browser.find_element(By.CSS_SELECTOR, "[data-problem]").get_attribute("data-problem") == "insufficient-role"
    browser.get(f"{quiet_hub.base_url}/console/")
    browser.execute_script("""
        const token = document.querySelector("input[name=csrf_token]").value;
        const form = document.createElement("form");
        form.method = "post"; form.action = arguments[0];
        for (const [k, v] of [["csrf_token", token], ["reason", "not mine to do"]]) {
            const input = document.createElement("input"); input.type = "hidden"; input.name = k; input.value = v;
            form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();
    """, f"/console/filings/{reference}/recipients/runts/cancel")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-problem]"), what="the refusal page")
    problem = browser.find_element(By.CSS_SELECTOR, "[data-problem]")
    assert problem.get_attribute("data-problem") == "insufficient-role"
    assert "Il tuo ruolo non consente" in problem.text
    assert quiet_hub.hub.store.ops_recipient(reference, "runts").state == "pending"


def test_an_idle_session_ends_after_30_minutes(quiet_hub: RunningHub, clock: FakeClock,
                                               browser: WebDriver) -> None:  # noqa: F811
    """Used within 30 minutes the session lives; 30 idle minutes later (injected clock) the
    next page is the login page, which says the session ended."""
    _log_in(browser, quiet_hub, "mrossi")
    clock.advance(29 * 60)
    browser.get(f"{quiet_hub.base_url}/console/problems")
    assert "/console/problems" in browser.current_url and "Problemi per causa" in _text(browser)
    clock.advance(30 * 60 + 1)
    browser.get(f"{quiet_hub.base_url}/console/search")
    assert "/console/login" in browser.current_url
    assert "La sessione è scaduta" in _text(browser)
    assert browser.get_cookie("crocevia_session") is None
