"""The direct publisher writes what Celery's send_task writes, and kombu reads it back (real Redis)."""

import base64
import json
import uuid

import pytest
import redis
from celery import Celery

from deliveries import publisher as publisher_module
from deliveries.publisher import RedisTaskPublisher, redis_publisher
from deliveries.services import SEND_TASK
from smsgate.celery import QUEUE_BULK, QUEUE_SYSTEM
from smsgate.celery import app as smsgate_app

PER_MESSAGE = {("headers", "id"), ("headers", "root_id"), ("headers", "argsrepr"),
               ("properties", "correlation_id"), ("properties", "delivery_tag")}



@pytest.fixture
def app(redis_broker_url):
    """smsgate's Celery configuration on a real Redis broker, under a key prefix of its own."""
    prefix = f"test-publisher-{uuid.uuid4().hex[:8]}:"
    app = Celery("smsgate-publisher-test", set_as_current=False)
    app.conf.update(smsgate_app.conf.changes)
    app.conf.update(broker_url=redis_broker_url, broker_transport_options={"global_keyprefix": prefix})
    client = redis.Redis.from_url(redis_broker_url)
    yield app
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    app.close()


def raw_messages(app, queue) -> list[dict]:
    client = redis.Redis.from_url(app.conf.broker_url)
    key = app.conf.broker_transport_options["global_keyprefix"] + queue
    return [json.loads(item) for item in reversed(client.lrange(key, 0, -1))]


def test_the_message_is_the_one_send_task_writes(app):
    delivery_id = str(uuid.uuid4())
    app.send_task(SEND_TASK, args=[delivery_id], queue=QUEUE_SYSTEM)
    RedisTaskPublisher(app, SEND_TASK, url=app.conf.broker_url,
                       key_prefix=app.conf.broker_transport_options["global_keyprefix"]).publish([delivery_id],
                                                                                                 QUEUE_SYSTEM)
    theirs, ours = raw_messages(app, QUEUE_SYSTEM)

    assert ours.keys() == theirs.keys()
    for part in ("headers", "properties"):
        assert ours[part].keys() == theirs[part].keys(), part
        for name, value in theirs[part].items():
            if (part, name) not in PER_MESSAGE:
                assert ours[part][name] == value, (part, name)
    assert base64.b64decode(ours["body"]) == base64.b64decode(theirs["body"])
    task_id = ours["headers"]["id"]
    assert ours["headers"]["root_id"] == ours["properties"]["correlation_id"] == task_id
    assert ours["headers"]["argsrepr"] == theirs["headers"]["argsrepr"] == repr([delivery_id])
    assert ours["properties"]["delivery_tag"] != theirs["properties"]["delivery_tag"]


def test_kombu_reads_it_back_from_the_right_queue(app):
    publisher = RedisTaskPublisher(app, SEND_TASK, url=app.conf.broker_url,
                                   key_prefix=app.conf.broker_transport_options["global_keyprefix"])
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    publisher.publish([first], QUEUE_BULK)
    publisher.publish([second], QUEUE_BULK)

    with app.connection_for_read() as connection:
        channel = connection.default_channel
        assert channel.basic_get(QUEUE_SYSTEM) is None
        messages = [channel.basic_get(QUEUE_BULK) for _ in range(2)]
        assert channel.basic_get(QUEUE_BULK) is None
        for message in messages:
            message.ack()
    assert [m.headers["task"] for m in messages] == [SEND_TASK, SEND_TASK]
    assert [m.decode()[0] for m in messages] == [[first], [second]]  # oldest first, as send_task's
    assert len({m.headers["id"] for m in messages}) == 2
    assert messages[0].delivery_info["routing_key"] == QUEUE_BULK


def test_only_a_plain_redis_broker_gets_the_direct_path(settings, redis_broker_url, monkeypatch):
    monkeypatch.setattr(publisher_module, "_publishers", {})

    def publisher_for(url, **conf):
        app = Celery("smsgate-publisher-test", set_as_current=False)
        app.conf.update(broker_url=url, **conf)
        return redis_publisher(app, SEND_TASK)

    assert isinstance(publisher_for(redis_broker_url), RedisTaskPublisher)
    assert publisher_for("memory://") is None
    assert publisher_for("filesystem://") is None
    assert publisher_for(redis_broker_url.replace("redis://", "rediss://"), broker_use_ssl={"ssl_cert_reqs": "required"}) \
        is None
    settings.SMSGATE_DIRECT_PUBLISH = False
    monkeypatch.setattr(publisher_module, "_publishers", {})
    assert publisher_for(redis_broker_url) is None


def test_a_broker_that_is_down_fails_fast_with_a_redis_error():
    publisher = RedisTaskPublisher(smsgate_app, SEND_TASK, url="redis://127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        publisher.publish([str(uuid.uuid4())], QUEUE_SYSTEM)


def test_enqueue_leaves_the_delivery_to_the_sweeper_when_redis_is_down(db, account, smsru_route, monkeypatch):
    """delivery_enqueue on a Redis broker that is down: a fast False, and the row's enqueued_at is
    cleared, so the sweeper queues it again."""
    from deliveries import services
    from deliveries.models import Delivery

    smsru_route()
    delivery = services.delivery_create(account=account, phone="+79123456789", text="code 1").delivery
    monkeypatch.setattr(smsgate_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(publisher_module, "_publishers", {})
    monkeypatch.setattr(services, "_broker_skip_until", 0.0)
    assert isinstance(redis_publisher(smsgate_app, SEND_TASK), RedisTaskPublisher)

    assert services.delivery_enqueue(delivery_id=delivery.pk, kind=delivery.kind) is False
    assert Delivery.objects.get(pk=delivery.pk).enqueued_at is None
