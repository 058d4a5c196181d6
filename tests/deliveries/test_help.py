"""The public help page the widget's support link points at: both languages (from the path or the
request), every provider of the catalogue with the credentials it asks for and where its
delivery-report URL goes, every delivery status, the common failure reasons, whom to write to."""

import re
from html.parser import HTMLParser

import pytest

from deliveries.models import DeliveryStatus
from routes.providers import PROVIDERS
from deliveries.help import PROVIDER_GUIDES

CONNECTABLE = sorted(slug for slug in PROVIDERS if slug != "console")
REASON_CODES = ["no_route", "phone_cooldown", "account_daily_cap", "premium_number", "non_geographic_number",
                "country_not_allowed", "auth", "insufficient_funds", "invalid_recipient", "sender_rejected"]


BLOCKS = ("p", "li", "h1", "h2", "h3", "td", "dd")


class Blocks(HTMLParser):
    """The text of every paragraph, list item, heading and table cell of the page's <main>."""

    def __init__(self):
        super().__init__()
        self.open, self.blocks = [], []

    def handle_starttag(self, tag, attrs):
        if tag in BLOCKS:
            self.open.append([tag, ""])

    def handle_endtag(self, tag):
        if self.open and self.open[-1][0] == tag:
            self.blocks.append(tuple(self.open.pop()))

    def handle_data(self, data):
        for block in self.open:
            block[1] += data


def blocks(html: str) -> list[tuple[str, str]]:
    parser = Blocks()
    parser.feed(html.split("<main>", 1)[1])
    return [(tag, " ".join(text.split())) for tag, text in parser.blocks]


def get(client, path, **headers):
    response = client.get(path, **headers)
    assert response.status_code == 200, response.status_code
    return response, response.content.decode()


@pytest.mark.parametrize(("path", "headers", "language"), [
    ("/help/ru/", {}, "ru"),
    ("/help/en/", {}, "en"),
    ("/help/", {"HTTP_ACCEPT_LANGUAGE": "ru-RU,ru;q=0.9,en;q=0.8"}, "ru"),
    ("/help/", {"HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9"}, "en"),
    ("/help/en/", {"HTTP_ACCEPT_LANGUAGE": "ru"}, "en"),  # the path wins over the header
    ("/help/", {}, "ru"),  # the deployment's LANGUAGE_CODE
])
def test_the_page_speaks_the_language_of_its_path_or_of_the_request(client, path, headers, language):
    response, html = get(client, path, **headers)
    assert response["Content-Language"] == language
    assert f'<html lang="{language}">' in html
    other = "en" if language == "ru" else "ru"
    assert f'href="/help/{other}/"' in html  # the switch to the other language is a plain link
    title = {"ru": "Справка smsgate", "en": "smsgate help"}[language]
    assert f"<h1>{title}</h1>" in html
    if path == "/help/":
        assert "Accept-Language" in response["Vary"]


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_provider_with_its_credentials_and_where_reports_go(client, language):
    _, html = get(client, f"/help/{language}/")
    assert PROVIDERS["console"].name not in html and 'id="provider-console"' not in html  # development only
    for slug in CONNECTABLE:
        cls = PROVIDERS[slug]
        section = html.split(f'id="provider-{slug}"', 1)[1].split("</section>", 1)[0]
        assert f"<h3>{cls.name}</h3>" in section
        for field in cls.credential_fields:
            assert field.label[language] in section
            assert field.help[language] in section.replace("&quot;", '"')
        assert slug in PROVIDER_GUIDES, f"write where {cls.name}'s delivery-report URL goes"
        reports = re.search(r'<p class="reports">(.*?)</p>', section, re.DOTALL).group(1)
        assert len(reports) > 60


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_status_and_the_common_failure_reasons_are_explained(client, language):
    _, html = get(client, f"/help/{language}/")
    for status in DeliveryStatus:
        row = re.search(rf'<tr id="status-{status.value}">(.*?)</tr>', html, re.DOTALL)
        assert row, status
        assert f"<code>{status.value}</code>" in row.group(1)
    assert re.search(r'<tr id="status-expired">.*?10 ', html, re.DOTALL)  # the deployment's own validity, minutes
    for code in REASON_CODES:
        assert f"<code>{code}</code>" in html
    assert 'href="mailto:support@127.0.0.1"' in html


def test_status_names_are_the_ones_the_widget_shows(client):
    # The widget says "истёк срок" and "queued" where the admin says "просрочено" and "pending".
    _, html = get(client, "/help/ru/")
    assert re.search(r'<tr id="status-expired"><th scope="row">истёк срок<br>', html)
    _, html = get(client, "/help/en/")
    assert re.search(r'<tr id="status-pending"><th scope="row">queued<br>', html)


def test_the_support_address_is_the_deployments(client, settings):
    settings.SMSGATE_SUPPORT_EMAIL = "help@sms.example.com"
    _, html = get(client, "/help/en/")
    assert 'href="mailto:help@sms.example.com"' in html
    settings.SMSGATE_SUPPORT_EMAIL = ""
    settings.SMSGATE_PUBLIC_URL = "https://sms.example.org"
    _, html = get(client, "/help/en/")
    assert 'href="mailto:support@sms.example.org"' in html


def test_every_text_of_the_russian_page_is_russian(client):
    """A msgid without a Russian translation would show up here in English."""
    _, html = get(client, "/help/ru/")
    english_only = [(tag, text) for tag, text in blocks(html)
                    if tag != "h3" and text and not re.search("[а-яё]", text, re.IGNORECASE)
                    and not re.fullmatch(r"https?://\S+|[\w.@]+|smsgate [\w.]+: \S+", text)]
    assert english_only == []
    _, english = get(client, "/help/en/")
    assert not re.search("[а-яё]", english.split("<main>", 1)[1].replace("Русский", ""), re.IGNORECASE)


@pytest.mark.parametrize("accept_language", [
    "*", "xx", "de-DE,de;q=0.9", "en;q=abc", "ru;q=0.5,,,;", ";", "q=1", "zh-Hant-TW-x-private-" + "a" * 300,
    "ru-RU" * 200, "ёж", "\x00", "en-US,en;q=0.9," + ",".join(f"l{i}" for i in range(500)),
])
def test_no_500_for_odd_accept_language(client, accept_language):
    response = client.get("/help/", HTTP_ACCEPT_LANGUAGE=accept_language)
    assert response.status_code == 200
    assert response["Content-Language"] in ("ru", "en")


def test_only_reading_methods_and_only_known_languages(client):
    assert client.post("/help/").status_code == 405
    assert client.head("/help/en/").status_code == 200
    assert client.get("/help/de/").status_code == 404
    assert client.get("/help").status_code in (301, 302)  # APPEND_SLASH
