"""SMS.ru adapter against the fake SMS.ru (tests/fakes/smsru.py) over real HTTP, and its callbacks."""

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
from routes.providers.smsru import SmsRuProvider
from tests.conftest import eventually
from tests.fakes.smsru import FakeSmsRu

from .helpers import adapter, form_of, send_request, webhook


@pytest.fixture
def fake():
    with FakeSmsRu(status_delays=(0.01, 0.01)) as fake:
        yield fake


def smsru(fake, **kwargs):
    return adapter(SmsRuProvider, fake, **kwargs)


def test_request_shape(fake):
    smsru(fake).send(send_request(validity_seconds=600))
    [sent] = fake.requests_to("/sms/send")
    assert sent.method == "POST"
    assert form_of(sent) == {"api_id": "test-api-id", "json": "1", "to": "79123456789", "msg": "Код: 1234",
                             "from": "ACME", "ttl": "10"}


def test_success(fake):
    result = smsru(fake).send(send_request())
    assert result.provider_message_id.startswith("000000-") and result.cost == Decimal("3.50")
    assert [m.text for m in fake.received_for("79123456789")] == ["Код: 1234"]


# Every documented send error, with the class it must get (sms-providers.md §1.3).
SMSRU_ERRORS = [
    (200, ProviderAuthError, ErrorClass.AUTH),
    (201, ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    (202, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (203, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (204, ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    (205, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (206, ProviderAuthError, ErrorClass.ACCOUNT_RATE_LIMITED),
    (207, ProviderRejectedError, ErrorClass.NO_ROUTE),
    (208, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (209, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (210, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (211, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (212, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (213, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (214, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (215, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (220, ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    (230, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (231, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (232, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (233, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (300, ProviderAuthError, ErrorClass.AUTH),
    (301, ProviderAuthError, ErrorClass.AUTH),
    (302, ProviderAuthError, ErrorClass.AUTH),
    (500, ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    (501, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (505, ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    (506, ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (507, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
]


@pytest.mark.parametrize("code,exc_class,error_class", SMSRU_ERRORS)
def test_every_error_code_has_its_class(fake, code, exc_class, error_class):
    with pytest.raises(exc_class) as caught:
        smsru(fake).send(send_request(phone=f"+79000000{code}"))
    assert (caught.value.error_class, caught.value.code) == (error_class, str(code))


def test_an_html_error_page_is_temporary(fake):
    fake.error_rate = 1.0
    with pytest.raises(ProviderTemporaryError) as caught:
        smsru(fake).send(send_request())
    assert caught.value.code == "503" and not caught.value.ambiguous
    assert fake.received == []


SMSRU_STATUSES = [
    (102, ReportStatus.SENT), (103, ReportStatus.DELIVERED), (104, ReportStatus.EXPIRED),
    (105, ReportStatus.UNDELIVERED), (106, ReportStatus.UNDELIVERED), (107, ReportStatus.UNDELIVERED),
    (108, ReportStatus.REJECTED), (110, ReportStatus.DELIVERED), (150, ReportStatus.REJECTED),
]


@pytest.mark.parametrize("code,expected", SMSRU_STATUSES)
def test_every_status_is_mapped(fake, code, expected):
    result = smsru(fake).send(send_request(phone=f"+79000001{code}"))
    eventually(lambda: fake.messages[result.provider_message_id]["status_code"] == code)
    [report] = smsru(fake).fetch_statuses([result.provider_message_id])
    assert (report.status, report.provider_code) == (expected, str(code))


def test_queue_states_and_unknown_ids(fake):
    assert SmsRuProvider.map_status("100") == SmsRuProvider.map_status("101") == ReportStatus.SENT
    [report] = smsru(fake).fetch_statuses(["000000-99999999"])
    assert (report.status, report.provider_code) == (ReportStatus.UNKNOWN, "-1")


def test_one_status_request_for_a_batch(fake):
    ids = [smsru(fake).send(send_request(phone=f"+7912345678{i}")).provider_message_id for i in range(3)]
    reports = smsru(fake).fetch_statuses(ids)
    assert sorted(r.provider_message_id for r in reports) == sorted(ids)
    [status_call] = fake.requests_to("/sms/status")
    assert form_of(status_call)["sms_id"] == ",".join(ids)


def test_balance(fake):
    assert smsru(fake).balance().amount == Decimal("4122.56")


def test_register_callback(fake):
    smsru(fake).register_callback("https://smsgate.example.com/webhooks/smsru/abc/")
    assert fake.callback_urls == ["https://smsgate.example.com/webhooks/smsru/abc/"]


# --- callbacks: data[] records signed with sha256(api_id + records) -----------------------------------------
API_ID = "00000000-0000-0000-0000-000000000000"
RECORDS = ["sms_status\n000000-10000000\n103\n1700000000", "sms_status\n000000-10000001\n104\n1700000005"]
HASH = "6aeb0f86e3ede677da5b0328948e1392350db6377a4a1299b2915cd00cfe177b"  # sms-providers.md §1.5


def test_the_documented_hash_example_verifies():
    provider = SmsRuProvider(credentials={"api_id": API_ID})
    provider.verify_webhook(webhook(form={"data[]": RECORDS, "hash": HASH}))
    assert FakeSmsRu(api_id=API_ID).sign(RECORDS) == HASH  # the fake signs as SMS.ru does


def test_a_batch_of_records_becomes_reports():
    provider = SmsRuProvider(credentials={"api_id": API_ID})
    records = [*RECORDS, "callcheck_status\n201937-542\n401\n1700000006"]
    reports = provider.parse_webhook(webhook(form={"data[]": records, "hash": "x"}))
    assert [(r.provider_message_id, r.status, r.provider_code) for r in reports] == [
        ("000000-10000000", ReportStatus.DELIVERED, "103"), ("000000-10000001", ReportStatus.EXPIRED, "104")]
    assert reports[0].occurred_at.timestamp() == 1700000000


def test_indexed_data_fields_are_read_too():
    provider = SmsRuProvider(credentials={"api_id": API_ID})
    request = webhook(form={"data[1]": RECORDS[1], "data[0]": RECORDS[0], "hash": HASH})
    provider.verify_webhook(request)
    assert [r.provider_code for r in provider.parse_webhook(request)] == ["103", "104"]


@pytest.mark.parametrize("form", [
    {"data[]": RECORDS, "hash": "0" * 64},  # bad
    {"data[]": RECORDS},  # missing
    {"data[]": RECORDS[:1], "hash": HASH},  # signed for other records
])
def test_bad_or_missing_hash_is_refused(form):
    with pytest.raises(WebhookSignatureError):
        SmsRuProvider(credentials={"api_id": API_ID}).verify_webhook(webhook(form=form))


def test_the_handler_answers_100():
    reply = SmsRuProvider().webhook_reply()
    assert (reply.status, reply.body) == (200, "100")
