"""The sweeper: nothing lost when the broker fails, no blind resend when a worker dies."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ProviderRoute
from deliveries import services
from deliveries.models import Attempt, AttemptOutcome, Delivery, DeliveryStatus
from deliveries.services import delivery_claim, delivery_create, delivery_send, delivery_sweep
from tests.deliveries.test_endpoint import queued_task_ids

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clean_queue_and_breaker(monkeypatch):
    queued_task_ids()
    services._broker_skip_until = 0.0
    yield
    services._broker_skip_until = 0.0


@pytest.fixture
def route(account):
    return ProviderRoute.objects.create(account=account, provider="console")


@pytest.fixture
def make(account, route):
    def make(**fields):
        delivery = delivery_create(account=account, phone="+79123456789", text="Код 1").delivery
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
        delivery.refresh_from_db()
        return delivery

    return make


def ago(seconds):
    return timezone.now() - timedelta(seconds=seconds)


def test_a_delivery_the_broker_never_got_is_requeued(make):
    delivery = make(enqueued_at=None, created_at=ago(10))
    result = delivery_sweep()
    assert result.requeued == 1 and queued_task_ids() == [str(delivery.pk)]
    delivery.refresh_from_db()
    assert delivery.enqueued_at is not None
    assert delivery_sweep().requeued == 0  # queued now: not again


def test_fresh_or_queued_or_scheduled_deliveries_are_left_alone(make):
    make(enqueued_at=None)  # inside the grace period: its publish may still be under way
    make(enqueued_at=ago(60), created_at=ago(60))  # queued, a worker will get it
    make(enqueued_at=None, created_at=ago(60), next_attempt_at=timezone.now() + timedelta(seconds=30))
    assert delivery_sweep().requeued == 0
    assert queued_task_ids() == []


def test_a_message_the_broker_lost_is_requeued_after_a_while(make, settings):
    delivery = make(enqueued_at=ago(settings.SMSGATE_LOST_MESSAGE_SECONDS + 1), created_at=ago(400))
    assert delivery_sweep().requeued == 1
    assert queued_task_ids() == [str(delivery.pk)]


def test_pending_past_its_deadline_expires_without_a_worker(make):
    delivery = make(valid_until=ago(1))
    assert delivery_sweep().expired == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.EXPIRED and delivery.finished_at


class TestDeadWorker:
    def claim(self, delivery, seconds_ago=3600):
        assert delivery_claim(delivery_id=delivery.pk)
        Delivery.objects.filter(pk=delivery.pk).update(claimed_at=ago(seconds_ago))

    def test_a_live_claim_is_left_alone(self, make):
        delivery = make()
        self.claim(delivery, seconds_ago=1)
        assert delivery_sweep().stale_resolved == 0

    def test_claimed_but_no_call_made_is_sent_again(self, make, account):
        delivery = make()
        self.claim(delivery)
        assert delivery_sweep().stale_resolved == 1
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING and queued_task_ids() == [str(delivery.pk)]
        delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SENT and delivery.attempts.count() == 1

    def test_provider_accepted_before_the_worker_died_means_sent(self, make, route):
        delivery = make()
        self.claim(delivery)
        Attempt.objects.create(delivery=delivery, route=route, provider="console", started_at=ago(3600),
                               finished_at=ago(3599), outcome=AttemptOutcome.SENT, provider_message_id="m-1")
        delivery_sweep()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.provider_message_id, delivery.route) == (DeliveryStatus.SENT, "m-1", route)
        assert queued_task_ids() == []

    def test_a_call_in_flight_is_ambiguous_a_login_code_gets_one_retry(self, make, route):
        delivery = make()
        for expected in (DeliveryStatus.PENDING, DeliveryStatus.UNKNOWN):
            Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None)
            self.claim(delivery)
            Attempt.objects.create(delivery=delivery, route=route, provider="console", started_at=ago(3600))
            delivery_sweep()
            delivery.refresh_from_db()
            assert delivery.status == expected
        assert delivery.attempts.filter(outcome=AttemptOutcome.AMBIGUOUS, error_class="worker_lost").count() == 2
        assert "may have been sent" in delivery.error_text

    def test_a_bulk_sms_in_flight_is_never_resent(self, make, route):
        delivery = make(kind="bulk")
        self.claim(delivery)
        Attempt.objects.create(delivery=delivery, route=route, provider="console", started_at=ago(3600))
        delivery_sweep()
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.UNKNOWN and queued_task_ids() == []
