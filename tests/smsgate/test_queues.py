"""The broker's lanes: each queue bound to its own exchange under its own name, each kind on its lane."""

import pytest

from deliveries.models import CRM_KINDS, DeliveryKind
from deliveries.services.queueing import queue_for_kind
from smsgate.celery import QUEUE_BULK, QUEUE_CRM, QUEUE_SYSTEM, QUEUES, app, queue_name


def test_every_queue_has_its_own_exchange_and_key():
    declared = {queue.name: queue for queue in app.conf.task_queues}
    assert set(declared) == {queue_name(base) for base in QUEUES}
    for name, queue in declared.items():
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, "direct", name)


@pytest.mark.parametrize("kind", list(DeliveryKind))
def test_each_kind_rides_its_lane(kind):
    expected = QUEUE_BULK if kind == DeliveryKind.BULK else QUEUE_CRM if kind in CRM_KINDS else QUEUE_SYSTEM
    assert queue_for_kind(kind) == queue_name(expected)


def test_a_task_sent_to_a_lane_is_published_to_that_lanes_exchange():
    """What Celery's router makes of `send_task(..., queue=<lane>)` (queueing.task_publish): the lane's
    own exchange and key, so RabbitMQ routes it into that queue and no other."""
    for base in QUEUES:
        name = queue_name(base)
        route = app.amqp.router.route({"queue": name}, "deliveries.send", args=[], kwargs={})
        queue = route["queue"]
        assert (queue.name, queue.exchange.name, queue.routing_key) == (name, name, name)
