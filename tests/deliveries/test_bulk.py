"""Bulk SMS, many per task: queued in batches (services.queueing), claimed in one statement and sent
concurrently on the sending threads by the one orchestrator (services.dispatch), each with the
single-delivery outcomes.

Provider calls are real HTTP to the local fake SMS.ru; the batches go to Celery's in-memory broker
here and to RabbitMQ in tests/e2e/test_bulk.py."""

import threading
import time

import pytest
from django.db import connection

from deliveries import tasks
from deliveries.services import dispatch, queueing
from deliveries.models import AttemptOutcome, Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.dispatch import deliveries_claim
from deliveries.services.intake import delivery_create
from smsgate.celery import QUEUE_BULK, QUEUE_CRM, QUEUE_SYSTEM, queue_name
from smsgate.celery import app as smsgate_app
from tests.deliveries.test_endpoint import queued_task_ids
from tests.fakes.smsru import FakeSmsRu
import itertools


@pytest.fixture
def create_bulk(account):
    def create(count, *, first=0):
        return [delivery_create(account=account, phone=f"+7912555{first + n:04d}", text=f"Скидка {n}%",
                                kind=DeliveryKind.BULK, enqueue=False).delivery for n in range(count)]

    return create


@pytest.fixture
def sending_threads(settings):
    """A fresh set of sending threads of the given size; stopped (connections closed) afterwards."""
    def start(size):
        settings.SMSGATE_SEND_THREADS = size
        dispatch.stop_sending_threads()

    yield start
    dispatch.stop_sending_threads()


@pytest.mark.django_db
def test_a_batch_is_claimed_once_and_each_delivery_gets_the_single_path_outcome(fake_smsru, smsru_route, account,
                                                                               settings):
    settings.SMSGATE_SEND_THREADS = 0  # in the test's own transaction, one by one
    smsru_route()
    normal, temporary, taken = (delivery_create(account=account, phone=phone, text="Скидка 10%",
                                                kind=DeliveryKind.BULK).delivery
                                for phone in ("+79123456701", "+79000000220", "+79123456703"))
    assert deliveries_claim(delivery_ids=[taken.pk])  # another worker has this one

    tasks.deliveries_send_batch([str(normal.pk), str(temporary.pk), str(taken.pk)])

    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert statuses == {normal.pk: DeliveryStatus.SENT, temporary.pk: DeliveryStatus.PENDING,
                        taken.pk: DeliveryStatus.SENDING}
    assert len(fake_smsru.sent_to("79123456701")) == 1 and not fake_smsru.sent_to("79123456703")
    temporary.refresh_from_db()
    assert temporary.next_attempt_at is not None
    assert list(temporary.attempts.values_list("outcome", flat=True)) == [AttemptOutcome.RETRY]
    assert not Delivery.objects.get(pk=taken.pk).attempts.exists()
    assert queued_task_ids(QUEUE_BULK) == [str(temporary.pk)]  # its retry: a single task, on the bulk queue


@pytest.mark.django_db(transaction=True)
def test_sending_threads_send_a_batch_concurrently_each_sms_once(smsru_route, create_bulk, settings,
                                                                  sending_threads):
    sending_threads(4)
    with FakeSmsRu(latency=0.3) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        smsru_route()
        deliveries = create_bulk(12)

        outcomes = dispatch.deliveries_send_batch(delivery_ids=[d.pk for d in deliveries])

        assert sorted(delivery_id for delivery_id, _ in outcomes) == sorted(str(d.pk) for d in deliveries)
        assert {outcome.status for _, outcome in outcomes} == {DeliveryStatus.SENT}
        assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SENT}
        assert len(fake.received) == 12 and not fake.duplicates()
        # Concurrent: some calls arrived while another was still waiting for its 0.3 s answer.
        arrivals = sorted(m.received_at for m in fake.received)
        assert any(later - earlier < 0.3 for earlier, later in itertools.pairwise(arrivals))


@pytest.mark.django_db(transaction=True)
def test_a_batch_never_claims_more_than_there_are_idle_threads(smsru_route, create_bulk, settings, sending_threads):
    """A claim must be sent at once (the sweeper takes old claims for a dead worker's): with two
    threads, never more than two deliveries of the batch are `sending` at a time."""
    sending_threads(2)
    with FakeSmsRu(latency=0.2) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        smsru_route()
        deliveries = create_bulk(8)
        most_sending, done = 0, threading.Event()

        def send_batch():  # as a worker's task thread does
            try:
                dispatch.deliveries_send_batch(delivery_ids=[d.pk for d in deliveries])
            finally:
                connection.close()
                done.set()

        runner = threading.Thread(target=send_batch)
        runner.start()
        while not done.is_set():
            most_sending = max(most_sending, Delivery.objects.filter(status=DeliveryStatus.SENDING).count())
            time.sleep(0.01)
        runner.join()
        assert 1 <= most_sending <= 2
        assert len(fake.received) == 8 and not fake.duplicates()


