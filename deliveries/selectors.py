"""Reads of deliveries that more than one caller needs (the account API, the widget)."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Account

from .models import Delivery


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
