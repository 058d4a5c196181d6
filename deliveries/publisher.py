"""Publishing the send task for every accepted SMS, cheaply.

`app.send_task` costs 0.5-1 ms of CPU per call (routing, config lookups through Celery's layered
settings, kombu's producer, and a new redis-py client object per command): measured as a fifth of
the web tier's CPU per accepted SMS (bench/README.md). On a Redis broker this module writes the
same message with one LPUSH on a long-lived connection instead:

- the body and headers are Celery's task message protocol 2, as `app.amqp.as_task_v2` builds them
  (built once per process, so the header set follows the installed Celery);
- the envelope is kombu's Redis transport format (body base64-encoded, delivery_info, a fresh
  delivery_tag), the list key the queue's name behind the broker's `global_keyprefix`.

tests/deliveries/test_publisher.py checks the result against what `send_task` itself writes to
Redis, and a real worker consumes it in every end-to-end test. Any other broker (the embedded
`filesystem://` of `make run`), TLS options, a countdown, or SMSGATE_DIRECT_PUBLISH=false goes
through `send_task` unchanged.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

# Celery's body for a plain task: [args, kwargs, embed]; the embed is the same for every SMS.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class RedisTaskPublisher:
    """One task name, many queues: `publish(args, queue)` is one LPUSH of a ready message."""

    def __init__(self, app, task_name: str, *, url: str, key_prefix: str = "", timeout: float = 2.0):
        self.key_prefix = key_prefix
        # Fail fast, as Celery's publish retry policy here does (one quick retry, for a connection
        # Redis closed meanwhile): the caller leaves the delivery to the sweeper.
        self.client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                           health_check_interval=30, retry=Retry(NoBackoff(), 1))
        self.app = app
        # send_task passes ignore_result through unset (None); the task's own option decides.
        template = app.amqp.as_task_v2(str(uuid.uuid4()), task_name, args=[], kwargs={}, ignore_result=None)
        self._headers = {**template.headers, "kwargsrepr": "{}"}

    def message(self, args: list, queue: str) -> str:
        task_id = str(uuid.uuid4())
        body = json.dumps([args, {}, _EMBED]).encode()
        return json.dumps({
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {**self._headers, "id": task_id, "root_id": task_id, "argsrepr": repr(args)},
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.app.thread_oid,  # as send_task: the publishing thread's id
                "delivery_mode": 2,  # persistent, as Celery's default
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        })

    def publish(self, args: list, queue: str) -> None:
        self.client.lpush(self.key_prefix + queue, self.message(args, queue))


_lock = threading.Lock()
_publishers: dict[tuple, RedisTaskPublisher | None] = {}


def redis_publisher(app, task_name: str) -> RedisTaskPublisher | None:
    """The process's publisher for `task_name`, or None when the broker is not plain Redis."""
    url = app.conf.broker_url or ""
    key = (task_name, url)
    if key not in _publishers:
        with _lock:
            if key not in _publishers:
                usable = url.startswith(("redis://", "rediss://")) and not app.conf.broker_use_ssl
                options = app.conf.broker_transport_options or {}
                _publishers[key] = RedisTaskPublisher(
                    app, task_name, url=url, key_prefix=options.get("global_keyprefix", ""),
                    timeout=float(options.get("socket_connect_timeout") or app.conf.broker_connection_timeout or 2),
                ) if usable and settings.SMSGATE_DIRECT_PUBLISH else None
    return _publishers[key]
