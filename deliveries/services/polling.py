"""The status poller (a Celery beat task) and the report horizon.

Owns: when a delivery's status is asked for (soon for providers without callbacks, after a grace
period for those that call back, then backing off to once an hour), asking in batches, looking up
`unknown` deliveries at providers that can tell, and closing deliveries with no final status after
SMSGATE_REPORT_HORIZON_HOURS as `failed` (`no_report`). May call: status, reports, queueing,
routes' services and providers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from routes.models import ProviderRoute
from routes.providers.base import ErrorClass, Provider, ProviderError, ReportStatus, StatusQuery
from routes.services import build_provider, route_choice_for

from ..models import STATUS_RANK, Attempt, Delivery, DeliveryStatus, StatusEvent
from .queueing import delivery_enqueue
from .reports import delivery_status_apply, report_apply, report_raw, unmatched_reports_rematch
from .status import Event, deliveries_move, delivery_move

logger = logging.getLogger(__name__)

POLLABLE_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
# Not final, so the horizon closes them if no report ever comes.
OPEN_STATUSES = (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
POLL_BACKOFF_CAP_SECONDS = 3600
NO_REPORT = "no_report"


def poll_first_delay(provider_cls: type[Provider]) -> timedelta | None:
    """When to poll a message first: soon for providers without callbacks, after a grace period for
    those that call back (polling is their fallback); None when the provider cannot be asked."""
    if not (provider_cls.supports_polling or provider_cls.supports_reconcile):
        return None
    if provider_cls.supports_callbacks:
        return timedelta(seconds=settings.SMSGATE_POLL_CALLBACK_GRACE)
    return timedelta(seconds=settings.SMSGATE_POLL_INTERVAL)


def poll_backoff(poll_count: int) -> timedelta:
    """Interval, 2x, 4x ... between polls of one message, capped at an hour."""
    return timedelta(seconds=min(settings.SMSGATE_POLL_INTERVAL * 2 ** min(poll_count, 16), POLL_BACKOFF_CAP_SECONDS))


@dataclass
class PollResult:
    claimed: int = 0  # deliveries due for a poll
    polled: int = 0  # asked about
    moved: int = 0  # moved forward by a poll
    reconciled: int = 0  # `unknown` deliveries the provider could tell us about
    errors: int = 0  # failed provider calls (they are asked again after the backoff)
    closed: int = 0  # closed as `failed`/`no_report` at the horizon
    rematched: int = 0  # held webhook reports applied


def deliveries_poll(*, batch_size: int | None = None, max_batches: int = 10) -> PollResult:
    """One run of the poller: close deliveries past the report horizon, then ask the providers about
    deliveries whose poll is due, in batches, backing off per delivery."""
    result = PollResult(closed=deliveries_close_without_report())
    batch_size = batch_size or settings.SMSGATE_POLL_BATCH
    for _batch in range(max_batches):
        batch = _poll_claim(batch_size)
        result.claimed += len(batch)
        _poll_batch(batch, result)
        if len(batch) < batch_size:
            break
    result.rematched = unmatched_reports_rematch()
    if result.claimed or result.closed:
        logger.info("status poll: %s", result)
    return result


def _poll_claim(batch_size: int) -> list[Delivery]:
    """Take due deliveries and push their next poll out before asking anyone, so an overlapping run
    (or a second beat) never polls the same message twice; no lock is held during the calls."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=POLLABLE_STATUSES, next_poll_at__lte=now)
            .order_by("next_poll_at")
            .only("pk", "status", "route_id", "provider", "provider_message_id", "phone", "poll_count")[:batch_size]
        )
        for row in rows:
            row.next_poll_at = now + poll_backoff(row.poll_count)
            row.poll_count += 1
        Delivery.objects.bulk_update(rows, ["next_poll_at", "poll_count"])
    return rows


def _poll_batch(batch: list[Delivery], result: PollResult):
    groups: dict[tuple, list[Delivery]] = {}
    for delivery in batch:
        groups.setdefault((delivery.route_id, delivery.provider), []).append(delivery)
    routes = ProviderRoute.objects.in_bulk([route_id for route_id, _ in groups if route_id])
    for (route_id, slug), deliveries in groups.items():
        try:
            choice = route_choice_for(routes.get(route_id), slug)
            provider = build_provider(choice) if choice else None
        except Exception:  # an unknown slug, undecryptable credentials: skip, keep polling the rest
            logger.exception("cannot poll a route", extra={"route_id": route_id, "provider": slug})
            provider = None
        if provider is None:
            Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(next_poll_at=None)
            continue
        with_id = [d for d in deliveries if d.provider_message_id]
        without_id = [d for d in deliveries if not d.provider_message_id]
        if provider.supports_polling:
            _poll_messages(provider, with_id, result)
        if provider.supports_reconcile:
            for delivery in without_id:
                _reconcile_unknown(provider, delivery, result)
        elif without_id:  # nothing to ask about: the horizon will close them
            Delivery.objects.filter(pk__in=[d.pk for d in without_id]).update(next_poll_at=None)


