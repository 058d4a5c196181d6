"""The Celery app `smsgate`: `celery -A smsgate worker --queues sms-system,maintenance`.

The production broker is RabbitMQ (`amqp://`): when a worker dies, RabbitMQ hands every message it
had taken but not acknowledged to another consumer at once (Redis would wait for a visibility
timeout longer than any countdown). Tasks are acknowledged after they ran (`acks_late`), so a
killed worker's login codes are redelivered within seconds; the conditional claim in the send path
keeps a redelivered message from sending twice, and a redelivered message whose delivery a dead
worker was sending resolves that claim (deliveries.services.recovery).
"""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")

app = Celery("smsgate")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUE_SYSTEM = "sms-system"  # login codes: never behind a bulk backlog
QUEUE_BULK = "sms-bulk"
QUEUE_CRM = "sms-crm"  # SMS sent from amoCRM (card, pipeline, Salesbot, lists): never delays login codes
QUEUE_MAINTENANCE = "maintenance"
# Test runs that share one broker keep their queues apart with a prefix (tests/e2e/stack.py); read
# from the environment here because the queues are declared before Django's settings are loaded.
QUEUE_PREFIX = os.environ.get("SMSGATE_QUEUE_PREFIX", "")


def queue_name(base: str) -> str:
    """The broker's name of one of our queues."""
    return QUEUE_PREFIX + base


QUEUES = (QUEUE_SYSTEM, QUEUE_BULK, QUEUE_CRM, QUEUE_MAINTENANCE)


def _declared(base: str) -> Queue:
    """A queue bound to its own direct exchange under its own name (kombu would otherwise bind every
    queue to the default queue's exchange and routing key: harmless for publishing, which names the
    queue, but a misleading picture in RabbitMQ's management view and for anyone routing by key)."""
    name = queue_name(base)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


app.conf.update(
    task_queues=[_declared(name) for name in QUEUES],
    task_default_queue=queue_name(QUEUE_MAINTENANCE),
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
    # A worker that loses its broker connection keeps running the tasks it has (threads cannot be
    # stopped); their messages are redelivered, and the claim keeps a second worker off them.
    worker_cancel_long_running_tasks_on_connection_loss=False,
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
