"""No input from outside gets a 500 (issue 13, item 5): deep JSON, integers out of the database's
range, digits that are not ASCII 0-9, NUL and lone surrogates, on every machine endpoint. Each
answer is the endpoint's documented 4xx JSON error and nothing is recorded."""

import base64
import json

import pytest

from accounts.models import Account
from routes.models import ProviderRoute
from accounts.services import uninstall_signature
from deliveries.models import Delivery, StatusEvent, UnmatchedReport
from tests.conftest import SECRET, claims_for
from tests.fakes import twilio as fake_twilio
from tests.fakes.registry import FAKES
from tests.fuzz.test_properties import sign_raw

pytestmark = pytest.mark.django_db

SMS = "/amocrm/sms"
BIGINT_MAX = 2**63 - 1
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.fixture
def client(client):
    client.raise_request_exception = False  # a 500 is an answer here, not an exception in the test
    return client


def assert_json_error(response, status, code=None):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    if code is not None:
        assert body["code"] == code, body
    return body


# --- deep JSON --------------------------------------------------------------------------------------
def test_json_nested_100000_deep_on_the_sms_endpoint_is_a_400(client, integration):
    response = client.post(SMS, "[" * 100_000, content_type="application/json")
    assert_json_error(response, 400, "bad_body")


def test_json_nested_deeper_than_the_bound_inside_a_field_is_a_400(client, make_token, smsru_route):
    smsru_route()
    body = '{"phone": "+79123456789", "text": ' + "[" * 40 + "]" * 40 + f', "token": "{make_token()}"}}'
    assert_json_error(client.post(SMS, body, content_type="application/json"), 400, "bad_body")
    assert not Delivery.objects.exists()


def test_json_nested_50000_deep_on_the_api_is_a_400(client, make_token, account):
    response = client.post("/api/v1/routes/", "[" * 50_000, content_type="application/json",
                           HTTP_X_AUTH_TOKEN=make_token())
    assert_json_error(response, 400, "parse_error")
    assert not ProviderRoute.objects.exists()


def test_deep_json_in_a_utf16_body_cannot_slip_past_the_depth_bound(client, make_token, account):
    body = '{"provider": "console", "sender": "\\"", "x": ' + "[" * 5000 + "]" * 5000 + "}"  # sent as UTF-16
    response = client.post("/api/v1/routes/", body, content_type="application/json; charset=utf-16",
                           HTTP_X_AUTH_TOKEN=make_token())
    assert_json_error(response, 400, "parse_error")


# --- token claims out of the database's range ---------------------------------------------------------
def signed(integration, **claims) -> str:
    return sign_raw(claims_for(integration, **claims))


@pytest.mark.parametrize("claims", [{"account_id": 2**63}, {"account_id": 10**30}, {"user_id": 2**63},
                                    {"client_uuid": "6f1b7a52-2c3e-4d8a-9a0e-3c5d0f6a7b21".translate(FULLWIDTH)}])
def test_a_signed_token_with_a_claim_out_of_range_is_a_401_on_the_sms_endpoint_and_the_api(
        client, integration, smsru_route, claims):
    token = signed(integration, **claims)
    response = client.post(SMS, {"phone": "+79123456789", "text": "Код 1234", "token": token})
    assert_json_error(response, 401)
    assert_json_error(client.get("/api/v1/account/", HTTP_X_AUTH_TOKEN=token), 401)
    assert not Account.objects.exclude(amo_id=12345).exists()
    assert not Delivery.objects.exists()


def test_the_largest_bigint_account_id_is_a_valid_claim(client, integration):
    response = client.get("/api/v1/account/", HTTP_X_AUTH_TOKEN=signed(integration, account_id=BIGINT_MAX))
    assert response.status_code == 200 and response.json()["amo_id"] == BIGINT_MAX


# --- the uninstall hook and the OAuth redirect ---------------------------------------------------------
def uninstall(client, integration, account_id, client_uuid=None):
    client_uuid = client_uuid or str(integration.client_uuid)
    return client.get("/amocrm/uninstall", {
        "account_id": account_id, "client_uuid": client_uuid,
        "signature": uninstall_signature(client_secret=SECRET, client_uuid=client_uuid, account_id=account_id)})


@pytest.mark.parametrize("account_id", ["²", "¹²³⁴⁵", "12345".translate(ARABIC), "12345".translate(FULLWIDTH),
                                        str(2**63), "9" * 30, "012345", "+12345", " 12345", "12_345", "0"])
