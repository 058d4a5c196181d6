"""POST /amocrm/sms: the contract amoCRM relies on."""

import json

import pytest

from accounts.models import Account
from deliveries.models import Delivery, DeliveryStatus
from smsgate.celery import app as celery_app

URL = "/amocrm/sms"
pytestmark = pytest.mark.django_db


def queued_task_ids(queue="sms-system"):
    """Delivery ids waiting in the (in-memory) broker queue."""
    ids = []
    with celery_app.connection_for_write() as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                break
            ids.append(message.headers["argsrepr"].strip("[]()',"))
            message.ack()
        simple.close()
    return ids


@pytest.fixture(autouse=True)
def _empty_queue():
    queued_task_ids()


@pytest.fixture
def post(client, make_token, django_capture_on_commit_callbacks):
    def post(phone="+79123456789", text="Код для входа: 834622", token=None, url=URL, **headers):
        data = {"phone": phone, "text": text, "token": token or make_token()}
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, {k: v for k, v in data.items() if v is not None}, **headers)

    return post


@pytest.fixture
def with_route(smsru_route):
    return smsru_route()


def test_happy_path_records_and_queues(post, with_route):
    response = post()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pending"
    delivery = Delivery.objects.get(pk=body["id"])
    assert delivery.phone == "+79123456789"
    assert delivery.text == "Код для входа: 834622"
    assert (delivery.encoding, delivery.segments) == ("ucs2", 1)
    assert delivery.kind == "system" and delivery.status == DeliveryStatus.PENDING
    assert delivery.account.subdomain == "acme" and delivery.account.amo_id == 12345
    assert queued_task_ids() == [body["id"]]


def test_trailing_slash_is_the_same_endpoint_not_a_redirect(post, with_route):
    response = post(url=URL + "/")
    assert response.status_code == 200
    assert Delivery.objects.count() == 1


def test_account_is_registered_on_first_token(post, integration, smsru_route):
    Account.objects.all().delete()
    response = post()
    assert response.status_code == 422  # registered, but a new account has no route yet
    account = Account.objects.get()
    assert (account.integration, account.amo_id, account.subdomain, account.domain) == (
        integration, 12345, "acme", "amocrm.ru")


def test_json_body_is_accepted(client, make_token, with_route):
    body = {"phone": "+79123456789", "text": "Code 1234", "token": make_token()}
    response = client.post(URL, json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    assert Delivery.objects.get().encoding == "gsm7"


def test_replayed_jti_returns_the_same_delivery_and_sends_once(post, make_token, with_route):
    token = make_token(jti="same-jti")
    first = post(token=token)
    second = post(token=token)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert Delivery.objects.count() == 1
    assert queued_task_ids() == [first.json()["id"]]


def test_same_jti_in_two_accounts_is_two_deliveries(post, make_token, with_route, account):
    from routes.models import ProviderRoute

    other = Account.objects.create(integration=account.integration, amo_id=999, subdomain="beta")
    ProviderRoute.objects.create(account=other, provider="console")
    assert post(token=make_token(jti="j")).status_code == 200
    assert post(token=make_token(jti="j", account_id=999, iss="https://beta.amocrm.ru",
                                 subdomain="beta")).status_code == 200
    assert Delivery.objects.count() == 2


def test_disabled_account_gets_403(post, account, with_route):
    account.is_active = False
    account.save()
    response = post()
    assert response.status_code == 403
    assert response.json()["code"] == "account_disabled"
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    "phone,text,fields",
    [
        ("12345", "Код", ["phone"]),
        ("+7916123456", "Код", ["phone"]),  # too short
        ("+74951234567", "Код", ["phone"]),  # a Moscow landline cannot get an SMS
        ("not a phone", "Код", ["phone"]),
        ("", "Код", ["phone"]),
        (None, "Код", ["phone"]),
        ("+79123456789", "", ["text"]),
        ("+79123456789", "   ", ["text"]),
        ("+79123456789", None, ["text"]),
        ("+79123456789", "я" * 1001, ["text"]),
        ("+79123456789", "code\x00", ["text"]),
        ("+7" + "9" * 60, "x" * 2000, ["phone", "text"]),
    ],
)
def test_invalid_input_gets_400_with_field_errors(post, with_route, phone, text, fields):
    response = post(phone=phone, text=text)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert sorted(body["errors"]) == sorted(fields)
    assert all(body["errors"][f] for f in fields)
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("raw,e164", [("79123456789", "+79123456789"), ("+7 (912) 345-67-89", "+79123456789"),
                                      ("89123456789", "+79123456789"), ("+375291234567", "+375291234567")])
def test_common_phone_formats_are_normalised(post, with_route, raw, e164):
    response = post(phone=raw)
    assert response.status_code == 200
    assert Delivery.objects.get().phone == e164


def test_text_of_exactly_1000_characters_is_accepted(post, with_route):
    response = post(text="я" * 1000)
    assert response.status_code == 200
    assert Delivery.objects.get().segments == 15


def test_no_route_and_no_default_route_gets_422(post, account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = ""
    response = post()
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "no_route"
    assert "настройки виджета" in body["detail"]  # amoCRM sends no Accept-Language: Russian by default
    assert not Delivery.objects.exists()


def test_inactive_route_counts_as_no_route(post, smsru_route, settings):
    settings.SMSGATE_DEFAULT_ROUTE = ""
    smsru_route(is_active=False)
    assert post().status_code == 422


def test_default_route_serves_accounts_without_routes(post, account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    assert post().status_code == 200


@pytest.mark.parametrize(
    "body,content_type",
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('"a string"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
def test_unreadable_body_gets_400(client, integration, body, content_type):
    response = client.post(URL, body, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_body"


def test_json_with_wrong_types_never_500(client, make_token, with_route):
    body = {"phone": 79123456789, "text": ["Код"], "token": make_token()}
    response = client.post(URL, json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == ["phone", "text"]


def test_json_with_non_string_token_gets_401(client, integration):
    response = client.post(URL, json.dumps({"token": {"a": 1}, "phone": "+79123456789", "text": "x"}),
                           content_type="application/json")
    assert response.status_code == 401


def test_lone_surrogate_in_json_text_never_500(client, make_token, with_route):
    body = '{"phone": "+79123456789", "text": "\\ud800 code", "token": "%s"}' % make_token()
    response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert "text" in response.json()["errors"]


def test_get_answers_that_the_endpoint_is_reachable(client):
    response = client.get(URL)
    assert response.status_code == 200
    assert response.json()["method"] == "POST"


def test_other_methods_get_405(client):
    response = client.put(URL, "x")
    assert response.status_code == 405
    assert "POST" in response["Allow"]


def test_errors_speak_russian_when_asked(client, integration):
    response = client.post(URL, {"token": "garbage"}, HTTP_ACCEPT_LANGUAGE="ru")
    assert response.status_code == 401
    assert response.json()["detail"] == "Токен не является корректным JWT."


def test_errors_speak_english_when_asked(client, integration):
    response = client.post(URL, {"token": "garbage"}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.json()["detail"] == "The token is not a well-formed JWT."


def test_endpoint_logs_no_token_text_or_full_phone(post, with_route, caplog, make_token):
    token = make_token()
    caplog.set_level("DEBUG")
    post(token=token, text="Секретный код 834622")
    post(token="garbage." + token)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert token not in logged
    assert "834622" not in logged
    assert "+79123456789" not in logged
