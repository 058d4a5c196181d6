"""Single sends gathered into small batches (services.gathering): login codes arriving together are
claimed in one statement and sent at once; one alone goes at once; a redelivered message twice in a
batch is sent once; a failing batch fails every task in it. Real PostgreSQL, real HTTP to the fake
SMS.ru, real threads as a worker's task threads."""

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from deliveries import tasks
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services import dispatch
from deliveries.services.gathering import Gathering
from deliveries.services.intake import delivery_create
from tests.fakes.smsru import FakeSmsRu


@pytest.fixture
def login_codes(account, smsru_route):
    smsru_route()

    def create(count, *, first=0):
        return [str(delivery_create(account=account, phone=f"+7912557{first + n:04d}", text=f"Код: {n}",
                                    kind=DeliveryKind.SYSTEM, enqueue=False).delivery.pk) for n in range(count)]

    return create


@pytest.fixture
def fake(settings):
    settings.SMSGATE_SEND_THREADS = 8
    dispatch.stop_sending_threads()
    with FakeSmsRu(latency=0.05) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        yield fake
    dispatch.stop_sending_threads()


def as_task_threads(gathering, ids, *, spacing=0.0):
    """Each id on its own thread, as a worker's task threads hold one message each."""
    results, start = {}, threading.Barrier(len(ids))

    def one(index_and_id):
        index, delivery_id = index_and_id
        start.wait()
        if spacing:
            threading.Event().wait(spacing * index)
        try:
            results[delivery_id] = gathering.send_one(delivery_id)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each task got
            results[delivery_id] = exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        list(pool.map(one, enumerate(ids)))
    return results


@pytest.mark.django_db(transaction=True)
def test_login_codes_arriving_together_are_claimed_in_one_statement_and_each_gets_its_outcome(login_codes, fake):
    ids = login_codes(6)
    gathering = Gathering(wait=5.0, size=6)  # full at 6: it goes then
    gathering.send_one(login_codes(1, first=50)[0])  # the lane was busy a moment ago: the next arrivals gather

    results = as_task_threads(gathering, ids)

    assert {results[i].status for i in ids} == {DeliveryStatus.SENT}
    rows = Delivery.objects.filter(pk__in=ids)
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    # One claim statement: PostgreSQL's now() is the transaction's, the same for every row it claimed.
    assert len({row.claimed_at for row in rows}) == 1
    assert len(fake.received) == 7 and not fake.duplicates()


@pytest.mark.django_db(transaction=True)
def test_sends_arriving_one_by_one_go_at_once_each_alone(login_codes, fake):
    first, second = login_codes(2)
    arrivals = itertools.count(0, 60)  # a clock that says each arrival came a minute after the last
    gathering = Gathering(wait=30.0, size=16, clock=lambda: next(arrivals))  # a wait that would show
    started = time.monotonic()

    results = as_task_threads(gathering, [first, second])

    assert time.monotonic() - started < 20  # neither waited for company
    assert results[first].status == results[second].status == DeliveryStatus.SENT
    claimed = dict(Delivery.objects.filter(pk__in=[first, second]).values_list("pk", "claimed_at"))
    assert len(set(claimed.values())) == 2
    assert len(fake.received) == 2


@pytest.mark.django_db(transaction=True)
def test_a_message_twice_in_one_batch_is_sent_once(login_codes, fake):
    delivery_id, other = login_codes(2)
    gathering = Gathering(wait=1.0, size=3)
    gathering.send_one(login_codes(1, first=60)[0])

    results = as_task_threads(gathering, [delivery_id, other, delivery_id])  # RabbitMQ redelivered it meanwhile

    assert Delivery.objects.get(pk=delivery_id).status == DeliveryStatus.SENT
    assert len(fake.sent_to(f"7912557{0:04d}")) == 1
    assert results[other].status == DeliveryStatus.SENT


@pytest.mark.django_db(transaction=True)
def test_a_malformed_message_goes_alone_and_its_batch_is_sent(login_codes, fake):
    ids = login_codes(3)
    gathering = Gathering(wait=5.0, size=3)
    gathering.send_one(login_codes(1, first=70)[0])

    results = as_task_threads(gathering, [*ids, "not-a-delivery-id"])

    assert results["not-a-delivery-id"] is None
    assert {results[i].status for i in ids} == {DeliveryStatus.SENT}
    assert len({row.claimed_at for row in Delivery.objects.filter(pk__in=ids)}) == 1


@pytest.mark.django_db(transaction=True)
def test_the_send_task_goes_through_the_gathering(login_codes, fake):
    delivery_id = login_codes(1)[0]

    tasks.delivery_send.run(delivery_id)

    assert Delivery.objects.get(pk=delivery_id).status == DeliveryStatus.SENT
    assert len(fake.received) == 1
