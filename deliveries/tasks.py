"""Celery tasks: thin wrappers around services."""

from celery import shared_task
from celery.signals import worker_shutdown

from . import bulk, retention, services


def _redelivered(task) -> bool:
    """RabbitMQ marks a message it had handed to a consumer whose connection then closed."""
    return bool((task.request.delivery_info or {}).get("redelivered"))


@shared_task(name=services.SEND_TASK, bind=True, acks_late=True, ignore_result=True)
def delivery_send(self, delivery_id: str):
    outcome = services.delivery_send(delivery_id=delivery_id)
    if outcome is None and _redelivered(self):  # a dead worker may have left its claim
        services.deliveries_claim_check(delivery_ids=[delivery_id])
    if outcome is not None and outcome.retry_in is not None:
        services.delivery_enqueue(delivery_id=delivery_id, kind=outcome.kind, countdown=outcome.retry_in)


@shared_task(name=bulk.SEND_BATCH_TASK, bind=True, acks_late=True, ignore_result=True)
def deliveries_send_batch(self, delivery_ids: list[str]):
    outcomes = bulk.deliveries_send_batch(delivery_ids=delivery_ids)
    if _redelivered(self):
        handled = {delivery_id for delivery_id, _outcome in outcomes}
        services.deliveries_claim_check(delivery_ids=[i for i in delivery_ids if i not in handled])
    for delivery_id, outcome in outcomes:
        if outcome.retry_in is not None:  # a retry is a single task, like any other
            services.delivery_enqueue(delivery_id=delivery_id, kind=outcome.kind, countdown=outcome.retry_in)


@shared_task(name=services.CLAIM_CHECK_TASK, acks_late=True, ignore_result=True)
def deliveries_claim_check(delivery_ids: list[str]):
    services.deliveries_claim_check(delivery_ids=delivery_ids)


@shared_task(name="deliveries.sweep", ignore_result=True, expires=60)
def delivery_sweep():
    services.delivery_sweep()


@shared_task(name="deliveries.retention", ignore_result=True, expires=3600)
def delivery_retention():
    retention.retention_run()


@shared_task(name=services.POLL_TASK, ignore_result=True)
def deliveries_poll():
    """Celery beat, every SMSGATE_POLL_INTERVAL seconds (smsgate/celery.py)."""
    services.deliveries_poll()


@worker_shutdown.connect
def _stop_sending_threads(**kwargs):
    bulk.stop_sending_threads()
