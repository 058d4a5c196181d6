"""The pipeline action's settings (dpSettings, widget_src/pipeline.js) in real Chromium, on a page that
imitates amoCRM's trigger modal: amoCRM's form drawn from the built manifest's dp.settings, the owner
picks a template and sees its preview, writes an own text instead, the account's key is filled in, and
what the form then saves is a webhook smsgate accepts. Screenshots go to test-artifacts/browser/."""

import json
from urllib.parse import quote

import httpx
import pytest
from django.utils import timezone

from crm.models import PipelineEvent, PipelineKey, SmsTemplate
from crm.pipeline_inbox import pipeline_key_get_or_create
from tests.fakes.amocrm.outgoing import dp_webhook_body, encode

from .test_settings_page import AMO_ORIGIN, ARTIFACTS, HERE, built_widget, serve_amocrm

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def open_dp(chromium, stack, make_token, tmp_path, *, lang="ru", saved=None, is_admin=True):
    widget_files = built_widget(stack.web_url, tmp_path)
    widget_files["/leads/pipeline/"] = (HERE / "amocrm_dp.html").read_bytes()
    page = chromium.new_page(viewport={"width": 900, "height": 900}, locale=f"{lang}-RU")
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type != "debug" and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=is_admin))
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/leads/pipeline/?lang={lang}&saved={quote(json.dumps(saved or {}))}")
    return page, problems


