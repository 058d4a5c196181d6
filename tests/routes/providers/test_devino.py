"""Devino Telecom adapter against the fake Devino REST v2 (tests/fakes/devino.py) over real HTTP."""

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
from routes.providers.devino import DevinoProvider
from tests.conftest import eventually
from tests.fakes.devino import FakeDevino

from .helpers import adapter, form_of, send_request


@pytest.fixture
def fake():
    with FakeDevino(status_delays=(0.01, 0.01)) as fake:
        yield fake


def devino(fake, **kwargs):
    return adapter(DevinoProvider, fake, **kwargs)


def test_request_shape(fake):
    devino(fake).send(send_request(validity_seconds=600))
    [sent] = fake.requests_to("/rest/v2/Sms/Send")
    assert sent.method == "POST"
    assert form_of(sent) == {"Login": "test-login", "Password": "test-password", "DestinationAddress": "79123456789",
                             "Data": "Код: 1234", "SourceAddress": "ACME", "Validity": "10"}


def test_success(fake):
    result = devino(fake).send(send_request())
    assert result.provider_message_id.startswith("GW0") and result.parts == 1
    assert [m.text for m in fake.received_for("79123456789")] == ["Код: 1234"]


def test_a_long_message_has_one_id_per_part_and_the_first_is_followed(fake):
    result = devino(fake).send(send_request(text="Я" * 140))
    assert result.parts == 3 and len(result.raw["ids"]) == 3
    assert result.provider_message_id == result.raw["ids"][0] and result.provider_message_id.endswith("-3-1")


@pytest.mark.parametrize("code,exc_class,error_class", [
    (1, ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    (2, ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),  # "Invalid argument: DestinationAddress"
    (5, ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    (6, ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    (7, ProviderAuthError, ErrorClass.AUTH),
    (8, ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    (9, ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
])
def test_every_error_code_has_its_class(fake, code, exc_class, error_class):
    with pytest.raises(exc_class) as caught:
        devino(fake).send(send_request(phone=f"+7900000000{code}"))
    assert (caught.value.error_class, caught.value.code) == (error_class, str(code))
    if exc_class is ProviderTemporaryError:
        assert not caught.value.ambiguous  # a documented error answer: nothing was sent


def test_bad_credentials_are_code_4(fake):
    with pytest.raises(ProviderAuthError) as caught:
        devino(fake, credentials={"login": "test-login", "password": "nope"}).send(send_request())
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.AUTH, "4")


def test_a_missing_sender_is_a_bad_request(fake):
    with pytest.raises(ProviderBadRequestError) as caught:
        devino(fake, sender="").send(send_request())
    assert caught.value.code == "1"


def test_the_published_error_sample_is_read_even_though_it_is_not_json(fake):
    """Devino's docs print errors as `{ Code: 4, Desc: "..." }` (unquoted keys)."""
    from tests.fakes.base import FakeResponse

    fake.handle = lambda request: FakeResponse(401, '{  \n  Code: 4,  \n  Desc: "Invalid user login or password" \n}')
    with pytest.raises(ProviderAuthError) as caught:
        devino(fake).send(send_request())
    assert (caught.value.code, caught.value.message) == ("4", "Invalid user login or password")


DEVINO_STATES = [
    (-1, ReportStatus.SENT), (0, ReportStatus.DELIVERED), (10, ReportStatus.REJECTED), (11, ReportStatus.REJECTED),
    (41, ReportStatus.REJECTED), (42, ReportStatus.REJECTED), (46, ReportStatus.EXPIRED),
    (47, ReportStatus.UNDELIVERED), (48, ReportStatus.REJECTED), (69, ReportStatus.REJECTED),
    (-98, ReportStatus.FAILED), (99, ReportStatus.UNKNOWN),
]


@pytest.mark.parametrize("state,expected", DEVINO_STATES)
def test_every_state_is_mapped(fake, state, expected):
    result = devino(fake).send(send_request(phone=f"+79000001{state + 100:03d}"))
    eventually(lambda: fake.segments[result.provider_message_id]["state"] == state)
    [report] = devino(fake).fetch_statuses([result.provider_message_id])
    assert (report.provider_message_id, report.status, report.provider_code) == (
        result.provider_message_id, expected, str(state))
    [poll] = fake.requests_to("/rest/v2/Sms/State")
    assert poll.method == "GET" and poll.query["messageId"] == [result.provider_message_id]


def test_queued_and_unknown_states(fake):
    assert DevinoProvider.map_status("-2") == ReportStatus.SENT
    [report] = devino(fake).fetch_statuses(["GW0NOSUCHID"])
    assert (report.status, report.provider_code) == (ReportStatus.UNKNOWN, "255")


def test_balance(fake):
    assert devino(fake).balance().amount == Decimal("20015.3")


def test_no_callbacks():
    assert not DevinoProvider.supports_callbacks and DevinoProvider.supports_polling
