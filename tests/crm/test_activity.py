"""GET /api/v1/crm/activity/: what the owner sees of the pipeline's, Salesbot's and lists' SMS of the last days by
outcome (sent, skipped: no phone, refused: limits, refused: no provider key, refused: other, failed, in
progress), from real records made by the real services against the fake amoCRM; only the account's own, only
the days asked for; hostile parameters are a 400."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.limits import clear_limits_cache
from crm.lists import list_send_step
from crm.models import ListSend, PipelineEvent, PipelineKey, SalesbotRequest
from crm.pipeline import pipeline_events_process
from crm.pipeline_inbox import pipeline_key_get_or_create
from crm.salesbot import salesbot_request_process

from .conftest import AMO_ID

pytestmark = pytest.mark.django_db

URL = "/api/v1/crm/activity/"
AUD = "https://smsgate.example.com"


def test_each_source_is_counted_by_outcome(api, client, amocrm, account, other_account, smsru_route, settings):
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 0
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    amocrm.account(AMO_ID).limit_rps = 0
    empty = api.get(URL).json()
    assert empty["days"] == 7 and empty["pipeline"]["sent"] == empty["salesbot"]["sent"] == empty["list"]["sent"] == 0

    # No route of the account's own yet: a Salesbot step and a pipeline event are refused for lack of a key.
    body = amocrm.salesbot_request(AMO_ID, entity_id=amocrm.ids_["lead"], aud=AUD, data={"text": "Привет"})
    client.post("/amocrm/salesbot", body, content_type="application/json")
    request = SalesbotRequest.objects.get()
    while salesbot_request_process(request_id=request.pk) is not None:
        pass
    PipelineEvent.objects.create(account=account, lead_id=amocrm.ids_["lead"], status_id=1, event_type=15,
                                 event_time=1, text="Привет")
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)

    smsru_route()
    nobody = amocrm.add_lead(AMO_ID, name="Без телефона", contacts=[amocrm.add_contact(AMO_ID, name="Нет")])
    leads = amocrm.add_leads(AMO_ID, 4)
    for n, lead in enumerate([*leads[:2], nobody]):
        PipelineEvent.objects.create(account=account, lead_id=lead, status_id=2, event_type=15, event_time=10 + n,
                                     text="Привет")
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    key = pipeline_key_get_or_create(account=account)
    PipelineKey.objects.filter(pk=key.pk).update(refused_count=3, refused_last_at=timezone.now())

    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = 4  # the pipeline's two SMS, then two of the list's four, then refusals
    clear_limits_cache()
    send = api.post("/api/v1/crm/list-sends/", {"entity_type": "leads", "ids": [*leads, 123456789],
                                                "text": "Привет"}).json()
    while list_send_step(send_id=send["id"]) is not None:
        pass
    # An old list send, out of the window.
    ListSend.objects.create(account=account, entity_type="leads", entity_ids=[1], text="x", state="done", sent=9,
                            created_at=timezone.now() - timedelta(days=30))
    # Another account's send is never counted.
    ListSend.objects.create(account=other_account, entity_type="leads", entity_ids=[1], text="x", state="done",
                            sent=7, created_at=timezone.now())

    body = api.get(URL).json()
    assert {k: body["pipeline"][k] for k in ("sent", "no_phone", "refused_no_key", "refused_limits", "refused_calls")} \
        == {"sent": 2, "no_phone": 1, "refused_no_key": 1, "refused_limits": 0, "refused_calls": 3}
    assert {k: body["salesbot"][k] for k in ("sent", "refused_no_key", "in_progress")} == {
        "sent": 0, "refused_no_key": 1, "in_progress": 0}
    assert {k: body["list"][k] for k in ("sent", "no_phone", "refused_limits", "sends")} == {
        "sent": 2, "no_phone": 1, "refused_limits": 2, "sends": 1}
    assert api.get(URL, {"days": "60"}).json()["list"]["sent"] == 11


@pytest.mark.parametrize("days", ["0", "91", "١٢", "abc", "1.5", "-1", "9" * 40])
def test_hostile_days_are_a_400(api, days):
    response = api.get(URL, {"days": days})
    assert response.status_code == 400 and response.json()["code"]


def test_retention_empties_the_texts_of_finished_salesbot_requests_and_list_sends(account, settings):
    from crm.retention import crm_retention_run

    old = timezone.now() - timedelta(days=settings.SMSGATE_PURGE_TEXT_DAYS + 1)
    now = timezone.now()
    done = SalesbotRequest.objects.create(account=account, bot_id=1, continue_id=1, entity_type="leads", entity_id=5,
                                          text="Ольга, ваш код", phone="+79123456789", state="done", exit="sent",
                                          received_at=old, deadline_at=old, next_at=old, finished_at=old)
    fresh = SalesbotRequest.objects.create(account=account, bot_id=1, continue_id=2, entity_type="leads", entity_id=5,
                                           text="свежий", state="done", exit="sent", received_at=now,
                                           deadline_at=now, next_at=now, finished_at=now)
    listed = ListSend.objects.create(account=account, entity_type="leads", entity_ids=[1], text="Акция", state="done",
                                     created_at=old, finished_at=old)
    assert crm_retention_run().step_texts == 2
    done.refresh_from_db()
    fresh.refresh_from_db()
    listed.refresh_from_db()
    assert (done.text, done.phone, done.exit, fresh.text, listed.text) == ("", "", "sent", "свежий", "")
