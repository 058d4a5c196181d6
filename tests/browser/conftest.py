"""Real Chromium through Playwright's sync API: Debian's chromium binary, never a downloaded one
(`playwright install` is not needed and not used)."""

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import service_missing
from tests.e2e.conftest import stack  # noqa: F401  (the same processes as the end-to-end tests)

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               # The widget test's imitation amoCRM page is "public" and the API under test listens
               # on 127.0.0.1: Chromium's private-network checks would block those calls.
               "--disable-features=PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
               "BlockInsecurePrivateNetworkRequests,LocalNetworkAccessChecks"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture
def chromium(monkeypatch):
    """A headless Chromium browser for one test."""
    executable = chromium_path()
    if executable is None:
        service_missing("browser tests need Debian's chromium (apt-get install chromium) or CHROMIUM_PATH")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are fine.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            # A connection opened while Playwright's loop runs lives in that loop's context, where
            # pytest-django's cleanup never looks, and would keep the test database from being
            # dropped: close those here, inside the loop, and the thread's own ones after it.
            connections.close_all()
            browser.close()
    connections.close_all()

