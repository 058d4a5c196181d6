"""The sweeper: nothing lost when the broker fails, no blind resend when a worker dies."""

from datetime import timedelta

import pytest
from django.utils import timezone

from routes.models import ProviderRoute
from deliveries.services import outcomes, queueing, recovery
from routes.providers.base import SendRequest
from deliveries.models import Attempt, AttemptOutcome, Delivery, DeliveryStatus
from deliveries.services.dispatch import deliveries_claim
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.recovery import delivery_sweep
from tests.deliveries.test_endpoint import queued_task_ids

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clean_queue_and_breaker(monkeypatch):
    queued_task_ids()
    queueing._broker_skip_until = 0.0
    yield
    queueing._broker_skip_until = 0.0


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
        assert deliveries_claim(delivery_ids=[delivery.pk])
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


class TestDeadWorkerCallChecked:
    """A call in flight when its worker died: where the provider can be asked (Twilio lists the
    number's messages), it is asked before anything is sent again."""

    @pytest.fixture
    def twilio(self, start_fake, route_for):
        fake = start_fake("twilio")
        return fake, route_for(fake, sender="+15005550006")

    def dead_call(self, account, route, *, reached_the_provider, fake, kind="system"):
        delivery = delivery_create(account=account, phone="+79123456789", text="Код: 4321", kind=kind).delivery
        assert deliveries_claim(delivery_ids=[delivery.pk])
        Delivery.objects.filter(pk=delivery.pk).update(claimed_at=ago(3600))
        Attempt.objects.create(delivery=delivery, route=route, provider="twilio", started_at=ago(3600))
        if reached_the_provider:  # what the dead worker's request did before it died
            from routes.providers.twilio import TwilioProvider

            TwilioProvider(credentials=fake.credentials, sender="+15005550006", base_url=fake.base_url).send(
                SendRequest(phone="+79123456789", text="Код: 4321", reference=str(delivery.pk)))
        queued_task_ids()
        return delivery

    def test_the_provider_has_it_so_it_is_sent_not_resent(self, account, twilio):
        fake, route = twilio
        delivery = self.dead_call(account, route, reached_the_provider=True, fake=fake)
        assert delivery_sweep().stale_resolved == 1
        delivery.refresh_from_db()
        [message] = fake.messages.values()
        assert (delivery.status, delivery.provider_message_id) == (DeliveryStatus.SENT, message["sid"])
        [attempt] = delivery.attempts.all()
        assert (attempt.outcome, attempt.error_class) == (AttemptOutcome.SENT, "worker_lost")
        assert queued_task_ids() == [] and len(fake.received) == 1

    def test_the_provider_never_got_it_so_it_is_sent_again_even_in_bulk(self, account, twilio):
        fake, route = twilio
        delivery = self.dead_call(account, route, reached_the_provider=False, fake=fake, kind="bulk")
        assert delivery_sweep().stale_resolved == 1
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.attempts.get().outcome == AttemptOutcome.RETRY  # not ambiguous: Twilio said so
        assert queued_task_ids("sms-bulk") == [str(delivery.pk)]
        delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SENT and len(fake.received) == 1

    def test_a_provider_that_cannot_answer_leaves_the_ambiguous_rule(self, account, twilio):
        fake, route = twilio
        delivery = self.dead_call(account, route, reached_the_provider=False, fake=fake, kind="bulk")
        fake.error_rate = 1.0  # the list call fails too: nobody can tell
        delivery_sweep()
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.UNKNOWN
        assert delivery.attempts.get().outcome == AttemptOutcome.AMBIGUOUS and queued_task_ids("sms-bulk") == []


class TestRedeliveredClaim:
    """RabbitMQ redelivers a dead worker's message at once; its claim is resolved as soon as no live
    call can still hold it (recovery.redelivered_claim_seconds), not after the sweeper's timers."""

    def test_a_young_claim_is_checked_again_when_it_is_due(self, make, settings):
        settings.SMSGATE_PROVIDER_TIMEOUT = 4
        delivery = make()
        assert deliveries_claim(delivery_ids=[delivery.pk])
        Delivery.objects.filter(pk=delivery.pk).update(claimed_at=ago(2))
        assert recovery.deliveries_claim_check(delivery_ids=[str(delivery.pk)]) == 0
        from smsgate.celery import app as celery_app

        with celery_app.connection_for_write() as conn:
            simple = conn.SimpleQueue("sms-system")
            message = simple.get(block=False)
            assert message.headers["task"] == queueing.CLAIM_CHECK_TASK
            countdown = (timezone.datetime.fromisoformat(message.headers["eta"]) - timezone.now()).total_seconds()
            message.ack()
            simple.close()
        assert 6 <= countdown <= 8  # 3 s connect + 4 s read + 2 s margin, minus the 2 s it is old

    def test_an_old_enough_claim_is_resolved_at_once(self, make, route, settings):
        settings.SMSGATE_PROVIDER_TIMEOUT = 4
        delivery = make()
        assert deliveries_claim(delivery_ids=[delivery.pk])
        Delivery.objects.filter(pk=delivery.pk).update(claimed_at=ago(10))  # below the sweeper's 34 s
        assert delivery_sweep().stale_resolved == 0
        assert recovery.deliveries_claim_check(delivery_ids=[str(delivery.pk)]) == 1
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING and queued_task_ids() == [str(delivery.pk)]

    def test_finished_or_pending_deliveries_are_left_alone(self, make):
        sent = make(status=DeliveryStatus.SENT)
        pending = make()
        assert recovery.deliveries_claim_check(delivery_ids=[str(sent.pk), str(pending.pk)]) == 0
        assert queued_task_ids() == []


def test_a_retry_later_than_the_broker_may_hold_is_queued_by_the_sweeper_when_due(make, route, monkeypatch):
    from routes.providers.base import ProviderTemporaryError

    delivery = make(kind="bulk", valid_until=timezone.now() + timedelta(hours=2))
    assert deliveries_claim(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    outcome = outcomes.schedule_retry(delivery, ProviderTemporaryError("busy", code="429", retry_after=600),
                                       {"error_class": "throttled", "code": "429", "text": "busy"})
    assert outcome.status == DeliveryStatus.PENDING and outcome.retry_in is None  # no 10-minute countdown
    delivery.refresh_from_db()
    assert delivery.enqueued_at is None and delivery.next_attempt_at > timezone.now() + timedelta(seconds=590)
    assert delivery_sweep().requeued == 0  # not due yet
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=ago(1), created_at=ago(610))  # ten minutes on
    assert delivery_sweep().requeued == 1 and queued_task_ids("sms-bulk") == [str(delivery.pk)]