def test_sending_threads_are_handed_out_waited_for_and_report_back(monkeypatch):
    monkeypatch.setattr(dispatch, "provider_call", lambda plan: dispatch.ProviderCall(plan, latency_ms=plan * 2))
    threads = dispatch.SendingThreads(3)
    mine, other = threads.calls(), threads.calls()
    try:
        assert other.next(wanted=5, running=0) == ([], 3)  # all three idle threads, for one orchestrator
        got = []
        waiter = threading.Thread(target=lambda: got.append(mine.next(wanted=4, running=0)))
        waiter.start()
        waiter.join(0.1)
        assert waiter.is_alive() and not got  # none idle, nothing of its own finished: it waits
        other.give_back(2)
        waiter.join(5)
        assert got == [([], 2)]
        # A finished call wakes its own orchestrator with its result and makes its thread idle again.
        mine.start(21)
        [call], free = mine.next(wanted=0, running=1)
        assert (call.plan, call.latency_ms, free) == (21, 42, 0)
        monkeypatch.setattr(dispatch, "provider_call", lambda plan: 1 / 0)  # a call that raises still reports back
        mine.start(7)
        [call], _free = mine.next(wanted=0, running=1)
        assert call.plan == 7 and isinstance(call.error, ZeroDivisionError)
        assert threads.idle == 2
    finally:
        threads.executor.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_threaded_batch_gives_each_delivery_the_single_path_outcome(smsru_route, create_bulk, account, settings,
                                                                     sending_threads):
    """Successes are recorded together by the batch; a call that failed goes on, on its sending
    thread, the single-delivery way: a temporary error is retried, a route-specific rejection
    fails over to the next route."""
    sending_threads(4)
    with FakeSmsRu(latency=0.05) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        smsru_route(priority=1)
        smsru_route(priority=2)
        normal = create_bulk(5)
        temporary, no_route, taken = (
            delivery_create(account=account, phone=phone, text="Скидка", kind=DeliveryKind.BULK, enqueue=False).delivery
            for phone in ("+79000000220", "+79000000207", "+79125559999"))
        assert deliveries_claim(delivery_ids=[taken.pk])  # another worker has this one

        outcomes = dict(dispatch.deliveries_send_batch(delivery_ids=[d.pk for d in [*normal, temporary, no_route, taken]]))

        assert {delivery_id: outcome.status for delivery_id, outcome in outcomes.items()} == {
            **{str(d.pk): DeliveryStatus.SENT for d in normal},
            str(temporary.pk): DeliveryStatus.PENDING, str(no_route.pk): DeliveryStatus.REJECTED}
        assert outcomes[str(temporary.pk)].retry_in is not None
        statuses = dict(Delivery.objects.values_list("pk", "status"))
        assert [statuses[d.pk] for d in normal] == [DeliveryStatus.SENT] * 5
        assert (statuses[temporary.pk], statuses[no_route.pk], statuses[taken.pk]) == (
            DeliveryStatus.PENDING, DeliveryStatus.REJECTED, DeliveryStatus.SENDING)
        for delivery in normal:
            delivery.refresh_from_db()
            [attempt] = delivery.attempts.all()
            assert (attempt.outcome, attempt.provider_message_id) == (AttemptOutcome.SENT,
                                                                      delivery.provider_message_id)
            assert attempt.latency_ms >= 50 and attempt.finished_at is not None
        assert list(no_route.attempts.values_list("outcome", flat=True)) == [AttemptOutcome.NEXT_ROUTE,
                                                                            AttemptOutcome.REJECTED]
        assert list(temporary.attempts.values_list("outcome", flat=True)) == [AttemptOutcome.RETRY]
        assert not taken.attempts.exists()
        assert len(fake.received) == 5 and not fake.duplicates()  # only accepted messages count



