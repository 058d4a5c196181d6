"""/api/v1/crm/cards/, /api/v1/crm/sends/ and the preview by entity, through Django's test client with the
fake amoCRM over real HTTP: the card as amoCRM returns it, the phone checked against it (never taken from
the browser), the contract's shapes and codes, another account's entities and SMS, hostile input."""

import json

import pytest
from django.utils import timezone

from accounts.limits import clear_limits_cache
from accounts.models import AccountCeilings
from crm.models import CrmMessage, CrmNote
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.status import delivery_move
from routes.models import ProviderRoute
from routes.selectors import forget_routes

from .conftest import AMO_ID, connect

pytestmark = pytest.mark.django_db

SEND_FIELDS = {"id", "status", "status_label", "phone", "text", "encoding", "parts", "origin", "entity_type",
               "entity_id", "created_at", "finished_at", "error_text", "sent_by", "note_state"}


@pytest.fixture
def routed(smsru_route, settings):
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 0


def card_url(entity_type, entity_id):
    return f"/api/v1/crm/cards/{entity_type}/{entity_id}/"


def body(lead, **overrides):
    return {"entity_type": "leads", "entity_id": lead, "phone": "+79123456789", "text": "Добрый день!",
            **overrides}


# --- the card -----------------------------------------------------------------------------------------------
def test_the_card_lists_the_leads_contacts_and_phones_as_amocrm_returns_them(api, amocrm):
    ids = amocrm.ids_
    response = api.get(card_url("leads", ids["lead"]))
    assert response.status_code == 200, response.content
    assert response.json() == {
        "entity_type": "leads", "entity_id": ids["lead"], "name": "Кухня на заказ",
        "contacts": [
            {"id": ids["contact"], "name": "Ольга Иванова", "is_main": True,
             "phones": [{"phone": "+79123456789", "type": "MOB"}, {"phone": "+79161234567", "type": "WORK"}]},
            {"id": ids["other"], "name": "Пётр", "is_main": False, "phones": [{"phone": "+79031112233", "type": "MOB"}]},
        ]}
    contact = api.get(card_url("contacts", ids["other"])).json()
    assert contact["name"] == "Пётр" and [c["id"] for c in contact["contacts"]] == [ids["other"]]
    # Read once, then from the cache: the panel's reads cost amoCRM nothing more for a minute.
    calls = len(amocrm.request_log(AMO_ID))
    assert api.get(card_url("leads", ids["lead"])).status_code == 200
    assert len(amocrm.request_log(AMO_ID)) == calls


def test_an_entity_amocrm_does_not_have_for_this_account_is_not_found(api, amocrm):
    amocrm.add_account(99999, subdomain="stranger")
    strangers_lead = amocrm.add_lead(99999, name="Чужая сделка")
    for path in (card_url("leads", strangers_lead), card_url("leads", 123), card_url("contacts", 777)):
        response = api.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path


def test_amocrm_unreachable_is_503(api, amocrm):
    amocrm.fail_with = "drop"
    response = api.get(card_url("leads", amocrm.ids_["lead"]))
    assert response.status_code == 503
    assert response.json()["code"] == "amocrm_unavailable" and response.json()["detail"]


@pytest.mark.parametrize("entity_type,entity_id", [
    ("companies", "1"), ("leads", "0"), ("leads", "-1"), ("leads", "١٢٣"), ("leads", "12a"),
    ("leads", str(2**53 + 1)), ("leads", "9" * 40), ("LEADS", "1"),
])
def test_a_card_path_that_is_no_amocrm_entity_is_404(api, amocrm, entity_type, entity_id):
    response = api.get(card_url(entity_type, entity_id))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert amocrm.request_log(AMO_ID) == []


