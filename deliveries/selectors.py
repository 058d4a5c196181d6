"""Reads of deliveries that more than one caller needs (the account API, the widget)."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Account

from .models import Delivery, DeliveryStatus


@dataclass(frozen=True)
class DeliveryFilter:
    statuses: tuple[str, ...] = ()
    created_from: date | datetime | None = None
    created_to: date | datetime | None = None  # a date includes that whole day
    phone: str | None = None  # E.164


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def deliveries_of_account(*, account: Account, filters: DeliveryFilter = DeliveryFilter()) -> QuerySet:
    """The account's deliveries, newest first; every filter keeps the (account, created_at) index usable."""
    qs = Delivery.objects.filter(account=account)
    if filters.statuses:
        qs = qs.filter(status__in=filters.statuses)
    if filters.phone:
        qs = qs.filter(phone=filters.phone)
    if isinstance(filters.created_from, datetime):
        qs = qs.filter(created_at__gte=filters.created_from)
    elif filters.created_from:
        qs = qs.filter(created_at__gte=_day_start(filters.created_from))
    if isinstance(filters.created_to, datetime):
        qs = qs.filter(created_at__lte=filters.created_to)
    elif filters.created_to:
        qs = qs.filter(created_at__lt=_day_start(filters.created_to + timedelta(days=1)))
    return qs.order_by("-created_at")


def delivery_of_account(*, account: Account, delivery_id) -> Delivery | None:
    return (Delivery.objects.filter(account=account, pk=delivery_id)
            .prefetch_related("attempts", "events").first())


def delivery_stats_query(*, account: Account, since: datetime) -> QuerySet:
    """(day, status, count) rows; reads only the account's slice of the (account, created_at) index."""
    return (Delivery.objects.filter(account=account, created_at__gte=since)
            .annotate(day=TruncDate("created_at")).values("day", "status")
            .annotate(count=Count("id")).order_by("day", "status"))


def delivery_stats(*, account: Account, days: int = 30) -> list[dict]:
    """Counts by status per day for the last `days` days (today included), zero days filled in."""
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    series = {first + timedelta(days=n): {} for n in range(days)}
    for row in delivery_stats_query(account=account, since=_day_start(first)):
        if row["day"] in series:
            series[row["day"]][row["status"]] = row["count"]
    statuses = [s.value for s in DeliveryStatus]
    return [{"date": day, "total": sum(counts.values()),
             "by_status": {s: counts.get(s, 0) for s in statuses}} for day, counts in series.items()]
