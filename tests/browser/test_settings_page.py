"""The widget's settings page in real Chromium, on a page that imitates amoCRM's settings modal.

The page is served as https://acme.amocrm.ru (Playwright answers those requests from local files:
the built widget.zip, RequireJS and jQuery from npm), so the API calls are real cross-origin calls
to gunicorn, through CORS, with a token the test signs. A real Celery worker sends the test SMS to
the fake SMS.ru. Screenshots go to test-artifacts/browser/.
"""

import io
import mimetypes
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from routes.models import ProviderRoute
from crm.models import SmsTemplate
from deliveries.models import Delivery, DeliveryKind
from tests.e2e.stack import wait_for
from tests.fakes.smsru import FakeSmsRu

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(settings.BASE_DIR)
HERE = Path(__file__).parent
VENDOR = {
    "/vendor/require.js": HERE / "node_modules" / "requirejs" / "require.js",
    "/vendor/jquery.min.js": HERE / "node_modules" / "jquery" / "dist" / "jquery.min.js",
}
ARTIFACTS = ROOT / "test-artifacts" / "browser"
AMO_ORIGIN = "https://acme.amocrm.ru"


def built_widget(base_url, tmp_path) -> dict[str, bytes]:
    out = tmp_path / "widget.zip"
    call_command("build_widget", base_url=base_url, out=str(out), stdout=io.StringIO())
    with zipfile.ZipFile(out) as archive:
        return {"/widget/" + name: archive.read(name) for name in archive.namelist()}


def serve_amocrm(page, widget_files):
    """Answer every https://acme.amocrm.ru request from local files."""
    files = {path: file.read_bytes() for path, file in VENDOR.items()}
    files.update(widget_files)
    files["/settings/widgets/"] = (HERE / "amocrm_settings.html").read_bytes()

    def handle(route):
        path = route.request.url.removeprefix(AMO_ORIGIN).split("?")[0]
        if path not in files:
            route.fulfill(status=404, body="not found")
            return
        content_type = mimetypes.guess_type(path)[0] or "text/html"
        if content_type.startswith(("text/", "application/javascript", "application/json")):
            content_type += "; charset=utf-8"
        route.fulfill(status=200, body=files[path], headers={"Content-Type": content_type})

    page.route(f"{AMO_ORIGIN}/**", handle)


