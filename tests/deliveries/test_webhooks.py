"""POST /webhooks/<provider>/<route token>/: verification per provider, parsing, monotonic apply.

The signed bodies are made by the fakes' own signing code (the code that signs their real callbacks);
the last tests let each fake call a live server over real HTTP."""

import json

import pytest
from django.utils import timezone

from routes.models import ProviderRoute
from deliveries.models import Delivery, DeliveryStatus, StatusEvent, UnmatchedReport
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.reports import unmatched_reports_rematch
from routes.services import route_callback_url
from tests.conftest import eventually
from tests.fakes import twilio as fake_twilio
from tests.fakes.registry import FAKES

PUBLIC = "https://smsgate.example.com"


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.SMSGATE_PUBLIC_URL = PUBLIC


@pytest.fixture
def route(account):
    def make(slug, **credentials):
        return ProviderRoute.objects.create(account=account, provider=slug, sender="ACME",
                                            credentials=credentials or FAKES[slug]().credentials)

    return make


@pytest.fixture
def sent(account):
    """A delivery the route has sent, known to the provider by `message_id`."""

    def make(route, message_id, phone="+79123456789"):
        delivery = delivery_create(account=account, phone=phone, text="Код: 1234").delivery
        Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SENT, route=route,
                                                       provider=route.provider, provider_message_id=message_id,
                                                       sent_at=timezone.now())
        return delivery

    return make


def path(route):
    return f"/webhooks/{route.provider}/{route.callback_token}/"


def status_of(delivery):
    return Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)


def smsru_form(records, api_id="test-api-id"):
    return {"data[]": records, "hash": FAKES["smsru"](api_id=api_id).sign(records)}


def twilio_post(client, route, params, *, token="test-auth-token", signature=None, url=None):
    url = url or PUBLIC + path(route)
    signature = signature if signature is not None else fake_twilio.sign(token, url, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(path(route), params, **headers)


def twilio_params(sid, status, **extra):
    return {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+79123456789",
            "ApiVersion": "2010-04-01", **extra}


pytestmark = pytest.mark.django_db


# --- routing -------------------------------------------------------------------------------------------
def test_unknown_token_is_404(client, route):
    route("smsru")
    assert client.post("/webhooks/smsru/unknown-token-1234567890/").status_code == 404


def test_a_token_under_another_provider_is_404(client, route):
    twilio_route = route("twilio")
    response = client.post(f"/webhooks/smsru/{twilio_route.callback_token}/", smsru_form(["x"]))
    assert response.status_code == 404


def test_the_trailing_slash_is_optional(client, route, sent):
    smsru_route = route("smsru")
    sent(smsru_route, "000000-1")
    response = client.post(path(smsru_route).rstrip("/"), smsru_form(["sms_status\n000000-1\n103\n1700000000"]))
    assert response.status_code == 200 and response.content == b"100"


def test_a_provider_without_callbacks_has_no_webhook(client, route):
    devino = route("devino")
    assert client.post(path(devino), {"id": "x"}).status_code == 404


def test_twilio_takes_post_only(client, route):
    response = client.get(path(route("twilio")))
    assert response.status_code == 405 and response["Allow"] == "POST"


# --- SMS.ru: hash, batches, the "100" answer -----------------------------------------------------------------
def test_smsru_batch_with_a_good_hash(client, route, sent):
    smsru_route = route("smsru")
    first, second = sent(smsru_route, "000000-1"), sent(smsru_route, "000000-2")
    records = ["sms_status\n000000-1\n103\n1700000000", "sms_status\n000000-2\n104\n1700000005",
               "callcheck_status\n201937-542\n401\n1700000006"]
    response = client.post(path(smsru_route), smsru_form(records))
    assert (response.status_code, response.content) == (200, b"100")
    assert (status_of(first), status_of(second)) == (DeliveryStatus.DELIVERED, DeliveryStatus.EXPIRED)
    event = StatusEvent.objects.get(delivery=first)
    assert (event.source, event.provider_code, event.applied) == ("webhook", "103", True)
    assert event.raw == {"record": records[0]}
    assert Delivery.objects.get(pk=first.pk).finished_at.timestamp() == 1700000000


@pytest.mark.parametrize("form", [
    {"data[]": ["sms_status\n000000-1\n103\n1700000000"], "hash": "0" * 64},  # bad
    {"data[]": ["sms_status\n000000-1\n103\n1700000000"]},  # missing
], ids=["bad", "missing"])
def test_smsru_bad_or_missing_hash_is_400(client, route, sent, form):
    smsru_route = route("smsru")
    delivery = sent(smsru_route, "000000-1")
    response = client.post(path(smsru_route), form)
    assert response.status_code == 400 and response.json()["code"] == "bad_signature"
    assert status_of(delivery) == DeliveryStatus.SENT and not StatusEvent.objects.exists()


def test_smsru_hash_of_another_account_is_400(client, route, sent):
    smsru_route = route("smsru")
    sent(smsru_route, "000000-1")
    response = client.post(path(smsru_route), smsru_form(["sms_status\n000000-1\n103\n1"], api_id="someone-else"))
    assert response.status_code == 400


def test_smsru_checking_the_handler_gets_100(client, route):
    response = client.post(path(route("smsru")))
    assert (response.status_code, response.content) == (200, b"100")


# --- Twilio: X-Twilio-Signature with the route's auth token ------------------------------------------------
def test_twilio_good_signature(client, route, sent):
    twilio_route = route("twilio")
    delivery = sent(twilio_route, "SM1")
    response = twilio_post(client, twilio_route, twilio_params("SM1", "delivered"))
    assert response.status_code == 204
    assert status_of(delivery) == DeliveryStatus.DELIVERED


def test_twilio_signature_over_the_url_this_server_saw(client, route, sent, settings):
    settings.SMSGATE_PUBLIC_URL = "https://elsewhere.example.com"  # behind a proxy: the public URL differs
    twilio_route = route("twilio")
    delivery = sent(twilio_route, "SM1")
    params = twilio_params("SM1", "delivered")
    response = twilio_post(client, twilio_route, params, url="http://testserver" + path(twilio_route))
    assert response.status_code == 204 and status_of(delivery) == DeliveryStatus.DELIVERED


@pytest.mark.parametrize("signature", ["AAAAAAAAAAAAAAAAAAAAAAAAAAA=", ""], ids=["bad", "missing"])
def test_twilio_bad_or_missing_signature_is_400(client, route, sent, signature):
    twilio_route = route("twilio")
    delivery = sent(twilio_route, "SM1")
    response = twilio_post(client, twilio_route, twilio_params("SM1", "delivered"), signature=signature)
    assert response.status_code == 400 and response.json()["code"] == "bad_signature"
    assert status_of(delivery) == DeliveryStatus.SENT


def test_twilio_signed_with_another_token_is_400(client, route, sent):
    twilio_route = route("twilio")
    sent(twilio_route, "SM1")
    response = twilio_post(client, twilio_route, twilio_params("SM1", "delivered"), token="not-the-route-token")
    assert response.status_code == 400


def test_twilio_out_of_order_and_repeated_callbacks_change_nothing(client, route, sent):
    twilio_route = route("twilio")
    delivery = sent(twilio_route, "SM1")
    for status in ("delivered", "sent", "delivered", "undelivered"):
        assert twilio_post(client, twilio_route, twilio_params("SM1", status)).status_code == 204
    assert status_of(delivery) == DeliveryStatus.DELIVERED
    assert list(StatusEvent.objects.filter(delivery=delivery).values_list("status", "applied")) == [
        ("delivered", True), ("sent", False), ("delivered", False), ("undelivered", False)]


def test_twilio_error_code_is_kept(client, route, sent):
    twilio_route = route("twilio")
    delivery = sent(twilio_route, "SM1")
    twilio_post(client, twilio_route, twilio_params("SM1", "undelivered", ErrorCode="30005"))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_class, delivery.error_code) == (
        DeliveryStatus.REJECTED, "invalid_recipient", "undelivered:30005")


