"""Staff in real Chromium: the account page's "CRM sends may use the default route" switch (ticked and
saved), the CRM caps among the account's limit ceilings, and the read-only list of SMS sent from amoCRM
with their notes' states (written, not possible on an unsorted lead, waiting); the read-only lists of the
pipeline's events, its keys, Salesbot's requests and list sends. Screenshots in test-artifacts/crm-admin-*.png."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from accounts.models import Account, AccountCeilings, AmoToken
from crm import notes
from crm.models import CrmMessage, ListSend, NoteState, PipelineEvent, PipelineKey, SalesbotRequest
from crm.sending import CrmSend, crm_sends_create
from deliveries.models import DeliveryKind
from routes.models import ProviderRoute
from tests.conftest import REDIRECT_URI, SECRET
from tests.crm.test_admin import SECRET_TEXTS, fill
from tests.fakes.amocrm import FakeAmoCRM

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

PERMISSIONS = ["accounts.view_account", "accounts.change_account", "accounts.view_accountceilings",
               "accounts.change_accountceilings", "accounts.view_accountownlimits", "crm.view_crmmessage",
               "crm.view_crmnote", "deliveries.view_delivery"]


@pytest.fixture
def crm_data(transactional_db, integration, account, settings):
    """Three SMS from amoCRM cards whose notes went through the outbox against the fake amoCRM."""
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 0
    ProviderRoute.objects.create(account=account, provider="smsru", priority=1, credentials={"api_id": "x"})
    AccountCeilings.objects.create(account=account, crm_user_per_hour=50)
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(account.amo_id, subdomain=account.subdomain)
        settings.AMO_BASE_URL = fake.url
        pair = fake.issue_token_pair(account.amo_id)
        AmoToken.objects.create(account=account, access_token=pair["access_token"],
                                refresh_token=pair["refresh_token"], expires_at=timezone.now() + timedelta(days=1))
        contact = fake.add_contact(account.amo_id, name="Ольга", phones=[("+79123456789", "MOB")])
        lead = fake.add_lead(account.amo_id, contacts=[contact])
        unsorted = fake.add_lead(account.amo_id, unsorted=True, contacts=[contact])
        crm_sends_create(account=account, kind=DeliveryKind.CRM, write_notes=True, items=[
            CrmSend("leads", lead, "+79123456789", "Ваш заказ готов", amo_user_id=5001),
            CrmSend("leads", unsorted, "+79123456789", "Добрый день", amo_user_id=5001)])
        notes.notes_write(account_id=account.pk)
        crm_sends_create(account=account, kind=DeliveryKind.CRM, write_notes=True, items=[
            CrmSend("contacts", contact, "+79123456789", "Напоминаем о встрече", amo_user_id=5002)])
    user = User.objects.create_user("crm-staff", password="crm-staff-pass", is_staff=True)
    for permission in PERMISSIONS:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return {"account": account, "lead": lead, "unsorted": unsorted}


def test_crm_sends_in_the_admin(live_server, crm_data, chromium):
    account = crm_data["account"]
    context = chromium.new_context(locale="ru-RU", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    shots = []

    def shot(name):
        page.wait_for_load_state("load")
        path = ARTIFACTS / f"crm-admin-{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "crm-staff")
    page.fill("#id_password", "crm-staff-pass")
    page.click("input[type=submit]")

    # The account page: the switch, off by default, with its explanation; the CRM caps among the ceilings.
    page.goto(f"{live_server.url}/admin/accounts/account/{account.pk}/change/")
    switch = page.locator("#id_crm_default_route_allowed")
    assert switch.is_visible() and not switch.is_checked()
    assert "SMS из amoCRM могут идти через маршрут по умолчанию" in page.content()
    assert "SMS из amoCRM на пользователя amoCRM в час" in page.content()
    assert page.locator("#id_limit_ceilings-0-crm_user_per_hour").input_value() == "50"
    shot("account")
    switch.check()
    page.click("input[name=_continue]")
    page.wait_for_load_state("load")
    assert page.locator("#id_crm_default_route_allowed").is_checked()
    assert Account.objects.get(pk=account.pk).crm_default_route_allowed is True
    shot("account-saved")

    # The SMS sent from amoCRM, newest first, with where from, who, and the note's state.
    page.goto(f"{live_server.url}/admin/crm/crmmessage/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    text = page.locator("#result_list").inner_text()
    assert "записано" in text and "невозможно" in text and "ждёт записи" in text
    assert f"leads/{crm_data['unsorted']}" in text and "+7 912 ***-**-89" in text
    assert "Ваш заказ готов" not in page.content()  # texts are the delivery page's business
    shot("messages")

    page.goto(f"{live_server.url}/admin/crm/crmmessage/?note_state__exact=not_possible")
    assert page.locator("#result_list tbody tr").count() == 1
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_load_state("load")
    html = page.content()
    assert "невозможно" in html and "entity_id" in html  # amoCRM's reason, in the note's last error
    assert CrmMessage.objects.filter(note_state=NoteState.NOT_POSSIBLE).count() == 1
    shot("message")

    page.goto(f"{live_server.url}/admin/crm/crmnote/")
    assert page.locator("#result_list tbody tr").count() == 3
    shot("notes")
    assert all(path.exists() for path in shots)
    context.close()


# --- the inboxes of the pipeline, Salesbot and list sends, and the pipeline keys ---------------------------------
INBOX_PERMISSIONS = ["crm.view_pipelineevent", "crm.view_pipelinekey", "crm.view_salesbotrequest", "crm.view_listsend",
                     "deliveries.view_delivery"]


def test_the_crm_inboxes_in_the_admin(live_server, transactional_db, account, settings, chromium):
    data = fill(account, 3, settings)
    key = PipelineKey.objects.get(pk=data["key"].pk)
    user = User.objects.create_user("inbox-staff", password="inbox-staff-pass", is_staff=True)
    for permission in INBOX_PERMISSIONS:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    context = chromium.new_context(locale="ru-RU", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "inbox-staff")
    page.fill("#id_password", "inbox-staff-pass")
    page.click("input[type=submit]")
    page.wait_for_load_state("load")

    shots = []
    for model, rows, words in [
        (PipelineEvent, 3, ["нет телефона", "no_phone", "7001"]),
        (SalesbotRequest, 3, ["бот продолжен", "salesbot 31", "leads/8001"]),
        (ListSend, 3, ["обработано", "120 / 120", "нет телефона"]),
        (PipelineKey, 1, ["ключ задан", "acme"]),
    ]:
        name = model._meta.model_name
        page.goto(f"{live_server.url}/admin/crm/{name}/")
        page.wait_for_load_state("load")
        assert page.locator("#result_list tbody tr").count() == rows, name
        text = page.locator("#content").inner_text().lower()
        assert [word for word in words if word.lower() not in text] == [], name
        html = page.content()
        assert key.key not in html and key.key_digest not in html
        assert all(secret not in html for secret in SECRET_TEXTS) and "3456789" not in html
        path = ARTIFACTS / f"crm-admin-inbox-{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    # A pipeline event's page, from its row; the delivery it sent is a link away.
    page.goto(f"{live_server.url}/admin/crm/pipelineevent/?state__exact=sent")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_load_state("load")
    assert "+7 912 ***-**-89" in page.content()
    assert page.locator(".field-delivery_link a").count() == 1
    path = ARTIFACTS / f"crm-admin-inbox-{len(shots) + 1:02d}-pipelineevent-page.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path)
    assert all(path.exists() for path in shots)
    context.close()