def test_settings_page_saves_a_route_and_sends_a_test_sms(stack, chromium, make_token, account, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FakeSmsRu(status_delays=(0.05, 0.05)) as fake:
        stack.env["SMSGATE_PROVIDER_BASE_URLS"] = f"smsru={fake.url}"
        stack.env["SMSGATE_ALLOW_CONSOLE_PROVIDER"] = "1"  # the second route below is the console provider
        stack.start_web()
        stack.start_worker()
        widget_files = built_widget(stack.web_url, tmp_path)

        page = chromium.new_page(viewport={"width": 1100, "height": 900}, locale="ru-RU")
        problems, tokens = [], []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda msg: msg.type not in ("debug",) and problems.append(f"console.{msg.type}: {msg.text}"))

        def sign_token():
            tokens.append(make_token())
            return tokens[-1]

        page.expose_function("smsgateSignToken", sign_token)
        serve_amocrm(page, widget_files)
        page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang=ru")

        # The settings page renders: no route yet, the catalogue loaded into the form.
        page.wait_for_selector(".smsgate-settings .smsgate-no-routes", timeout=15000)
        assert page.evaluate("window.smsgateCallbacks") == [True, True, True, True]
        assert page.inner_text(".smsgate-title") == "SMS-провайдеры"
        assert "acme.amocrm.ru" in page.inner_text(".smsgate-account")
        page.screenshot(path=str(ARTIFACTS / "1-empty.png"), full_page=True)

        # Save a route: the credential form is generated from the catalogue.
        page.select_option(".smsgate-route-form .smsgate-provider", "smsru")
        api_id = page.locator(".smsgate-route-form input[name='credential-api_id']")
        assert api_id.get_attribute("type") == "password"
        api_id.fill(fake.api_id)
        page.fill(".smsgate-route-form .smsgate-sender", "ACME")
        page.click(".smsgate-route-form .smsgate-save")
        page.wait_for_selector(".smsgate-route .smsgate-route-provider:has-text('SMS.ru')")
        route = ProviderRoute.objects.get(account=account)
        assert (route.provider, route.sender, route.credentials) == ("smsru", "ACME", {"api_id": fake.api_id})
        callback = page.input_value(".smsgate-callback-url")
        assert callback.endswith(f"/webhooks/smsru/{route.callback_token}/")
        assert fake.api_id not in page.content()  # the secret never comes back

        page.click(".smsgate-route .smsgate-balance-button")
        page.wait_for_selector(".smsgate-route .smsgate-balance:has-text('4122.56')")
        page.screenshot(path=str(ARTIFACTS / "2-route-saved.png"), full_page=True)

        # Send a test SMS; the worker sends it through the fake SMS.ru; it shows in the list.
        page.fill(".smsgate-test-phone", "+7 912 345-67-89")
        page.click(".smsgate-test-send")
        page.wait_for_selector(".smsgate-test-result .smsgate-notice:not(.smsgate-notice_error)")
        delivery = Delivery.objects.get(account=account)
        assert (delivery.kind, delivery.route_id, delivery.phone) == (DeliveryKind.TEST, route.pk, "+79123456789")
        wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "sent", 30,
                 f"not sent; worker log:\n{stack.processes[-1].log()}")

        def sent_row_shown():
            page.click(".smsgate-refresh")
            page.wait_for_timeout(200)
            return page.locator(f".smsgate-delivery[data-delivery-id='{delivery.pk}'][data-status='sent']").count()

        wait_for(sent_row_shown, 15, "the sent test SMS did not appear in the deliveries list", interval=0.3)
        row = page.locator(f".smsgate-delivery[data-delivery-id='{delivery.pk}']")
        assert "отправлено" in row.inner_text() and "+79123456789" in row.inner_text()
        [message] = fake.sent_to("79123456789")
        assert message["from"] == "ACME"
        page.screenshot(path=str(ARTIFACTS / "3-test-sms-sent.png"), full_page=True)

        # A second route, moved first: the order is what the worker follows.
        page.select_option(".smsgate-route-form .smsgate-provider", "console")
        page.click(".smsgate-route-form .smsgate-save")
        page.wait_for_selector(".smsgate-route >> nth=1")
        console_route = ProviderRoute.objects.get(account=account, provider="console")
        page.click(f".smsgate-route[data-route-id='{console_route.pk}'] .smsgate-up")
        page.wait_for_selector(".smsgate-route >> nth=0 >> text=Console")
        ordered = list(ProviderRoute.objects.filter(account=account).order_by("priority")
                       .values_list("provider", flat=True))
        assert ordered == ["console", "smsru"]

        # Editing shows that the secret is stored without showing it; saving an empty field keeps it.
        page.click(f".smsgate-route[data-route-id='{route.pk}'] .smsgate-edit")
        secret = page.locator(".smsgate-route-form input[name='credential-api_id']")
        assert secret.input_value() == "" and "сохранено" in secret.get_attribute("placeholder")
        page.fill(".smsgate-route-form .smsgate-sender", "ACME2")
        page.click(".smsgate-route-form .smsgate-save")
        page.wait_for_selector(".smsgate-route-sender:has-text('ACME2')")
        route.refresh_from_db()
        assert (route.sender, route.credentials) == ("ACME2", {"api_id": fake.api_id})
        page.screenshot(path=str(ARTIFACTS / "5-two-routes.png"), full_page=True)

        assert problems == []
        assert len(set(tokens)) == len(tokens) >= 6  # a fresh token for every call, as amoCRM mints them


def test_settings_page_in_english_for_a_user_who_is_not_admin(stack, chromium, make_token, account, smsru_route,
                                                                  tmp_path):
    smsru_route(sender="ACME")
    SmsTemplate.objects.create(account=account, name="Reminder", text="Hello {{contact.first_name}}!")
    stack.start_web()
    widget_files = built_widget(stack.web_url, tmp_path)
    page = chromium.new_page(viewport={"width": 1100, "height": 700})
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=False))
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang=en")
    page.wait_for_selector(".smsgate-route")
    assert page.inner_text(".smsgate-title") == "SMS providers"
    assert "Only an account administrator" in page.inner_text(".smsgate-account")
    assert page.locator(".smsgate-route-form").count() == 0 and page.locator(".smsgate-test-send").count() == 0
    assert page.locator(".smsgate-route .smsgate-delete").count() == 0
    # Templates are read-only for them: listed, with no form and no buttons.
    page.wait_for_selector(".smsgate-template .smsgate-template-name:has-text('Reminder')")
    assert page.locator(".smsgate-template-editor").count() == 0
    assert page.locator(".smsgate-template-edit, .smsgate-template-delete").count() == 0
    page.screenshot(path=str(ARTIFACTS / "4-viewer-en.png"), full_page=True)