# --- SMSC and SMS Aero: unsigned callbacks, the route token is the check ([?] bodies) ---------------------
def test_smsc_callback(client, route, sent):
    smsc_route = route("smsc")
    delivery = sent(smsc_route, "ref-1")
    response = client.post(path(smsc_route), {"id": "ref-1", "phone": "79123456789", "status": "1", "err": "0"})
    assert response.status_code == 200 and status_of(delivery) == DeliveryStatus.DELIVERED
    response = client.get(path(smsc_route), {"id": "ref-1", "status": "20"})  # SMSC may use GET
    assert response.status_code == 200 and status_of(delivery) == DeliveryStatus.DELIVERED


def test_smsaero_callback(client, route, sent):
    aero_route = route("smsaero")
    delivery = sent(aero_route, "12345")
    body = {"id": 12345, "number": "79123456789", "status": 2, "extendStatus": "delivery failure"}
    response = client.post(path(aero_route), json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and status_of(delivery) == DeliveryStatus.UNDELIVERED


@pytest.mark.parametrize("slug,form", [("smsc", {"id": "ref-1", "status": "1"}),
                                       ("smsaero", {"id": "ref-1", "status": "1"})])
@pytest.mark.parametrize("token", ["x" * 32, ""], ids=["bad", "missing"])
def test_the_token_is_the_signature_of_unsigned_providers(client, route, sent, slug, form, token):
    delivery = sent(route(slug), "ref-1")
    response = client.post(f"/webhooks/{slug}/{token}/" if token else f"/webhooks/{slug}/", form)
    assert response.status_code == 404 and status_of(delivery) == DeliveryStatus.SENT
    assert not StatusEvent.objects.exists() and not UnmatchedReport.objects.exists()


# --- a report for another account's message ------------------------------------------------------------
def test_a_route_reaches_only_its_own_deliveries(client, route, sent, account):
    mine, theirs = route("smsc"), route("smsc")
    delivery = sent(theirs, "ref-1")
    client.post(path(mine), {"id": "ref-1", "status": "1"})
    assert status_of(delivery) == DeliveryStatus.SENT
    assert UnmatchedReport.objects.get().route == mine


# --- never a 500 --------------------------------------------------------------------------------------------
GARBAGE = [
    ("application/json", b"{not json"),
    ("application/json", b'{"data": [1, 2, {"id": null}]}'),
    ("application/x-www-form-urlencoded", b"data%5B%5D=%FF%FE&hash=%00"),
    ("application/x-www-form-urlencoded", b"&&&===&data[]=sms_status%0Aonly"),
    ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
    ("text/plain", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚".encode()),
    ("application/x-www-form-urlencoded", b"MessageSid=SM1&MessageStatus=delivered&AccountSid=AC" + b"0" * 32),
]


@pytest.mark.parametrize("slug", ["smsru", "smsc", "smsaero", "twilio", "devino"])
@pytest.mark.parametrize("content_type,body", GARBAGE)
def test_garbage_is_a_4xx_never_a_500(client, route, slug, content_type, body):
    provider_route = route(slug)
    response = client.generic("POST", path(provider_route), body, content_type=content_type)
    assert response.status_code < 500
    assert response.status_code in (200, 204, 400, 404)


# --- a report that comes before the provider id is recorded ---------------------------------------------------
def test_a_report_before_the_id_is_held_and_applied_when_the_worker_records_it(client, start_fake, route_for,
                                                                               account):
    fake = start_fake("smsru")
    smsru_route = route_for(fake)
    # The fake's first message will be 000000-10000000; its report arrives before our worker records it.
    records = ["sms_status\n000000-10000000\n103\n1700000000"]
    assert client.post(path(smsru_route), smsru_form(records)).content == b"100"
    held = UnmatchedReport.objects.get()
    assert (held.provider_message_id, held.status) == ("000000-10000000", DeliveryStatus.DELIVERED)

    delivery = delivery_create(account=account, phone="+79123456789", text="Код: 1234").delivery
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.provider_message_id == "000000-10000000"
    assert delivery.status == DeliveryStatus.DELIVERED
    assert not UnmatchedReport.objects.exists()
    assert StatusEvent.objects.get(delivery=delivery).source == "webhook"


def test_the_poller_applies_a_held_report_whose_delivery_turned_up(route, sent, client):
    smsc_route = route("smsc")
    client.post(path(smsc_route), {"id": "ref-1", "status": "1"})
    delivery = sent(smsc_route, "ref-1")  # recorded without seeing the held report (the race)
    UnmatchedReport.objects.update(received_at=timezone.now() - timezone.timedelta(minutes=1))
    assert unmatched_reports_rematch() == 1
    assert status_of(delivery) == DeliveryStatus.DELIVERED and not UnmatchedReport.objects.exists()


def test_held_reports_are_forgotten_after_the_horizon(route, client):
    client.post(path(route("smsc")), {"id": "never-ours", "status": "1"})
    UnmatchedReport.objects.update(received_at=timezone.now() - timezone.timedelta(hours=73))
    unmatched_reports_rematch()
    assert not UnmatchedReport.objects.exists()


# --- the fakes call a live server over real HTTP ----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("slug", ["smsru", "twilio", "smsc", "smsaero"])
def test_each_provider_reports_delivery_to_a_live_webhook(live_server, settings, start_fake, route_for, account, slug):
    settings.SMSGATE_PUBLIC_URL = live_server.url
    # With SQLite in memory the live server shares this thread's connection: callbacks come after
    # delivery_send is done, and the database is read only while no callback is in flight.
    fake = start_fake(slug, status_delays=(0.2, 0.1))
    provider_route = route_for(fake, sender="+15005550006" if slug == "twilio" else "ACME")
    if slug in ("smsru", "smsc"):  # a cabinet setting at these providers, per message elsewhere
        fake.callback_urls.append(route_callback_url(provider_route))
    delivery = delivery_create(account=account, phone="+79123456789", text="Код: 1234").delivery
    delivery_send(delivery_id=delivery.pk)
    eventually(lambda: fake.idle() and len(fake.callbacks) >= 1, timeout=10, interval=0.05,
               message=f"callbacks not done: {fake.callbacks}")
    assert status_of(delivery) == DeliveryStatus.DELIVERED, fake.callbacks
    events = list(StatusEvent.objects.filter(delivery=delivery, applied=True).values_list("source", "status"))
    assert ("webhook", "delivered") in events
    assert all(c.status in (200, 204) for c in fake.callbacks)
    if slug == "smsru":
        assert all(c.body == "100" for c in fake.callbacks)
