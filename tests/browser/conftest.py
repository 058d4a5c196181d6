"""Real Chromium through Playwright's sync API: Debian's chromium binary, never a downloaded one
(`playwright install` is not needed and not used)."""

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import service_missing
from tests.e2e.stack import Stack, ensure_services, stack_env

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


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
            browser.close()
    # A connection opened while Playwright's loop runs is invisible to pytest-django's cleanup
    # (it lives in another context) and would keep the test database from being dropped: tests
    # create their data before requesting this fixture, and anything opened meanwhile is closed.
    connections.close_all()


@pytest.fixture
def stack(transactional_db, tmp_path):
    ensure_services()
    processes = Stack(env=stack_env(), tmp=tmp_path)
    yield processes
    processes.stop()
