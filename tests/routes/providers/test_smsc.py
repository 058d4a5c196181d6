"""SMSC.ru adapter against the fake SMSC (tests/fakes/smsc.py) over real HTTP."""

from decimal import Decimal

import pytest

from routes.providers.base import (
    ErrorClass,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
    StatusQuery,
)
from routes.providers.smsc import SmscProvider
from tests.conftest import eventually
from tests.fakes.smsc import FakeSmsc

from .helpers import adapter, form_of, send_request, webhook


@pytest.fixture
def fake():
    with FakeSmsc(status_delays=(0.01, 0.01)) as fake:
        yield fake


def smsc(fake, **kwargs):
    return adapter(SmscProvider, fake, **kwargs)


def test_request_shape(fake):
    request = send_request(validity_seconds=600)
    smsc(fake).send(request)
    [sent] = fake.requests_to("/sys/send.php")
    assert sent.method == "POST" and sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert form_of(sent) == {
        "login": "test-login", "psw": "test-password", "fmt": "3", "charset": "utf-8", "cost": "3",
        "phones": "+79123456789",  # with "+": SMSC does not "correct" it
        "mes": "Код: 1234", "id": request.reference, "sender": "ACME", "valid": "00:10",
    }


def test_success_uses_our_reference_as_the_message_id(fake):
    request = send_request()
    result = smsc(fake).send(request)
    assert result.provider_message_id == request.reference
    assert (result.parts, result.cost, result.status) == (1, Decimal("1.40"), ReportStatus.SENT)
    [received] = fake.received_for("79123456789")
    assert received.text == "Код: 1234"  # sent as UTF-8 and read as UTF-8 (charset=utf-8)
    assert received.reference == request.reference


def test_parts_of_a_long_text(fake):
    assert smsc(fake).send(send_request(text="Я" * 71)).parts == 2


def test_without_sender_the_parameter_is_left_out(fake):
    smsc(fake, sender="").send(send_request())
    assert "sender" not in form_of(fake.requests_to("/sys/send.php")[0])