def test_uninstall_with_an_account_id_that_is_not_ascii_digits_in_range_is_a_400(client, account, integration,
                                                                                  account_id):
    assert_json_error(uninstall(client, integration, account_id), 400, "bad_request")
    assert Account.objects.get(pk=account.pk).is_active


def test_uninstall_of_the_largest_bigint_is_an_unknown_account(client, integration):
    response = uninstall(client, integration, str(BIGINT_MAX))
    assert response.status_code == 200 and response.json()["status"] == "unknown_account"


def test_uninstall_with_a_client_uuid_in_other_digits_is_a_400(client, account, integration):
    response = uninstall(client, integration, "12345", client_uuid=str(integration.client_uuid).translate(FULLWIDTH))
    assert_json_error(response, 400, "unknown_integration")
    assert Account.objects.get(pk=account.pk).is_active


@pytest.mark.parametrize("params, code", [
    ({"code": "def502\x00"}, "bad_code"),
    ({"code": "def502\ud800"}, "bad_code"),
    ({"referer": "acme.\u212aommo.com"}, "bad_referer"),  # KELVIN SIGN lower()s to an ASCII "k"
    ({"referer": "acme.amocrm.ru\x00"}, "bad_referer"),
    ({"client_id": "6f1b7a52-2c3e-4d8a-9a0e-3c5d0f6a7b21".translate(ARABIC)}, "unknown_integration"),
    ({"client_id": "\x00"}, "unknown_integration"),
])
def test_the_oauth_redirect_refuses_malformed_parameters_before_any_call(client, integration, settings, params,
                                                                         code):
    settings.AMO_OAUTH_BASE_URL = "http://127.0.0.1:9"  # a call would be a 502, not the 400 expected
    query = {"code": "def502", "referer": "acme.amocrm.ru", "client_id": str(integration.client_uuid), **params}
    raw = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    assert_json_error(client.get(f"/amocrm/oauth?{raw}"), 400, code)


def quote(value: str) -> str:
    from urllib.parse import quote as url_quote

    return url_quote(value, safe="", errors="surrogatepass")


# --- the account API: ids, numbers, cursors, dates, texts -------------------------------------------------------
@pytest.fixture
def route(smsru_route):
    return smsru_route()


def arabic(value) -> str:
    return str(value).translate(ARABIC)


def test_a_route_id_in_other_digits_or_out_of_range_is_a_404(api, route):
    for raw in (arabic(route.pk), str(route.pk).translate(FULLWIDTH), f"0{route.pk}", str(2**63), "9" * 40, "²"):
        for suffix in ("", "balance/"):
            assert_json_error(api.get(f"/api/v1/routes/{raw}/{suffix}"), 404, "not_found")
        assert_json_error(api.post(f"/api/v1/routes/{raw}/test-sms/", {"phone": "+79123456789"}), 404, "not_found")
    assert not Delivery.objects.exists()


def test_a_delivery_id_in_other_digits_is_a_404(api, account, route):
    from deliveries.services.intake import delivery_create

    delivery = delivery_create(account=account, phone="+79123456789", text="Код 1234").delivery
    assert api.get(f"/api/v1/deliveries/{delivery.pk}/").status_code == 200
    assert_json_error(api.get(f"/api/v1/deliveries/{str(delivery.pk).translate(FULLWIDTH)}/"), 404, "not_found")


@pytest.mark.parametrize("make_ids", [lambda pk: [arabic(pk)], lambda pk: [str(pk).translate(FULLWIDTH)],
                                      lambda pk: [2**63], lambda pk: [0], lambda pk: [-1], lambda pk: [f"{pk}_0"]])
def test_reorder_takes_only_ascii_ids_in_range(api, route, make_ids):
    assert_json_error(api.post("/api/v1/routes/reorder/", {"ids": make_ids(route.pk)}), 400, "invalid")
    assert api.post("/api/v1/routes/reorder/", {"ids": [str(route.pk)]}).status_code == 200


@pytest.mark.parametrize("field, value", [("priority", arabic(5)), ("priority", "5".translate(FULLWIDTH)),
                                          ("priority", "1_0"), ("priority", "²")])
