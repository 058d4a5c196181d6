"""Sending to a selected list (crm.lists, /api/v1/crm/list-sends/) against the fake amoCRM over real HTTP: 500
leads sent in two batches of 250 (the amoCRM requests and the 7 requests/s limit counted at the fake, one
sms_out note per SMS written through the outbox), the dialog's preview (who has a phone, the first SMS, the
parts), contacts lists, cancelling between batches, a batch repeated after a crash sending nothing twice,
amoCRM failing, and hostile input (4xx JSON, never a 5xx; another account's sends are not seen)."""

import pytest

from accounts.limits import clear_limits_cache
from crm import notes
from crm.lists import list_send_step
from crm.models import CrmMessage, ListSend, SmsTemplate
from deliveries.models import Delivery, DeliveryKind

from .conftest import AMO_ID

pytestmark = pytest.mark.django_db

URL = "/api/v1/crm/list-sends/"


@pytest.fixture(autouse=True)
def _no_caps(settings):
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 0
    settings.SMSGATE_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_LIMIT_ACCOUNT_DAY = 0


def run(send_id, steps=10):
    for _ in range(steps):
        if list_send_step(send_id=send_id) is None:
            return ListSend.objects.get(pk=send_id)
    raise AssertionError("the send did not finish")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["detail"]
    return body


def test_500_leads_get_500_sms_and_500_notes_within_7_requests_a_second(api, amocrm, account, smsru_route):
    smsru_route()
    amocrm.account(AMO_ID).limit_rps = 7
    leads = amocrm.add_leads(AMO_ID, 500)
    template = SmsTemplate.objects.create(account=account, name="Акция", text="{{contact.name}}, скидка 10% до пятницы.")
    response = api.post(URL, {"entity_type": "leads", "ids": leads, "template_id": template.pk})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["total"], body["done"], body["state"], body["sent_by"]) == (500, 0, "pending", 777)

    assert list_send_step(send_id=body["id"]) == 0.0  # the first 250, and more to do
    progress = api.get(f"{URL}{body['id']}/").json()
    assert (progress["done"], progress["sent"], progress["state"]) == (250, 250, "running")
    send = run(body["id"])
    assert (send.state, send.position, send.sent, send.no_phone, send.refused) == ("done", 500, 500, 0, 0)

    deliveries = Delivery.objects.filter(account=account)
    assert deliveries.count() == 500 and set(deliveries.values_list("kind", flat=True)) == {DeliveryKind.LIST}
    first = Delivery.objects.get(phone="+79120000000")
    assert first.text == "Клиент 1, скидка 10% до пятницы."
    assert CrmMessage.objects.filter(origin="list", template=template).count() == 500

    while notes.notes_write(account_id=account.pk).written:
        pass
    assert len(amocrm.notes(AMO_ID, "leads", note_type="sms_out")) == 500
    calls = amocrm.request_log(AMO_ID)
    gets = [c.path for c in calls if c.method == "GET"]
    assert gets.count("/api/v4/leads") == 2 and gets.count("/api/v4/contacts") == 2
    assert [c.path for c in calls if c.method == "POST"] == ["/api/v4/leads/notes"] * 2
    assert all(c.query.count("filter[id][]=") <= 250 for c in calls if c.method == "GET")
    assert amocrm.peak_rps(AMO_ID) <= 7 and amocrm.refused_429(AMO_ID) == 0


def test_the_preview_counts_phones_and_shows_the_first_sms(api, amocrm):
    ids = amocrm.ids_
    no_phone = amocrm.add_lead(AMO_ID, name="Без телефона", contacts=[amocrm.add_contact(AMO_ID, name="Нет")])
    response = api.post(f"{URL}preview/", {"entity_type": "leads", "ids": [ids["lead"], no_phone, 987654321],
                                           "text": "{{contact.first_name}}, заказ «{{lead.name}}» готов."})
    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in ("total", "found", "with_phone", "without_phone", "not_found", "parts")} == {
        "total": 3, "found": 2, "with_phone": 1, "without_phone": 1, "not_found": 1, "parts": 1}
    assert body["samples"] == [{"entity_id": ids["lead"], "name": "Кухня на заказ", "phone": "+7 912 345-67-89",
                                "text": "Ольга, заказ «Кухня на заказ» готов.", "parts": 1, "encoding": "ucs2"}]
    assert not Delivery.objects.exists()


def test_a_contacts_list_sends_to_each_contact(api, amocrm, smsru_route):
    smsru_route()
    ids = [amocrm.ids_["contact"], amocrm.ids_["other"]]
    body = api.post(URL, {"entity_type": "contacts", "ids": ids, "text": "Hello!"}).json()
    send = run(body["id"])
    assert (send.sent, send.state) == (2, "done")
    assert set(Delivery.objects.values_list("phone", flat=True)) == {"+79123456789", "+79031112233"}
    assert set(CrmMessage.objects.values_list("entity_type", flat=True)) == {"contacts"}


