"""Twilio adapter against the fake Twilio (tests/fakes/twilio.py) over real HTTP, and X-Twilio-Signature."""

import base64
from decimal import Decimal

import pytest

from routes.providers.base import (
    ErrorClass,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
    WebhookSignatureError,
)
from routes.providers.twilio import TwilioProvider, twilio_signature, url_variants
from tests.conftest import eventually
from tests.fakes import twilio as fake_twilio
from tests.fakes.twilio import FakeTwilio

from .helpers import adapter, form_of, send_request, webhook

SID = "AC" + "0" * 32


@pytest.fixture
def fake():
    with FakeTwilio(status_delays=(0.01, 0.01)) as fake:
        yield fake


def twilio(fake, **kwargs):
    return adapter(TwilioProvider, fake, **{"sender": "+15005550006", **kwargs})


def test_request_shape(fake):
    twilio(fake).send(send_request(validity_seconds=600, callback_url="https://smsgate.example.com/webhooks/twilio/t/"))
    [sent] = fake.requests_to(f"/2010-04-01/Accounts/{SID}/Messages.json")
    assert sent.method == "POST" and sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert base64.b64decode(sent.headers["authorization"][6:]).decode() == f"{SID}:test-auth-token"
    assert form_of(sent) == {"To": "+79123456789", "Body": "Код: 1234", "From": "+15005550006",
                             "StatusCallback": "https://smsgate.example.com/webhooks/twilio/t/",
                             "ValidityPeriod": "600"}


