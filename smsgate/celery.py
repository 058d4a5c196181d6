"""The Celery app `smsgate`: `celery -A smsgate worker -Q sms-system,sms-bulk`."""

import os

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections
from kombu import Queue
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")

app = Celery("smsgate")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUE_SYSTEM = "sms-system"  # login codes: never behind a bulk backlog
QUEUE_BULK = "sms-bulk"
QUEUE_MAINTENANCE = "maintenance"

app.conf.update(
    task_queues=[Queue(QUEUE_SYSTEM), Queue(QUEUE_BULK), Queue(QUEUE_MAINTENANCE)],
    task_default_queue=QUEUE_MAINTENANCE,
    # State lives in PostgreSQL, not in Celery results.
    task_ignore_result=True,
    # A task is acknowledged after it ran, so a killed worker's task is redelivered;
    # the conditional claim in the service keeps that from sending twice.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Publishing must not hang a web request when the broker is down: fail fast, the sweeper re-enqueues.
    broker_connection_timeout=2,
    task_publish_retry=True,
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    worker_hijack_root_logger=False,
    timezone="UTC",
    # Celery's Django fixup otherwise closes the task thread's database connection before and
    # after every task: a new PostgreSQL connection (a server process, its catalog caches, the
    # handshake) per SMS, measured as most of the CPU a delivery costs. `_reuse_connections`
    # below keeps them as Django does across requests instead.
    CELERY_DB_REUSE_MAX=2**62,
)
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _reuse_connections(sender=None, **kwargs):
    """Around every task, what Django does around every request: close a connection only when it
    is broken (an error and a failed ping) or older than CONN_MAX_AGE; with CONN_HEALTH_CHECKS the
    next query checks it first. So a restarted PostgreSQL costs one failed task, not a dead worker.
    Eager tasks (tests) run inside the caller's transaction: left alone, as Celery's fixup does."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


def _connection_error_when_closed(connparams):
    """Celery 5.7 + kombu 5.7 on Redis: when the broker goes away the consumer closes the broken
    connection while tasks still run; their acks, and the close itself, then reach a channel whose
    connection is gone and fail with AttributeError, which kills the worker (tests/faults, Redis
    stopped). Raising a connection error instead lets Celery log it and reconnect as it does for any
    lost connection; an unacknowledged message is redelivered and the claim keeps it from sending twice."""

    def patched(self, *args, **kwargs):
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        return connparams(self, *args, **kwargs)

    return patched


kombu_redis.Channel._connparams = _connection_error_when_closed(kombu_redis.Channel._connparams)
