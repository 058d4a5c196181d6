"""The settings page's table of the pipeline's, Salesbot's and lists' SMS by outcome (widget_src/activity.js, GET
/api/v1/crm/activity/) in real Chromium, in Russian and English, with the pipeline's refused calls shown.
Screenshots go to test-artifacts/browser/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import ListSend, PipelineEvent, PipelineKey, SalesbotRequest
from crm.pipeline_inbox import pipeline_key_get_or_create

from .test_settings_page import AMO_ORIGIN, ARTIFACTS, built_widget, serve_amocrm

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def seed(account):
    now = timezone.now()
    for n, (state, reason) in enumerate([("sent", "")] * 5 + [("no_phone", "no_phone")] * 2
                                        + [("refused", "limits"), ("refused", "no_route")]):
        PipelineEvent.objects.create(account=account, lead_id=100 + n, status_id=1, event_type=15, event_time=n,
                                     state=state, reason=reason)
    for n, (exit_, reason) in enumerate([("sent", "")] * 3 + [("failed", "no_phone"), ("failed", "timeout")]):
        SalesbotRequest.objects.create(account=account, bot_id=1, continue_id=n + 1, entity_type="leads",
                                       entity_id=5, text="x", state="done", exit=exit_, reason=reason,
                                       received_at=now, deadline_at=now, next_at=now)
    ListSend.objects.create(account=account, entity_type="leads", entity_ids=list(range(1, 501)), text="x",
                            state="done", position=500, sent=480, no_phone=12, not_found=3, refused=5,
                            refused_by={"crm_caps": 5}, created_at=now - timedelta(days=1))
    key = pipeline_key_get_or_create(account=account)
    PipelineKey.objects.filter(pk=key.pk).update(refused_count=2, refused_last_at=now)


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_the_owner_sees_each_sources_outcomes(stack, chromium, make_token, account, tmp_path, lang):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seed(account)
    stack.start_web()
    page = chromium.new_page(viewport={"width": 1100, "height": 800})
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=True))
    serve_amocrm(page, built_widget(stack.web_url, tmp_path))
    page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang={lang}")
    page.wait_for_selector(".smsgate-activity-table", timeout=20000)

    def row(source):
        return page.locator(f".smsgate-activity-row[data-source='{source}'] td").all_inner_texts()

    # sent, no phone, refused: limits, refused: no key, refused: other, failed, in progress
    assert row("pipeline") == ["5", "2", "1", "1", "0", "0", "0"]
    assert row("salesbot") == ["3", "1", "0", "0", "0", "1", "0"]
    assert [text.replace("\u00a0", " ").replace(",", " ") for text in row("list")] == [
        "480", "15", "5", "0", "0", "0", "0"]
    key_note = page.inner_text(".smsgate-activity-key")
    assert ("отклонено: 2" if lang == "ru" else "refused: 2") in key_note
    headers = page.locator(".smsgate-activity-table thead th").all_inner_texts()
    assert headers[3:5] == (["Отказ: лимиты", "Отказ: нет ключа провайдера"] if lang == "ru"
                            else ["Refused: limits", "Refused: no provider key"])
    page.locator(".smsgate-activity").screenshot(path=str(ARTIFACTS / f"activity-{lang}.png"))
    assert problems == []
