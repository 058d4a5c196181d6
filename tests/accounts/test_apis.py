"""The account API: authentication, permissions, CORS, the provider catalogue and routes."""

import json

import pytest
from django.db import connection

from accounts.models import Account
from routes.models import ProviderRoute
from deliveries.models import Delivery, DeliveryKind
from routes.providers import PROVIDERS
from deliveries.tasks import delivery_send

pytestmark = pytest.mark.django_db

ROUTES = "/api/v1/routes/"


def route_url(route, suffix=""):
    return f"{ROUTES}{route.pk}/{suffix}"


@pytest.fixture
def route(smsru_route):
    return smsru_route(sender="ACME")


# --- authentication and permissions ------------------------------------------------------------------
def test_no_token_is_401_with_www_authenticate(client, account):
    response = client.get("/api/v1/account/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("X-Auth-Token")
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("claims, code", [
    ({"secret": "x" * 64}, "bad_signature"),
    ({"exp": 1000, "iat": 900, "nbf": 900}, "token_expired"),
    ({"aud": "https://elsewhere.example.com"}, "bad_audience"),
    ({"iss": "https://acme.evil.com"}, "bad_issuer"),
])
def test_a_bad_token_is_401_with_its_reason(client, make_token, account, claims, code):
    response = client.get("/api/v1/account/", HTTP_X_AUTH_TOKEN=make_token(**claims))
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert "WWW-Authenticate" in response


def test_garbage_token_is_401(client, account):
    for token in ("", "abc", "a.b.c", "я" * 10, "x" * 5000):
        response = client.get("/api/v1/account/", HTTP_X_AUTH_TOKEN=token)
        assert response.status_code == 401, token


def test_a_repeated_jti_is_accepted_on_the_api(api, make_token):
    token = make_token(jti="same-token-id")
    for _ in range(3):
        assert api.get("/api/v1/account/", token=token).status_code == 200


def test_the_account_answers_who_calls(api, viewer_api):
    body = api.get("/api/v1/account/").json()
    assert body == {"amo_id": 12345, "subdomain": "acme", "domain": "amocrm.ru", "is_active": True,
                    "is_admin": True, "route_count": 0}
    assert viewer_api.get("/api/v1/account/").json()["is_admin"] is False


def test_a_first_token_registers_the_account(client, make_token, integration):
    token = make_token(account_id=424242, iss="https://newco.amocrm.com", subdomain="newco")
    assert client.get("/api/v1/routes/", HTTP_X_AUTH_TOKEN=token).status_code == 200
    assert Account.objects.get(amo_id=424242).host == "newco.amocrm.com"


def test_a_disabled_account_gets_403_everywhere(api, account, route):
    Account.objects.filter(pk=account.pk).update(is_active=False, disabled_reason="uninstalled in amoCRM")
    for response in (api.get("/api/v1/account/"), api.get(ROUTES), api.get("/api/v1/providers/"),
                     api.get("/api/v1/deliveries/"), api.get("/api/v1/stats/"),
                     api.patch(route_url(route), {"sender": "X"}), api.get(route_url(route, "balance/"))):
        assert response.status_code == 403
        assert response.json()["code"] == "account_disabled"


def test_writes_need_an_administrator(viewer_api, route):
    assert viewer_api.get(ROUTES).status_code == 200
    attempts = [
        viewer_api.post(ROUTES, {"provider": "console"}),
        viewer_api.patch(route_url(route), {"sender": "X"}),
        viewer_api.put(route_url(route), {"provider": "smsru"}),
        viewer_api.delete(route_url(route)),
        viewer_api.post(route_url(route, "test-sms/"), {"phone": "+79123456789"}),
        viewer_api.post(ROUTES + "reorder/", {"ids": [route.pk]}),
    ]
    for response in attempts:
        assert response.status_code == 403
        assert response.json()["code"] == "admin_required"
    assert ProviderRoute.objects.get(pk=route.pk).sender == "ACME"
    assert not Delivery.objects.exists()


def test_errors_come_in_the_requested_language(client, account):
    en = client.get("/api/v1/account/", HTTP_ACCEPT_LANGUAGE="en").json()["detail"]
    ru = client.get("/api/v1/account/", HTTP_ACCEPT_LANGUAGE="ru").json()["detail"]
    assert en == "Authentication credentials were not provided."
    assert ru != en and any("а" <= ch <= "я" for ch in ru.lower())


def test_own_error_messages_are_translated(viewer_api, route):
    en = viewer_api.delete(route_url(route), HTTP_ACCEPT_LANGUAGE="en").json()["detail"]
    ru = viewer_api.delete(route_url(route), HTTP_ACCEPT_LANGUAGE="ru").json()["detail"]
    assert en == "Only an amoCRM account administrator can change these settings."
    assert ru.startswith("Только администратор")


# --- CORS ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin, allowed", [
    ("https://acme.amocrm.ru", True),
    ("https://acme.amocrm.com", True),
    ("https://acme.kommo.com", True),
    ("http://acme.amocrm.ru", False),
    ("https://amocrm.ru.evil.com", False),
    ("https://evil.com", False),
    ("https://acme.amocrm.ru:8443", False),
    ("null", False),
])
def test_cors_allows_only_amocrm_and_kommo_accounts(client, origin, allowed):
    response = client.options(ROUTES, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-auth-token, content-type")
    assert (response.get("Access-Control-Allow-Origin") == origin) is allowed
    if allowed:
        assert "x-auth-token" in response["Access-Control-Allow-Headers"]


def test_cors_headers_only_on_the_api(client):
    response = client.options("/amocrm/sms", HTTP_ORIGIN="https://acme.amocrm.ru",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert "Access-Control-Allow-Origin" not in response


# --- the provider catalogue -------------------------------------------------------------------------------
def test_the_catalogue_lists_every_registered_provider_with_its_credentials(api):
    body = api.get("/api/v1/providers/", HTTP_ACCEPT_LANGUAGE="en").json()
    assert [p["slug"] for p in body] == list(PROVIDERS)
    for entry in body:
        cls = PROVIDERS[entry["slug"]]
        assert entry["name"] == cls.name
        assert [f["name"] for f in entry["credential_fields"]] == [f.name for f in cls.credential_fields]
        for field, declared in zip(entry["credential_fields"], cls.credential_fields):
            assert field["label"] == declared.label["en"]
            assert (field["secret"], field["required"]) == (declared.secret, declared.required)
    smsru = next(p for p in body if p["slug"] == "smsru")
    assert smsru["supports_callbacks"] and smsru["supports_balance"]


def test_the_catalogue_labels_follow_the_language(api):
    ru = api.get("/api/v1/providers/", HTTP_ACCEPT_LANGUAGE="ru").json()
    smsru = next(p for p in ru if p["slug"] == "smsru")
    assert smsru["credential_fields"][0]["label"] == PROVIDERS["smsru"].credential_fields[0].label["ru"]


# --- routes -------------------------------------------------------------------------------------------------
def test_create_a_route_secrets_are_write_only(api, account):
    response = api.post(ROUTES, {"provider": "smsru", "sender": "ACME", "credentials": {"api_id": "s3cr3t-key"}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert "s3cr3t-key" not in response.content.decode()
    assert "credentials" not in body
    assert body["secrets_set"] == {"api_id": True} and body["public_credentials"] == {}
    assert body["provider_name"] == "SMS.ru" and body["health"] == {"status": "ok", "reason": "", "since": None}
    route = ProviderRoute.objects.get(pk=body["id"])
    assert route.account == account and route.credentials == {"api_id": "s3cr3t-key"}
    assert body["callback_url"].endswith(f"/webhooks/smsru/{route.callback_token}/")
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM accounts_providerroute WHERE id = %s", [route.pk])
        assert "s3cr3t-key" not in cursor.fetchone()[0]
    listed = api.get(ROUTES)
    assert listed.json() == [body] and "s3cr3t-key" not in listed.content.decode()


def test_a_provider_without_credentials_and_callbacks(api):
    body = api.post(ROUTES, {"provider": "console"}).json()
    assert body["secrets_set"] == {} and body["callback_url"] is None


@pytest.mark.parametrize("payload, field", [
    ({"provider": "nope", "credentials": {}}, "provider"),
    ({"provider": "smsru"}, "credentials"),
    ({"provider": "smsru", "credentials": {"api_id": ""}}, "credentials"),
    ({"provider": "smsru", "credentials": {"api_id": "k", "password": "x"}}, "credentials"),
    ({"provider": "smsru", "credentials": {"api_id": "k"}, "sender": "S" * 21}, "sender"),
    ({"provider": "smsru", "credentials": {"api_id": "k"}, "priority": -1}, "priority"),
    ({"provider": "smsru", "credentials": {"api_id": "k" * 501}}, "credentials"),
    ({"provider": "smsru", "credentials": ["api_id"]}, "credentials"),
])
def test_invalid_routes_are_400_with_the_field(api, payload, field):
    response = api.post(ROUTES, payload)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]
    assert not ProviderRoute.objects.exists()


def test_a_body_that_is_not_json_is_400(api):
    response = api.client.post(ROUTES, "{not json", content_type="application/json",
                               HTTP_X_AUTH_TOKEN=api.make_token())
    assert response.status_code == 400


def test_update_empty_secret_keeps_the_stored_one(api, route):
    ProviderRoute.objects.filter(pk=route.pk).update(is_broken=True, broken_reason="auth: 200")
    response = api.patch(route_url(route), {"sender": "NEW", "credentials": {"api_id": ""}})
    assert response.status_code == 200
    route.refresh_from_db()
    assert route.sender == "NEW" and route.credentials == {"api_id": "test-api-id"}
    assert route.is_broken  # same credentials: still broken
    response = api.patch(route_url(route), {"credentials": {"api_id": "fresh"}})
    assert response.json()["health"]["status"] == "ok"
    route.refresh_from_db()
    assert route.credentials == {"api_id": "fresh"} and not route.is_broken


def test_broken_route_shows_why(api, route):
    ProviderRoute.objects.filter(pk=route.pk).update(is_broken=True, broken_reason="auth: 200 Неправильный api_id")
    health = api.get(route_url(route)).json()["health"]
    assert health["status"] == "broken" and "api_id" in health["reason"]


@pytest.mark.parametrize("bad", ["abc", "0", "99999999", "1.5", "-1"])
def test_unknown_or_malformed_route_ids_are_a_json_404(api, route, bad):
    for response in (api.get(f"{ROUTES}{bad}/"), api.patch(f"{ROUTES}{bad}/", {"sender": "X"}),
                     api.delete(f"{ROUTES}{bad}/"), api.get(f"{ROUTES}{bad}/balance/")):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_the_provider_of_a_route_cannot_change(api, route):
    response = api.patch(route_url(route), {"provider": "console"})
    assert response.status_code == 400 and "provider" in response.json()["errors"]


def test_put_replaces_fields_but_keeps_secrets(api, route):
    response = api.put(route_url(route), {"provider": "smsru", "sender": "", "priority": 5, "is_active": False})
    assert response.status_code == 200, response.content
    route.refresh_from_db()
    assert (route.sender, route.priority, route.is_active) == ("", 5, False)
    assert route.credentials == {"api_id": "test-api-id"}


def test_delete_a_route_keeps_its_deliveries(api, route, account):
    api.post(route_url(route, "test-sms/"), {"phone": "+79123456789"})
    assert api.delete(route_url(route)).status_code == 204
    assert not ProviderRoute.objects.filter(pk=route.pk).exists()
    assert Delivery.objects.get().route is None


def test_reorder_sets_priorities_in_the_given_order(api, smsru_route):
    first, second, third = smsru_route(priority=1), smsru_route(priority=2), smsru_route(priority=3)
    response = api.post(ROUTES + "reorder/", {"ids": [third.pk, first.pk, second.pk]})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()] == [third.pk, first.pk, second.pk]
    assert [r["id"] for r in api.get(ROUTES).json()] == [third.pk, first.pk, second.pk]
    assert api.post(ROUTES + "reorder/", {"ids": [third.pk, first.pk]}).status_code == 400
    assert api.post(ROUTES + "reorder/", {"ids": [third.pk, first.pk, first.pk]}).status_code == 400
    assert api.post(ROUTES + "reorder/", {"ids": []}).status_code == 400


# --- test SMS and balance -----------------------------------------------------------------------------------
def test_send_a_test_sms_through_one_route(api, route, fake_smsru):
    response = api.post(route_url(route, "test-sms/"), {"phone": "+7 912 345-67-89"})
    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get(pk=response.json()["id"])
    assert (delivery.kind, delivery.route, delivery.phone) == (DeliveryKind.TEST, route, "+79123456789")
    delivery_send(str(delivery.pk))  # what the worker does
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.provider == "smsru"
    [message] = fake_smsru.sent_to("79123456789")
    assert message["from"] == "ACME"


def test_test_sms_refusals(api, route, smsru_route):
    bad = api.post(route_url(route, "test-sms/"), {"phone": "12"})
    assert bad.status_code == 400 and "phone" in bad.json()["errors"]
    assert api.post(route_url(route, "test-sms/"), {}).status_code == 400
    inactive = smsru_route(is_active=False)
    refused = api.post(route_url(inactive, "test-sms/"), {"phone": "+79123456789"})
    assert refused.status_code == 422 and refused.json()["code"] == "no_route"
    assert not Delivery.objects.exists()


def test_balance_of_a_route(api, route, fake_smsru):
    response = api.get(route_url(route, "balance/"))
    assert response.status_code == 200
    assert response.json() == {"amount": "4122.56", "currency": "RUB"}


def test_balance_errors_are_clear(api, smsru_route, fake_smsru):
    wrong = smsru_route(api_id="wrong")
    response = api.get(route_url(wrong, "balance/"), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 502 and response.json()["code"] == "provider_auth"
    console = api.post(ROUTES, {"provider": "console"}).json()
    response = api.get(f"{ROUTES}{console['id']}/balance/")
    assert response.status_code == 422 and response.json()["code"] == "balance_unsupported"


# --- one account never reaches another's data ----------------------------------------------------------------
def test_routes_of_another_account_are_invisible_and_untouchable(other_api, route, fake_smsru):
    assert other_api.get(ROUTES).json() == []
    assert other_api.get(route_url(route)).status_code == 404
    assert other_api.patch(route_url(route), {"sender": "HIJACK"}).status_code == 404
    assert other_api.put(route_url(route), {"provider": "smsru", "sender": "HIJACK"}).status_code == 404
    assert other_api.delete(route_url(route)).status_code == 404
    assert other_api.post(route_url(route, "test-sms/"), {"phone": "+79123456789"}).status_code == 404
    assert other_api.get(route_url(route, "balance/")).status_code == 404
    assert other_api.post(ROUTES + "reorder/", {"ids": [route.pk]}).status_code == 400
    route.refresh_from_db()
    assert route.sender == "ACME" and route.priority == 10
    assert not Delivery.objects.exists() and fake_smsru.requests == []


def test_a_created_route_belongs_to_the_caller(api, other_api, account, other_account):
    other_api.post(ROUTES, {"provider": "console", "account": account.pk})
    assert ProviderRoute.objects.get().account == other_account
    assert api.get(ROUTES).json() == []


def test_account_and_catalogue_speak_only_of_the_caller(api, other_api, route):
    assert other_api.get("/api/v1/account/").json()["route_count"] == 0
    assert api.get("/api/v1/account/").json()["route_count"] == 1
    assert json.dumps(other_api.get("/api/v1/providers/").json()) == json.dumps(api.get("/api/v1/providers/").json())
