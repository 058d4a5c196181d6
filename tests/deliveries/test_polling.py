"""The status poller (Celery beat task deliveries.poll_statuses): batches, backoff, `unknown`
deliveries, reconciliation by our own id, and the report horizon. Providers are the fakes, over HTTP."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import tasks
from deliveries.models import Delivery, DeliveryStatus, StatusEvent
from routes.providers.base import SendRequest
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.polling import deliveries_close_without_report, deliveries_poll
from deliveries.services.queueing import POLL_TASK
from tests.conftest import eventually
from tests.deliveries.test_endpoint import queued_task_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(account):
    def send(phone="+79123456789", text="Код: 1234", **kwargs):
        delivery = delivery_create(account=account, phone=phone, text=text, **kwargs).delivery
        delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        return delivery

    return send


def make_due(*deliveries):
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(next_poll_at=timezone.now())


def fresh(delivery):
    delivery.refresh_from_db()
    return delivery


def test_a_provider_without_callbacks_is_polled_to_its_final_status(start_fake, route_for, send, settings):
    fake = start_fake("devino")
    route_for(fake)
    before = timezone.now()
    delivery = send()
    assert delivery.status == DeliveryStatus.SENT
    # First poll one interval after sending (no callbacks will come).
    assert delivery.next_poll_at - before >= timedelta(seconds=settings.SMSGATE_POLL_INTERVAL)
    assert deliveries_poll().claimed == 0  # not due yet

    eventually(lambda: fake.segments[delivery.provider_message_id]["state"] == 0)
    make_due(delivery)
    result = deliveries_poll()
    assert (result.claimed, result.polled, result.moved) == (1, 1, 1)
    delivery = fresh(delivery)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.finished_at
    event = StatusEvent.objects.get(delivery=delivery)
    assert (event.source, event.provider_code, event.applied) == ("poll", "0", True)


def test_providers_with_callbacks_are_polled_only_after_a_grace_period(start_fake, route_for, send, settings):
    route_for(start_fake("twilio"), sender="+15005550006")
    before = timezone.now()
    delivery = send()
    assert delivery.next_poll_at - before >= timedelta(seconds=settings.SMSGATE_POLL_CALLBACK_GRACE)


def test_backoff_doubles_and_an_unchanged_status_leaves_no_event(start_fake, route_for, send, settings):
    fake = start_fake("devino", status_delays=(60, 60))  # stays queued for the whole test
    route_for(fake)
    delivery = send()
    gaps = []
    for _ in range(3):
        make_due(delivery)
        started = timezone.now()
        deliveries_poll()
        gaps.append((fresh(delivery).next_poll_at - started).total_seconds())
    interval = settings.SMSGATE_POLL_INTERVAL
    assert [round(g / interval) for g in gaps] == [1, 2, 4]
    assert fresh(delivery).poll_count == 3 and fresh(delivery).status == DeliveryStatus.SENT
    assert not StatusEvent.objects.filter(delivery=delivery).exists()
    assert len(fake.requests_to("/rest/v2/Sms/State")) == 3


def test_the_backoff_is_capped_at_an_hour(start_fake, route_for, send):
    route_for(start_fake("devino", status_delays=(60, 60)))
    delivery = send()
    Delivery.objects.filter(pk=delivery.pk).update(poll_count=30, next_poll_at=timezone.now())
    started = timezone.now()
    deliveries_poll()
    assert (fresh(delivery).next_poll_at - started).total_seconds() == pytest.approx(3600, abs=5)


def test_smsru_is_polled_in_batches(start_fake, route_for, send):
    fake = start_fake("smsru")
    route_for(fake)
    deliveries = [send(phone=f"+7912345678{i}") for i in range(5)]
    eventually(lambda: all(m["status_code"] == 103 for m in fake.messages.values()))
    make_due(*deliveries)
    result = deliveries_poll(batch_size=2)
    assert (result.claimed, result.moved) == (5, 5)
    assert all(fresh(d).status == DeliveryStatus.DELIVERED for d in deliveries)
    # Three claims of at most two; each claim's messages asked in one request (SMS.ru takes lists).
    assert sorted(len(r.value("sms_id").split(",")) for r in fake.requests_to("/sms/status")) == [1, 2, 2]


def test_twilio_is_asked_one_message_at_a_time(start_fake, route_for, send):
    fake = start_fake("twilio")
    route_for(fake, sender="+15005550006")
    deliveries = [send(phone=f"+7912345678{i}") for i in range(3)]
    eventually(lambda: all(m["status"] == "delivered" for m in fake.messages.values()))
    make_due(*deliveries)
    assert deliveries_poll().moved == 3
    assert len([r for r in fake.requests if r.path.endswith(".json") and "/Messages/SM" in r.path]) == 3


def test_a_failing_poll_backs_off_and_keeps_the_status(start_fake, route_for, send):
    fake = start_fake("smsaero")
    route = route_for(fake)
    delivery = send()
    route.credentials = {"email": "test@example.com", "api_key": "revoked"}
    route.save()
    make_due(delivery)
    result = deliveries_poll()
    assert (result.claimed, result.errors, result.moved) == (1, 1, 0)
    delivery = fresh(delivery)
    assert delivery.status == DeliveryStatus.SENT and delivery.next_poll_at > timezone.now()


def test_the_default_route_is_polled_too(settings, send):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    delivery = send()
    assert delivery.provider == "console" and delivery.route is None
    make_due(delivery)
    deliveries_poll()
    assert fresh(delivery).status == DeliveryStatus.DELIVERED


# --- `unknown` deliveries: reconciled where the provider can look them up by our id --------------------------
def test_an_ambiguous_smsc_send_is_reconciled_at_once(start_fake, route_for, send):
    fake = start_fake("smsc")
    route_for(fake)
    delivery = send(phone="+79000000999")  # SMSC takes it, then drops the connection
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.provider_message_id == str(delivery.pk)  # found by our own id: no resend
    assert len(fake.received) == 1
    [attempt] = delivery.attempts.all()
    assert (attempt.outcome, attempt.error_class) == ("sent", "timeout")


def test_an_ambiguous_smsc_send_that_never_arrived_is_sent_again(start_fake, route_for, send):
    fake = start_fake("smsc", error_rate=1.0, fault_paths=["/sys/send.php"])  # 502 before processing
    route_for(fake)
    delivery = send()
    assert delivery.status == DeliveryStatus.PENDING  # SMSC does not have it: safe to send again
    assert [a.outcome for a in delivery.attempts.all()] == ["retry"]
    fake.error_rate = 0.0
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    delivery_send(delivery_id=delivery.pk)
    assert fresh(delivery).status == DeliveryStatus.SENT and len(fake.received) == 1


def test_an_unknown_delivery_is_polled_and_reconciled_later(start_fake, route_for, send):
    fake = start_fake("smsc")
    route_for(fake)
    fake.error_rate = 1.0  # the provider does not answer at all: neither the send nor the lookup
    delivery = send(phone="+79000000999")
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    delivery_send(delivery_id=delivery.pk)  # a login code gets one retry, then `unknown`
    delivery = fresh(delivery)
    assert delivery.status == DeliveryStatus.UNKNOWN and "may have been sent" in delivery.error_text
    assert delivery.provider == "smsc" and delivery.next_poll_at is not None
    assert fake.received == []

    # It did reach SMSC after all (the fake's answers were lost): the poller finds it by our id.
    fake.error_rate = 0.0
    fake.messages[(str(delivery.pk), "79000000999")] = {"id": str(delivery.pk), "phone": "79000000999",
                                                        "mes": "x", "sender": "", "status": 1, "err": 0,
                                                        "last_timestamp": 1700000000}
    make_due(delivery)
    result = deliveries_poll()
    assert result.reconciled == 1
    delivery = fresh(delivery)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.provider_message_id == str(delivery.pk)


def test_an_unknown_delivery_the_provider_never_got_is_sent_again_within_its_validity(
        start_fake, route_for, send, django_capture_on_commit_callbacks):
    fake = start_fake("smsc", error_rate=1.0)
    route_for(fake)
    delivery = send()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    delivery_send(delivery_id=delivery.pk)
    assert fresh(delivery).status == DeliveryStatus.UNKNOWN
    fake.error_rate = 0.0
    make_due(delivery)
    queued_task_ids()
    with django_capture_on_commit_callbacks(execute=True):
        deliveries_poll()
    delivery = fresh(delivery)
    assert delivery.status == DeliveryStatus.PENDING and queued_task_ids() == [str(delivery.pk)]
    delivery_send(delivery_id=delivery.pk)
    assert fresh(delivery).status == DeliveryStatus.SENT and len(fake.received) == 1


def test_an_ambiguous_twilio_send_is_reconciled_by_listing_the_numbers_messages(start_fake, route_for, send):
    fake = start_fake("twilio")
    route_for(fake, sender="+15005550006")
    delivery = send(phone="+79000099999")  # Twilio takes it, then drops the connection
    assert delivery.status == DeliveryStatus.SENT and len(fake.received) == 1  # found: not sent again
    [message] = fake.messages.values()
    assert delivery.provider_message_id == message["sid"]
    [attempt] = delivery.attempts.all()
    assert (attempt.outcome, attempt.error_class, attempt.provider_message_id) == ("sent", "timeout", message["sid"])


def test_a_twilio_message_with_another_text_or_from_before_the_attempt_is_not_taken_for_ours(start_fake, route_for):
    from datetime import datetime, timezone as dt_timezone

    from routes.providers.twilio import TwilioProvider

    fake = start_fake("twilio")
    provider = TwilioProvider(credentials=fake.credentials, sender="+15005550006", base_url=fake.base_url)
    before = datetime.now(dt_timezone.utc)
    result = provider.send(SendRequest(phone="+79123456789", text="Код: 1111", reference="r1"))
    assert provider.reconcile(reference="r2", phone="+79123456789", text="Код: 2222", since=before) is None
    assert provider.reconcile(reference="r1", phone="+79123450000", text="Код: 1111", since=before) is None
    later = before + timedelta(minutes=10)  # an older message with the same text is someone else's
    assert provider.reconcile(reference="r1", phone="+79123456789", text="Код: 1111", since=later) is None
    found = provider.reconcile(reference="r1", phone="+79123456789", text="Код: 1111", since=before)
    assert found is not None and found.provider_message_id == result.provider_message_id


def test_unknown_without_a_way_to_ask_waits_for_the_horizon(start_fake, route_for, send):
    fake = start_fake("smsru", drop_rate=1.0)  # SMS.ru takes each message, the answer is lost
    route_for(fake)
    delivery = send(kind="bulk")  # a bulk SMS is never retried blindly, and SMS.ru cannot be asked
    assert delivery.status == DeliveryStatus.UNKNOWN and delivery.next_poll_at is None
    assert len(fake.received) == 1
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(hours=73))
    deliveries_poll()
    delivery = fresh(delivery)
    assert (delivery.status, delivery.error_class) == (DeliveryStatus.FAILED, "no_report")


# --- the report horizon ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [DeliveryStatus.SENT, DeliveryStatus.UNKNOWN, DeliveryStatus.SENDING])
def test_no_final_status_after_the_horizon_is_failed_no_report(account, settings, status):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    old = delivery_create(account=account, phone="+79123456789", text="1").delivery
    young = delivery_create(account=account, phone="+79123456789", text="2").delivery
    Delivery.objects.filter(pk__in=[old.pk, young.pk]).update(status=status)
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=72, minutes=1))
    assert deliveries_close_without_report() == 1
    old, young = fresh(old), fresh(young)
    assert (old.status, old.error_class, old.error_text) == (
        DeliveryStatus.FAILED, "no_report", "no final delivery report within 72 h")
    assert old.finished_at and young.status == status
    event = StatusEvent.objects.get(delivery=old)
    assert (event.source, event.status, event.raw) == ("system", "failed", {"reason": "no_report", "horizon_hours": 72})


def test_the_horizon_is_configurable_and_spares_final_deliveries(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    settings.SMSGATE_REPORT_HORIZON_HOURS = 1
    sent = delivery_create(account=account, phone="+79123456789", text="1").delivery
    done = delivery_create(account=account, phone="+79123456789", text="2").delivery
    Delivery.objects.filter(pk=sent.pk).update(status=DeliveryStatus.SENT)
    Delivery.objects.filter(pk=done.pk).update(status=DeliveryStatus.DELIVERED)
    Delivery.objects.update(created_at=timezone.now() - timedelta(hours=2))
    assert deliveries_close_without_report() == 1
    assert fresh(sent).status == DeliveryStatus.FAILED and fresh(done).status == DeliveryStatus.DELIVERED


# --- the task and its schedule --------------------------------------------------------------------------------
def test_the_task_runs_the_poller(start_fake, route_for, send):
    fake = start_fake("devino")
    route_for(fake)
    delivery = send()
    eventually(lambda: fake.segments[delivery.provider_message_id]["state"] == 0)
    make_due(delivery)
    tasks.deliveries_poll()
    assert fresh(delivery).status == DeliveryStatus.DELIVERED


def test_beat_runs_the_poller_every_interval(settings):
    from smsgate.celery import app

    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == POLL_TASK]
    assert entry["schedule"] == settings.SMSGATE_POLL_INTERVAL
    assert entry["options"]["queue"] == "maintenance"
    assert POLL_TASK in app.tasks