def test_route_numbers_are_ascii_digits(api, route, field, value):
    assert_json_error(api.patch(f"/api/v1/routes/{route.pk}/", {field: value}), 400, "invalid")
    assert ProviderRoute.objects.get(pk=route.pk).priority == 10
    assert api.patch(f"/api/v1/routes/{route.pk}/", {field: "5"}).json()["priority"] == 5


@pytest.mark.parametrize("value", [arabic(12), "12".translate(FULLWIDTH), "1_2", "²"])
def test_limits_and_stats_numbers_are_ascii_digits(api, account, value):
    assert_json_error(api.put("/api/v1/limits/", {"phone_per_hour": value}), 400, "invalid")
    assert_json_error(api.get("/api/v1/stats/", {"days": value}), 400, "invalid")
    assert api.get("/api/v1/stats/", {"days": "12"}).json()["days"] == 12


def test_a_page_size_in_other_digits_is_ignored(api, account, route):
    from deliveries.services.intake import delivery_create

    for _ in range(3):
        delivery_create(account=account, phone="+79123456789", text="Код 1234")
    assert len(api.get("/api/v1/deliveries/", {"page_size": "1"}).json()["results"]) == 1
    assert len(api.get("/api/v1/deliveries/", {"page_size": arabic(1)}).json()["results"]) == 3


@pytest.mark.parametrize("position", ["x", "2024-01-01\x00", "99999-01-01 00:00", "2024-13-01 00:00:00+00:00"])
def test_a_forged_cursor_is_a_404(api, account, position):
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    assert_json_error(api.get("/api/v1/deliveries/", {"cursor": cursor}), 404, "not_found")


def test_dates_are_ascii_digits(api, account):
    assert api.get("/api/v1/deliveries/", {"created_from": "2024-01-01"}).status_code == 200
    assert_json_error(api.get("/api/v1/deliveries/", {"created_from": "2024-01-01".translate(FULLWIDTH)}), 400,
                      "invalid")


def test_a_credential_name_with_a_lone_surrogate_is_a_400(api, route, client, make_token):
    response = client.patch(f"/api/v1/routes/{route.pk}/", '{"credentials": {"api_id\\ud800": "x"}}',
                            content_type="application/json", HTTP_X_AUTH_TOKEN=make_token())
    assert_json_error(response, 400, "invalid")


@pytest.mark.parametrize("field", ["sender", "provider"])
def test_nul_and_lone_surrogates_in_route_texts_are_a_400(client, make_token, account, field):
    for raw in ('"a\\u0000"', '"a\\ud800"'):
        body = '{"provider": "console", "%s": %s}' % (field, raw) if field != "provider" else '{"provider": %s}' % raw
        response = client.post("/api/v1/routes/", body, content_type="application/json",
                               HTTP_X_AUTH_TOKEN=make_token())
        assert_json_error(response, 400, "invalid")
    assert not ProviderRoute.objects.exists()


# --- webhooks: every provider ------------------------------------------------------------------------------
PUBLIC = "https://smsgate.example.com"


@pytest.fixture
def hooks(account, settings):
    settings.SMSGATE_PUBLIC_URL = PUBLIC
    routes = {slug: ProviderRoute.objects.create(account=account, provider=slug, credentials=FAKES[slug]().credentials)
              for slug in ("smsc", "smsaero", "smsru", "twilio")}
    return routes


def hook_path(route) -> str:
    return f"/webhooks/{route.provider}/{route.callback_token}/"


def assert_refused_and_nothing_kept(response):
    assert_json_error(response, 400, "bad_report")
    assert not StatusEvent.objects.exists() and not UnmatchedReport.objects.exists()


def form(**fields) -> str:
    return "&".join(f"{k}={quote(v)}" for k, v in fields.items())


@pytest.mark.parametrize("fields", [{"id": "1\x00", "status": "1"}, {"id": "1", "status": "1", "ts": "1\x00"},
                                    {"id": "1", "status": "20", "err": "\x00"},
                                    {"id": "1", "status": "1", "x\x00": "y"}])
def test_smsc_reports_with_nul_are_400(client, hooks, fields):
    path = hook_path(hooks["smsc"])
    assert_refused_and_nothing_kept(client.post(path, form(**fields), content_type="application/x-www-form-urlencoded"))
    assert_refused_and_nothing_kept(client.get(f"{path}?{form(**fields)}"))


@pytest.mark.parametrize("body", ['{"id": "1\\u0000", "status": 1}', '{"id": "1", "status": 1, "x": "\\u0000"}',
                                  '{"id": "1", "status": 1, "x": "\\ud800"}', '{"id": "1", "status": 1, "\\ud800": 1}'])
