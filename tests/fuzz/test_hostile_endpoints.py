"""Hypothesis: the hostile shapes schemathesis does not generate, on every public endpoint (issue 13,
item 10): JSON nested far deeper than any body we read, other scripts' digits where a number is
read, integers beyond the database's bigint, and multipart bodies with file parts. On the SMS
endpoint, the OAuth redirect, the uninstall hook, every provider's webhook path and the account API.

Each test asserts only: never a 5xx; a 4xx is the endpoint's JSON error ({"detail", "code"}, the
webhooks' {"code"}); and nothing is recorded where nothing should be (no delivery, no status report,
no route or account change)."""

import io
import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts.models import Account, AccountCeilings, AccountOwnLimits
from routes.models import ProviderRoute
from accounts.services import uninstall_signature
from deliveries.models import Delivery, StatusEvent, UnmatchedReport
from routes.providers import PROVIDERS
from tests.conftest import SECRET, claims_for
from tests.fakes import twilio as fake_twilio
from tests.fakes.registry import FAKES
from tests.fuzz.test_properties import sign_raw

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
PUBLIC = "https://smsgate.example.com"
CALLBACK_PROVIDERS = sorted(slug for slug, cls in PROVIDERS.items() if cls.supports_callbacks)
pytestmark = pytest.mark.django_db

# --- hostile shapes ----------------------------------------------------------------------------------------
# Decimal digits of other scripts: superscripts are not Nd but isdigit() is true for them, so both.
OTHER_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()) | st.sampled_from("¹²³⁰⁴⁵⁶⁷⁸⁹")
other_digits = st.tuples(st.text(alphabet=string.digits, max_size=6), st.text(alphabet=OTHER_DIGITS, min_size=1,
                                                                              max_size=12),
                         st.text(alphabet=string.digits, max_size=6)).map("".join)
huge_integers = (st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)
                 | st.integers(19, 400).map(lambda n: 10**n) | st.integers(min_value=2**63).map(lambda n: -n))
huge_numbers = huge_integers | huge_integers.map(str)


@st.composite
def deep_json(draw) -> str:
    """JSON nested deeper than the bound (32): arrays, objects, mixed, closed or left open, with
    strings that hold brackets and escaped quotes to mislead a naive counter."""
    depth = draw(st.integers(33, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"k\\"[":', "}]"), ('["\\\\",', "]")]))
    inner = draw(st.sampled_from(["1", '"[[[["', "[]", "null"]))
    closed = draw(st.booleans())
    return opener * depth + inner + (closer * depth if closed else "")


hostile_text = other_digits | huge_integers.map(str) | st.sampled_from(["\x00", "1\x00", "\ud800"])


@st.composite
def multipart(draw, fields: dict) -> tuple[bytes, str]:
    """A multipart body with the given fields and at least one file part."""
    boundary = "b" + draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=30))
    parts = [(name, None, value.encode()) for name, value in fields.items()]
    for _ in range(draw(st.integers(1, 3))):
        parts.append((draw(st.sampled_from(["file", "text", "phone", "f"])), draw(st.text(string.ascii_letters,
                                                                                         min_size=1, max_size=8)),
                      draw(st.binary(max_size=2000))))
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"".encode()
        + (f'; filename="{filename}"\r\nContent-Type: application/octet-stream'.encode() if filename else b"")
        + b"\r\n\r\n" + value + b"\r\n" for name, filename, value in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# --- what is checked ------------------------------------------------------------------------------------------
def snapshot(account) -> tuple:
    account.refresh_from_db()
    return (Delivery.objects.count(), StatusEvent.objects.count(), UnmatchedReport.objects.count(),
            Account.objects.count(), account.is_active,
            list(AccountOwnLimits.objects.values()), list(AccountCeilings.objects.values()),
            sorted(ProviderRoute.objects.values_list("id", "priority", "sender", "is_active")),
            list(Delivery.objects.order_by("pk").values_list("status", flat=True)))


def assert_json_4xx(response, *, webhook=False):
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = json.loads(response.content)
    assert isinstance(body.get("code"), str) and body["code"]
    if not webhook:
        assert isinstance(body.get("detail"), str) and body["detail"]


@pytest.fixture
def client(client):
    client.raise_request_exception = False  # a 500 is an answer to check, not an exception
    return client


