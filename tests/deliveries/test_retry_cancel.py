"""delivery_retry and delivery_cancel: the policy, and that a canceled delivery is never sent.

Sends are real HTTP to the local fake SMS.ru."""

from datetime import timedelta

import pytest
from django.utils import timezone, translation

from deliveries.models import Delivery, DeliveryKind, DeliveryStatus, StatusEvent
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.staff import CANCELED, DeliveryActionRefused, delivery_cancel, delivery_retry
from tests.deliveries.test_endpoint import queued_task_ids
from tests.staff import age, counters_snapshot, rebuilt_snapshot, set_state

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):  # the refusal messages are matched in English
        yield


@pytest.fixture
def create(account, smsru_route, fake_smsru):
    smsru_route()

    def create(phone="+79123456789", text="Код: 1234", **kwargs):
        return delivery_create(account=account, phone=phone, text=text, **kwargs).delivery

    return create


def failed(delivery, **fields):
    values = dict(status=DeliveryStatus.FAILED, error_class="provider_unavailable", error_code="500",
                  finished_at=timezone.now())
    values.update(fields)
    return set_state(delivery, **values)


def test_a_failed_login_code_inside_its_window_is_sent_again(create, fake_smsru, django_capture_on_commit_callbacks):
    delivery = failed(create())
    with django_capture_on_commit_callbacks(execute=True):
        retried = delivery_retry(delivery=delivery, by="alice")
    assert retried.status == DeliveryStatus.PENDING
    assert (retried.error_class, retried.finished_at, retried.valid_until) == ("", None, delivery.valid_until)
    assert str(delivery.pk) in queued_task_ids()
    event = StatusEvent.objects.get(delivery=delivery)
    assert (event.source, event.status, event.raw) == ("system", "pending", {"action": "retry", "by": "alice"})
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and len(fake_smsru.sent_to("79123456789")) == 1
    assert counters_snapshot() == rebuilt_snapshot()


def test_an_expired_test_sms_gets_a_fresh_validity_window(create):
    delivery = create(kind=DeliveryKind.TEST)
    delivery = age(set_state(delivery, status=DeliveryStatus.EXPIRED, error_class="expired",
                             finished_at=timezone.now()), hours=2)
    window = delivery.valid_until - delivery.created_at
    retried = delivery_retry(delivery=delivery)
    assert retried.status == DeliveryStatus.PENDING
    assert retried.valid_until - timezone.now() == pytest.approx(window, abs=timedelta(seconds=5))


def test_a_login_code_past_its_window_is_not_retried(create):
    delivery = age(failed(create()), minutes=11)
    with pytest.raises(DeliveryActionRefused, match="validity"):
        delivery_retry(delivery=delivery)
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED


def test_old_test_and_bulk_sms_are_not_retried(create):
    delivery = age(failed(create(kind=DeliveryKind.BULK)), days=2)
    with pytest.raises(DeliveryActionRefused, match="day"):
        delivery_retry(delivery=delivery)


@pytest.mark.parametrize("status", [DeliveryStatus.PENDING, DeliveryStatus.SENT, DeliveryStatus.DELIVERED,
                                    DeliveryStatus.REJECTED, DeliveryStatus.UNKNOWN, DeliveryStatus.UNDELIVERED])
def test_only_failed_or_expired_deliveries_are_retried(create, status):
    delivery = set_state(create(), status=status)
    with pytest.raises(DeliveryActionRefused):
        delivery_retry(delivery=delivery)
    assert Delivery.objects.get(pk=delivery.pk).status == status


def test_a_canceled_delivery_stays_canceled(create):
    delivery = delivery_cancel(delivery=create())
    with pytest.raises(DeliveryActionRefused):
        delivery_retry(delivery=delivery)


def test_retry_needs_an_active_account_and_a_route_left(create, account, smsru_route):
    delivery = failed(create())
    account.__class__.objects.filter(pk=account.pk).update(is_active=False)
    with pytest.raises(DeliveryActionRefused, match="disabled"):
        delivery_retry(delivery=delivery)
    account.__class__.objects.filter(pk=account.pk).update(is_active=True)
    account.routes.update(is_broken=True)
    with pytest.raises(DeliveryActionRefused, match="route"):
        delivery_retry(delivery=delivery)


def test_two_retries_of_one_delivery_make_one(create):
    delivery = failed(create())
    delivery_retry(delivery=delivery)
    with pytest.raises(DeliveryActionRefused):
        delivery_retry(delivery=delivery)
    assert StatusEvent.objects.filter(delivery=delivery).count() == 1


def test_a_canceled_delivery_is_never_sent(create, fake_smsru):
    delivery = create()
    canceled = delivery_cancel(delivery=delivery, by="bob")
    assert (canceled.status, canceled.error_class) == (DeliveryStatus.FAILED, CANCELED)
    assert canceled.finished_at is not None
    # The queued task still runs: the claim fails and nothing goes out.
    assert delivery_send(delivery_id=delivery.pk) is None
    assert fake_smsru.sent_to("79123456789") == []
    assert StatusEvent.objects.get(delivery=delivery).raw == {"action": "cancel", "by": "bob"}
    assert counters_snapshot() == rebuilt_snapshot()


def test_a_delivery_waiting_for_a_retry_can_be_canceled(create):
    delivery = create(phone="+79000000220")  # SMS.ru 220: temporary error, back to pending
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at is not None
    canceled = delivery_cancel(delivery=delivery)
    assert canceled.status == DeliveryStatus.FAILED and canceled.next_attempt_at is None


@pytest.mark.parametrize("status", [DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.DELIVERED,
                                    DeliveryStatus.FAILED])
def test_only_pending_deliveries_are_canceled(create, status):
    delivery = set_state(create(), status=status)
    with pytest.raises(DeliveryActionRefused):
        delivery_cancel(delivery=delivery)
    assert Delivery.objects.get(pk=delivery.pk).status == status
