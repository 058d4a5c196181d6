"""Failover between an account's routes (issue 3, item 5), across real providers' fakes.

Routes are tried by priority. Auth, insufficient funds, account limits, provider-unavailable after
its retries, and route-specific rejections (no route to the number, sender name not approved) move
on to the next route; an invalid or blocked recipient, or forbidden content, never fails over.
Repeated auth or funds failures mark a route broken until its credentials change."""

import pytest
from django.utils import timezone

from routes.services import route_save
from deliveries.models import AttemptOutcome, Delivery, DeliveryStatus
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(account):
    def send(phone):
        delivery = delivery_create(account=account, phone=phone, text="Код: 1234").delivery
        outcome = delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        return delivery, outcome

    return send


def attempts(delivery):
    return list(delivery.attempts.values_list("provider", "outcome", "provider_code"))


@pytest.fixture
def backup(start_fake, route_for):
    """A healthy second route (Devino accepts every number the first routes refuse)."""
    fake = start_fake("devino")
    return fake, route_for(fake, priority=20)


@pytest.mark.parametrize("slug,phone,code,error_class", [
    ("smsru", "+79000000207", "207", "no_route"),
    ("twilio", "+79000021612", "21612", "no_route"),
    ("twilio", "+79000021606", "21606", "sender_rejected"),
    ("smsru", "+79000000204", "204", "sender_rejected"),
    ("smsc", "+79000000003", "3", "insufficient_funds"),
    ("smsru", "+79000000200", "200", "auth"),
    ("smsru", "+79000000206", "206", "account_rate_limited"),
])
def test_route_problems_move_on_to_the_next_route(start_fake, route_for, backup, send, slug, phone, code, error_class):
    route_for(start_fake(slug), priority=1, sender="+15005550006" if slug == "twilio" else "ACME")
    delivery, outcome = send(phone)
    assert outcome.status == DeliveryStatus.SENT and delivery.provider == "devino"
    assert attempts(delivery) == [(slug, AttemptOutcome.NEXT_ROUTE, code), ("devino", AttemptOutcome.SENT, "")]
    assert delivery.attempts.first().error_class == error_class


@pytest.mark.parametrize("slug,phone,code,error_class", [
    ("twilio", "+79000021211", "21211", "invalid_recipient"),
    ("twilio", "+79000021610", "21610", "blocked_recipient"),
    ("smsc", "+79000000007", "7", "invalid_recipient"),
    ("smsc", "+79000000006", "6", "content_rejected"),
    ("smsru", "+79000000215", "215", "blocked_recipient"),
    ("smsru", "+79000000231", "231", "recipient_rate_limited"),
])
def test_recipient_and_content_rejections_never_fail_over(start_fake, route_for, backup, send, slug, phone, code,
                                                          error_class):
    devino, _ = backup
    route_for(start_fake(slug), priority=1, sender="+15005550006" if slug == "twilio" else "ACME")
    delivery, outcome = send(phone)
    assert outcome.status == DeliveryStatus.REJECTED
    assert (delivery.status, delivery.error_class, delivery.error_code) == (DeliveryStatus.REJECTED, error_class, code)
    assert attempts(delivery) == [(slug, AttemptOutcome.REJECTED, code)]
    assert devino.received == []


def test_the_last_route_refusing_a_route_specific_rejection_ends_rejected(start_fake, route_for, send):
    route_for(start_fake("smsru"))
    delivery, _ = send("+79000000207")
    assert (delivery.status, delivery.error_class, delivery.error_code) == (DeliveryStatus.REJECTED, "no_route", "207")


def test_provider_unavailable_fails_over_after_its_retries(start_fake, route_for, backup, send):
    route_for(start_fake("twilio"), priority=1, sender="+15005550006")
    delivery, outcome = send("+79000020500")  # Twilio answers 500 / 20500 for this number
    statuses = [outcome.status]
    while outcome.status == DeliveryStatus.PENDING:
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        outcome = delivery_send(delivery_id=delivery.pk)
        statuses.append(outcome.status)
    assert statuses == [DeliveryStatus.PENDING, DeliveryStatus.PENDING, DeliveryStatus.SENT]
    delivery.refresh_from_db()
    assert delivery.provider == "devino"
    assert [a[1] for a in attempts(delivery)] == [AttemptOutcome.RETRY, AttemptOutcome.RETRY,
                                                  AttemptOutcome.NEXT_ROUTE, AttemptOutcome.SENT]


def test_throttling_waits_at_least_what_the_provider_asks(start_fake, route_for, send):
    route_for(start_fake("smsaero"))
    delivery, outcome = send("+79000000006")  # 429 with Retry-After: 2
    assert outcome.status == DeliveryStatus.PENDING and outcome.retry_in >= 2.0
    assert delivery.error_class == "throttled"


def test_funds_failures_mark_the_route_broken_and_new_credentials_clear_it(start_fake, route_for, backup, send):
    route = route_for(start_fake("smsc"), priority=1)
    for _ in range(2):
        delivery, _ = send("+79000000003")
        assert delivery.provider == "devino"
    route.refresh_from_db()
    assert route.is_broken and route.broken_reason.startswith("insufficient_funds: 3")
    delivery, _ = send("+79123456789")  # a broken route is not tried at all
    assert attempts(delivery) == [("devino", AttemptOutcome.SENT, "")]
    route_save(account=route.account, provider="smsc", route=route,
               credentials={"login": "test-login", "password": "new-password"})
    route.refresh_from_db()
    assert not route.is_broken and route.consecutive_failures == 0


def test_an_account_limit_is_not_a_broken_route(start_fake, route_for, backup, send):
    route = route_for(start_fake("smsru"), priority=1)
    for _ in range(3):
        send("+79000000206")  # SMS.ru 206: the account's daily limit
    route.refresh_from_db()
    assert not route.is_broken and route.consecutive_failures == 0


def test_a_success_resets_the_failure_count(start_fake, route_for, backup, send):
    route = route_for(start_fake("smsc"), priority=1)
    send("+79000000003")
    route.refresh_from_db()
    assert route.consecutive_failures == 1
    send("+79123456789")
    route.refresh_from_db()
    assert route.consecutive_failures == 0 and not route.is_broken


def test_broken_routes_are_visible_in_the_admin(admin_client, start_fake, route_for, account, send):
    route = route_for(start_fake("smsc"))
    for _ in range(2):
        send("+79000000003")
    route.refresh_from_db()
    response = admin_client.get(f"/admin/accounts/account/{account.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert route.broken_reason in page and f"/webhooks/smsc/{route.callback_token}/" in page
    assert "test-password" not in page
