"""Salesbot's "send SMS" step: POST /amocrm/salesbot with bodies and bot tokens made by the fake amoCRM the way
amoCRM makes them (HS512, no client_uuid, no jti), then the request's steps (crm.salesbot) against the fake amoCRM
over real HTTP: the lead and its contact read, the SMS sent through crm.sending (a real provider call to the fake
SMS.ru), and the bot continued at the fake with exit "sent" or "failed". Forged, expired and other-algorithm
tokens, duplicates, timeouts, amoCRM failing, and hostile input (4xx JSON, never a 5xx)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import CrmMessage, SalesbotRequest, SmsTemplate
from crm.salesbot import salesbot_request_process, salesbot_requests_due
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.dispatch import deliveries_send
from deliveries.services.status import delivery_move

from .conftest import AMO_ID

pytestmark = pytest.mark.django_db

URL = "/amocrm/salesbot"
AUD = "https://smsgate.example.com"  # the audience of tests.conftest.REDIRECT_URI


@pytest.fixture(autouse=True)
def _no_caps(settings):
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0


def call(client, body, **headers):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    return client.generic("POST", URL, raw, content_type=headers.pop("content_type", "application/json"), **headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "code"} and body["code"] == code and body["detail"]
    return body


def bot_body(amocrm, *, data=None, **options):
    options.setdefault("aud", AUD)
    return amocrm.salesbot_request(AMO_ID, entity_id=options.pop("entity_id", amocrm.ids_["lead"]),
                                   data={"text": "Ольга, ваш заказ готов."} if data is None else data, **options)


def run_until_settled(request_id, *, send=True, steps=20):
    """Run the request's steps as the worker would (its queued task), sending its SMS through the provider once
    it is accepted; returns the request once it is no longer open."""
    for _ in range(steps):
        again = salesbot_request_process(request_id=request_id)
        request = SalesbotRequest.objects.get(pk=request_id)
        if send and request.delivery_id and Delivery.objects.get(pk=request.delivery_id).status == "pending":
            deliveries_send(delivery_ids=[request.delivery_id])
        if again is None:
            return request
    raise AssertionError(f"not settled: {request.state}")


# --- the endpoint ------------------------------------------------------------------------------------------------
def test_a_signed_bot_call_is_recorded_and_answered_at_once(client, amocrm, account):
    body = bot_body(amocrm, data={"text": "Ольга, ваш заказ готов.", "template_id": ""})
    response = call(client, body)
    assert response.status_code == 200 and response.json() == {"status": "accepted"}
    request = SalesbotRequest.objects.get()
    bot_id, continue_id = map(int, body["return_url"].split("/")[-3::2])
    assert (request.account, request.bot_kind, request.bot_id, request.continue_id, request.entity_type,
            request.entity_id, request.text, request.template_id, request.state) == (
        account, "salesbot", bot_id, continue_id, "leads", amocrm.ids_["lead"], "Ольга, ваш заказ готов.", None,
        "pending")
    assert timedelta(seconds=59) < request.deadline_at - request.received_at <= timedelta(seconds=60)
    assert amocrm.request_log(AMO_ID) == []  # nothing is read from amoCRM before the answer


def test_the_same_continue_id_twice_is_recorded_once(client, amocrm):
    body = bot_body(amocrm)
    assert call(client, body).json() == {"status": "accepted"}
    assert call(client, body).json() == {"status": "duplicate"}
    assert SalesbotRequest.objects.count() == 1


def test_a_forged_token_is_refused(client, amocrm):
    response = call(client, bot_body(amocrm, secret="forged-" + "x" * 57))
    assert_error(response, 401, "bad_signature")
    assert not SalesbotRequest.objects.exists()


def test_an_expired_token_is_refused(client, amocrm):
    issued = int(timezone.now().timestamp()) - 3600
    assert_error(call(client, bot_body(amocrm, issued_at=issued)), 401, "token_expired")


@pytest.mark.parametrize("algorithm", ["HS256", "HS384"])
def test_a_bot_token_of_another_algorithm_is_refused(client, amocrm, algorithm):
    assert_error(call(client, bot_body(amocrm, algorithm=algorithm)), 401, "unsupported_bot_algorithm")


def test_a_bot_token_for_another_audience_or_without_one_is_refused(client, amocrm):
    assert_error(call(client, bot_body(amocrm, aud="https://evil.example.com")), 401, "unknown_integration")
    body = bot_body(amocrm)
    body["token"] = amocrm.salesbot_request(AMO_ID, entity_id=1, aud=None)["token"]
    assert_error(call(client, body), 401, "unknown_integration")


def test_an_account_that_has_not_installed_the_widget_is_refused(client, amocrm):
    amocrm.add_account(999, subdomain="other")
    body = amocrm.salesbot_request(999, entity_id=1, aud=AUD, data={"text": "x"})
    assert_error(call(client, body), 403, "account_not_connected")


def test_a_disabled_account_is_refused(client, amocrm, account):
    account.is_active = False
    account.save()
    from accounts.selectors import forget_account
    forget_account()
    assert_error(call(client, bot_body(amocrm)), 403, "account_disabled")


@pytest.mark.parametrize("claims", [
    {"entity_type": "два"}, {"entity_type": 7}, {"entity_id": -1}, {"entity_id": 2**63}, {"entity_id": "١٢٣"},
    {"account_id": True}, {"bot_type": "evilbot"}, {"iss": "https://evil.example.com"}, {"subdomain": "beta"},
])
def test_a_signed_token_with_bad_claims_is_refused(client, amocrm, claims):
    assert_error(call(client, bot_body(amocrm, extra_claims=claims)), 401, "invalid_claim" if "iss" not in claims
                 and "subdomain" not in claims else "bad_issuer")


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b.update(return_url="https://acme.amocrm.ru/api/v4/leads/1"), "return_url"),
    (lambda b: b.update(return_url="https://acme.amocrm.ru/api/v4/salesbot/１/continue/2"), "return_url"),
    (lambda b: b.update(return_url=12), "return_url"),
    (lambda b: b.pop("return_url"), "return_url"),
    (lambda b: b.update(data="text"), "data"),
    (lambda b: b.update(data={"text": ""}), "data.text"),
    (lambda b: b.update(data={"text": "x" * 2001}), "data.text"),
    (lambda b: b.update(data={"text": "a\x00b"}), "data.text"),
    (lambda b: b.update(data={"text": ["x"]}), "data.text"),
    (lambda b: b.update(data={"template_id": "１２"}), "data.template_id"),
    (lambda b: b.update(data={"template_id": 2**70}), "data.template_id"),
    (lambda b: b.update(data={"template_id": True}), "data.template_id"),
])
def test_a_call_that_cannot_be_read_is_a_400(client, amocrm, mutate, field):
    body = bot_body(amocrm)
    mutate(body)
    response = assert_error(call(client, body), 400, "invalid")
    assert field in response["detail"]
    assert not SalesbotRequest.objects.exists()


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b"\xff\xfe", b"{" * 50 + b"}" * 50, b'{"token": 1',
                                 json.dumps({"a": [[[[[[[[1]]]]]]]]}).encode()])
def test_a_body_that_is_not_a_json_object_is_a_400(client, db, raw):
    assert_error(call(client, raw), 400, "bad_body")


def test_hostile_token_values_are_401(client, amocrm):
    for token in (None, 12, "", "x" * 5000, "ключ", "a.b.c", {"alg": "none"}):
        body = bot_body(amocrm)
        body["token"] = token
        assert call(client, body).status_code == 401


def test_an_oversized_body_is_a_413(client, db):
    response = call(client, b'{"token": "' + b"x" * 40000 + b'"}')
    assert_error(response, 413, "body_too_large")


def test_other_methods(client, db):
    assert client.get(URL).status_code == 200
    response = client.put(URL, b"{}", content_type="application/json")
    assert_error(response, 405, "method_not_allowed")


def test_errors_speak_the_request_language(client, amocrm):
    response = call(client, bot_body(amocrm, secret="forged-" + "x" * 57), HTTP_ACCEPT_LANGUAGE="ru")
    assert response.json()["detail"] == "Подпись токена неверна."


# --- the steps: send, look, continue --------------------------------------------------------------------------------
def test_the_sms_goes_out_and_the_bot_is_continued_through_sent(client, amocrm, account, smsru_route, fake_smsru):
    smsru_route(sender="ACME")
    body = bot_body(amocrm, bot_id=321)
    call(client, body)
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.state, request.exit, request.reason, request.phone) == ("done", "sent", "", "+7 912 345-67-89")
    [sms] = fake_smsru.sent_to("79123456789")
    assert sms["msg"] == "Ольга, ваш заказ готов."
    delivery = Delivery.objects.get(pk=request.delivery_id)
    assert delivery.kind == DeliveryKind.SALESBOT and delivery.status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)
    message = CrmMessage.objects.get(pk=delivery.pk)
    assert (message.origin, message.entity_type, message.entity_id, message.dedupe_key, message.note_state) == (
        "salesbot", "leads", amocrm.ids_["lead"], f"bot:{request.continue_id}", "pending")
    [done] = amocrm.salesbot_continues(AMO_ID)
    assert (done.bot_kind, done.bot_id, done.continue_id, done.data) == ("salesbot", 321, request.continue_id,
                                                                        {"status": "sent"})
    assert amocrm.pending_continues(AMO_ID) == []
    # Run again (a redelivered task, the sweeper): nothing more is sent or continued.
    assert salesbot_request_process(request_id=request.pk) is None
    assert len(fake_smsru.sent_to("79123456789")) == 1 and len(amocrm.salesbot_continues(AMO_ID)) == 1


def test_a_template_is_filled_in_from_the_lead_and_its_contact(client, amocrm, account, smsru_route, fake_smsru):
    smsru_route()
    template = SmsTemplate.objects.create(account=account, name="Готово", text="{{contact.first_name}}, «{{lead.name}}» готов.")
    call(client, bot_body(amocrm, data={"template_id": str(template.pk)}))
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert request.exit == "sent"
    assert fake_smsru.sent_to("79123456789")[0]["msg"] == "Ольга, «Кухня на заказ» готов."
    assert CrmMessage.objects.get().template_id == template.pk


def test_another_accounts_template_is_not_used(client, amocrm, other_account, smsru_route, fake_smsru):
    smsru_route()
    template = SmsTemplate.objects.create(account=other_account, name="Чужой", text="чужой текст")
    call(client, bot_body(amocrm, data={"template_id": template.pk}))
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.exit, request.reason) == ("failed", "no_text")
    assert not Delivery.objects.exists()
    assert amocrm.salesbot_continues(AMO_ID)[0].data == {"status": "failed", "reason": "no_text"}


def test_a_bot_on_a_contact_sends_to_its_phone(client, amocrm, smsru_route, fake_smsru):
    smsru_route()
    body = bot_body(amocrm, entity_type=1, entity_id=amocrm.ids_["other"])
    call(client, body)
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.entity_type, request.exit, request.phone) == ("contacts", "sent", "+79031112233")


def test_a_lead_without_a_phone_continues_through_failed(client, amocrm, smsru_route):
    smsru_route()
    lead = amocrm.add_lead(AMO_ID, name="Без телефона", contacts=[amocrm.add_contact(AMO_ID, name="Нет")])
    call(client, bot_body(amocrm, entity_id=lead))
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.state, request.exit, request.reason) == ("done", "failed", "no_phone")
    assert amocrm.salesbot_continues(AMO_ID)[0].data == {"status": "failed", "reason": "no_phone"}


def test_a_customer_bot_continues_through_failed(client, amocrm, smsru_route):
    smsru_route()
    call(client, bot_body(amocrm, entity_type=12, entity_id=5))
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.exit, request.reason) == ("failed", "entity_type")


def test_a_refused_send_continues_through_failed(client, amocrm):
    call(client, bot_body(amocrm))  # no route of the account's own
    request = run_until_settled(SalesbotRequest.objects.get().pk)
    assert (request.state, request.exit, request.reason) == ("done", "failed", "no_route")
    assert amocrm.salesbot_continues(AMO_ID)[0].data["status"] == "failed"


def test_a_provider_refusal_continues_through_failed(client, amocrm, smsru_route):
    smsru_route()
    call(client, bot_body(amocrm))
    request_id = SalesbotRequest.objects.get().pk
    assert salesbot_request_process(request_id=request_id) == 1.0  # sent, now waiting for the provider
    request = SalesbotRequest.objects.get(pk=request_id)
    assert request.state == "waiting"
    delivery_move(delivery_id=request.delivery_id, to=DeliveryStatus.REJECTED,
                  values={"error_code": "invalid_phone", "error_text": "refused"})
    request = run_until_settled(request_id, send=False)
    assert (request.exit, request.reason) == ("failed", "invalid_phone")


def test_no_answer_from_the_provider_by_the_deadline_is_failed(client, amocrm, smsru_route):
    smsru_route()
    call(client, bot_body(amocrm))
    request_id = SalesbotRequest.objects.get().pk
    assert salesbot_request_process(request_id=request_id) == 1.0
    assert salesbot_request_process(request_id=request_id) == 1.0  # still pending at the provider: look again
    SalesbotRequest.objects.filter(pk=request_id).update(deadline_at=timezone.now() - timedelta(seconds=1))
    request = run_until_settled(request_id, send=False)
    assert (request.exit, request.reason) == ("failed", "timeout")
    assert amocrm.salesbot_continues(AMO_ID)[0].data == {"status": "failed", "reason": "timeout"}


def test_amocrm_down_then_up_reads_again(client, amocrm, smsru_route, fake_smsru):
    smsru_route()
    call(client, bot_body(amocrm))
    request_id = SalesbotRequest.objects.get().pk
    amocrm.fail_next(4, 503)  # every attempt of one read (AmoClient retries 4 times)
    again = salesbot_request_process(request_id=request_id)
    assert again is not None and SalesbotRequest.objects.get(pk=request_id).state == "pending"
    request = run_until_settled(request_id)
    assert (request.exit, request.attempts) == ("sent", 2)


def test_a_continue_whose_answer_was_lost_is_not_repeated(client, amocrm, smsru_route, fake_smsru):
    smsru_route()
    call(client, bot_body(amocrm))
    request_id = SalesbotRequest.objects.get().pk
    salesbot_request_process(request_id=request_id)
    deliveries_send(delivery_ids=[SalesbotRequest.objects.get(pk=request_id).delivery_id])
    amocrm.fail_next(1, "drop")  # the continue POST loses its connection: it may have landed (AmoAmbiguous)
    request = run_until_settled(request_id)
    assert (request.state, request.exit) == ("done", "sent")
    assert len(amocrm.salesbot_continues(AMO_ID)) == 1


def test_a_bot_that_no_longer_waits_is_recorded(client, amocrm, smsru_route):
    call(client, bot_body(amocrm))
    request_id = SalesbotRequest.objects.get().pk
    with amocrm._state:
        amocrm.account(AMO_ID).salesbot_pending.clear()
    request = run_until_settled(request_id)
    assert (request.state, request.exit, request.reason) == ("gave_up", "failed", "bot_not_waiting")


def test_the_sweeper_finds_requests_whose_look_is_overdue(client, amocrm):
    call(client, bot_body(amocrm))
    request = SalesbotRequest.objects.get()
    assert salesbot_requests_due() == []
    SalesbotRequest.objects.filter(pk=request.pk).update(next_at=timezone.now() - timedelta(seconds=30))
    assert salesbot_requests_due() == [request.pk]
    run_until_settled(request.pk)
    assert salesbot_requests_due() == []


def test_no_text_phone_or_token_in_logs(client, amocrm, smsru_route, fake_smsru, caplog):
    smsru_route()
    body = bot_body(amocrm)
    with caplog.at_level("DEBUG"):
        call(client, body)
        call(client, {**body, "token": body["token"][:-4] + "AAAA"})
        run_until_settled(SalesbotRequest.objects.get().pk)
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "ваш заказ" not in text and "9123456789" not in text and body["token"] not in text
