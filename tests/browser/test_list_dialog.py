"""The lists' dialog (leads.selected / contacts.selected, widget_src/listsend.js) in real Chromium on a page that
imitates an amoCRM leads list: the ticked leads' preview read by smsgate from the fake amoCRM (who has a phone,
the first SMS, the parts), the send running on a real Celery worker with its progress, and a selection over 500
split into several sends that the cancel button stops. Screenshots go to test-artifacts/browser/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import AmoToken
from crm.models import ListSend, SmsTemplate
from deliveries.models import Delivery, DeliveryKind
from tests.conftest import REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.smsru import FakeSmsRu

from .test_settings_page import AMO_ORIGIN, ARTIFACTS, HERE, built_widget, serve_amocrm

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

AMO_ID = 12345


@pytest.fixture
def amo(integration, account):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(AMO_ID, subdomain="acme")
        pair = fake.issue_token_pair(AMO_ID, subdomain="acme")
        AmoToken.objects.create(account=account, access_token=pair["access_token"],
                                refresh_token=pair["refresh_token"],
                                expires_at=timezone.now() + timedelta(seconds=pair["expires_in"]))
        yield fake


def open_list(chromium, stack, make_token, tmp_path, ids, *, lang="ru"):
    widget_files = built_widget(stack.web_url, tmp_path)
    widget_files["/leads/list/"] = (HERE / "amocrm_list.html").read_bytes()
    page = chromium.new_page(viewport={"width": 900, "height": 900}, locale=f"{lang}-RU")
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type != "debug" and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=False))
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/leads/list/?lang={lang}&type=leads&ids={','.join(map(str, ids))}")
    page.wait_for_function("window.smsgateCallbacks && window.smsgateCallbacks.length === 3")
    page.click(".js-widget-button")
    return page, problems


def test_the_selected_leads_get_a_preview_and_the_send_runs_to_the_end(stack, chromium, make_token, account, amo,
                                                                       smsru_route, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FakeSmsRu(status_delays=(0.05, 0.05)) as sms:
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={sms.url}", AMO_BASE_URL=amo.url,
                         SMSGATE_CRM_LIMIT_ACCOUNT_HOUR="0", SMSGATE_CRM_LIMIT_ACCOUNT_DAY="0")
        smsru_route(sender="ACME")
        template = SmsTemplate.objects.create(account=account, name="Акция",
                                              text="{{contact.name}}, скидка 10% на «{{lead.name}}».")
        leads = amo.add_leads(AMO_ID, 4)
        nobody = amo.add_lead(AMO_ID, name="Без телефона", contacts=[amo.add_contact(AMO_ID, name="Нет")])
        stack.start_web()
        worker = stack.start_worker()
        page, problems = open_list(chromium, stack, make_token, tmp_path, [*leads, nobody])

        page.wait_for_selector(".smsgate-list-dialog", timeout=15000)
        assert page.inner_text(".smsgate-list-title") == "SMS выбранным сделкам: 5"
        page.fill(".smsgate-list-text", "Здравствуйте, {{contact.name}}!")
        # The preview of the filled-in text (not an earlier one still on screen while the new one is read).
        page.wait_for_selector(".smsgate-list-preview:has-text('Здравствуйте'):has-text('Получат SMS: 4 из 5')",
                               timeout=15000)
        assert "Без телефона (SMS не будет): 1" in page.inner_text(".smsgate-list-preview")
        page.select_option(".smsgate-list-template", str(template.pk))
        page.wait_for_selector(".smsgate-list-sample-text:has-text('Клиент 1, скидка 10%')", timeout=15000)
        assert not page.is_visible(".smsgate-list-text")
        assert page.locator(".smsgate-list-samples li").count() == 3
        assert "Частей SMS всего: 4" in page.inner_text(".smsgate-list-parts")
        page.screenshot(path=str(ARTIFACTS / "list-0-preview.png"), full_page=True)

        page.click(".smsgate-list-send")
        page.wait_for_selector(".smsgate-list-status:has-text('Готово: 5 из 5')", timeout=30000)
        assert "Поставлено в отправку: 4 · без телефона: 1 · отказано: 0" in page.inner_text(
            ".smsgate-list-outcome")
        assert not page.is_visible(".smsgate-list-cancel")
        page.screenshot(path=str(ARTIFACTS / "list-1-done.png"), full_page=True)
        send = ListSend.objects.get()
        assert (send.state, send.sent, send.no_phone, send.template_id, send.amo_user_id) == (
            "done", 4, 1, template.pk, 777)
        assert Delivery.objects.filter(kind=DeliveryKind.LIST).count() == 4
        assert problems == [], (problems, worker.log()[-2000:])


def test_a_selection_over_500_goes_in_several_sends_and_can_be_stopped(stack, chromium, make_token, account, amo,
                                                                       smsru_route, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stack.env.update(AMO_BASE_URL=amo.url)
    smsru_route()
    amo.account(AMO_ID).limit_rps = 0
    leads = amo.add_leads(AMO_ID, 620)
    stack.start_web()  # no worker: the sends wait, so the stop is seen before any batch
    page, problems = open_list(chromium, stack, make_token, tmp_path, leads, lang="en")
    page.wait_for_selector(".smsgate-list-split", timeout=15000)
    assert "620 selected: the SMS go in 2 sends of up to 500" in page.inner_text(".smsgate-list-split")
    page.fill(".smsgate-list-text", "Sale ends Friday!")
    page.wait_for_selector(".smsgate-list-counts:has-text('Will get an SMS: 500 of 500')", timeout=20000)
    assert "The preview covers the first 500 recipients." in page.inner_text(".smsgate-list-preview")
    page.click(".smsgate-list-send")
    page.wait_for_selector(".smsgate-list-status:has-text('Sending: 0 of 620')", timeout=15000)
    assert sorted(len(s.entity_ids) for s in ListSend.objects.all()) == [120, 500]
    page.screenshot(path=str(ARTIFACTS / "list-2-sending.png"), full_page=True)
    page.click(".smsgate-list-cancel")
    page.wait_for_selector(".smsgate-list-status:has-text('Stopped: 0 of 620 handled')", timeout=15000)
    assert set(ListSend.objects.values_list("state", flat=True)) == {"cancelled"}
    page.screenshot(path=str(ARTIFACTS / "list-3-stopped.png"), full_page=True)
    assert not Delivery.objects.exists()
    assert problems == []
