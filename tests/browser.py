"""A headless Chromium for the console's browser tests (Debian's `chromium` and
`chromium-driver`, driven by Selenium). Missing, the tests skip locally and fail under CI=true."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A Chrome WebDriver on a throwaway profile; closed after the test."""
    # Selenium Manager stays offline: the driver and the browser are Debian's, given by path.
    monkeypatch.setenv("SE_OFFLINE", "true")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = f"the console's browser tests need {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    profile = tempfile.mkdtemp(prefix="crocevia-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1000", "--lang=it-IT"):
        options.add_argument(flag)
    # An Italian operator's browser (headless Chromium ignores --lang for Accept-Language).
    options.add_experimental_option("prefs", {"intl.accept_languages": "it-IT,it"})
    # No proxy, ever: the console is on loopback.
    options.add_argument("--no-proxy-server")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