def _poll_messages(provider: Provider, deliveries: list[Delivery], result: PollResult):
    by_id = {d.provider_message_id: d for d in deliveries}
    queries = [StatusQuery(d.provider_message_id, d.phone, str(d.pk)) for d in deliveries]
    size = max(1, provider.poll_batch_size)
    for start in range(0, len(queries), size):
        chunk = queries[start:start + size]
        try:
            reports = provider.poll_statuses(chunk)
        except NotImplementedError:
            return
        except ProviderError as exc:
            result.errors += 1
            logger.warning("status poll failed", extra={"provider": provider.slug, "error_class": str(exc.error_class),
                                                        "provider_code": exc.code})
            continue
        result.polled += len(chunk)
        for report in reports:
            delivery = by_id.get(report.provider_message_id)
            if delivery is None or report.status not in DeliveryStatus.values:
                continue
            # Only news becomes an event: a poll repeating the current status is not kept.
            if STATUS_RANK[DeliveryStatus(report.status)] <= STATUS_RANK[DeliveryStatus(delivery.status)]:
                continue
            if report_apply(delivery, report, StatusEvent.Source.POLL):
                result.moved += 1


def _reconcile_unknown(provider: Provider, delivery: Delivery, result: PollResult):
    """An `unknown` delivery (no answer when it was sent) at a provider that can look it up."""
    full = Delivery.objects.only("pk", "kind", "phone", "text", "created_at", "valid_until").get(pk=delivery.pk)
    since = (Attempt.objects.filter(delivery_id=delivery.pk).order_by("-started_at")
             .values_list("started_at", flat=True).first()) or full.created_at
    try:
        found = provider.reconcile(reference=str(delivery.pk), phone=full.phone, text=full.text, since=since)
    except (ProviderError, NotImplementedError):
        result.errors += 1
        return
    result.reconciled += 1
    now = timezone.now()
    if found is not None:
        Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.UNKNOWN).update(
            provider_message_id=found.provider_message_id[:100], sent_at=now, error_class="", error_code="",
            error_text="")
        status = found.status if found.status != ReportStatus.UNKNOWN else ReportStatus.SENT
        delivery_status_apply(delivery=delivery, status=status, source=StatusEvent.Source.POLL,
                              raw={"reconciled": "found", "reply": report_raw(found.raw)})
        return
    not_found = Event(StatusEvent.Source.SYSTEM, raw={"reconciled": "not_found"})
    # The provider never got it: send it after all if it is still worth sending, else it failed.
    if now < full.valid_until and delivery_move(
            delivery_id=delivery.pk, to=DeliveryStatus.PENDING, only_from=(DeliveryStatus.UNKNOWN,), event=not_found,
            values={"next_attempt_at": None, "next_poll_at": None,
                    "error_text": "the provider never received it: sending again"}):
        transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=full.kind))
        return
    delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.FAILED, only_from=(DeliveryStatus.UNKNOWN,),
                  event=Event(StatusEvent.Source.SYSTEM, error_class=str(ErrorClass.TIMEOUT),
                              raw={"reconciled": "not_found"}),
                  values={"finished_at": now, "error_class": str(ErrorClass.TIMEOUT), "next_poll_at": None,
                          "error_text": "the provider never received it"})


def deliveries_close_without_report(*, limit: int = 1000) -> int:
    """Deliveries with no final status after the report horizon end `failed` with reason `no_report`."""
    hours = settings.SMSGATE_REPORT_HORIZON_HOURS
    now = timezone.now()
    stale = list(Delivery.objects.filter(status__in=OPEN_STATUSES, created_at__lt=now - timedelta(hours=hours))
                 .values_list("pk", flat=True)[:limit])
    return len(deliveries_move(
        ids=stale, to=DeliveryStatus.FAILED, only_from=OPEN_STATUSES, now=now,
        values={"finished_at": now, "error_class": NO_REPORT, "error_code": "", "next_poll_at": None,
                "error_text": f"no final delivery report within {hours} h"},
        event=Event(StatusEvent.Source.SYSTEM, error_class=NO_REPORT,
                    raw={"reason": NO_REPORT, "horizon_hours": hours})).ids)