# --- sending ----------------------------------------------------------------------------------------------------
def test_a_send_from_the_panel_is_recorded_with_the_card_and_its_note(api, amocrm, routed):
    lead = amocrm.ids_["lead"]
    response = api.post("/api/v1/crm/sends/", body(lead, phone="8 912 345-67-89",
                                                    text="{{contact.first_name}}, ваш заказ готов",
                                                    client_key="0b6c3a3e-8d1c-4a0e-9f3e-1b2c3d4e5f60"),
                        HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 201, response.content
    sent = response.json()
    assert set(sent) == SEND_FIELDS
    assert sent | {"id": None, "created_at": None} == {
        "id": None, "status": "pending", "status_label": "pending", "phone": "+79123456789",
        "text": "Ольга, ваш заказ готов", "encoding": "ucs2", "parts": 1, "origin": "panel",
        "entity_type": "leads", "entity_id": lead, "created_at": None, "finished_at": None, "error_text": "",
        "sent_by": 777, "note_state": "pending"}
    delivery = Delivery.objects.get(pk=sent["id"])
    assert (delivery.kind, delivery.phone, delivery.text) == (DeliveryKind.CRM, "+79123456789", sent["text"])
    note = CrmNote.objects.get(message_id=delivery.pk)
    assert (note.entity_type, note.entity_id, note.text, note.phone) == ("leads", lead, sent["text"], "+79123456789")


def test_the_recipients_contact_fills_in_the_contact_markers(api, amocrm, routed):
    response = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"], phone="+79031112233",
                                                    text="{{contact.name}}: {{lead.name}}, {{lead.price}} ₽"))
    assert response.status_code == 201, response.content
    assert response.json()["text"] == "Пётр: Кухня на заказ, 150000 ₽"


def test_a_template_is_filled_in_from_the_card(api, amocrm, routed):
    template = api.post("/api/v1/templates/", {"name": "Готово", "text": "{{contact.first_name}}, заказ готов"}).json()
    response = api.post("/api/v1/crm/sends/", {"entity_type": "contacts", "entity_id": amocrm.ids_["contact"],
                                               "phone": "+79161234567", "template_id": template["id"]})
    assert response.status_code == 201, response.content
    assert response.json()["text"] == "Ольга, заказ готов"
    assert CrmMessage.objects.get().template_id == template["id"]


def test_a_phone_not_on_the_card_is_refused_whatever_the_browser_says(api, amocrm, routed):
    before = len(amocrm.request_log(AMO_ID))
    response = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"], phone="+79990000000"),
                        HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 400
    assert response.json() == {"detail": "This phone number is not among the card's contacts in amoCRM.",
                               "code": "phone_not_on_card"}
    assert not Delivery.objects.exists()
    # The card was read fresh once more before refusing (a phone added a moment ago counts).
    reads = [c for c in amocrm.request_log(AMO_ID)[before:] if c.path.startswith("/api/v4/leads/")]
    assert len(reads) == 2


def test_a_phone_added_in_amocrm_after_the_card_was_read_is_found(api, amocrm, routed):
    contact = amocrm.ids_["contact"]
    assert api.get(card_url("contacts", contact)).status_code == 200  # cached without the new phone
    with amocrm._state:
        account = amocrm.account(AMO_ID)
        account.contacts[contact].custom[account.phone_field.id].append(account.phone_field.value(("+79005554433", "MOB")))
    response = api.post("/api/v1/crm/sends/", body(contact, entity_type="contacts", phone="+79005554433"))
    assert response.status_code == 201, response.content


def test_another_accounts_entity_is_not_found(other_api, amocrm, routed, other_account):
    amocrm.add_account(55555, subdomain="beta")
    connect(amocrm, other_account)
    ProviderRoute.objects.create(account=other_account, provider="smsru", priority=1, credentials={"api_id": "x"})
    # acme's lead and contact, asked for with beta's token: amoCRM does not give them to beta.
    assert other_api.get(card_url("leads", amocrm.ids_["lead"])).status_code == 404
    response = other_api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"]))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = other_api.post("/api/v1/crm/sends/", body(amocrm.ids_["contact"], entity_type="contacts"))
    assert response.status_code == 404
    assert not Delivery.objects.exists()


def test_the_same_client_key_sends_once(api, amocrm, routed):
    payload = body(amocrm.ids_["lead"], client_key="double-click-1")
    first = api.post("/api/v1/crm/sends/", payload)
    second = api.post("/api/v1/crm/sends/", payload)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] == second.json()["id"] and Delivery.objects.count() == 1


def test_refusals_carry_the_contracts_codes(api, viewer_api, amocrm, routed, account, settings):
    lead = amocrm.ids_["lead"]
    AccountCeilings.objects.create(account=account, crm_user_per_hour=1)
    assert viewer_api.post("/api/v1/crm/sends/", body(lead)).status_code == 201  # not only admins send
    capped = viewer_api.post("/api/v1/crm/sends/", body(lead))
    assert capped.status_code == 429 and capped.json()["code"] == "crm_caps"
    assert 3500 <= int(capped["Retry-After"]) <= 3600

    ProviderRoute.objects.all().delete()
    forget_routes(account.pk)
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    not_allowed = api.post("/api/v1/crm/sends/", body(lead))
    assert not_allowed.status_code == 422 and not_allowed.json()["code"] == "crm_not_allowed"
    settings.SMSGATE_DEFAULT_ROUTE = ""
    no_route = api.post("/api/v1/crm/sends/", body(lead))
    assert no_route.status_code == 422 and no_route.json()["code"] == "no_route"


