"""End to end: bulk SMS queued in batches → RabbitMQ → a real Celery worker's sending threads → fake SMS.ru."""

import pytest

import smsgate.celery
from deliveries.services.queueing import deliveries_enqueue_bulk
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.intake import delivery_create
from smsgate.celery import app as smsgate_app
from tests.conftest import E2E_BROKER_URL
from tests.fakes.smsru import FakeSmsRu

from .stack import wait_for
import itertools

pytestmark = pytest.mark.e2e


def test_bulk_batches_are_sent_by_a_worker_each_sms_once(stack, smsru_route, account, settings, monkeypatch):
    # Recorded without a task each, as a bulk import does: the worker gets them only through the
    # batches queued below.
    smsru_route()
    deliveries = [delivery_create(account=account, phone=f"+7912666{n:04d}", text=f"Скидка {n}%",
                                  kind=DeliveryKind.BULK, enqueue=False).delivery for n in range(40)]
    # This process publishes to the stack's RabbitMQ, on the stack's queues.
    monkeypatch.setattr(smsgate_app.conf, "broker_url", E2E_BROKER_URL)
    monkeypatch.setattr(smsgate_app.amqp, "_producer_pool", None)  # Celery keeps the first broker's pool
    monkeypatch.setattr(smsgate.celery, "QUEUE_PREFIX", stack.queue_prefix)
    settings.SMSGATE_SEND_BATCH_SIZE = 10
    with FakeSmsRu(latency=0.2) as fake:
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={fake.url}", SMSGATE_SEND_THREADS="8")
        stack.start_worker(concurrency=2, queues="sms-bulk")

        assert deliveries_enqueue_bulk(delivery_ids=[d.pk for d in deliveries]) == 40

        worker = stack.processes[-1]
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 40, 60,
                 lambda: f"not all sent: {list(Delivery.objects.values_list('status', flat=True))}\n{worker.log()}")
        assert len(fake.received) == 40 and not fake.duplicates()
        assert sorted(m.recipient for m in fake.received) == sorted(d.phone.lstrip("+") for d in deliveries)
        # 40 calls of 0.2 s each on 8 threads: several were waiting for an answer at the same time.
        arrivals = sorted(m.received_at for m in fake.received)
        assert any(later - earlier < 0.2 for earlier, later in itertools.pairwise(arrivals))
        assert "Скидка" not in worker.log()