@pytest.fixture
def world(account, settings):
    """The account with a route of every provider that calls back, and a delivery each has sent."""
    settings.SMSGATE_PUBLIC_URL = PUBLIC
    settings.AMO_OAUTH_BASE_URL = "http://127.0.0.1:9"  # never reached: every request here is refused first
    routes = {slug: ProviderRoute.objects.create(account=account, provider=slug, sender="ACME",
                                                 credentials=FAKES[slug]().credentials)
              for slug in CALLBACK_PROVIDERS}
    # The API's route: no network behind it (its balance is a 422, not a provider's 502).
    routes["console"] = ProviderRoute.objects.create(account=account, provider="console", sender="ACME")
    return routes


def token(integration, **claims) -> str:
    return sign_raw(claims_for(integration, **claims))


# --- the SMS endpoint ---------------------------------------------------------------------------------------------
@FUZZ
@given(body=deep_json())
@example(body="[" * 100_000)
def test_sms_endpoint_deep_json(client, world, account, body):
    before = snapshot(account)
    assert_json_4xx(client.post("/amocrm/sms", body, content_type="application/json"))
    assert snapshot(account) == before


@FUZZ
@given(phone=other_digits | huge_numbers, as_json=st.booleans())
@example(phone="+٧٩١٢٣٤٥٦٧٨٩", as_json=False)  # a valid mobile number, in Arabic-Indic digits
@example(phone="+７９１２３４５６７８９", as_json=True)
@example(phone="+7 912 ABC 4567", as_json=False)  # keypad letters
def test_sms_endpoint_phones_in_other_digits_or_huge(client, world, account, integration, phone, as_json):
    before = snapshot(account)
    data = {"phone": phone if as_json else str(phone), "text": "Код 1234", "token": token(integration)}
    response = (client.post("/amocrm/sms", json.dumps(data), content_type="application/json") if as_json
                else client.post("/amocrm/sms", data))
    assert_json_4xx(response)
    assert snapshot(account) == before


@FUZZ
@given(claim=st.sampled_from(["account_id", "user_id", "iat", "exp", "nbf"]), value=huge_numbers | other_digits)
def test_sms_endpoint_and_api_tokens_with_huge_or_foreign_numbers(client, world, account, integration, claim, value):
    before = snapshot(account)
    signed = token(integration, **{claim: value})
    assert_json_4xx(client.post("/amocrm/sms", {"phone": "+79123456789", "text": "Код 1234", "token": signed}))
    assert_json_4xx(client.get("/api/v1/account/", HTTP_X_AUTH_TOKEN=signed))
    assert snapshot(account) == before


@FUZZ
@given(data=st.data())
def test_sms_endpoint_multipart_with_file_parts(client, world, account, integration, data):
    before = snapshot(account)
    body, content_type = data.draw(multipart({"phone": "+79123456789", "text": "Код 1234",
                                              "token": token(integration)}))
    assert_json_4xx(client.post("/amocrm/sms", body, content_type=content_type))
    assert snapshot(account) == before


# --- the OAuth redirect and the uninstall hook ----------------------------------------------------------------
@FUZZ
@given(data=st.data(), method=st.sampled_from(["get", "post"]))
def test_oauth_hostile_parameters(client, world, account, integration, data, method):
    # A code of ASCII digits, however long, is a code: amoCRM is then asked (a 502 here), so not drawn.
    field, value = data.draw(st.sampled_from(["code", "referer", "client_id"]).flatmap(
        lambda name: st.tuples(st.just(name), other_digits | st.sampled_from(["\x00", "1\x00", "\ud800"])
                               if name == "code" else hostile_text)))
    before = snapshot(account)
    params = {"code": "def50200abc", "referer": "acme.amocrm.ru", "client_id": str(integration.client_uuid),
              field: value}
    query = "&".join(f"{k}={_quote(v)}" for k, v in params.items())
    assert_json_4xx(getattr(client, method)(f"/amocrm/oauth?{query}"))
    assert snapshot(account) == before