def test_smsaero_reports_with_nul_or_lone_surrogates_are_400(client, hooks, body):
    response = client.post(hook_path(hooks["smsaero"]), body, content_type="application/json")
    assert_refused_and_nothing_kept(response)


def test_smsaero_deep_json_is_400(client, hooks):
    assert_json_error(client.post(hook_path(hooks["smsaero"]), "[" * 100_000, content_type="application/json"), 400,
                      "bad_report")


def test_smsru_signed_report_with_nul_is_400(client, hooks):
    route = hooks["smsru"]
    records = ["sms_status\n1\x00\n103\n1700000000"]
    body = {"data[]": records, "hash": FAKES["smsru"](api_id=route.credentials["api_id"]).sign(records)}
    assert_refused_and_nothing_kept(client.post(hook_path(route), body))


@pytest.mark.parametrize("extra", [{"MessageSid": "SM1\x00"}, {"ErrorCode": "\x00"}, {"MessageStatus": "sent\x00"}])
def test_twilio_signed_report_with_nul_is_400(client, hooks, extra):
    route = hooks["twilio"]
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "AccountSid": route.credentials["account_sid"],
              **extra}
    signature = fake_twilio.sign(route.credentials["auth_token"], PUBLIC + hook_path(route), params)
    assert_refused_and_nothing_kept(client.post(hook_path(route), params, HTTP_X_TWILIO_SIGNATURE=signature))