def test_the_owner_picks_a_template_sees_the_preview_and_the_key_is_filled_in(stack, chromium, make_token, account,
                                                                              tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    reminder = SmsTemplate.objects.create(account=account, name="Напоминание о встрече",
                                          text="{{contact.first_name}}, ждём вас завтра. Сделка «{{lead.name}}».")
    SmsTemplate.objects.create(account=account, name="Выключенный", text="x", is_active=False)
    stack.start_web()
    page, problems = open_dp(chromium, stack, make_token, tmp_path)

    page.wait_for_selector(".smsgate-dp .smsgate-dp-key .smsgate-badge_ok", timeout=15000)
    assert page.evaluate("window.smsgateCallbacks") == [True, True, True, True]
    key = PipelineKey.objects.get(account=account).key
    assert page.input_value("input[name='key']") == key
    assert not page.is_visible("input[name='key']") and not page.is_visible("input[name='template_id']")
    options = page.locator(".smsgate-dp-template option").all_inner_texts()
    assert options == ["— Свой текст —", "Напоминание о встрече"]  # active templates only

    # Own text first: the message field stays, the preview follows what is typed.
    page.fill("input[name='message']", "Здравствуйте, {{contact.name}}! Ваш заказ готов.")
    page.wait_for_selector(".smsgate-dp-preview-text:has-text('Здравствуйте, ! Ваш заказ готов.')")
    assert "SMS: 1" in page.inner_text(".smsgate-dp-counter")
    assert page.is_visible(".smsgate-dp-markers")
    page.screenshot(path=str(ARTIFACTS / "dp-0-own-text.png"), full_page=True)

    # A template: the message field is hidden, the template's id goes into the action, the preview shows it.
    page.select_option(".smsgate-dp-template", str(reminder.pk))
    page.wait_for_selector(".smsgate-dp-preview-text:has-text('ждём вас завтра')")
    assert not page.is_visible("input[name='message']")
    assert page.input_value("input[name='template_id']") == str(reminder.pk)
    page.screenshot(path=str(ARTIFACTS / "dp-1-template.png"), full_page=True)

    page.click(".js-trigger-save")
    saved = page.evaluate("window.smsgateSaved")
    assert saved["key"] == key and saved["template_id"] == str(reminder.pk)
    assert problems == []

    # What amoCRM then posts for a lead entering the stage is accepted and recorded.
    body, content_type = encode(dp_webhook_body(
        account_id=account.amo_id, subdomain="acme", lead_id=20000001, status_id=40000002, pipeline_id=7000001,
        event_type=15, settings=saved, element_type=2, direction="went_to_trigger", event_time=1764750000), "form")
    response = httpx.post(f"{stack.web_url}/amocrm/pipeline", content=body, headers={"Content-Type": content_type})
    assert response.json() == {"status": "accepted"}
    assert PipelineEvent.objects.get().template_id == reminder.pk


def test_in_english_a_deleted_template_is_flagged_and_refused_calls_are_shown(stack, chromium, make_token, account,
                                                                             tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    gone = SmsTemplate.objects.create(account=account, name="Old", text="old", deleted_at=timezone.now())
    stack.start_web()
    key = pipeline_key_get_or_create(account=account)
    PipelineKey.objects.filter(pk=key.pk).update(refused_count=4)
    page, problems = open_dp(chromium, stack, make_token, tmp_path, lang="en",
                             saved={"template_id": str(gone.pk), "message": "Hello!", "key": "stale"})
    page.wait_for_selector(".smsgate-dp .smsgate-dp-refused .smsgate-notice", timeout=15000)
    assert "Calls without the key refused: 4" in page.inner_text(".smsgate-dp-refused")
    page.wait_for_selector(".smsgate-dp-template-note:has-text('was deleted or switched off')")
    assert page.input_value("input[name='template_id']") == ""
    assert page.input_value("input[name='key']") == key.key  # the stale key replaced
    page.wait_for_selector(".smsgate-dp-preview-text:has-text('Hello!')")
    assert page.is_visible("input[name='message']")
    page.screenshot(path=str(ARTIFACTS / "dp-2-english.png"), full_page=True)
    assert problems == []


def test_a_user_who_is_not_an_admin_is_told_only_an_admin_can_fill_in_the_key(stack, chromium, make_token, account,
                                                                              tmp_path):
    stack.start_web()
    page, problems = open_dp(chromium, stack, make_token, tmp_path, is_admin=False)
    page.wait_for_selector(".smsgate-dp-key .smsgate-notice_error", timeout=15000)
    assert "администратор" in page.inner_text(".smsgate-dp-key"), (page.inner_text(".smsgate-dp"), problems,
                                                                    stack.processes[-1].log()[-3000:])
    assert page.input_value("input[name='key']") == ""
    assert problems == []


def test_the_settings_page_shows_what_the_action_did_and_replaces_the_key(stack, chromium, make_token, account,
                                                                         tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    key = pipeline_key_get_or_create(account=account)
    PipelineKey.objects.filter(pk=key.pk).update(refused_count=2, refused_last_at=timezone.now())
    for lead, state, reason, detail in [
            (20000001, "sent", "", ""),
            (20000002, "no_phone", "no_phone", "no contact of the lead has a phone that can get an SMS"),
            (20000003, "sent", "unsorted", "amoCRM takes no notes on leads in unsorted"),
            (20000004, "refused", "policy", "Этот номер нельзя использовать.")]:
        PipelineEvent.objects.create(account=account, lead_id=lead, status_id=40000002, event_type=15,
                                     event_time=lead, state=state, reason=reason, detail=detail)
    stack.start_web()
    widget_files = built_widget(stack.web_url, tmp_path)
    page = chromium.new_page(viewport={"width": 1100, "height": 900}, locale="ru-RU")
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type != "debug" and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token())
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang=ru")

    page.wait_for_selector(".smsgate-pipeline .smsgate-dp-attention", timeout=15000)
    rows = page.locator(".smsgate-dp-event")
    assert [rows.nth(n).get_attribute("data-reason") for n in range(rows.count())] == ["policy", "unsorted",
                                                                                        "no_phone"]
    text = page.inner_text(".smsgate-pipeline")
    assert "Вызовов без ключа аккаунта отклонено: 2" in text
    assert "За 7 дней: отправлено 2, без телефона 1, не отправлено 1, ждут 0." in text
    assert "не даёт добавить примечание" in text and "Этот номер нельзя использовать." in text
    assert page.get_attribute(".smsgate-dp-event[data-reason='no_phone'] .smsgate-dp-lead a", "href") == \
        "/leads/detail/20000002"
    page.locator(".smsgate-pipeline").screenshot(path=str(ARTIFACTS / "dp-3-settings-section.png"))

    page.click(".smsgate-dp-rotate")
    assert PipelineKey.objects.get().key == key.key  # the first click only arms it
    page.click(".smsgate-dp-rotate")
    page.wait_for_selector(".smsgate-dp-key-message .smsgate-notice")
    assert PipelineKey.objects.get().key != key.key
    assert problems == []