@pytest.mark.django_db(transaction=True)
def test_a_batch_that_cannot_be_recorded_is_recorded_one_by_one(smsru_route, create_bulk, account):
    """One bad row (here a provider id longer than the column) must not leave the whole batch's
    statuses to the sweeper: the others are recorded alone."""
    from routes.providers.base import SendResult

    smsru_route()
    deliveries = create_bulk(3)
    plans = []
    for delivery in dispatch.deliveries_claim(delivery_ids=[d.pk for d in deliveries]):
        delivery.account = account
        plans.append(dispatch.delivery_send_plan(delivery, first_try=True))
    dispatch._attempts_open(plans)
    # The middle one cannot be stored: its reply is not JSON (a provider adapter's bug).
    results = [SendResult("id-0"), SendResult("id-1", raw={"odd": {1, 2}}), SendResult("id-2")]

    concluded, _next = dispatch._conclude([dispatch.ProviderCall(plan, latency_ms=100, result=result)
                                           for plan, result in zip(plans, results)])

    outcomes = dict(concluded)
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    bad = plans[1].delivery.pk
    assert str(bad) not in outcomes and statuses[bad] == DeliveryStatus.SENDING  # the sweeper's
    for plan in (plans[0], plans[2]):
        assert outcomes[str(plan.delivery.pk)].status == DeliveryStatus.SENT
        assert statuses[plan.delivery.pk] == DeliveryStatus.SENT


def queued_batches(queue=QUEUE_BULK) -> list[tuple[str, list]]:
    """(task name, delivery ids) of each message waiting in the in-memory broker queue, in order."""
    batches = []
    with smsgate_app.connection_for_write() as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                break
            batches.append((message.headers["task"], message.payload[0][0]))
            message.ack()
        simple.close()
    return batches


@pytest.mark.django_db
def test_bulk_deliveries_are_queued_a_batch_per_message(smsru_route, create_bulk, settings):
    queued_batches()
    settings.SMSGATE_SEND_BATCH_SIZE = 3
    smsru_route()
    ids = [str(d.pk) for d in create_bulk(7)]

    assert queueing.deliveries_enqueue_bulk(delivery_ids=ids) == 7

    assert queued_batches() == [(queueing.SEND_BATCH_TASK, ids[0:3]), (queueing.SEND_BATCH_TASK, ids[3:6]),
                                (queueing.SEND_BATCH_TASK, ids[6:7])]


@pytest.mark.django_db
def test_a_batch_the_broker_did_not_take_is_left_to_the_sweeper(smsru_route, create_bulk, monkeypatch):
    from deliveries.services import queueing as services

    monkeypatch.setattr(smsgate_app.conf, "broker_url", "amqp://guest:guest@127.0.0.1:1//")  # nothing listens
    monkeypatch.setattr(smsgate_app.amqp, "_producer_pool", None)  # Celery keeps the first broker's pool
    monkeypatch.setattr(services, "_broker_skip_until", 0.0)
    smsru_route()
    deliveries = create_bulk(4)
    assert all(d.enqueued_at is not None for d in deliveries)

    assert queueing.deliveries_enqueue_bulk(delivery_ids=[d.pk for d in deliveries]) == 0

    assert set(Delivery.objects.values_list("enqueued_at", flat=True)) == {None}


@pytest.mark.django_db(transaction=True)
def test_a_bulk_import_records_without_a_task_per_sms(smsru_route, account):
    smsru_route()
    queued_task_ids(QUEUE_BULK)  # empty the in-memory queue
    delivery_create(account=account, phone="+79125550001", text="Скидка", kind=DeliveryKind.BULK, enqueue=False)
    assert queued_task_ids(QUEUE_BULK) == []
    delivery_create(account=account, phone="+79125550002", text="Скидка", kind=DeliveryKind.BULK)
    assert len(queued_task_ids(QUEUE_BULK)) == 1


@pytest.mark.django_db
def test_several_deliveries_of_a_lane_are_queued_in_batches_and_one_alone_as_a_send_of_one(
        smsru_route, account, settings):
    crm_queue, system_queue = queue_name(QUEUE_CRM), queue_name(QUEUE_SYSTEM)
    queued_batches(crm_queue), queued_batches(system_queue)
    settings.SMSGATE_SEND_BATCH_SIZE = 2
    smsru_route()

    def create(kind, count, first):
        return [delivery_create(account=account, phone=f"+7912556{first + n:04d}", text="Заказ готов", kind=kind,
                                enqueue=False).delivery for n in range(count)]

    pipeline = create(DeliveryKind.PIPELINE, 5, 0)
    login_code = create(DeliveryKind.SYSTEM, 1, 10)

    assert queueing.deliveries_enqueue(deliveries=[*pipeline, *login_code]) == 6

    ids = [str(d.pk) for d in pipeline]
    assert queued_batches(crm_queue) == [(queueing.SEND_BATCH_TASK, ids[0:2]), (queueing.SEND_BATCH_TASK, ids[2:4]),
                                         (queueing.SEND_BATCH_TASK, ids[4:5])]
    assert queued_batches(system_queue) == [(queueing.SEND_TASK, str(login_code[0].pk))]

    card = create(DeliveryKind.CRM, 1, 20)
    assert queueing.deliveries_enqueue(deliveries=card) == 1
    assert queued_batches(crm_queue) == [(queueing.SEND_TASK, str(card[0].pk))]