@FUZZ
@given(account_id=other_digits | huge_numbers.map(str), body=st.none() | deep_json())
def test_uninstall_hostile_account_ids_with_a_valid_signature(client, world, account, integration, account_id, body):
    before = snapshot(account)
    client_uuid = str(integration.client_uuid)
    params = {"account_id": account_id, "client_uuid": client_uuid,
              "signature": uninstall_signature(client_secret=SECRET, client_uuid=client_uuid, account_id=account_id)}
    query = "&".join(f"{k}={_quote(v)}" for k, v in params.items())
    response = (client.get(f"/amocrm/uninstall?{query}") if body is None
                else client.post(f"/amocrm/uninstall?{query}", body, content_type="application/json"))
    assert_json_4xx(response)
    assert snapshot(account) == before


def _quote(value) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="", errors="surrogatepass")


# --- every provider's webhook ---------------------------------------------------------------------------------
REPORT_FIELDS = {"id": "1", "status": "1", "MessageSid": "SM1", "MessageStatus": "delivered"}


@pytest.mark.parametrize("slug", CALLBACK_PROVIDERS)
@FUZZ
@given(body=deep_json().map(lambda text: (text, "application/json")) | multipart(REPORT_FIELDS))
@example(body=('{"id": "1", "status": 1, "x": ' + "[" * 40 + "]" * 40 + "}", "application/json"))
@example(body=("[" * 100_000, "application/json"))
def test_webhooks_deep_json_and_file_parts(client, world, account, slug, body):
    """A file part is refused; deep JSON is refused by the providers that read JSON (SMS Aero) and
    ignored by those that read form fields (nothing in it is then a report)."""
    before = snapshot(account)
    route = world[slug]
    path = f"/webhooks/{slug}/{route.callback_token}/"
    content, content_type = body
    headers = {}
    if slug == "twilio":  # signed over the URL alone: the signature is not what refuses it
        headers["HTTP_X_TWILIO_SIGNATURE"] = fake_twilio.sign(route.credentials["auth_token"], PUBLIC + path, {})
    response = client.post(path, content, content_type=content_type, **headers)
    if content_type.startswith("multipart/") or slug == "smsaero" or response.status_code >= 400:
        assert_json_4xx(response, webhook=True)
    assert response.status_code < 500
    assert snapshot(account) == before


@FUZZ
@given(slug=st.sampled_from(CALLBACK_PROVIDERS), value=hostile_text | huge_integers,
       field=st.sampled_from(["id", "status", "ts", "time", "err", "MessageSid", "MessageStatus", "ErrorCode",
                              "data[]", "data[0]", "hash"]), as_json=st.booleans())
def test_webhooks_numbers_in_other_digits_huge_or_nul(client, world, account, slug, value, field, as_json):
    """A report with such a field may be a report for no message (held, 2xx) or refused (4xx); it is
    never a 500 and never moves a delivery."""
    route = world[slug]
    path = f"/webhooks/{slug}/{route.callback_token}/"
    fields = {"id": "1", "status": "1", "MessageSid": "SM1", "MessageStatus": "delivered",
              "AccountSid": route.credentials.get("account_sid", ""), field: value}
    deliveries = list(Delivery.objects.values_list("status", flat=True))
    if as_json:
        response = client.post(path, json.dumps(fields), content_type="application/json")
    else:
        # A form cannot carry a lone surrogate: it arrives as U+FFFD, and is signed as such.
        form = {k: str(v).encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in fields.items()}
        headers = {}
        if slug == "twilio":
            headers["HTTP_X_TWILIO_SIGNATURE"] = fake_twilio.sign(route.credentials["auth_token"], PUBLIC + path, form)
        encoded = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in form.items())
        response = client.post(path, encoded, content_type="application/x-www-form-urlencoded", **headers)
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        assert_json_4xx(response, webhook=True)
    assert list(Delivery.objects.values_list("status", flat=True)) == deliveries


@FUZZ
@given(slug=st.sampled_from(CALLBACK_PROVIDERS + ["nope", "a" * 31]),
       route_token=st.text(alphabet=string.ascii_letters + string.digits + "_-%²١", min_size=1, max_size=80))
def test_webhooks_unknown_paths(client, world, account, slug, route_token):
    before = snapshot(account)
    assert_json_4xx(client.post(f"/webhooks/{slug}/{route_token}/", {"id": "1", "status": "1"}), webhook=True)
    assert snapshot(account) == before


