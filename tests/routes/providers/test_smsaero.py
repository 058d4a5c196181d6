"""SMS Aero adapter against the fake SMS Aero (tests/fakes/smsaero.py) over real HTTP."""

import base64
import json
from decimal import Decimal

import pytest

from routes.providers.base import (
    ErrorClass,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
)
from routes.providers.smsaero import SmsAeroProvider
from tests.conftest import eventually
from tests.fakes.smsaero import FakeSmsAero

from .helpers import adapter, send_request, webhook


@pytest.fixture
def fake():
    with FakeSmsAero(status_delays=(0.01, 0.01)) as fake:
        yield fake


def aero(fake, **kwargs):
    return adapter(SmsAeroProvider, fake, **kwargs)


def test_request_shape(fake):
    aero(fake).send(send_request(callback_url="https://smsgate.example.com/webhooks/smsaero/tok/"))
    [sent] = fake.requests_to("/v2/sms/send")
    assert sent.method == "POST" and sent.headers["content-type"] == "application/json"
    assert base64.b64decode(sent.headers["authorization"][6:]).decode() == f"test@example.com:{'a' * 32}"
    assert sent.json() == {"number": "79123456789", "text": "Код: 1234", "sign": "ACME",
                           "callbackUrl": "https://smsgate.example.com/webhooks/smsaero/tok/"}


def test_without_a_sender_the_shared_sign_is_used(fake):
    aero(fake, sender="").send(send_request())
    assert fake.requests_to("/v2/sms/send")[0].json()["sign"] == "SMS Aero"


def test_success(fake):
    result = aero(fake).send(send_request())
    assert result.provider_message_id == "12345" and result.cost == Decimal("5.49")
    assert result.status == ReportStatus.SENT
    assert result.raw["text"] == "<text>"  # the reply echoes the text: it is not kept
    assert [m.text for m in fake.received_for("79123456789")] == ["Код: 1234"]


@pytest.mark.parametrize("magic,exc_class,error_class", [
    ("0001", ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),  # legacy {"result": "no credits"}
    ("0002", ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),  # legacy {"result": "reject", "reason"}
    ("0003", ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    ("0004", ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    ("0005", ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    ("0006", ProviderTemporaryError, ErrorClass.THROTTLED),
    ("0007", ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    ("0008", ProviderRejectedError, ErrorClass.CONTENT_REJECTED),
    ("0009", ProviderBadRequestError, ErrorClass.BAD_REQUEST),
])
def test_every_error_shape_has_its_class(fake, magic, exc_class, error_class):
    with pytest.raises(exc_class) as caught:
        aero(fake).send(send_request(phone=f"+7900000{magic}"))
    assert caught.value.error_class == error_class
    if magic == "0006":
        assert caught.value.retry_after == 2.0
    if magic == "0007":
        assert not caught.value.ambiguous  # a 500 answer: nothing was sent


def test_bad_credentials(fake):
    with pytest.raises(ProviderAuthError) as caught:
        aero(fake, credentials={"email": "test@example.com", "api_key": "wrong"}).send(send_request())
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.AUTH, "401")


def test_a_dead_primary_gate_falls_back_to_the_next(fake):
    result = aero(fake, base_url=f"http://127.0.0.1:1/v2|{fake.base_url}").send(send_request())
    assert result.provider_message_id and len(fake.received) == 1


def test_default_gates_are_the_documented_ones():
    assert SmsAeroProvider().base_urls == ["https://gate.smsaero.ru/v2", "https://gate.smsaero.org/v2",
                                           "https://gate.smsaero.net/v2"]


def test_a_dropped_answer_is_ambiguous(fake):
    with pytest.raises(ProviderTemporaryError) as caught:
        aero(fake).send(send_request(phone="+79000000999"))
    assert caught.value.ambiguous and len(fake.received) == 1


@pytest.mark.parametrize("code,expected", [
    (0, ReportStatus.SENT), (1, ReportStatus.DELIVERED), (2, ReportStatus.UNDELIVERED), (3, ReportStatus.SENT),
    (4, ReportStatus.SENT), (6, ReportStatus.REJECTED), (8, ReportStatus.SENT),
])
def test_every_status_is_mapped(fake, code, expected):
    result = aero(fake).send(send_request(phone=f"+79000001{code + 100:03d}"))
    eventually(lambda: fake.messages[int(result.provider_message_id)]["status"] == code
               and "dateAnswer" in fake.messages[int(result.provider_message_id)])
    [report] = aero(fake).fetch_statuses([result.provider_message_id])
    assert (report.provider_message_id, report.status, report.provider_code) == (
        result.provider_message_id, expected, str(code))
    assert report.occurred_at is not None
    assert json.loads(fake.requests_to("/v2/sms/status")[0].body) == {"id": int(result.provider_message_id)}


def test_balance(fake):
    assert aero(fake).balance().amount == Decimal("337.03")


# --- callbacks [?]: the status object, JSON or form; the route token is the check ----------------------------
def test_callback_bodies_are_parsed_tolerantly():
    provider = SmsAeroProvider(credentials={"email": "e", "api_key": "k"})
    message = {"id": 12345, "number": "79123456789", "text": "Код", "status": 1, "extendStatus": "delivery",
               "dateAnswer": 1700000000}
    for body in (message, {"data": message}, [message], {"success": True, "data": message}):
        [report] = provider.parse_webhook(webhook(body=json.dumps(body).encode()))
        assert (report.provider_message_id, report.status) == ("12345", ReportStatus.DELIVERED)
        assert report.raw["text"] == "<text>"
    [from_form] = provider.parse_webhook(webhook(form={"id": "12345", "status": "2"}))
    assert from_form.status == ReportStatus.UNDELIVERED
    assert provider.parse_webhook(webhook(body=b'{"ping": true}')) == []
    with pytest.raises(ValueError):
        provider.parse_webhook(webhook(body=b"{not json"))