def test_webhook_numbers_are_ascii_digits(client, hooks):
    """A status code or an error code in other digits is not a number: SMSC's is not a report at all,
    Twilio's error code is kept as text, not read as 12."""
    response = client.post(hook_path(hooks["smsc"]), {"id": "1", "status": "²"})
    assert response.status_code == 200, response.content
    assert not UnmatchedReport.objects.exists()
    route = hooks["twilio"]
    params = {"MessageSid": "SM1", "MessageStatus": "undelivered", "AccountSid": route.credentials["account_sid"],
              "ErrorCode": arabic(30003)}
    signature = fake_twilio.sign(route.credentials["auth_token"], PUBLIC + hook_path(route), params)
    assert client.post(hook_path(route), params, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 204
    held = UnmatchedReport.objects.get()
    assert held.error_class == ""  # 30003 would be "unreachable"


# --- Django's own refusals on machine paths are JSON too --------------------------------------------------
@pytest.mark.parametrize("path", ["/webhooks/twilio/short/", "/webhooks/twilio/" + "a" * 65 + "/", "/amocrm/nope",
                                  "/api/v1/nope/"])
def test_an_unknown_machine_path_is_a_json_404(client, path):
    assert_json_error(client.post(path), 404, "not_found")


def test_too_many_fields_is_a_json_400(client, integration):
    body = "&".join(f"f{i}=x" for i in range(1100))
    response = client.post(SMS, body, content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 400, "bad_body")


def test_a_broken_multipart_body_is_a_json_400(client, integration):
    response = client.post(SMS, b"--x\r\nContent-Disposition: form-data\r\n\r\nbroken",
                           content_type="multipart/form-data; boundary=" + "x" * 300)  # an invalid boundary
    assert_json_error(response, 400, "bad_body")


def test_a_multipart_body_without_a_boundary_is_a_json_400(client, integration):
    response = client.post(SMS, b"phone=1", content_type="multipart/form-data")
    assert_json_error(response, 400, "bad_body")


def test_json_with_nan_is_refused(client, make_token, smsru_route):
    smsru_route()
    body = '{"phone": "+79123456789", "text": "Код 1234", "token": "%s", "x": NaN}' % make_token()
    assert_json_error(client.post(SMS, body, content_type="application/json"), 400, "bad_body")
    assert not Delivery.objects.exists()


def test_a_body_that_is_not_utf8_is_refused(client, make_token, smsru_route):
    smsru_route()
    body = json.dumps({"phone": "+79123456789", "text": "Код 1234", "token": make_token()}).encode("utf-16")
    assert_json_error(client.post(SMS, body, content_type="application/json"), 400, "bad_body")


# --- the admin dashboard's account filter (the admin search is another change) -------------------------
@pytest.mark.parametrize("value", ["²", "١", "1".translate(FULLWIDTH), str(2**63), "9" * 40])
def test_the_dashboard_account_filter_takes_ascii_ids_only(account, value):
    from django.urls import reverse

    from tests.staff import staff_client

    client, _ = staff_client("deliveries.view_delivery")
    client.raise_request_exception = False
    response = client.get(reverse("admin:deliveries_delivery_dashboard"), {"account": value})
    assert response.status_code == 200 and response.context["account"] is None  # the whole deployment


# --- found by the fuzz tests (tests/fuzz/test_hostile_endpoints.py) ----------------------------------------
@pytest.mark.parametrize("path", ["/amocrm/oauth", "/amocrm/uninstall"])
def test_the_install_hooks_answer_other_methods_with_the_json_405(client, path):
    response = client.post(path, "[" * 1000, content_type="application/json")
    assert_json_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("claims", [{"nbf": -(10**400)}, {"nbf": -(2**63)}, {"iat": -(2**64), "exp": -(2**64) + 60}])
def test_time_claims_out_of_range_are_a_401(client, integration, smsru_route, claims):
    smsru_route()
    response = client.post(SMS, {"phone": "+79123456789", "text": "Код 1234", "token": signed(integration, **claims)})
    assert_json_error(response, 401)
    assert not Delivery.objects.exists()


def test_deep_json_in_a_report_is_refused_at_the_bound(client, hooks):
    body = '{"id": "1", "status": 1, "x": ' + "[" * 40 + "]" * 40 + "}"
    assert_refused_and_nothing_kept(client.post(hook_path(hooks["smsaero"]), body, content_type="application/json"))


# --- provider replies: what reaches the database from a provider's answer ------------------------------------
def test_numbers_in_provider_replies_that_do_not_fit_their_columns_are_dropped():
    from decimal import Decimal

    from routes.providers.base import (
        ProviderTemporaryError,
        SendResult,
        decimal_or_none,
        int_or_none,
        timestamp_or_none,
    )

    assert SendResult("m1", cost=Decimal("1e20"), parts=10**6).cost is None
    assert SendResult("m1", cost=Decimal("NaN"), parts=-1).parts is None
    kept = SendResult("m1", cost=Decimal("1.40"), parts=2)
    assert (kept.cost, kept.parts) == (Decimal("1.40"), 2)
    assert decimal_or_none("NaN") is None and decimal_or_none("Infinity") is None
    assert decimal_or_none("1,5") == Decimal("1.5")
    assert ProviderTemporaryError("x", retry_after=float("inf")).retry_after is None
    assert ProviderTemporaryError("x", retry_after=1e300).retry_after == 86_400
    assert ProviderTemporaryError("x", retry_after=2.5).retry_after == 2.5
    assert int_or_none("١٢") is None and int_or_none("²") is None and int_or_none("1_000") is None
    assert int_or_none(" -42 ") == -42 and int_or_none("9" * 19) is None
    assert timestamp_or_none("1700000000".translate(ARABIC)) is None
    assert timestamp_or_none("1700000000").year == 2023


# --- NUL and lone surrogates in the API's texts and the token's jti (held before this change; kept) --------------
@pytest.mark.parametrize("raw", ['"a\\u0000"', '"a\\ud800"'])
def test_nul_and_lone_surrogates_in_credentials_and_filters_are_a_400(client, make_token, route, raw):
    response = client.patch(f"/api/v1/routes/{route.pk}/", '{"credentials": {"api_id": %s}}' % raw,
                            content_type="application/json", HTTP_X_AUTH_TOKEN=make_token())
    assert_json_error(response, 400, "invalid")
    assert ProviderRoute.objects.get(pk=route.pk).credentials == {"api_id": "test-api-id"}
    for param in ("phone", "status", "created_from"):
        value = "%00" if "0000" in raw else "%ED%A0%80"
        response = client.get(f"/api/v1/deliveries/?{param}=1{value}", HTTP_X_AUTH_TOKEN=make_token())
        assert_json_error(response, 400, "invalid")


@pytest.mark.parametrize("jti", ["a\x00", "a\ud800", "a\n"])
def test_a_jti_that_cannot_be_stored_is_a_401(client, integration, smsru_route, jti):
    smsru_route()
    response = client.post(SMS, {"phone": "+79123456789", "text": "Код 1234", "token": signed(integration, jti=jti)})
    assert_json_error(response, 401, "invalid_claim")
    assert not Delivery.objects.exists()
