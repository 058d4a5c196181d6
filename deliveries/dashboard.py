"""Reads of the delivery counters (deliveries.counters keeps them): the staff dashboard, the
accounts list's 24-hour volume and the account API's figures. Never a count over the deliveries table."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .counters import LATENCY_BUCKETS, LATENCY_OVER, RATE_BASE, UNSUCCESSFUL, hour_of
from .models import DeliveryDayStat, DeliveryHourCount, DeliveryStatus


# --- reading --------------------------------------------------------------------------------------
def volume_24h_subquery():
    """Deliveries an account created in the last 24 hours, as a subquery for an Account queryset:
    a sum over at most 25 hourly counter rows, never a count over the deliveries table."""
    since = hour_of(timezone.now()) - timedelta(hours=23)
    total = (DeliveryHourCount.objects.filter(account=OuterRef("pk"), hour__gte=since)
             .values("account").annotate(total=Sum("count")).values("total"))
    return Coalesce(Subquery(total), 0)


# The deployment-wide sum of past days reads every account's counter rows (hundreds of thousands
# on a big deployment, ~0.3 s); it changes only through late reports, so it is kept for a while.
PAST_DAYS_CACHE_SECONDS = 300


def summary_rows(*, since: date, until: date, account_id=None) -> list[dict]:
    """The counters of a date range summed over accounts (or for one account): grouped rows, a few
    thousand, that feed every number of the dashboard. Today is always read live."""
    today = timezone.localdate()
    if account_id is not None or until < today or since >= today:
        return _summary_query(since, until, account_id)
    key = f"smsgate:summary:{since.isoformat()}:{(today - timedelta(days=1)).isoformat()}"
    past = cache.get(key)
    if past is None:
        past = _summary_query(since, today - timedelta(days=1), None)
        cache.set(key, past, PAST_DAYS_CACHE_SECONDS)
    return past + _summary_query(today, until, None)


def _summary_query(since: date, until: date, account_id) -> list[dict]:
    rows = DeliveryDayStat.objects.filter(day__gte=since, day__lte=until)
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    query = rows.values("day", "provider", "status", "error_class", "latency_le").annotate(n=Sum("count")).order_by()
    if connection.vendor != "postgresql":
        return list(query)
    with transaction.atomic():
        with connection.cursor() as cursor:  # hash the groups in memory rather than sort on disk
            cursor.execute("SET LOCAL work_mem = '32MB'")
        return list(query)


def daily_by_status(*, since: date, until: date, account_id=None, rows=None) -> dict[date, dict[str, int]]:
    """{day: {status: deliveries}} for every day of the range (empty days included)."""
    days = {since + timedelta(days=i): defaultdict(int) for i in range((until - since).days + 1)}
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        if row["n"]:
            days[row["day"]][row["status"]] += row["n"]
    return {day: {status: n for status, n in counts.items() if n} for day, counts in days.items()}


@dataclass
class ProviderSummary:
    provider: str
    total: int = 0
    delivered: int = 0
    finished: int = 0  # final outcomes the rate is computed over
    latency: Counter | None = None

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.finished if self.finished else None

    @property
    def median_seconds(self) -> float | None:
        return histogram_median(self.latency or Counter())


def histogram_median(histogram: Counter) -> float | None:
    """The median from bucket counts ({upper bound: n}), interpolated linearly inside its bucket."""
    total = sum(histogram.values())
    if not total:
        return None
    half, seen = total / 2, 0
    for bound in sorted(histogram):
        n = histogram[bound]
        if n and seen + n >= half:
            index = bisect.bisect_left(LATENCY_BUCKETS, bound)
            lower = float(LATENCY_BUCKETS[index - 1]) if index > 0 else 0.0
            upper = float(bound if bound != LATENCY_OVER else LATENCY_BUCKETS[-1] * 2)
            return lower + (upper - lower) * (half - seen) / n
        seen += n
    return None


def provider_summaries(*, since: date, until: date, account_id=None, rows=None) -> list[ProviderSummary]:
    """Per provider: deliveries, delivery rate over final outcomes, time-to-delivered histogram."""
    summaries: dict[str, ProviderSummary] = {}
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        summary = summaries.setdefault(row["provider"], ProviderSummary(row["provider"], latency=Counter()))
        summary.total += row["n"]
        if row["status"] in RATE_BASE:
            summary.finished += row["n"]
        if row["status"] == DeliveryStatus.DELIVERED:
            summary.delivered += row["n"]
            if row["latency_le"]:
                summary.latency[row["latency_le"]] += row["n"]
    return sorted(summaries.values(), key=lambda s: (-s.total, s.provider))


def top_failure_reasons(*, since: date, until: date, account_id=None, limit: int = 10, rows=None) -> list[dict]:
    """The most frequent (status, error class) pairs among deliveries that did not get through."""
    reasons = Counter()
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        if row["status"] in UNSUCCESSFUL:
            reasons[(row["status"], row["error_class"])] += row["n"]
    ranked = sorted(((n, status, error) for (status, error), n in reasons.items() if n > 0),
                    key=lambda item: (-item[0], item[1], item[2]))
    return [{"status": status, "error_class": error, "n": n} for n, status, error in ranked[:limit]]
