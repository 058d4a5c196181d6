"""Bulk SMS, many per task.

A bulk SMS spends most of its time waiting for the provider (100 ms and more), and one Celery
message per SMS costs the worker more CPU than the SMS itself (receiving, tracing and
acknowledging a message, and claiming its one row): measured in bench/README.md. So bulk
deliveries are queued SMSGATE_SEND_BATCH_SIZE to a message, and the worker handles a batch's
database work together while its provider calls run at once on the sending threads
(SMSGATE_SEND_THREADS per process):

- the task's thread claims the batch (one UPDATE ... RETURNING), plans each delivery's route and
  opens all their attempts (one INSERT);
- a sending thread makes one provider call, nothing else: it needs no database connection;
- the task's thread records the calls that succeeded together, as they finish (one round trip);
- a call that failed goes on, on its sending thread, the single-delivery way
  (`services.delivery_send_after_failure`): failover, retries and reports behave the same.

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

from smsgate.celery import QUEUE_BULK, queue_name

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
        if services.task_publish(SEND_BATCH_TASK, [batch], queue=queue_name(QUEUE_BULK)):
            queued += len(batch)
        else:
            Delivery.objects.filter(pk__in=batch, status=DeliveryStatus.PENDING).update(enqueued_at=None)
    return queued


class _SendingThreads:
    """The process's sending threads, and how many are idle. Each batch takes idle threads for the
    deliveries it claims; a thread's result lands in its batch's `done` list."""

    def __init__(self, size: int):
        self.size = size
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="smsgate-send")
        self.idle = size
        self.changed = threading.Condition()

    def wait(self, done: list, wanted: int) -> tuple[list, int]:
        """Wait until some of this batch's calls finished or, if it `wanted` threads, one is idle.
        Returns the finished results and how many threads were taken (up to `wanted`)."""
        with self.changed:
            self.changed.wait_for(lambda: done or (wanted and self.idle))
            finished = done[:]
            done.clear()
            taken = min(wanted, self.idle)
            self.idle -= taken
            return finished, taken

    def give_back(self, count: int):
        if count:
            with self.changed:
                self.idle += count
                self.changed.notify_all()

    def start(self, job, argument, done: list):
        """Run job(argument) on a thread taken with `wait`; its result (None if it raised) goes to `done`."""
        def finished(future: Future):
            result = future.result() if future.exception() is None else None
            with self.changed:
                self.idle += 1
                done.append((argument, result))
                self.changed.notify_all()

        self.executor.submit(job, argument).add_done_callback(finished)


_lock = threading.Lock()
_threads: _SendingThreads | None = None


def _sending_threads() -> _SendingThreads:
    global _threads
    with _lock:
        if _threads is None:
            _threads = _SendingThreads(settings.SMSGATE_SEND_THREADS)
    return _threads


def stop_sending_threads(timeout: float = 10.0):
    """Close every sending thread's database connection (a failed call goes on with one) and stop
    the threads (worker shutdown, tests). The next batch starts a fresh set."""
    global _threads
    with _lock:
        threads, _threads = _threads, None
    if threads is None:
        return
    everyone = threading.Barrier(threads.size, timeout=timeout)  # one job on each thread: all must be running

    def close_own_connection():
        try:
            everyone.wait()
        except threading.BrokenBarrierError:
            pass
        connection.close()

    for _ in range(threads.size):
        threads.executor.submit(close_own_connection)
    threads.executor.shutdown(wait=True)


def deliveries_send_batch(*, delivery_ids) -> list[tuple[str, services.SendOutcome]]:
    """Claim and send every delivery of `delivery_ids` still waiting (the others were taken or
    finished meanwhile); returns each sent one's outcome, for retries."""
    if settings.SMSGATE_SEND_THREADS <= 0:  # in the calling thread, one by one
        claimed = services.deliveries_claim_and_read(delivery_ids=list(delivery_ids))
        outcomes = [(str(delivery.pk), _guarded(services.delivery_send_claimed, delivery)) for delivery in claimed]
    else:
        outcomes = _send_on_threads(list(delivery_ids))
    return [(delivery_id, outcome) for delivery_id, outcome in outcomes if outcome is not None]


def _send_on_threads(waiting: list) -> list[tuple[str, services.SendOutcome | None]]:
    threads = _sending_threads()
    done: list = []  # (plan, ProviderCall or SendOutcome), filled by the sending threads
    outcomes: list[tuple[str, services.SendOutcome | None]] = []
    calling = 0
    while waiting or calling:
        finished, taken = threads.wait(done, len(waiting))
        calling -= len(finished)
        outcomes += _record(finished)
        if taken:
            chunk, waiting = waiting[:taken], waiting[taken:]
            plans, ended = _claim_and_plan(chunk)
            outcomes += ended
            threads.give_back(taken - len(plans))
            for plan in plans:
                threads.start(_call, plan, done)
            calling += len(plans)
    return outcomes


def _claim_and_plan(chunk: list) -> tuple[list[services.PlannedSend], list[tuple[str, services.SendOutcome]]]:
    """Claim `chunk`, plan each claimed delivery's call and open the attempts, on the task's thread.
    Deliveries that end here (expired, no route ...) come back as outcomes."""
    plans, ended = [], []
    try:
        for delivery in services.deliveries_claim_and_read(delivery_ids=chunk):
            services.delivery_claim_received(delivery)
            plan = services.delivery_send_plan(delivery, first_try=delivery.attempt_count == 1)
            if isinstance(plan, services.PlannedSend):
                plans.append(plan)
            else:
                ended.append((str(delivery.pk), plan))
        services.attempts_open(plans)
    except Exception:  # a database error: nothing was sent; the sweeper re-queues these claims
        logger.exception("claiming a bulk batch failed; the sweeper resolves its claims",
                         extra={"deliveries": len(chunk)})
        return [], ended
    return plans, ended


def _call(plan: services.PlannedSend):
    """On a sending thread: the provider call. One that failed goes on here, the single-delivery
    way, with a database connection of its own (what Celery does around a task for it)."""
    call = services.provider_call(plan)
    if call.error is None:
        return call  # recorded by the batch, with the others
    close_old_connections()
    try:
        return _guarded(services.delivery_send_after_failure, call)
    finally:
        close_old_connections()


def _record(finished: list) -> list[tuple[str, services.SendOutcome | None]]:
    """Record the calls that succeeded together; the others have their outcome already. If the
    batch cannot be recorded (one bad row, a lost connection), each call is recorded alone, so one
    bad row stays the only one left to the sweeper."""
    outcomes = [(str(plan.delivery.pk), result) for plan, result in finished
                if not isinstance(result, services.ProviderCall)]
    sent = [result for _plan, result in finished if isinstance(result, services.ProviderCall)]
    if sent:
        try:
            recorded = services.deliveries_record_sent(sent)
        except Exception:
            logger.exception("recording a bulk batch failed; recording its SMS one by one",
                             extra={"deliveries": len(sent)})
            close_old_connections()  # a connection the error broke is not reused
            recorded = [_guarded(services.provider_call_conclude, call) for call in sent]
        outcomes += [(str(call.plan.delivery.pk), outcome) for call, outcome in zip(sent, recorded)]
    return outcomes


def _guarded(step, argument):
    """No exception lost, none stopping the batch: a claim left behind is the sweeper's."""
    try:
        return step(argument)
    except Exception:
        logger.exception("sending a bulk SMS failed; the sweeper resolves its claim", extra={"step": step.__name__})
        return None