@pytest.mark.parametrize("code,exc_class,error_class", [
    (1, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (3, ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    (4, ProviderTemporaryError, ErrorClass.THROTTLED),
    (5, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (6, ProviderRejectedError, ErrorClass.CONTENT_REJECTED),
    (7, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (8, ProviderRejectedError, ErrorClass.NO_ROUTE),
    (9, ProviderTemporaryError, ErrorClass.THROTTLED),
])
def test_every_error_code_has_its_class(fake, code, exc_class, error_class):
    with pytest.raises(exc_class) as caught:
        smsc(fake).send(send_request(phone=f"+7900000000{code}"))
    assert (caught.value.error_class, caught.value.code) == (error_class, str(code))
    if exc_class is ProviderTemporaryError:
        assert caught.value.retry_after >= 60 and not caught.value.ambiguous


def test_bad_credentials_are_an_auth_error(fake):
    with pytest.raises(ProviderAuthError) as caught:
        smsc(fake, credentials={"login": "test-login", "password": "wrong"}).send(send_request())
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.AUTH, "2")


def test_missing_credentials_never_reach_the_provider(fake):
    with pytest.raises(ProviderAuthError):
        smsc(fake, credentials={"login": "test-login"}).send(send_request())
    assert fake.requests == []


def test_a_repeated_send_is_reconciled_instead_of_refused(fake):
    """SMSC refuses an identical request within a minute (error 9): the first one got through."""
    request = send_request()
    first = smsc(fake).send(request)
    second = smsc(fake).send(request)
    assert second.provider_message_id == first.provider_message_id == request.reference
    assert len(fake.received_for("79123456789")) == 1


def test_the_same_text_for_another_delivery_within_a_minute_is_throttled(fake):
    smsc(fake).send(send_request())
    with pytest.raises(ProviderTemporaryError) as caught:
        smsc(fake).send(send_request())  # another reference: SMSC does not have it, so it is a real refusal
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.THROTTLED, "9")


def test_a_server_error_on_send_is_ambiguous(fake):
    fake.error_rate = 1.0  # the fake answers 502 without processing
    with pytest.raises(ProviderTemporaryError) as caught:
        smsc(fake).send(send_request())
    assert caught.value.ambiguous and caught.value.code == "502"


def test_the_backup_host_is_used_when_the_main_one_refuses_connections(fake):
    result = smsc(fake, base_url=f"http://127.0.0.1:1|{fake.base_url}").send(send_request())
    assert result.provider_message_id and len(fake.received) == 1


# --- statuses -------------------------------------------------------------------------------------
SMSC_STATUSES = [
    (-2, ReportStatus.FAILED), (0, ReportStatus.SENT), (1, ReportStatus.DELIVERED), (2, ReportStatus.DELIVERED),
    (3, ReportStatus.EXPIRED), (4, ReportStatus.DELIVERED), (20, ReportStatus.UNDELIVERED),
    (22, ReportStatus.REJECTED), (23, ReportStatus.REJECTED), (24, ReportStatus.FAILED),
    (25, ReportStatus.UNDELIVERED),
]


@pytest.mark.parametrize("code,expected", SMSC_STATUSES)
def test_every_status_is_mapped(fake, code, expected):
    phone = f"+79000001{code + 100:03d}"
    request = send_request(phone=phone)
    smsc(fake).send(request)
    eventually(lambda: fake.sent_to(phone[1:])[0]["status"] == code)
    [report] = smsc(fake).poll_statuses([StatusQuery(request.reference, phone, request.reference)])
    assert (report.provider_message_id, report.status, report.provider_code) == (request.reference, expected, str(code))
    assert report.occurred_at is not None
    assert "Код" not in str(report.raw)  # `all=1` returns the text: it is not kept


def test_waiting_and_unknown_statuses(fake):
    request = send_request()
    smsc(fake).send(request)
    reports = smsc(fake).poll_statuses([StatusQuery(request.reference, request.phone),
                                        StatusQuery("no-such-id", "+79123456780")])
    assert [(r.provider_message_id, r.status) for r in reports][1] == ("no-such-id", ReportStatus.UNKNOWN)
    assert reports[0].status in (ReportStatus.SENT, ReportStatus.DELIVERED)


def test_one_status_request_for_a_batch(fake):
    requests = [send_request(phone=f"+7912345678{i}") for i in range(3)]
    for request in requests:
        smsc(fake).send(request)
    reports = smsc(fake).poll_statuses([StatusQuery(r.reference, r.phone) for r in requests])
    assert [r.provider_message_id for r in reports] == [r.reference for r in requests]
    [status_call] = fake.requests_to("/sys/status.php")
    assert form_of(status_call)["id"] == ",".join(r.reference for r in requests) + ","


def test_reconcile_finds_a_message_whose_answer_was_lost(fake):
    request = send_request(phone="+79000000999")
    with pytest.raises(ProviderTemporaryError) as caught:
        smsc(fake).send(request)  # the fake accepts it, then drops the connection
    assert caught.value.ambiguous
    found = smsc(fake).reconcile(reference=request.reference, phone=request.phone)
    assert found.provider_message_id == request.reference
    assert smsc(fake).reconcile(reference="never-sent", phone=request.phone) is None


def test_balance(fake):
    balance = smsc(fake).balance()
    assert (balance.amount, balance.currency) == (Decimal("1234.50"), "RUR")


# --- callbacks [?]: tolerant parsing, the route token is the check ------------------------------------------
def test_callback_fields_are_parsed_tolerantly():
    provider = SmscProvider(credentials={"login": "l", "password": "p"})
    [report] = provider.parse_webhook(webhook(form={"id": "abc", "phone": "79123456789", "status": "1", "err": "0",
                                                    "ts": "1700000000", "mes": "Код: 1234"}))
    assert (report.provider_message_id, report.status, report.provider_code) == ("abc", ReportStatus.DELIVERED, "1")
    assert report.occurred_at.year == 2023 and report.raw["mes"] == "<text>"
    [from_query] = provider.parse_webhook(webhook(method="GET", query={"id": "abc", "status": "22"}))
    assert (from_query.status, from_query.error_class) == (ReportStatus.REJECTED, ErrorClass.INVALID_RECIPIENT)
    assert provider.parse_webhook(webhook(form={"phone": "79123456789", "mes": "incoming SMS"})) == []