def test_policy_and_limits_refusals(api, amocrm, routed, settings):
    settings.SMSGATE_DEFAULT_COUNTRIES = {"amocrm.ru": "KZ"}
    clear_limits_cache()
    policy = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"]))
    assert policy.status_code == 422 and policy.json()["code"] == "policy"
    settings.SMSGATE_DEFAULT_COUNTRIES = {"amocrm.ru": "RU"}
    settings.SMSGATE_LIMIT_PHONE_COOLDOWN = 60
    clear_limits_cache()
    assert api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"])).status_code == 201
    limits = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"]))
    assert limits.status_code == 429 and limits.json()["code"] == "limits" and limits["Retry-After"]


def test_refusals_are_in_the_requests_language(api, amocrm, routed):
    response = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"], phone="+79990000000"),
                        HTTP_ACCEPT_LANGUAGE="ru")
    assert response.json()["detail"] == "Этого номера нет среди телефонов контактов карточки в amoCRM."


@pytest.mark.parametrize("payload", [
    {},
    {"entity_type": "leads", "entity_id": "123", "phone": "+79123456789", "text": "x"},
    {"entity_type": "leads", "entity_id": 1.5, "phone": "+79123456789", "text": "x"},
    {"entity_type": "leads", "entity_id": True, "phone": "+79123456789", "text": "x"},
    {"entity_type": "leads", "entity_id": 10**30, "phone": "+79123456789", "text": "x"},
    {"entity_type": "leads", "entity_id": -5, "phone": "+79123456789", "text": "x"},
    {"entity_type": "deals", "entity_id": 1, "phone": "+79123456789", "text": "x"},
    {"entity_type": ["leads"], "entity_id": 1, "phone": "+79123456789", "text": "x"},
    {"entity_type": "leads", "entity_id": 1, "phone": 79123456789, "text": "x"},
    {"entity_type": "leads", "entity_id": 1, "phone": "+7912" * 20, "text": "x"},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789"},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": "x", "template_id": 1},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": {"a": 1}},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": "x" * 1001},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": "x", "origin": "salesbot"},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": "x", "client_key": "ключ-ключ-ключ"},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "text": "x", "client_key": 12345678},
    {"entity_type": "leads", "entity_id": 1, "phone": "+79123456789", "template_id": "1"},
    ["leads", 1],
])
def test_hostile_send_bodies_are_clear_400s(api, amocrm, routed, payload):
    response = api.post("/api/v1/crm/sends/", payload)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and response.json()["detail"]
    assert not Delivery.objects.exists() and amocrm.request_log(AMO_ID) == []


def test_deep_and_oversized_bodies_and_non_ascii_digits(api, amocrm, routed, client, make_token):
    deep = "[" * 5000 + "]" * 5000
    response = client.post("/api/v1/crm/sends/", deep, content_type="application/json",
                           HTTP_X_AUTH_TOKEN=make_token())
    assert response.status_code == 400 and response.json()["code"] in ("parse_error", "invalid")
    huge = json.dumps(body(amocrm.ids_["lead"], text="x" * 400_000))
    response = client.post("/api/v1/crm/sends/", huge, content_type="application/json", HTTP_X_AUTH_TOKEN=make_token())
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    arabic = api.post("/api/v1/crm/sends/", body(amocrm.ids_["lead"], phone="+٧٩١٢٣٤٥٦٧٨٩"))
    assert arabic.status_code == 400 and arabic.json()["code"] == "invalid"
    missing_template = api.post("/api/v1/crm/sends/", {"entity_type": "leads", "entity_id": amocrm.ids_["lead"],
                                                       "phone": "+79123456789", "template_id": 999999})
    assert missing_template.status_code == 400 and "template_id" in missing_template.json()["errors"]
    assert not Delivery.objects.exists()


def test_without_a_token_nothing_is_read_or_sent(client, amocrm):
    assert client.get(card_url("leads", amocrm.ids_["lead"])).status_code == 401
    assert client.post("/api/v1/crm/sends/", {}, content_type="application/json").status_code == 401
    assert amocrm.request_log(AMO_ID) == []