# --- the account API ----------------------------------------------------------------------------------------------
WRITES = [("post", "/api/v1/routes/"), ("post", "/api/v1/routes/reorder/"), ("put", "/api/v1/limits/"),
          ("patch", "/api/v1/routes/{id}/"), ("put", "/api/v1/routes/{id}/"), ("post", "/api/v1/routes/{id}/test-sms/"),
          ("put", "/api/v1/alerts/")]
READS = ["/api/v1/account/", "/api/v1/providers/", "/api/v1/routes/", "/api/v1/routes/{id}/",
         "/api/v1/routes/{id}/balance/", "/api/v1/deliveries/", "/api/v1/deliveries/{uuid}/", "/api/v1/stats/",
         "/api/v1/limits/", "/api/v1/alerts/"]


@FUZZ
@given(operation=st.sampled_from(WRITES), data=st.data())
def test_api_writes_deep_json_and_multipart(client, world, account, make_token, operation, data):
    before = snapshot(account)
    method, path = operation
    path = path.format(id=world["console"].pk)
    if data.draw(st.booleans()):
        body, content_type = data.draw(deep_json()), "application/json"
    else:
        body, content_type = data.draw(multipart({"provider": "console", "phone": "+79123456789"}))
    assert_json_4xx(getattr(client, method)(path, body, content_type=content_type, HTTP_X_AUTH_TOKEN=make_token()))
    assert snapshot(account) == before


# Each write with the numbers (or the phone) it reads.
NUMBERS_READ = [(WRITES[0], "priority"), (WRITES[1], "ids"), (WRITES[2], "phone_per_hour"),
                (WRITES[2], "account_per_day"), (WRITES[2], "prefix_window_seconds"), (WRITES[3], "priority"),
                (WRITES[4], "priority"), (WRITES[5], "phone")]


@FUZZ
@given(operation_field=st.sampled_from(NUMBERS_READ), value=other_digits | huge_numbers, as_list=st.booleans())
@example(operation_field=(WRITES[3], "priority"), value="٥", as_list=False)  # int() reads it as 5
@example(operation_field=(WRITES[2], "phone_per_hour"), value="١٢", as_list=False)
@example(operation_field=(WRITES[1], "ids"), value=2**63, as_list=True)
def test_api_writes_numbers_in_other_digits_or_huge(client, world, account, make_token, operation_field, value,
                                                    as_list):
    before = snapshot(account)
    (method, path), field = operation_field
    path = path.format(id=world["console"].pk)
    body = {"provider": "console", field: [value] if as_list or field == "ids" else value}
    response = getattr(client, method)(path, json.dumps(body), content_type="application/json",
                                       HTTP_X_AUTH_TOKEN=make_token())
    assert_json_4xx(response)
    assert snapshot(account) == before


def forged_cursor(position: str) -> str:
    import base64

    return base64.b64encode(f"p={position}".encode()).decode()


@FUZZ
@given(path=st.sampled_from(READS),
       value=other_digits | huge_numbers.map(str) | (other_digits | huge_numbers.map(str)).map(forged_cursor),
       param=st.sampled_from(["days", "page_size", "cursor", "created_from", "created_to", "phone", "status"]),
       in_path=st.booleans())
@example(path="/api/v1/deliveries/", value=forged_cursor("x"), param="cursor", in_path=False)
@example(path="/api/v1/routes/{id}/", value="١", param="days", in_path=True)  # route 1 of the account, to int()
def test_api_reads_ids_and_parameters_in_other_digits_or_huge(client, world, account, make_token, path, value, param,
                                                              in_path):
    before = snapshot(account)
    hostile_id = in_path and "{" in path
    if "{" in path:
        real = {"{id}": str(world["console"].pk), "{uuid}": "3f0c8f0e-0000-4000-8000-000000000000"}
        path = path.replace("{id}", _quote(value) if in_path else real["{id}"])
        path = path.replace("{uuid}", _quote(value) if in_path else real["{uuid}"])
    response = client.get(f"{path}?{param}={_quote(value)}", HTTP_X_AUTH_TOKEN=make_token())
    assert response.status_code < 500, response.content[:300]
    if hostile_id:  # an id is ASCII digits in range, or names nothing
        assert response.status_code == 404, response.content[:300]
    if response.status_code >= 400:  # an unknown parameter is ignored: 200 is an answer too
        assert_json_4xx(response)
    assert snapshot(account) == before
