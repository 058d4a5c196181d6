"""The account owner's figures (the widget's settings page, `GET /api/v1/stats/`) and the delivery-rate
comparison the alerts use: reads of one account's daily counters (deliveries.counters keeps them),
never a count over the deliveries table.

What the owner sees: SMS per day by status and by source (the delivery kind: login codes, card,
pipeline, Salesbot, lists ...), per route the delivery rate and the median time to delivered, the
parts sent (what providers bill: `StatKey.parts_billed`), and the top failure reasons in plain words.
May read: the counters, the account's routes (their names).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import F, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from routes.models import ProviderRoute
from routes.providers import PROVIDERS

from .counters import NO_REPORT, PARTS_BILLED, RATE_BASE, UNSUCCESSFUL, hour_of
from .dashboard import histogram_median
from .models import DeliveryDayStat, DeliveryHourCount, DeliveryKind, DeliveryStatus

# The owner's sources, in the order the figures list them ("" : counted before kinds were kept).
SOURCE_LABELS = {
    DeliveryKind.SYSTEM.value: _("Login codes"),
    DeliveryKind.CRM.value: _("Card"),
    DeliveryKind.PIPELINE.value: _("Pipeline"),
    DeliveryKind.SALESBOT.value: _("Salesbot"),
    DeliveryKind.LIST.value: _("Lists"),
    DeliveryKind.BULK.value: _("Bulk SMS"),
    DeliveryKind.TEST.value: _("Test SMS"),
    "": _("Earlier SMS (source not recorded)"),
}

# Why an SMS did not get through, as an owner would say it. (status, reason) first, then the reason.
_REASONS_BY_STATUS = {
    (DeliveryStatus.FAILED, "no_route"): _("No working SMS route was left to try"),
    (DeliveryStatus.FAILED, "no_report"): _("The provider never reported whether it was delivered"),
    (DeliveryStatus.FAILED, "canceled"): _("Canceled by the service's staff"),
    (DeliveryStatus.REJECTED, "policy"): _("Refused by smsgate's protection: this number or country is not allowed"),
    (DeliveryStatus.REJECTED, "limit"): _("Refused by smsgate's protection: too many SMS at once"),
}
_REASONS = {
    "transport": _("The provider could not be reached"),
    "timeout": _("The provider did not answer in time"),
    "provider_unavailable": _("The provider was temporarily unavailable"),
    "throttled": _("The provider asked to send more slowly"),
    "account_rate_limited": _("The provider's limit for your account was reached"),
    "recipient_rate_limited": _("Too many SMS to this number"),
    "invalid_recipient": _("The number is wrong or does not exist"),
    "blocked_recipient": _("The recipient or the operator blocks these SMS"),
    "no_route": _("The provider cannot send to this number or country"),
    "content_rejected": _("The provider refused the text"),
    "sender_rejected": _("The sender name is not approved by the provider"),
    "auth": _("The provider refused the login or API key"),
    "insufficient_funds": _("Not enough money on the provider account"),
    "bad_request": _("The provider refused the request"),
    "unknown": _("The provider gave an unknown error"),
    "internal": _("An internal error in smsgate"),
    "policy": _("Refused by smsgate's protection"),
    "limit": _("Refused by smsgate's protection: too many SMS at once"),
}
_REASONS_NO_CLASS = {
    DeliveryStatus.UNDELIVERED: _("The operator could not deliver it"),
    DeliveryStatus.EXPIRED: _("Not delivered in time"),
    DeliveryStatus.REJECTED: _("The provider refused it"),
    DeliveryStatus.FAILED: _("Sending failed"),
    DeliveryStatus.UNKNOWN: _("No answer from the provider: it may have been sent"),
}
NO_REASON = _("Not delivered: the reason was not given")


def failure_reason_text(status: str, error_class: str) -> str:
    """An unsuccessful outcome in plain words (translated)."""
    text = _REASONS_BY_STATUS.get((status, error_class)) or (
        _REASONS.get(error_class) if error_class else _REASONS_NO_CLASS.get(status))
    return str(text or NO_REASON)


def error_class_text(error_class: str) -> str | None:
    """A provider error class in plain words (translated), None for one we do not know."""
    text = _REASONS.get(error_class)
    return str(text) if text else None


def source_label(kind: str) -> str:
    return str(SOURCE_LABELS.get(kind, kind))


BILLED = Q(status__in=PARTS_BILLED) | Q(status=DeliveryStatus.FAILED, error_class=NO_REPORT)  # StatKey.parts_billed


def _grouped(*, account_id: int, since: date, until: date, by: tuple[str, ...], only=None) -> list[dict]:
    """The account's counters of the range summed by `by`: deliveries (`n`) and billed parts (`parts_sent`).
    The (account, day) index finds a month's few thousand rows; PostgreSQL sums them, Python gets
    only the groups."""
    rows = DeliveryDayStat.objects.filter(account_id=account_id, day__gte=since, day__lte=until).exclude(count=0)
    if only is not None:
        rows = rows.filter(only)
    return list(rows.values(*by).annotate(n=Sum("count"), parts_sent=Sum(F("count") * F("parts"), filter=BILLED))
                .order_by())


def _route_names(account: Account, route_ids) -> dict[int, str]:
    names = {}
    for route in ProviderRoute.objects.filter(account=account, pk__in=set(route_ids)):
        provider = PROVIDERS.get(route.provider)
        names[route.pk] = (provider.name if provider else route.provider) + (f" ({route.sender})" if route.sender
                                                                             else "")
    return names


@dataclass
class RouteFigures:
    route_id: int | None
    provider: str
    total: int = 0
    delivered: int = 0
    finished: int = 0
    parts: int = 0
    latency: Counter = None

    def as_dict(self, name: str) -> dict:
        return {"route_id": self.route_id, "provider": self.provider, "name": name, "total": self.total,
                "delivered": self.delivered, "finished": self.finished,
                "delivery_rate": round(self.delivered / self.finished, 4) if self.finished else None,
                "median_seconds": _rounded(histogram_median(self.latency)), "parts": self.parts}


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def owner_figures(*, account: Account, days: int, top_reasons: int = 8) -> dict:
    """Everything the figures show for the last `days` days (today included), from the counters."""
    until = timezone.localdate()
    since = until - timedelta(days=days - 1)
    scope = {"account_id": account.pk, "since": since, "until": until}
    statuses = [s.value for s in DeliveryStatus]
    series = {since + timedelta(days=n): {"total": 0, "by_status": dict.fromkeys(statuses, 0),
                                          "by_source": Counter(), "parts": 0} for n in range(days)}
    sources, parts_by_source, reasons = Counter(), Counter(), Counter()
    for row in _grouped(**scope, by=("day", "kind", "status")):
        day, n, kind = series[row["day"]], row["n"], row["kind"]
        day["total"] += n
        day["by_status"][row["status"]] = day["by_status"].get(row["status"], 0) + n
        day["by_source"][kind] += n
        day["parts"] += row["parts_sent"] or 0
        sources[kind] += n
        parts_by_source[kind] += row["parts_sent"] or 0
    for row in _grouped(**scope, by=("status", "error_class"), only=Q(status__in=UNSUCCESSFUL)):
        reasons[(row["status"], row["error_class"])] += row["n"]
    routes: dict[tuple[int, str], RouteFigures] = {}
    # Deliveries that never reached a route (waiting, or refused before sending) have no provider.
    for row in _grouped(**scope, by=("route_id", "provider", "status", "latency_le"), only=~Q(provider="")):
        figures = routes.setdefault((row["route_id"], row["provider"]),
                                    RouteFigures(row["route_id"] or None, row["provider"], latency=Counter()))
        figures.total += row["n"]
        figures.parts += row["parts_sent"] or 0
        if row["status"] in RATE_BASE:
            figures.finished += row["n"]
        if row["status"] == DeliveryStatus.DELIVERED:
            figures.delivered += row["n"]
            if row["latency_le"]:
                figures.latency[row["latency_le"]] += row["n"]
    names = _route_names(account, [route_id for route_id, _provider in routes if route_id])
    route_list = []
    for (route_id, provider), figures in sorted(routes.items(), key=lambda item: (-item[1].total, item[0])):
        provider_name = PROVIDERS[provider].name if provider in PROVIDERS else provider
        if not route_id:
            name = str(_("%(provider)s (the service's default route)") % {"provider": provider_name})
        else:
            name = names.get(route_id) or str(_("%(provider)s (a deleted route)") % {"provider": provider_name})
        route_list.append(figures.as_dict(name))
    source_order = list(SOURCE_LABELS)
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:top_reasons]
    return {
        "days": days,
        "since": since,
        "until": until,
        "series": [{"date": day, "total": values["total"], "by_status": values["by_status"],
                    "by_source": dict(values["by_source"]), "parts": values["parts"]}
                   for day, values in series.items()],
        "sources": [{"source": kind, "label": source_label(kind), "total": sources[kind],
                     "parts": parts_by_source[kind]}
                    for kind in sorted(sources, key=lambda k: source_order.index(k) if k in source_order else 99)],
        "routes": route_list,
        "parts": sum(parts_by_source.values()),
        "failure_reasons": [{"status": status, "error_class": error_class, "count": n,
                             "text": failure_reason_text(status, error_class)}
                            for (status, error_class), n in ranked],
    }


# --- the delivery-rate alert -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateWindow:
    sms: int  # SMS created in the window (hourly counters: exact)
    delivered: float
    finished: float

    @property
    def rate(self) -> float | None:
        return self.delivered / self.finished if self.finished else None


def _rate_sums(rows) -> dict[date, tuple[int, int]]:
    sums = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["status"] in RATE_BASE:
            sums[row["day"]][1] += row["n"]
        if row["status"] == DeliveryStatus.DELIVERED:
            sums[row["day"]][0] += row["n"]
    return sums


def delivery_rate_windows(*, account: Account, now=None) -> tuple[RateWindow, RateWindow]:
    """The delivery rate of the last 24 hours and of the 7 days before them, from the counters.

    Day counters are kept per local day, so the last 24 hours are today plus the part of yesterday
    inside the window (yesterday's outcomes weighted by that share); the 7 days before are the 7 whole
    days before yesterday. The volume of the last 24 hours is exact (hourly counters).
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    yesterday = today - timedelta(days=1)
    start_of_today = timezone.make_aware(datetime.combine(today, time.min))
    share = max(0.0, min(1.0, 1 - (now - start_of_today).total_seconds() / 86400))
    rows = list(DeliveryDayStat.objects.filter(account=account, day__gte=today - timedelta(days=8), day__lte=today)
                .exclude(count=0).values("day", "status").annotate(n=Sum("count")).order_by())
    sums = _rate_sums(rows)
    recent_delivered = sums[today][0] + share * sums[yesterday][0]
    recent_finished = sums[today][1] + share * sums[yesterday][1]
    volume = (DeliveryHourCount.objects.filter(account=account, hour__gte=hour_of(now) - timedelta(hours=23))
              .aggregate(n=Sum("count"))["n"] or 0)
    before = [today - timedelta(days=n) for n in range(2, 9)]
    previous = RateWindow(sum(sums[d][1] for d in before), sum(sums[d][0] for d in before),
                          sum(sums[d][1] for d in before))
    return RateWindow(volume, recent_delivered, recent_finished), previous