def test_a_messaging_service_instead_of_a_sender(fake):
    credentials = {**fake.credentials, "messaging_service_sid": "MG" + "1" * 32}
    result = twilio(fake, sender="", credentials=credentials).send(send_request())
    assert form_of(fake.requests[0])["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in form_of(fake.requests[0]) and result.status == ReportStatus.SENT


def test_no_sender_and_no_service_is_our_bug_not_a_request(fake):
    with pytest.raises(ProviderBadRequestError):
        twilio(fake, sender="").send(send_request())
    assert fake.requests == []


def test_success(fake):
    result = twilio(fake).send(send_request(text="Я" * 71))
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    assert (result.status, result.parts, result.cost) == (ReportStatus.SENT, 2, None)  # price comes later
    assert result.raw["body"] == "<text>"
    assert [m.text for m in fake.received_for("+79123456789")] == ["Я" * 71]


TWILIO_ERRORS = [
    (20429, ProviderTemporaryError, ErrorClass.THROTTLED),
    (20500, ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    (21211, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (21408, ProviderRejectedError, ErrorClass.NO_ROUTE),
    (21606, ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    (21608, ProviderAuthError, ErrorClass.AUTH),
    (21609, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (21610, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (21612, ProviderRejectedError, ErrorClass.NO_ROUTE),
    (21614, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (21617, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (21635, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (30001, ProviderTemporaryError, ErrorClass.THROTTLED),
    (30002, ProviderAuthError, ErrorClass.AUTH),
    (30004, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (30005, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (30006, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (30007, ProviderRejectedError, ErrorClass.CONTENT_REJECTED),
    (30034, ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    (29999, ProviderBadRequestError, ErrorClass.BAD_REQUEST),  # an undocumented 4xx code
]


@pytest.mark.parametrize("code,exc_class,error_class", TWILIO_ERRORS)
def test_every_error_code_has_its_class(fake, code, exc_class, error_class):
    with pytest.raises(exc_class) as caught:
        twilio(fake).send(send_request(phone=f"+790000{code}"))
    assert (caught.value.error_class, caught.value.code) == (error_class, str(code))
    if code == 20429:
        assert caught.value.retry_after == 1.0


def test_bad_credentials_are_20003(fake):
    with pytest.raises(ProviderAuthError) as caught:
        twilio(fake, credentials={"account_sid": SID, "auth_token": "wrong"}).send(send_request())
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.AUTH, "20003")


def test_a_dropped_answer_is_ambiguous(fake):
    with pytest.raises(ProviderTemporaryError) as caught:
        twilio(fake).send(send_request(phone="+79000099999"))
    assert caught.value.ambiguous and len(fake.received) == 1


TWILIO_STATUSES = [
    # (magic phone, final status of the resource, normalised, provider code)
    ("+79000200000", ReportStatus.DELIVERED, "delivered"),
    ("+79000200001", ReportStatus.DELIVERED, "read"),
    ("+79000200002", ReportStatus.FAILED, "failed:30008"),
    ("+79000200003", ReportStatus.FAILED, "canceled"),
    ("+79000200004", ReportStatus.UNDELIVERED, "partially_delivered"),
    ("+79000200005", ReportStatus.UNDELIVERED, "undelivered:30008"),
    ("+79000130003", ReportStatus.UNDELIVERED, "undelivered:30003"),
    ("+79000130005", ReportStatus.REJECTED, "undelivered:30005"),
    ("+79000130007", ReportStatus.REJECTED, "undelivered:30007"),
    ("+79000130002", ReportStatus.FAILED, "failed:30002"),
    ("+79000130034", ReportStatus.REJECTED, "failed:30034"),
]


@pytest.mark.parametrize("phone,expected,code", TWILIO_STATUSES)
def test_every_status_is_mapped(fake, phone, expected, code):
    result = twilio(fake).send(send_request(phone=phone))
    eventually(lambda: fake.messages[result.provider_message_id]["status"] not in ("queued", "sent"))
    [report] = twilio(fake).fetch_statuses([result.provider_message_id])
    assert (report.provider_message_id, report.status, report.provider_code) == (result.provider_message_id,
                                                                                 expected, code)


@pytest.mark.parametrize("status", ["accepted", "scheduled", "queued", "sending", "sent"])
def test_interim_statuses_are_sent(status):
    assert TwilioProvider.map_status(status) == ReportStatus.SENT


def test_balance(fake):
    balance = twilio(fake).balance()
    assert (balance.amount, balance.currency) == (Decimal("12.34"), "USD")


# --- X-Twilio-Signature: the test vectors of sms-providers.md §4.4 (computed with twilio 9.13.0) ------------
VECTOR_1 = ("https://mycompany.com/myapp.php?foo=1&bar=2",
            {"CallSid": ["CA1234567890ABCDE"], "Caller": ["+12349013030"], "Digits": ["1234"],
             "From": ["+12349013030"], "To": ["+18005551212"]},
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
STATUS_PARAMS = {"MessageSid": ["SM0123456789abcdef0123456789abcdef"], "SmsSid": ["SM0123456789abcdef0123456789abcdef"],
                 "MessageStatus": ["delivered"], "SmsStatus": ["delivered"],
                 "AccountSid": ["AC0123456789abcdef0123456789abcdef"], "From": ["+15005550006"],
                 "To": ["+79161234567"], "ApiVersion": ["2010-04-01"]}
VECTOR_2 = ("https://example.com/sms/twilio/status?acc=42", STATUS_PARAMS, "/StPyYsR3ymCcAg2XTW2HhXcqdc=")


@pytest.mark.parametrize("url,params,expected", [VECTOR_1, VECTOR_2])
def test_signature_matches_the_test_vectors(url, params, expected):
    assert twilio_signature("12345", url, params) == expected
    assert fake_twilio.sign("12345", url, params) == expected  # the fake signs its callbacks the same way


def test_a_signature_over_the_url_with_the_default_port_also_verifies():
    url, params, signature = VECTOR_2
    assert "https://example.com:443/sms/twilio/status?acc=42" in url_variants(url)
    provider = TwilioProvider(credentials={"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "12345"})
    provider.verify_webhook(webhook(url="https://example.com:443/sms/twilio/status?acc=42", form=params,
                                    headers={"X-Twilio-Signature": signature}))


@pytest.mark.parametrize("headers", [{"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, {}])
def test_bad_or_missing_signature_is_refused(headers):
    url, params, _ = VECTOR_2
    provider = TwilioProvider(credentials={"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "12345"})
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(webhook(url=url, form=params, headers=headers))


def test_a_signature_over_other_params_is_refused():
    url, params, signature = VECTOR_2
    provider = TwilioProvider(credentials={"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "12345"})
    with pytest.raises(WebhookSignatureError):
        provider.verify_webhook(webhook(url=url, form={**params, "MessageStatus": ["failed"]},
                                        headers={"X-Twilio-Signature": signature}))


def test_a_status_callback_becomes_a_report():
    provider = TwilioProvider(credentials={"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "12345"})
    [report] = provider.parse_webhook(webhook(form=STATUS_PARAMS))
    assert (report.provider_message_id, report.status) == ("SM0123456789abcdef0123456789abcdef", ReportStatus.DELIVERED)
    [failed] = provider.parse_webhook(webhook(form={**STATUS_PARAMS, "MessageStatus": ["undelivered"],
                                                    "ErrorCode": ["30006"]}))
    assert (failed.status, failed.error_class) == (ReportStatus.REJECTED, ErrorClass.INVALID_RECIPIENT)
    with pytest.raises(ValueError):  # another Twilio account's report through this route's URL
        provider.parse_webhook(webhook(form={**STATUS_PARAMS, "AccountSid": ["AC" + "9" * 32]}))
