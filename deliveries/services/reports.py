"""Status reports from providers: webhooks and polls, and reports that came before their delivery.

Owns: applying a report monotonically (only a higher rank moves a delivery, so the first final
status wins and duplicate or out-of-order reports change nothing; every report is kept as a status
event, applied or not), holding a report whose provider message id no delivery has yet and
applying it once the id is recorded. May call: status, models, routes' models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.utils import timezone

from routes.models import ProviderRoute
from routes.providers.base import StatusReport

from ..models import FINAL_STATUSES, STATUS_RANK, Delivery, DeliveryStatus, StatusEvent, UnmatchedReport
from .status import Event, delivery_move

logger = logging.getLogger(__name__)

# A held report whose delivery turned up later than this is re-matched by the poller (belt and braces:
# the webhook and the worker each check for the other after writing).
UNMATCHED_REMATCH_AFTER = timedelta(seconds=30)


def delivery_status_apply(*, delivery: Delivery, status: str, source: str, provider_code: str = "",
                          error_class: str = "", occurred_at=None, raw=None) -> bool:
    """Apply a status report: it moves the delivery only up the rank ladder. Kept as a status event
    either way (`applied` says whether it moved the delivery)."""
    status = DeliveryStatus(status)
    lower = [s for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]
    values = {}
    if status in FINAL_STATUSES:
        values["finished_at"] = occurred_at or timezone.now()
        if status != DeliveryStatus.DELIVERED:
            values.update(error_class=error_class or status, error_code=str(provider_code)[:50])
    event = Event(source, provider_code=str(provider_code)[:50], error_class=error_class, occurred_at=occurred_at,
                  raw=raw)
    applied = delivery_move(delivery_id=delivery.pk, to=status, only_from=lower, values=values, event=event)
    if not applied:
        StatusEvent.objects.create(delivery_id=delivery.pk, source=source, status=status,
                                   provider_code=str(provider_code)[:50], error_class=error_class,
                                   occurred_at=occurred_at, applied=False, raw=raw)
    return applied


def report_raw(raw):
    return raw if isinstance(raw, (dict, list, str)) else None


def report_apply(delivery: Delivery, report: StatusReport, source: str) -> bool:
    return delivery_status_apply(delivery=delivery, status=report.status, source=source,
                                 provider_code=report.provider_code, error_class=str(report.error_class or ""),
                                 occurred_at=report.occurred_at, raw=report_raw(report.raw))


@dataclass
class ReportsResult:
    applied: int = 0  # moved a delivery forward
    unchanged: int = 0  # kept as an event, changed nothing (duplicate, out of order, after a final status)
    held: int = 0  # no delivery has this provider id yet: kept until one does


def _delivery_for_report(route: ProviderRoute, provider_message_id: str) -> Delivery | None:
    # Only the route's own deliveries: a callback token must not reach another account's messages.
    return (Delivery.objects.filter(route=route, provider=route.provider, provider_message_id=provider_message_id)
            .only("pk", "status").first())


@lru_cache(maxsize=1)
def _any_held_statement() -> str:
    table = connection.ops.quote_name(UnmatchedReport._meta.db_table)
    return f"SELECT 1 FROM {table} WHERE provider = %s AND provider_message_id = %s LIMIT 1"


def _claim_held(held_id) -> bool:
    """Whoever deletes a held report applies it: the webhook or the worker, never both."""
    return UnmatchedReport.objects.filter(pk=held_id).delete()[0] > 0


def delivery_reports_apply(*, route: ProviderRoute, reports: list[StatusReport],
                           source: str = StatusEvent.Source.WEBHOOK) -> ReportsResult:
    """Apply status reports that came through a route's callback URL. A report can come before the
    worker has recorded the provider's message id: it is held, and applied when the id is recorded."""
    result = ReportsResult()
    for report in reports:
        if not report.provider_message_id:
            continue
        delivery = _delivery_for_report(route, report.provider_message_id)
        if delivery is None:
            held = UnmatchedReport.objects.create(
                route=route, provider=route.provider, provider_message_id=report.provider_message_id[:100],
                source=source, status=report.status, provider_code=report.provider_code[:50],
                error_class=str(report.error_class or ""), occurred_at=report.occurred_at, raw=report_raw(report.raw))
            # The worker may have recorded the id meanwhile; it looks for held reports after writing it.
            delivery = _delivery_for_report(route, report.provider_message_id)
            if delivery is None or not _claim_held(held.pk):
                result.held += 1
                continue
        if report_apply(delivery, report, source):
            result.applied += 1
        else:
            result.unchanged += 1
    if result.held:
        logger.info("status reports held until their delivery is recorded",
                    extra={"route_id": route.pk, "held": result.held})
    return result


def unmatched_reports_replay(*, route: ProviderRoute | None, provider: str, delivery: Delivery,
                             provider_message_id: str) -> int:
    """Apply the reports that arrived for this provider id before the delivery recorded it."""
    with connection.cursor() as cursor:
        cursor.execute(_any_held_statement(), [provider, provider_message_id])
        if cursor.fetchone() is None:
            return 0
    applied = 0
    held = UnmatchedReport.objects.filter(route=route, provider=provider, provider_message_id=provider_message_id)
    for report in held.order_by("received_at", "id"):
        if _claim_held(report.pk):
            delivery_status_apply(delivery=delivery, status=report.status, source=report.source,
                                  provider_code=report.provider_code, error_class=report.error_class,
                                  occurred_at=report.occurred_at, raw=report.raw)
            applied += 1
    return applied


def unmatched_reports_rematch(*, limit: int = 500) -> int:
    """Apply held reports whose delivery has turned up; forget those older than the report horizon."""
    now = timezone.now()
    UnmatchedReport.objects.filter(
        received_at__lt=now - timedelta(hours=settings.SMSGATE_REPORT_HORIZON_HOURS)).delete()
    matched = 0
    for report in UnmatchedReport.objects.filter(received_at__lt=now - UNMATCHED_REMATCH_AFTER)[:limit]:
        delivery = (Delivery.objects.filter(route_id=report.route_id, provider=report.provider,
                                            provider_message_id=report.provider_message_id).only("pk").first())
        if delivery is not None:
            matched += unmatched_reports_replay(route=report.route, provider=report.provider, delivery=delivery,
                                                provider_message_id=report.provider_message_id)
    return matched
