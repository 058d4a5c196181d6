"""Recovery: lost messages, dead workers, missed deadlines.

Owns: the sweeper (Celery beat, every SMSGATE_SWEEP_INTERVAL s): a pending delivery past its
validity ends `expired`; one the broker never got (publishing failed), or lost, is queued again; a
claim older than any live provider call belongs to a dead worker and is resolved without a blind
resend. And the claim check of a message RabbitMQ redelivered, which resolves a dead worker's claim
as soon as it is old enough rather than at the next sweep. Every change here is a conditional one
(status), kept as a status event. May call: status, outcomes, dispatch (asking a provider), queueing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from routes.providers import provider_class
from routes.providers.base import SendResult
from routes.services import RouteChoice, build_provider, route_choice_for

from ..models import Attempt, AttemptOutcome, Delivery, DeliveryStatus, StatusEvent
from .dispatch import ProviderCall, PlannedSend, provider_has_message
from .outcomes import ambiguous_may_retry, record_sent
from .queueing import delivery_enqueue, deliveries_claims_check_later
from .status import Event, deliveries_move, delivery_move

logger = logging.getLogger(__name__)

WORKER_LOST = "worker_lost"


@dataclass
class SweepResult:
    expired: int = 0
    requeued: int = 0
    stale_resolved: int = 0


def delivery_sweep(*, batch: int = 500) -> SweepResult:
    """One run of the sweeper. Idempotent: every change is a conditional UPDATE."""
    result = SweepResult()
    now = timezone.now()
    expired = list(Delivery.objects.filter(status=DeliveryStatus.PENDING, valid_until__lte=now)
                   .values_list("pk", flat=True)[:batch])
    result.expired = len(deliveries_move(
        ids=expired, to=DeliveryStatus.EXPIRED, only_from=(DeliveryStatus.PENDING,), now=now,
        values={"finished_at": now, "next_attempt_at": None, "error_class": "validity",
                "error_text": "not sent before its validity deadline"},
        event=Event(StatusEvent.Source.SYSTEM, error_class="validity", raw={"reason": "validity"})).ids)

    grace = timedelta(seconds=settings.SMSGATE_SWEEP_GRACE_SECONDS)
    lost = now - timedelta(seconds=settings.SMSGATE_LOST_MESSAGE_SECONDS)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    never_published = Q(enqueued_at__isnull=True, created_at__lte=now - grace)
    published_long_ago = Q(enqueued_at__lte=lost) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=lost))
    for delivery_id, kind in (Delivery.objects.filter(status=DeliveryStatus.PENDING).filter(due)
                              .filter(never_published | published_long_ago)
                              .order_by("created_at").values_list("pk", "kind")[:batch]):
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(enqueued_at=timezone.now())
        if delivery_enqueue(delivery_id=delivery_id, kind=kind):
            result.requeued += 1
        else:
            break  # the broker is still down: try again on the next sweep

    stale = now - timedelta(seconds=settings.SMSGATE_STALE_CLAIM_SECONDS)
    for delivery in (Delivery.objects.filter(status=DeliveryStatus.SENDING, claimed_at__lte=stale)
                     .order_by("claimed_at")[:batch]):
        result.stale_resolved += resolve_stale_claim(delivery)
    if result.expired or result.requeued or result.stale_resolved:
        logger.info("sweep: %d expired, %d re-queued, %d stale claims resolved",
                    result.expired, result.requeued, result.stale_resolved)
    return result


def resolve_stale_claim(delivery: Delivery) -> int:
    """A worker claimed this delivery and died. What its last attempt shows decides:
    the provider accepted it → `sent`; a call was in flight → ask the provider where it can tell
    (it has the message → `sent`; it has none → safe to send again), else ambiguous (a login code
    gets its one retry, otherwise `unknown`); no call was made → back to `pending`, safe to send."""
    last = delivery.attempts.select_related("route").order_by("-started_at", "-id").first()
    now = timezone.now()
    event = Event(StatusEvent.Source.SYSTEM, error_class=WORKER_LOST, raw={"reason": WORKER_LOST})
    claim = {"only_from": (DeliveryStatus.SENDING,)}
    if last is not None and last.outcome == AttemptOutcome.SENT:
        if not Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING,
                                       claimed_at=delivery.claimed_at).exists():
            return 0
        choice = RouteChoice(last.route, last.provider, {}, "")
        record_sent([ProviderCall(PlannedSend(delivery, choice, has_next_route=False), latency_ms=0,
                                  result=SendResult(provider_message_id=last.provider_message_id))])
        return 1
    if last is not None and last.outcome == AttemptOutcome.IN_FLIGHT:
        choice = route_choice_for(last.route, last.provider)
        asked, found = provider_has_message(build_provider(choice), delivery, since=last.started_at) \
            if choice is not None else (False, None)
        in_flight = Attempt.objects.filter(pk=last.pk, outcome=AttemptOutcome.IN_FLIGHT)
        if found is not None:
            if not Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING,
                                           claimed_at=delivery.claimed_at).exists():
                return 0
            in_flight.update(outcome=AttemptOutcome.SENT, finished_at=now, error_class=WORKER_LOST,
                             provider_message_id=found.provider_message_id[:100],
                             error_text="the worker died during the call; the provider has the message")
            record_sent([ProviderCall(PlannedSend(delivery, choice, has_next_route=False), latency_ms=0,
                                      result=found)])
            logger.info("a dead worker's call reached the provider", extra={"delivery_id": str(delivery.pk)})
            return 1
        if asked:  # the provider never got it: sending it again cannot double it
            in_flight.update(outcome=AttemptOutcome.RETRY, finished_at=now, error_class=WORKER_LOST,
                             error_text="the worker died before the provider got the message")
        else:
            in_flight.update(outcome=AttemptOutcome.AMBIGUOUS, finished_at=now, error_class=WORKER_LOST,
                             error_text="the worker died during the provider call")
            if not ambiguous_may_retry(delivery):
                reconcilable = provider_class(last.provider).supports_reconcile
                return int(delivery_move(
                    delivery_id=delivery.pk, to=DeliveryStatus.UNKNOWN, event=event, now=now, **claim,
                    values={"error_class": WORKER_LOST, "route": last.route, "provider": last.provider,
                            "error_text": "the worker died during the provider call; the SMS may have been sent",
                            # The poller can still ask a provider that looks messages up.
                            "next_poll_at": now + timedelta(seconds=settings.SMSGATE_POLL_INTERVAL)
                            if reconcilable else None}))
    moved = delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.PENDING, event=event, now=now, **claim,
                          values={"claimed_at": None, "next_attempt_at": None, "enqueued_at": now})
    if moved:
        delivery_enqueue(delivery_id=delivery.pk, kind=delivery.kind)
    return int(moved)


def redelivered_claim_seconds() -> float:
    """How old a claim can get while the worker that holds it is alive: the provider call's connect
    and read timeouts, and a margin to record its answer."""
    read = settings.SMSGATE_PROVIDER_TIMEOUT
    return min(3.0, read) + read + 2.0


def deliveries_claim_check(*, delivery_ids) -> int:
    """RabbitMQ redelivered a message whose deliveries may still be `sending`: the worker that
    claimed them lost its broker connection, almost always because it died (a live worker that only
    lost the connection finishes its calls within `redelivered_claim_seconds`). Each such claim is
    resolved as the sweeper resolves a stale one as soon as it is older than that, instead of after
    SMSGATE_STALE_CLAIM_SECONDS and the next sweep; a younger one is checked again when it is due.
    Returns how many were resolved now."""
    resolved, young = 0, []
    limit = redelivered_claim_seconds()
    for delivery in Delivery.objects.filter(pk__in=list(delivery_ids), status=DeliveryStatus.SENDING,
                                            claimed_at__isnull=False):
        age = (timezone.now() - delivery.claimed_at).total_seconds()
        if age >= limit:
            resolved += resolve_stale_claim(delivery)
        else:
            young.append((delivery, limit - age + 0.2))
    for delivery, wait in young:
        deliveries_claims_check_later(deliveries=[delivery], after=wait)
    return resolved
