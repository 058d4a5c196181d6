"""Helpers for admin tests: staff users with chosen permissions, deliveries in a chosen state."""

from datetime import timedelta

from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from deliveries import counters, dashboard
from deliveries.models import Delivery, DeliveryHourCount, DeliveryDayStat


def require_postgres(what: str):
    """Tests of PostgreSQL behaviour (plans, estimates, row locks) fail in CI without it, and
    are skipped on a developer's SQLite run, like the end-to-end tests."""
    from tests.conftest import service_missing

    if connection.vendor != "postgresql":
        service_missing(f"{what} needs PostgreSQL: set DATABASE_URL=postgres://...")


def staff_client(*permissions: str, username="staff", superuser=False) -> tuple[Client, User]:
    """A logged-in client of a staff user holding the given permissions ("app.codename")."""
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True,
                                    is_superuser=superuser)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client = Client()
    client.force_login(user)
    return client, User.objects.get(pk=user.pk)


def set_state(delivery: Delivery, **fields) -> Delivery:
    """Put a delivery into a state directly (as a worker would have), keeping the counters exact."""
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
    counters.delivery_recount(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def age(delivery: Delivery, **delta) -> Delivery:
    """Move a delivery back in time (creation, validity, sent and finished times alike)."""
    shift = timedelta(**delta)
    delivery.refresh_from_db()
    Delivery.objects.filter(pk=delivery.pk).update(
        created_at=delivery.created_at - shift, valid_until=delivery.valid_until - shift,
        sent_at=delivery.sent_at - shift if delivery.sent_at else None,
        finished_at=delivery.finished_at - shift if delivery.finished_at else None)
    # Creation times never change in real life; recount both days so the counters stay exact.
    old_day = timezone.localdate(delivery.created_at)
    delivery.refresh_from_db()
    new_day = timezone.localdate(delivery.created_at)
    counters.stats_rebuild(since=min(old_day, new_day), until=max(old_day, new_day))
    return delivery


def counters_snapshot() -> tuple[set, set]:
    """The non-zero day and hour counters, comparable between two moments."""
    days = {(r.day, r.account_id, r.kind, r.parts, r.route_id, r.provider, r.status, r.error_class, r.latency_le,
             r.count)
            for r in DeliveryDayStat.objects.exclude(count=0)}
    hours = {(r.account_id, r.hour, r.count) for r in DeliveryHourCount.objects.exclude(count=0)}
    return days, hours


def rebuilt_snapshot() -> tuple[set, set]:
    """Counters as a rebuild from the raw table computes them (over every day that has deliveries)."""
    first = Delivery.objects.order_by("created_at").values_list("created_at", flat=True).first()
    if first is not None:
        counters.stats_rebuild(since=timezone.localdate(first), until=timezone.localdate())
    return counters_snapshot()


def queries_touching_deliveries(captured) -> list[str]:
    """SQL statements (from CaptureQueriesContext) that read the big deliveries table."""
    table = connection.ops.quote_name(Delivery._meta.db_table)
    return [q["sql"] for q in captured if table in q["sql"]]