TEMPLATE_TEXTS = {
    "ru": {"title": "Шаблоны SMS", "name": "Напоминание о встрече", "greeting": "Здравствуйте, ",
           "unknown": "Неизвестный маркер {{lead.titel}}.", "saved": "Шаблон сохранён.",
           "counter": "16 симв. · Unicode (UCS-2, кириллица) · 1 SMS",
           "deleted": "Шаблон удалён."},
    "en": {"title": "SMS templates", "name": "Meeting reminder", "greeting": "Hello ",
           "unknown": "Unknown placeholder {{lead.titel}}.", "saved": "Template saved.",
           "counter": "8 characters · Latin (GSM-7) · 1 SMS",
           "deleted": "Template deleted."},
}


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_templates_are_added_edited_with_a_marker_refused_and_deleted(stack, chromium, make_token, account, tmp_path,
                                                                      lang):
    texts = TEMPLATE_TEXTS[lang]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stack.start_web()
    widget_files = built_widget(stack.web_url, tmp_path)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type not in ("debug",) and msg.type != "error"
            and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token())
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang={lang}")
    page.wait_for_selector(".smsgate-templates .smsgate-no-templates", timeout=15000)
    assert page.inner_text(".smsgate-templates .smsgate-subtitle >> nth=0") == texts["title"]

    # Add: the name, some text, markers from the picker (one with a field id), the live counter.
    editor = ".smsgate-template-editor"
    page.fill(f"{editor} .smsgate-template-name-input", texts["name"])
    page.fill(f"{editor} .smsgate-template-text-input", texts["greeting"])
    page.select_option(f"{editor} .smsgate-marker-picker", "contact.first_name")
    assert not page.is_visible(f"{editor} .smsgate-marker-field-id")
    page.click(f"{editor} .smsgate-marker-insert")
    page.type(f"{editor} .smsgate-template-text-input", "! ")
    page.select_option(f"{editor} .smsgate-marker-picker", "lead.cf")
    page.click(f"{editor} .smsgate-marker-insert")  # no field id yet: refused in the form
    page.wait_for_selector(f"{editor} .smsgate-template-problems .smsgate-notice_error")
    page.fill(f"{editor} .smsgate-marker-field-id", "600123")
    page.click(f"{editor} .smsgate-marker-insert")
    text = f"{texts['greeting']}{{{{contact.first_name}}}}! {{{{lead.cf.600123}}}}"
    assert page.input_value(f"{editor} .smsgate-template-text-input") == text
    # Counted by the server's preview with the placeholders empty: "Здравствуйте, ! " / "Hello ! ".
    page.wait_for_selector(f"{editor} .smsgate-counter-figures:text-is('{texts['counter']}')", timeout=10000)
    assert page.locator(f"{editor} .smsgate-marker-error").count() == 0
    page.screenshot(path=str(ARTIFACTS / f"6-template-form-{lang}.png"), full_page=True)
    page.click(f"{editor} .smsgate-template-save")
    page.wait_for_selector(f".smsgate-template .smsgate-template-name:has-text('{texts['name']}')")
    assert page.inner_text(".smsgate-template-message") == texts["saved"]
    template = SmsTemplate.objects.get(account=account)
    assert (template.name, template.text, template.is_active) == (texts["name"], text, True)
    row = page.locator(f".smsgate-template[data-template-id='{template.pk}']")
    assert [m.inner_text() for m in row.locator(".smsgate-marker").all()] == [
        "{{contact.first_name}}", "{{lead.cf.600123}}"]

    # Edit with an unknown marker: shown while typing, refused on save, nothing stored.
    row.locator(".smsgate-template-edit").click()
    page.fill(f"{editor} .smsgate-template-text-input", "{{lead.titel}}, " + text)
    page.wait_for_selector(f"{editor} .smsgate-marker-error:has-text('{{{{lead.titel}}}}')")
    assert page.inner_text(f"{editor} .smsgate-marker-error") == texts["unknown"]
    page.click(f"{editor} .smsgate-template-save")
    page.wait_for_selector(f"{editor} .smsgate-template-form-message .smsgate-notice_error")
    assert texts["unknown"] in page.inner_text(f"{editor} .smsgate-template-form-message")
    template.refresh_from_db()
    assert template.text == text
    page.screenshot(path=str(ARTIFACTS / f"7-template-unknown-marker-{lang}.png"), full_page=True)

    # A valid edit is saved; then delete (two clicks, no browser dialog).
    page.fill(f"{editor} .smsgate-template-text-input", text + " {{lead.name}}")
    page.uncheck(f"{editor} .smsgate-template-active")
    page.click(f"{editor} .smsgate-template-save")
    page.wait_for_selector(f".smsgate-template-text:has-text('{{{{lead.name}}}}')")
    template.refresh_from_db()
    assert (template.text, template.is_active) == (text + " {{lead.name}}", False)
    # The form is empty again, its counter counting nothing (not a template string with holes).
    empty = "0 симв. · латиница (GSM-7) · 0 SMS" if lang == "ru" else "0 characters · Latin (GSM-7) · 0 SMS"
    page.wait_for_selector(f"{editor} .smsgate-counter-figures:text-is('{empty}')", timeout=10000)
    assert page.input_value(f"{editor} .smsgate-template-text-input") == ""
    page.screenshot(path=str(ARTIFACTS / f"8-template-saved-{lang}.png"), full_page=True)
    row.locator(".smsgate-template-delete").click()
    row.locator(".smsgate-template-delete").click()
    page.wait_for_selector(".smsgate-templates .smsgate-no-templates")
    assert page.inner_text(".smsgate-template-message") == texts["deleted"]
    template.refresh_from_db()
    assert template.deleted_at is not None
    assert problems == []
