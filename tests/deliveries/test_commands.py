"""seed_deliveries and rebuild_delivery_stats (PostgreSQL's generated path or the ORM path)."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count
from django.utils import timezone

from deliveries.models import Attempt, Delivery, DeliveryDayStat, DeliveryStatus, StatusEvent
from deliveries.counters import StatKey, key_of_row
from tests.staff import counters_snapshot, rebuilt_snapshot

pytestmark = pytest.mark.django_db


def seed(count, **options):
    out = io.StringIO()
    call_command("seed_deliveries", count=count, accounts=4, days=10, stdout=out, **options)
    return out.getvalue()


def test_seeded_deliveries_look_real_and_are_counted_exactly():
    seed(3000, history_share=0.5)
    assert Delivery.objects.count() == 3000
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")))
    assert statuses[DeliveryStatus.DELIVERED] > 2000 and len(statuses) >= 6
    assert Delivery.objects.values("account").distinct().count() == 4
    oldest = Delivery.objects.order_by("created_at").first().created_at
    assert timezone.now() - oldest > timedelta(days=8)
    assert Attempt.objects.exists() and StatusEvent.objects.exists()
    # Every stored key is what the services would have stored.
    for delivery in Delivery.objects.all()[:500]:
        assert delivery.stats_key == key_of_row(delivery).encode()
    counted = counters_snapshot()
    assert sum(row[-1] for row in counted[0]) == 3000
    assert counted == rebuilt_snapshot()


def test_seeded_counters_use_local_days(settings):
    settings.TIME_ZONE = "Asia/Yekaterinburg"  # UTC+5: a local day starts at 19:00 UTC
    seed(1500)
    assert counters_snapshot() == rebuilt_snapshot()


def test_seeding_twice_adds_to_what_is_there():
    seed(500)
    seed(700, seed=7)
    assert Delivery.objects.count() == 1200
    assert sum(DeliveryDayStat.objects.values_list("count", flat=True)) == 1200
    assert counters_snapshot() == rebuilt_snapshot()


def test_rebuild_command_repairs_counters():
    seed(800, no_stats=True)
    assert not DeliveryDayStat.objects.exists()
    today = timezone.localdate()
    out = io.StringIO()
    call_command("rebuild_delivery_stats", since=str(today - timedelta(days=11)), until=str(today), stdout=out)
    assert "800 deliveries counted, 0 keys corrected" in out.getvalue()
    some = Delivery.objects.filter(status=DeliveryStatus.DELIVERED).first()
    Delivery.objects.filter(pk=some.pk).update(status=DeliveryStatus.UNDELIVERED, error_class="expired")
    out = io.StringIO()
    call_command("rebuild_delivery_stats", days=11, stdout=out)
    assert "1 keys corrected" in out.getvalue()
    some.refresh_from_db()
    assert StatKey.decode(some.stats_key).status == "undelivered"
    assert counters_snapshot() == rebuilt_snapshot()


def test_rebuild_command_refuses_bad_dates():
    with pytest.raises(CommandError):
        call_command("rebuild_delivery_stats", since="yesterday")
    with pytest.raises(CommandError):
        call_command("rebuild_delivery_stats", since="2026-02-02", until="2026-01-01")
