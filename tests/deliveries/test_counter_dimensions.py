"""The counters' owner dimensions (deliveries 0004): kind (the owner's source), parts and the route.
Each moves with every status change, a status change still writes one counter statement, keys stored
before the migration are still moved correctly, and a rebuild gives exactly the live counters."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries import counters
from deliveries.models import Delivery, DeliveryDayStat, DeliveryHourCount, DeliveryKind, DeliveryStatus, StatusEvent
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import deliveries_insert, delivery_create
from deliveries.services.reports import delivery_status_apply
from deliveries.services.staff import delivery_cancel
from routes.models import ProviderRoute
from routes.selectors import forget_routes
from tests.staff import counters_snapshot, rebuilt_snapshot

pytestmark = pytest.mark.django_db

LONG_TEXT = "Ваш заказ собран и ждёт вас в пункте выдачи на улице Ленина, дом 5, до пятницы включительно."  # 2 parts


def rows(**filters) -> set:
    """(kind, parts, route, provider, status, reason, bucket, count) of the non-zero day counters."""
    return {(r.kind, r.parts, r.route_id, r.provider, r.status, r.error_class, r.latency_le, r.count)
            for r in DeliveryDayStat.objects.filter(**filters).exclude(count=0)}


def test_kind_parts_and_route_move_with_each_status_change(fake_smsru, smsru_route, account):
    route = smsru_route()
    delivery = delivery_create(account=account, phone="+79123456789", text=LONG_TEXT, kind=DeliveryKind.CRM,
                               enqueue=False).delivery
    assert delivery.segments == 2
    assert rows() == {("crm", 2, 0, "", "pending", "", 0, 1)}

    delivery_send(delivery_id=delivery.pk)
    assert rows() == {("crm", 2, route.pk, "smsru", "sent", "", 0, 1)}

    delivery.refresh_from_db()
    delivery_status_apply(delivery=delivery, status=DeliveryStatus.DELIVERED, source=StatusEvent.Source.WEBHOOK,
                          occurred_at=delivery.created_at + timedelta(seconds=3))
    [delivered] = rows()
    assert delivered[:5] == ("crm", 2, route.pk, "smsru", "delivered") and delivered[-1] == 1
    assert counters.StatKey.decode(Delivery.objects.get(pk=delivery.pk).stats_key).parts_billed

    # A login code refused by the provider: kind, parts and the route that refused it.
    refused = delivery_create(account=account, phone="+79000000207", text="Код: 1234", enqueue=False).delivery
    delivery_send(delivery_id=refused.pk)
    assert ("system", 1, route.pk, "smsru", "rejected", "no_route", 0, 1) in rows()
    # Canceled by staff before any route: no route, no provider, the kind and parts kept.
    waiting = delivery_create(account=account, phone="+79123456780", text="x", kind=DeliveryKind.PIPELINE,
                              enqueue=False).delivery
    assert ("pipeline", 1, 0, "", "pending", "", 0, 1) in rows()
    delivery_cancel(delivery=waiting)
    assert ("pipeline", 1, 0, "", "failed", "canceled", 0, 1) in rows()
    assert ("pipeline", 1, 0, "", "pending", "", 0, 1) not in rows()
    assert sum(r[-1] for r in rows()) == 3 == DeliveryHourCount.objects.get(account=account).count
    assert counters_snapshot() == rebuilt_snapshot()


def test_a_status_change_still_writes_one_counter_statement(fake_smsru, smsru_route, account):
    """The hot path: the new dimensions live in the key, so a move is still one upsert of the day
    counters (its -1 and +1 rows together) and no write of the hourly ones."""
    smsru_route()
    delivery = delivery_create(account=account, phone="+79123456789", text=LONG_TEXT, kind=DeliveryKind.LIST,
                               enqueue=False).delivery
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    day_table = connection.ops.quote_name(DeliveryDayStat._meta.db_table)
    hour_table = connection.ops.quote_name(DeliveryHourCount._meta.db_table)
    with CaptureQueriesContext(connection) as captured:
        delivery_status_apply(delivery=delivery, status=DeliveryStatus.UNDELIVERED,
                              source=StatusEvent.Source.WEBHOOK, error_class="blocked_recipient")
    writes = [q["sql"] for q in captured if q["sql"].startswith("INSERT INTO " + day_table)]
    assert len(writes) == 1
    assert not [q for q in captured if hour_table in q["sql"]]
    assert ("list", 2, delivery.route_id, "smsru", "undelivered", "blocked_recipient", 0, 1) in rows()


def test_a_key_stored_before_the_migration_moves_its_count_from_the_old_row(account):
    """After 0004 a delivery may still carry provider|status|reason|bucket and be counted in a row
    with kind "", parts 0, route 0 (what the migration gave the old rows): its next change takes
    the count from there and puts it under the full key; a rebuild then rewrites every old key."""
    now = timezone.now()
    [delivery] = deliveries_insert(deliveries=[Delivery(
        account=account, kind=DeliveryKind.SYSTEM, phone="+79123456789", text="Код: 1", encoding="gsm7", segments=1,
        valid_until=now + timedelta(minutes=10), status=DeliveryStatus.SENT, provider="smsru")])
    # As the migration left it: the old key and its counter row without the new dimensions.
    Delivery.objects.filter(pk=delivery.pk).update(stats_key="smsru|sent||0")
    DeliveryDayStat.objects.filter(account=account).update(kind="", parts=0, route_id=0)
    assert counters.StatKey.decode("smsru|sent||0") == counters.StatKey("smsru", "sent")
    assert counters.StatKey.decode("smsru|failed|odd|class|0") == counters.StatKey("smsru", "failed", "odd|class")

    delivery_status_apply(delivery=Delivery.objects.get(pk=delivery.pk), status=DeliveryStatus.DELIVERED,
                          source=StatusEvent.Source.WEBHOOK, occurred_at=now + timedelta(seconds=1))
    assert {r[:5] + (r[-1],) for r in rows()} == {("system", 1, 0, "smsru", "delivered", 1)}
    assert Delivery.objects.get(pk=delivery.pk).stats_key.startswith("system|1|0|smsru|delivered||")

    # Another old one, never moved: a rebuild gives it its full key.
    Delivery.objects.filter(pk=delivery.pk).update(stats_key="smsru|delivered||2")
    today = timezone.localdate()
    assert counters.stats_rebuild(since=today, until=today).keys_corrected == 1
    assert {r[:5] + (r[-1],) for r in rows()} == {("system", 1, 0, "smsru", "delivered", 1)}


def test_a_rebuild_gives_the_same_counts_as_the_live_counters(fake_smsru, smsru_route, account, other_account,
                                                                settings):
    """Many kinds, parts, routes and outcomes, live through the services, in two accounts: the counters
    equal a rebuild from the raw table, dimension by dimension."""
    first, second = smsru_route(), smsru_route(priority=20)
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    made = []
    kinds = [DeliveryKind.SYSTEM, DeliveryKind.CRM, DeliveryKind.PIPELINE, DeliveryKind.SALESBOT, DeliveryKind.LIST]
    for n, kind in enumerate(kinds * 3):
        made.append(delivery_create(account=account, phone=f"+7912345{n:04d}", text=LONG_TEXT if n % 2 else "Код: 1",
                                    kind=kind, enqueue=False).delivery)
    made.append(delivery_create(account=other_account, phone="+79123450099", text="x", enqueue=False).delivery)
    for n, delivery in enumerate(made[:12]):
        if n == 6:  # the rest go through the second route (the first switched off)
            ProviderRoute.objects.filter(pk=first.pk).update(is_active=False)
            forget_routes(account.pk)
        delivery_send(delivery_id=delivery.pk)
    for i, delivery in enumerate(made[:9]):
        delivery.refresh_from_db()
        status = [DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED][i % 3]
        delivery_status_apply(delivery=delivery, status=status, source=StatusEvent.Source.WEBHOOK,
                              occurred_at=delivery.created_at + timedelta(seconds=2 + i * 7),
                              error_class="" if status == DeliveryStatus.DELIVERED else "blocked_recipient")
    delivery_cancel(delivery=made[13])
    live = counters_snapshot()
    assert {row[2] for row in live[0]} == {"system", "crm", "pipeline", "salesbot", "list"}
    assert {row[3] for row in live[0]} == {1, 2}
    assert {first.pk, second.pk} <= {row[4] for row in live[0]}
    assert sum(row[-1] for row in live[0]) == len(made)
    DeliveryDayStat.objects.all().delete()  # the rebuild starts from nothing
    assert rebuilt_snapshot() == live
