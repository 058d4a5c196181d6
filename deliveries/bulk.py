"""Bulk SMS, many per task.

A bulk SMS spends most of its time waiting for the provider (100 ms and more), and one Celery
message per SMS costs the worker more CPU than the SMS itself (receiving, tracing and
acknowledging a message, and claiming its one row): measured in bench/README.md. So bulk
deliveries are queued SMSGATE_SEND_BATCH_SIZE to a message; the worker claims a batch in one
statement and sends it at once on its sending threads (SMSGATE_SEND_THREADS per process), each
delivery through the same path as a single one (`services.delivery_send_claimed`): routes,
failover, retries and reports behave the same.

A claimed delivery never waits for a thread: a batch claims only as many deliveries as there are
idle sending threads, and waits for more before claiming the rest. (The sweeper treats a claim
older than SMSGATE_STALE_CLAIM_SECONDS as a dead worker's, so a claim must be sent at once.)
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice

from django.conf import settings
from django.db import close_old_connections, connection

from smsgate.celery import QUEUE_BULK

from . import services
from .models import Delivery, DeliveryStatus

logger = logging.getLogger(__name__)

SEND_BATCH_TASK = "deliveries.send_batch"


def deliveries_enqueue_bulk(*, delivery_ids) -> int:
    """Queue bulk deliveries, SMSGATE_SEND_BATCH_SIZE per message; returns how many were queued.
    A batch the broker did not take stays `pending` with no `enqueued_at`, for the sweeper."""
    queued = 0
    ids, size = iter([str(delivery_id) for delivery_id in delivery_ids]), max(1, settings.SMSGATE_SEND_BATCH_SIZE)
    while batch := list(islice(ids, size)):
        if services.task_publish(SEND_BATCH_TASK, [batch], queue=QUEUE_BULK):
            queued += len(batch)
        else:
            Delivery.objects.filter(pk__in=batch, status=DeliveryStatus.PENDING).update(enqueued_at=None)
    return queued


class _IdleThreads:
    """How many sending threads are idle. `take(n)` waits until one is, then takes up to n."""

    def __init__(self, size: int):
        self.size = size
        self._idle = size
        self._changed = threading.Condition()

    def take(self, wanted: int) -> int:
        with self._changed:
            while self._idle == 0:
                self._changed.wait()
            taken = min(wanted, self._idle)
            self._idle -= taken
            return taken

    def give(self, count: int = 1):
        if count:
            with self._changed:
                self._idle += count
                self._changed.notify_all()


_lock = threading.Lock()
_threads: tuple[ThreadPoolExecutor, _IdleThreads] | None = None


def _sending_threads() -> tuple[ThreadPoolExecutor, _IdleThreads]:
    global _threads
    with _lock:
        if _threads is None:
            size = settings.SMSGATE_SEND_THREADS
            _threads = (ThreadPoolExecutor(max_workers=size, thread_name_prefix="smsgate-send"), _IdleThreads(size))
    return _threads


def stop_sending_threads(timeout: float = 10.0):
    """Close every sending thread's database connection and stop the threads (worker shutdown,
    tests). The next batch starts a fresh set."""
    global _threads
    with _lock:
        threads, _threads = _threads, None
    if threads is None:
        return
    pool, idle = threads
    size = idle.size
    everyone = threading.Barrier(size, timeout=timeout)  # one job on each thread: all must be running

    def close_own_connection():
        try:
            everyone.wait()
        except threading.BrokenBarrierError:
            pass
        connection.close()

    for _ in range(size):
        pool.submit(close_own_connection)
    pool.shutdown(wait=True)


def _send(delivery: Delivery):
    """On a sending thread: what Celery does around a task for the database connection
    (smsgate/celery.py), and no exception lost: a claim left behind is the sweeper's."""
    close_old_connections()
    try:
        return _send_here(delivery)
    finally:
        close_old_connections()


def _send_here(delivery: Delivery):
    try:
        return services.delivery_send_claimed(delivery)
    except Exception:
        logger.exception("sending a bulk SMS failed; the sweeper resolves its claim",
                         extra={"delivery_id": str(delivery.pk)})
        return None


def deliveries_send_batch(*, delivery_ids) -> list[tuple[str, services.SendOutcome]]:
    """Claim and send every delivery of `delivery_ids` still waiting (the others were taken or
    finished meanwhile); returns each sent one's outcome, for retries."""
    if settings.SMSGATE_SEND_THREADS <= 0:  # in the calling thread, one by one
        claimed = services.deliveries_claim_and_read(delivery_ids=list(delivery_ids))
        outcomes = [(str(delivery.pk), _send_here(delivery)) for delivery in claimed]
    else:
        outcomes = _send_on_threads(list(delivery_ids))
    return [(delivery_id, outcome) for delivery_id, outcome in outcomes if outcome is not None]


def _send_on_threads(waiting: list) -> list[tuple[str, services.SendOutcome | None]]:
    pool, idle = _sending_threads()
    started: list[tuple[str, Future]] = []
    while waiting:
        services.release_pooled_connection()  # not held while waiting: the sending threads need them
        taken = idle.take(len(waiting))
        chunk, waiting = waiting[:taken], waiting[taken:]
        claimed = services.deliveries_claim_and_read(delivery_ids=chunk)
        idle.give(taken - len(claimed))
        for delivery in claimed:
            future = pool.submit(_send, delivery)
            future.add_done_callback(lambda _done: idle.give())
            started.append((str(delivery.pk), future))
    services.release_pooled_connection()
    return [(delivery_id, future.result()) for delivery_id, future in started]
