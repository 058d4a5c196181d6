"""Handing deliveries to the broker.

Owns: the task names, which queue (lane) a delivery goes to, publishing (failing fast when the
broker is down: the row stays `pending` with no `enqueued_at`, for the sweeper), and queueing several
deliveries of a lane (bulk, a CRM batch) SMSGATE_SEND_BATCH_SIZE to a message. May call: models, smsgate.celery.
"""

from __future__ import annotations

import logging
import time
from itertools import islice

from celery import current_app
from django.conf import settings

from smsgate.celery import QUEUE_BULK, QUEUE_CRM, QUEUE_SYSTEM, queue_name

from ..models import CRM_KINDS, Delivery, DeliveryKind, DeliveryStatus

logger = logging.getLogger(__name__)

SEND_TASK = "deliveries.send"
SEND_BATCH_TASK = "deliveries.send_batch"
CLAIM_CHECK_TASK = "deliveries.claim_check"
POLL_TASK = "deliveries.poll_statuses"

# After a failed publish, skip the broker for a few seconds: answers stay fast during an outage.
BROKER_RETRY_AFTER_FAILURE = 3.0
_broker_skip_until = 0.0


def queue_for_kind(kind: str) -> str:
    """The lane of a kind of delivery: login codes (and test SMS) never wait behind bulk traffic or
    behind what people send from amoCRM."""
    if kind == DeliveryKind.BULK:
        return queue_name(QUEUE_BULK)
    if kind in CRM_KINDS:
        return queue_name(QUEUE_CRM)
    return queue_name(QUEUE_SYSTEM)


def task_publish(task_name: str, args: list, *, queue: str, countdown: float | None = None,
                 log_extra: dict | None = None) -> bool:
    """Hand a task to the broker; False when the broker is down (then, for a few seconds, at once)."""
    global _broker_skip_until
    if time.monotonic() < _broker_skip_until:
        return False
    try:
        current_app.send_task(task_name, args=args, queue=queue, countdown=countdown)
        return True
    except Exception as exc:  # kombu and py-amqp raise many types for a broker that is down
        _broker_skip_until = time.monotonic() + BROKER_RETRY_AFTER_FAILURE
        logger.warning("could not enqueue %s (%s); it stays pending for the sweeper", task_name, type(exc).__name__,
                       extra=log_extra)
        return False


def delivery_enqueue(*, delivery_id, kind: str, countdown: float | None = None) -> bool:
    """Hand the delivery to a worker. A broker outage is not the client's problem: the row stays
    committed as `pending` with no `enqueued_at`, and the sweeper queues it again later."""
    if task_publish(SEND_TASK, [str(delivery_id)], queue=queue_for_kind(kind), countdown=countdown,
                    log_extra={"delivery_id": str(delivery_id)}):
        return True
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(enqueued_at=None)
    return False


def deliveries_enqueue(*, deliveries: list[Delivery]) -> int:
    """Queue newly recorded deliveries on their lanes; returns how many were queued. One of a lane goes
    as a send of one; several (a pipeline's batch, a list's 250) SMSGATE_SEND_BATCH_SIZE to a message,
    whose calls run on the worker's sending threads instead of one task thread each: an account's batch
    leaves the lane in seconds and another account's SMS wait behind a few messages, not hundreds."""
    lanes: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        lanes.setdefault(queue_for_kind(delivery.kind), []).append(delivery)
    queued = 0
    for queue, lane in lanes.items():
        if len(lane) == 1:
            queued += delivery_enqueue(delivery_id=lane[0].pk, kind=lane[0].kind)
        else:
            queued += _enqueue_batches([delivery.pk for delivery in lane], queue=queue)
    return queued


def deliveries_enqueue_bulk(*, delivery_ids) -> int:
    """Queue bulk deliveries, SMSGATE_SEND_BATCH_SIZE per message; returns how many were queued."""
    return _enqueue_batches(delivery_ids, queue=queue_name(QUEUE_BULK))


def _enqueue_batches(delivery_ids, *, queue: str) -> int:
    """A batch the broker did not take stays `pending` with no `enqueued_at`, for the sweeper."""
    queued = 0
    ids, size = iter([str(delivery_id) for delivery_id in delivery_ids]), max(1, settings.SMSGATE_SEND_BATCH_SIZE)
    while batch := list(islice(ids, size)):
        if task_publish(SEND_BATCH_TASK, [batch], queue=queue):
            queued += len(batch)
        else:
            Delivery.objects.filter(pk__in=batch, status=DeliveryStatus.PENDING).update(enqueued_at=None)
    return queued


def deliveries_claims_check_later(*, deliveries: list[Delivery], after: float):
    """Queue a check of these claims once they are `after` seconds older (recovery's claim check)."""
    for delivery in deliveries:
        task_publish(CLAIM_CHECK_TASK, [[str(delivery.pk)]], queue=queue_for_kind(delivery.kind), countdown=after,
                     log_extra={"delivery_id": str(delivery.pk)})