# --- the card's history -------------------------------------------------------------------------------------------
def test_the_history_lists_the_cards_sms_newest_first_and_says_when_some_are_in_flight(
        api, viewer_api, other_api, other_account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    first = api.post("/api/v1/crm/sends/", body(lead, text="Первое")).json()
    second = viewer_api.post("/api/v1/crm/sends/", body(lead, phone="+79031112233", text="Второе")).json()
    api.post("/api/v1/crm/sends/", body(amocrm.ids_["contact"], entity_type="contacts", text="Другая карточка"))

    history = viewer_api.get("/api/v1/crm/sends/", {"entity_type": "leads", "entity_id": str(lead)})
    assert history.status_code == 200
    data = history.json()
    assert [r["id"] for r in data["results"]] == [second["id"], first["id"]] and data["in_flight"] is True
    assert data["results"][1]["text"] == "Первое" and set(data["results"][0]) == SEND_FIELDS

    for result in (first, second):
        delivery_move(delivery_id=result["id"], to=DeliveryStatus.FAILED,
                      values={"error_class": "invalid_recipient", "finished_at": timezone.now()})
    data = api.get("/api/v1/crm/sends/", {"entity_type": "leads", "entity_id": lead},
                   HTTP_ACCEPT_LANGUAGE="ru").json()
    assert data["in_flight"] is False
    assert data["results"][0]["status_label"] == "ошибка"
    assert data["results"][0]["error_text"] == "номер неверный или не может принимать SMS"
    # Another account sees nothing of it.
    assert other_api.get("/api/v1/crm/sends/", {"entity_type": "leads", "entity_id": lead}).json() == {
        "results": [], "in_flight": False}


@pytest.mark.parametrize("params", [
    {}, {"entity_type": "leads"}, {"entity_type": "leads", "entity_id": "abc"},
    {"entity_type": "leads", "entity_id": "١٢"}, {"entity_type": "companies", "entity_id": "1"},
    {"entity_type": "leads", "entity_id": str(2**60)}, {"entity_type": "leads", "entity_id": "0"},
])
def test_hostile_history_queries_are_clear_400s(api, params):
    response = api.get("/api/v1/crm/sends/", params)
    assert response.status_code == 400 and response.json()["code"] == "invalid"


# --- the preview by entity ---------------------------------------------------------------------------------------
def test_the_preview_reads_the_card_itself(api, amocrm):
    response = api.post("/api/v1/templates/preview/", {
        "text": "{{contact.first_name}}, сделка «{{lead.name}}» на {{lead.price}} ₽ {{lead.cf.1}}",
        "entity_type": "leads", "entity_id": amocrm.ids_["lead"]})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["text"] == "Ольга, сделка «Кухня на заказ» на 150000 ₽ "
    assert data["missing"] == ["lead.cf.1"] and data["encoding"] == "ucs2"
    with_phone = api.post("/api/v1/templates/preview/", {"text": "{{contact.name}}", "entity_type": "leads",
                                                         "entity_id": amocrm.ids_["lead"], "phone": "+79031112233"})
    assert with_phone.json()["text"] == "Пётр"


@pytest.mark.parametrize("payload,code,status", [
    ({"text": "x", "entity_type": "leads"}, "invalid", 400),
    ({"text": "x", "entity_id": 1}, "invalid", 400),
    ({"text": "x", "entity_type": "leads", "entity_id": 1, "context": {}}, "invalid", 400),
    ({"text": "x", "phone": "+79123456789"}, "invalid", 400),
    ({"text": "x", "entity_type": "leads", "entity_id": 123}, "not_found", 404),
    ({"text": "x", "entity_type": "leads", "entity_id": "LEAD"}, "invalid", 400),
])
def test_preview_by_entity_refusals(api, amocrm, payload, code, status):
    response = api.post("/api/v1/templates/preview/", payload)
    assert response.status_code == status and response.json()["code"] == code, response.content


def test_the_limits_api_shows_and_tightens_the_crm_caps(api, account, settings):
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 100
    data = api.get("/api/v1/limits/").json()
    assert data["ceilings"]["crm_user_per_hour"] == 100 and data["own"]["crm_user_per_hour"] is None
    too_loose = api.put("/api/v1/limits/", {"crm_user_per_hour": 500})
    assert too_loose.status_code == 400 and "crm_user_per_hour" in too_loose.json()["errors"]
    tighter = api.put("/api/v1/limits/", {"crm_user_per_hour": 20})
    assert tighter.status_code == 200 and tighter.json()["effective"]["crm_user_per_hour"] == 20
