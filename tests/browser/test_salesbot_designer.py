"""Salesbot's "send SMS" step (salesbotDesignerSettings, onSalesbotDesignerSave, widget_src/salesbot.js) in real
Chromium, on a page that imitates amoCRM's Salesbot designer: the step's settings drawn from the built manifest's
salesbot_designer block, the exits "sent" and "failed", the owner picks a template or writes an own text and sees
the preview, and the bot code the step saves makes a widget_request that smsgate accepts (signed by the fake
amoCRM as amoCRM signs bot tokens). Screenshots go to test-artifacts/browser/."""

import json
from urllib.parse import quote

import httpx
import pytest
from django.utils import timezone

from crm.models import SalesbotRequest, SmsTemplate
from tests.conftest import AUDIENCE, REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM

from .test_settings_page import AMO_ORIGIN, ARTIFACTS, HERE, built_widget, serve_amocrm

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def open_designer(chromium, stack, make_token, tmp_path, *, lang="ru", saved=None):
    widget_files = built_widget(stack.web_url, tmp_path)
    widget_files["/settings/salesbot/"] = (HERE / "amocrm_salesbot.html").read_bytes()
    page = chromium.new_page(viewport={"width": 900, "height": 1000}, locale=f"{lang}-RU")
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type != "debug" and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=True))
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/settings/salesbot/?lang={lang}&saved={quote(json.dumps(saved or {}))}")
    return page, problems


def test_the_owner_sets_up_the_step_and_what_it_saves_is_a_call_smsgate_accepts(stack, chromium, make_token, account,
                                                                                integration, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    reminder = SmsTemplate.objects.create(account=account, name="Напоминание о встрече",
                                          text="{{contact.first_name}}, ждём вас завтра. Сделка «{{lead.name}}».")
    SmsTemplate.objects.create(account=account, name="Выключенный", text="x", is_active=False)
    stack.start_web()
    page, problems = open_designer(chromium, stack, make_token, tmp_path)

    page.wait_for_selector(".smsgate-bot-template option:has-text('Напоминание о встрече')", state="attached",
                           timeout=15000)
    assert page.evaluate("window.smsgateCallbacks") == [True, True, True]
    assert page.evaluate("window.smsgateExits") == [{"code": "sent", "title": "Отправлено"},
                                                     {"code": "failed", "title": "Не отправлено"}]
    assert page.locator(".salesbot-exit").all_inner_texts() == ["→ Отправлено", "→ Не отправлено"]
    assert not page.is_visible("input[name='template_id']")
    assert page.locator(".smsgate-bot-template option").all_inner_texts() == ["— Свой текст —",
                                                                              "Напоминание о встрече"]

    page.fill("input[name='text']", "Здравствуйте, {{contact.name}}! Ваш заказ готов.")
    page.wait_for_selector(".smsgate-bot-preview-text:has-text('Здравствуйте, ! Ваш заказ готов.')")
    assert "SMS: 1" in page.inner_text(".smsgate-bot-counter")
    page.screenshot(path=str(ARTIFACTS / "salesbot-0-own-text.png"), full_page=True)

    page.select_option(".smsgate-bot-template", str(reminder.pk))
    page.wait_for_selector(".smsgate-bot-preview-text:has-text('ждём вас завтра')")
    assert not page.is_visible("input[name='text']")
    assert page.input_value("input[name='template_id']") == str(reminder.pk)
    page.screenshot(path=str(ARTIFACTS / "salesbot-1-template.png"), full_page=True)

    page.click(".js-step-save")
    code = json.loads(page.evaluate("window.smsgateBotCode"))
    [step] = code
    request, branch, otherwise = step["question"]
    assert request == {"handler": "widget_request", "params": {
        "url": f"{stack.web_url}/amocrm/salesbot",
        "data": {"text": "Здравствуйте, {{contact.name}}! Ваш заказ готов.", "template_id": str(reminder.pk)}}}
    assert branch["handler"] == "conditions" and branch["params"]["conditions"] == [
        {"term1": "{{json.status}}", "term2": "sent", "operation": "="}]
    assert branch["params"]["result"] == [{"handler": "exits", "params": {"value": "sent"}}]
    assert otherwise == {"handler": "exits", "params": {"value": "failed"}}
    assert problems == []

    # What the bot then posts (amoCRM fills in the markers of the text; the token signed HS512) is accepted.
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as amo:
        amo.add_account(account.amo_id, subdomain="acme")
        body = amo.salesbot_request(account.amo_id, entity_id=20000001, aud=AUDIENCE, data=request["params"]["data"])
    response = httpx.post(request["params"]["url"], json=body)
    assert response.json() == {"status": "accepted"}, response.text
    recorded = SalesbotRequest.objects.get()
    assert (recorded.template_id, recorded.entity_type, recorded.entity_id) == (reminder.pk, "leads", 20000001)


def test_in_english_a_deleted_template_is_flagged_and_the_own_text_shown(stack, chromium, make_token, account,
                                                                        tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    gone = SmsTemplate.objects.create(account=account, name="Old", text="old", deleted_at=timezone.now())
    stack.start_web()
    page, problems = open_designer(chromium, stack, make_token, tmp_path, lang="en",
                                   saved={"template_id": str(gone.pk), "text": "Hello, your order is ready!"})
    page.wait_for_selector(".smsgate-bot-template-note:has-text('was deleted or switched off')", timeout=15000)
    assert page.input_value("input[name='template_id']") == ""
    page.wait_for_selector(".smsgate-bot-preview-text:has-text('Hello, your order is ready!')")
    assert page.is_visible("input[name='text']")
    assert page.locator(".salesbot-exit").all_inner_texts() == ["→ Sent", "→ Not sent"]
    page.screenshot(path=str(ARTIFACTS / "salesbot-2-english.png"), full_page=True)
    page.click(".js-step-save")
    [step] = json.loads(page.evaluate("window.smsgateBotCode"))
    assert step["question"][0]["params"]["data"] == {"text": "Hello, your order is ready!", "template_id": ""}
    assert problems == []
