"""The help page as a visitor's Chromium shows it: /help/ in the browser's language (Russian), the
switch to English and back, every provider's section, nothing wider than a phone's screen.
Screenshots in test-artifacts/help-ru.png, help-en.png and help-en-narrow.png."""

import pytest

from routes.providers import PROVIDERS

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CONNECTABLE = [slug for slug in PROVIDERS if slug != "console"]


def test_help_page_in_chromium(live_server, chromium):
    context = chromium.new_context(locale="ru-RU", viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/help/")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.locator("h1").inner_text() == "Справка smsgate"
    for slug in CONNECTABLE:
        assert page.locator(f"#provider-{slug} h3").inner_text() == PROVIDERS[slug].name
    assert page.locator("tr[id^=status-]").count() == 9
    page.screenshot(path=str(ARTIFACTS / "help-ru.png"), full_page=True)

    page.click("nav.languages a[hreflang=en]")
    page.wait_for_load_state("load")
    assert page.url.endswith("/help/en/")
    assert page.locator("h1").inner_text() == "smsgate help"
    assert page.locator("#status-pending th").inner_text().startswith("queued")
    page.screenshot(path=str(ARTIFACTS / "help-en.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    page.screenshot(path=str(ARTIFACTS / "help-en-narrow.png"), full_page=False)

    page.click("nav.languages a[hreflang=ru]")
    page.wait_for_load_state("load")
    assert page.url.endswith("/help/ru/") and page.locator("html").get_attribute("lang") == "ru"
    context.close()
