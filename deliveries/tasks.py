"""Celery tasks: thin wrappers around services."""

from celery import shared_task
from celery.signals import worker_shutdown

from . import alerts, retention
from .services import dispatch, gathering, polling, queueing, recovery


def _redelivered(task) -> bool:
    """RabbitMQ marks a message it had handed to a consumer whose connection then closed."""
    return bool((task.request.delivery_info or {}).get("redelivered"))


def _queue_retries(outcomes):
    for delivery_id, outcome in outcomes:
        if outcome.retry_in is not None:  # a retry is a single task, like any other
            queueing.delivery_enqueue(delivery_id=delivery_id, kind=outcome.kind, countdown=outcome.retry_in)


@shared_task(name=queueing.SEND_TASK, bind=True, acks_late=True, ignore_result=True)
def delivery_send(self, delivery_id: str):
    outcome = gathering.delivery_send_gathered(delivery_id=delivery_id)
    outcomes = [(delivery_id, outcome)] if outcome is not None else []
    if not outcomes and _redelivered(self):  # a dead worker may have left its claim
        recovery.deliveries_claim_check(delivery_ids=[delivery_id])
    _queue_retries(outcomes)


@shared_task(name=queueing.SEND_BATCH_TASK, bind=True, acks_late=True, ignore_result=True)
def deliveries_send_batch(self, delivery_ids: list[str]):
    outcomes = dispatch.deliveries_send_batch(delivery_ids=delivery_ids)
    if _redelivered(self):
        handled = {delivery_id for delivery_id, _outcome in outcomes}
        recovery.deliveries_claim_check(delivery_ids=[i for i in delivery_ids if i not in handled])
    _queue_retries(outcomes)


@shared_task(name=queueing.CLAIM_CHECK_TASK, acks_late=True, ignore_result=True)
def deliveries_claim_check(delivery_ids: list[str]):
    recovery.deliveries_claim_check(delivery_ids=delivery_ids)


@shared_task(name="deliveries.sweep", ignore_result=True, expires=60)
def delivery_sweep():
    recovery.delivery_sweep()


@shared_task(name="deliveries.retention", ignore_result=True, expires=3600)
def delivery_retention():
    retention.retention_run()


@shared_task(name=queueing.POLL_TASK, ignore_result=True)
def deliveries_poll():
    """Celery beat, every SMSGATE_POLL_INTERVAL seconds (smsgate/celery.py)."""
    polling.deliveries_poll()


@shared_task(name="deliveries.alerts_check", ignore_result=True)
def alerts_check():
    """Celery beat, every SMSGATE_ALERTS_EVERY seconds: balances read, alerts sent as amoCRM tasks."""
    alerts.alerts_check()


@worker_shutdown.connect
def _stop_sending_threads(**kwargs):
    dispatch.stop_sending_threads()