def test_cancel_stops_between_batches(api, amocrm, account, smsru_route):
    smsru_route()
    leads = amocrm.add_leads(AMO_ID, 300)
    body = api.post(URL, {"entity_type": "leads", "ids": leads, "text": "Привет"}).json()
    list_send_step(send_id=body["id"])
    cancelled = api.post(f"{URL}{body['id']}/cancel/").json()
    assert cancelled["cancel_requested"] is True and cancelled["state"] == "running"
    send = run(body["id"])
    assert (send.state, send.position, send.sent) == ("cancelled", 250, 250)
    assert Delivery.objects.count() == 250


def test_a_send_cancelled_before_it_starts_sends_nothing(api, amocrm, smsru_route):
    smsru_route()
    body = api.post(URL, {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "text": "Привет"}).json()
    assert api.post(f"{URL}{body['id']}/cancel/").json()["state"] == "cancelled"
    assert list_send_step(send_id=body["id"]) is None
    assert not Delivery.objects.exists()


def test_a_batch_repeated_after_a_crash_sends_nothing_twice(api, amocrm, smsru_route):
    smsru_route()
    leads = amocrm.add_leads(AMO_ID, 10)
    body = api.post(URL, {"entity_type": "leads", "ids": leads, "text": "Привет"}).json()
    run(body["id"])
    ListSend.objects.filter(pk=body["id"]).update(state="running", position=0, sent=0)  # as if it died mid-batch
    send = run(body["id"])
    assert (send.state, send.sent) == ("done", 10) and Delivery.objects.count() == 10


def test_amocrm_down_then_up(api, amocrm, smsru_route):
    smsru_route()
    body = api.post(URL, {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "text": "Привет"}).json()
    amocrm.fail_next(4, 503)
    again = list_send_step(send_id=body["id"])
    assert again is not None and again >= 2.0
    assert ListSend.objects.get(pk=body["id"]).reads == 1
    assert run(body["id"]).sent == 1


def test_refusals_are_counted_by_reason(api, amocrm, account, smsru_route, settings):
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = 3
    clear_limits_cache()
    leads = amocrm.add_leads(AMO_ID, 5)
    send = run(api.post(URL, {"entity_type": "leads", "ids": leads, "text": "Привет"}).json()["id"])
    assert (send.sent, send.refused) == (3, 2) and sum(send.refused_by.values()) == 2


def test_without_a_route_of_its_own_the_send_is_refused_at_once(api, amocrm):
    response = api.post(URL, {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "text": "Привет"})
    assert_error(response, 422, "no_route")
    assert not ListSend.objects.exists()


@pytest.mark.parametrize("body", [
    {"entity_type": "leads", "ids": list(range(1, 502)), "text": "x"},
    {"entity_type": "leads", "ids": [], "text": "x"},
    {"entity_type": "leads", "ids": ["1"], "text": "x"},
    {"entity_type": "leads", "ids": [True], "text": "x"},
    {"entity_type": "leads", "ids": [2**70], "text": "x"},
    {"entity_type": "leads", "ids": [-5], "text": "x"},
    {"entity_type": "leads", "ids": "1,2", "text": "x"},
    {"entity_type": "companies", "ids": [1], "text": "x"},
    {"entity_type": "leads", "ids": [1]},
    {"entity_type": "leads", "ids": [1], "text": "x" * 2001},
    {"entity_type": "leads", "ids": [1], "text": 5},
    {"entity_type": "leads", "ids": [1], "template_id": "1"},
    {"entity_type": "leads", "ids": [[[[[[[[[[1]]]]]]]]]], "text": "x"},
])
def test_hostile_bodies_are_400(api, amocrm, smsru_route, body):
    smsru_route()
    for path in (URL, f"{URL}preview/"):
        response = api.post(path, body)
        assert 400 <= response.status_code < 500, (path, response.content)
        assert set(response.json()) >= {"detail", "code"}
    assert not ListSend.objects.exists() and not Delivery.objects.exists()


def test_another_accounts_template_and_send_are_not_seen(api, amocrm, other_account, other_api, smsru_route):
    smsru_route()
    theirs = SmsTemplate.objects.create(account=other_account, name="Чужой", text="чужой")
    response = api.post(URL, {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "template_id": theirs.pk})
    assert_error(response, 400, "invalid")
    mine = api.post(URL, {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "text": "x"}).json()
    stranger = other_api
    assert stranger.get(f"{URL}{mine['id']}/").status_code == 404
    assert stranger.post(f"{URL}{mine['id']}/cancel/").status_code == 404
    assert stranger.get(URL).json() == []
    assert api.get(f"{URL}99999999999999999999/").status_code == 404
    assert [s["id"] for s in api.get(URL).json()] == [mine["id"]]


def test_amocrm_unreadable_in_the_preview_is_a_503(api, amocrm):
    amocrm.fail_next(4, 503)
    response = api.post(f"{URL}preview/", {"entity_type": "leads", "ids": [amocrm.ids_["lead"]], "text": "x"})
    assert_error(response, 503, "amocrm_unavailable")


def test_an_account_not_connected_to_amocrm_gets_a_422_not_a_5xx(api, account):
    response = api.post(f"{URL}preview/", {"entity_type": "leads", "ids": [1], "text": "x"})
    assert_error(response, 409, "amocrm_not_connected")
