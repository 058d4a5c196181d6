"""What a provider call's answer does to its delivery.

Owns: recording successful calls (one or a batch: the delivery `sent` with the provider's id, its
attempt closed, its route healthy, any report that came before the id applied), and concluding a
failed call: the next route, a retry scheduled (with backoff, inside the validity), a final status,
or `unknown` when the provider may have it and cannot tell. These are the worker's own changes: the
delivery row and its attempt record them (deliveries.services.status).

May call: status, reports, polling (when to poll first), queueing (nothing: tasks queue retries),
routes' services, counters through status, smsgate.db.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.utils import timezone

from routes.providers import provider_class
from routes.providers.base import (
    ErrorClass,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
)
from routes.services import route_failed, routes_healthy_statement
from smsgate.db import in_chunks, update_rows

from ..counters import deliveries_recount
from ..models import (FINAL_STATUSES, Attempt, AttemptOutcome, Delivery, DeliveryKind, DeliveryStatus, StatusEvent,
                      UnmatchedReport)
from .polling import poll_first_delay
from .reports import delivery_status_apply, unmatched_reports_replay
from .status import Event, deliveries_move, delivery_move  # noqa: F401 (Event: callers' type)

logger = logging.getLogger(__name__)

# Temporary errors a route may have for one delivery before the next route (if any) is tried.
ROUTE_TEMPORARY_BUDGET = 3
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 60.0
# Rejections that say more about the route (its sender name, its operator coverage) than about the
# recipient: the next route may succeed. An invalid or blocked recipient never fails over.
ROUTE_SPECIFIC_REJECTIONS = frozenset({ErrorClass.NO_ROUTE, ErrorClass.SENDER_REJECTED})
# Retries wait in the broker for at most this long (Celery holds the message unacknowledged until
# it is due, and RabbitMQ closes a channel holding one past its consumer timeout, 30 minutes by
# default). A later retry (a provider's long Retry-After) is left to the sweeper, which queues it
# when it is due.
BROKER_COUNTDOWN_MAX_SECONDS = 60.0
# conclude_failure's answer when the same claim goes on with the delivery's next route.
NEXT_ROUTE = object()


MESSAGE_ID_MAX = Delivery._meta.get_field("provider_message_id").max_length


def storable_message_id(value) -> str:
    """A provider's message id as it can be stored: NUL bytes dropped, cut to the column's length (a
    provider's odd reply must not leave the claim to the sweeper, which would resend it)."""
    text = str(value or "").replace("\x00", "")
    if len(text) > MESSAGE_ID_MAX:
        logger.warning("a provider message id longer than %d characters was cut", MESSAGE_ID_MAX)
    return text[:MESSAGE_ID_MAX]


@dataclass(frozen=True)
class SendOutcome:
    status: str
    retry_in: float | None = None
    kind: str = DeliveryKind.SYSTEM


def backoff_seconds(attempt_number: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter: 1-2 s, 2-4 s, 4-8 s ... capped at a minute."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt_number - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


# --- success --------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _held_sql(count: int) -> str:
    """Which of these (provider, id) pairs any report waits for: almost always none, on the
    (provider, id) index."""
    pairs = ", ".join(["(%s, %s)"] * count)
    return (f"SELECT DISTINCT provider, provider_message_id FROM "
            f"{connection.ops.quote_name(UnmatchedReport._meta.db_table)} "
            f"WHERE (provider, provider_message_id) IN (VALUES {pairs})")


# The provider has it, whatever a report or staff did meanwhile: its id is recorded.
_PROVIDER_COLUMNS = ("route_id", "provider", "provider_message_id", "next_poll_at")
_PROVIDER_SHARED = "sent_at = %s, next_attempt_at = NULL, poll_count = 0"
_ATTEMPT_COLUMNS = ("latency_ms", "provider_message_id", "raw_response", "cost", "parts")
_ATTEMPT_ERROR_COLUMNS = ("error_class", "provider_code", "error_text")
_ATTEMPT_SHARED = "outcome = %s, finished_at = %s"


def record_sent(calls: list, *, found: bool = False) -> list[SendOutcome]:
    """The provider has each call's message: record it (one transaction, one round trip of writes on
    PostgreSQL for the whole batch, one statement per step for all of its deliveries), then apply a
    status the provider gave with its answer and any report that came before the id. `found`: the
    messages were found by asking the provider after an answer that never came (`call.found`)."""
    now = timezone.now()
    prepare = connection.ops.adapt_datetimefield_value
    prepare_id = Delivery._meta.pk.get_db_prep_value
    raw_field, cost_field = Attempt._meta.get_field("raw_response"), Attempt._meta.get_field("cost")
    results, message_ids, provider_rows, attempt_rows = [], [], [], []
    for call in calls:
        plan = call.plan
        result = call.found if found else call.result
        results.append(result)
        first_poll = poll_first_delay(provider_class(plan.choice.provider))
        message_id = storable_message_id(result.provider_message_id)
        message_ids.append(message_id)
        provider_rows.append((prepare_id(plan.delivery.pk, connection), plan.choice.route_id, plan.choice.provider,
                              message_id, prepare(now + first_poll) if first_poll is not None else None))
        if plan.attempt is not None:
            row = (plan.attempt.pk, call.latency_ms, message_id,
                   raw_field.get_db_prep_save(result.raw if isinstance(result.raw, (dict, list)) else None,
                                              connection),
                   cost_field.get_db_prep_save(result.cost, connection), result.parts)
            if found:
                error = call.error
                row += (str(error.error_class) if error else "", str(error.code)[:50] if error else "",
                        "reconciled after no answer" if error else "")
            attempt_rows.append(row)
    alongside = update_rows(Delivery._meta.db_table, "id", _PROVIDER_COLUMNS, provider_rows,
                            also=_PROVIDER_SHARED, also_params=[prepare(now)])
    if attempt_rows:
        columns, shared = _ATTEMPT_COLUMNS, _ATTEMPT_SHARED
        if not found:  # a plain success: no error to record
            shared += ", error_class = '', provider_code = '', error_text = ''"
        else:
            columns += _ATTEMPT_ERROR_COLUMNS
        alongside += update_rows(Attempt._meta.db_table, "id", columns, attempt_rows, also=shared,
                                 also_params=[AttemptOutcome.SENT.value, prepare(now)])
    healthy = sorted({call.plan.choice.route_id for call in calls if call.plan.choice.route_id})
    if healthy:
        alongside.append(routes_healthy_statement(healthy))
    held_at = len(alongside)
    pairs = [(call.plan.choice.provider, message_id) for call, message_id in zip(calls, message_ids)]
    alongside += [(_held_sql(len(chunk)), [value for pair in chunk for value in pair])
                  for chunk in in_chunks(pairs, per_item=2)]
    moved = deliveries_move(ids=[call.plan.delivery.pk for call in calls], to=DeliveryStatus.SENT,
                            only_from=(DeliveryStatus.SENDING,), values={"error_class": "", "error_code": "",
                                                                        "error_text": ""},
                            alongside=alongside, now=now)
    waiting = {tuple(row) for rows in moved.alongside[held_at:] for row in rows}
    held = [pair in waiting for pair in pairs]
    raced = {call.plan.delivery.pk for call in calls} - set(moved.ids)
    if raced:  # a report (or staff) moved these on during the call: their provider was just recorded
        deliveries_recount(delivery_ids=raced)
    outcomes = []
    for call, result, any_held in zip(calls, results, held):
        delivery, choice = call.plan.delivery, call.plan.choice
        if result.status not in (ReportStatus.SENT, ReportStatus.UNKNOWN):  # the provider told more at once
            delivery_status_apply(delivery=delivery, status=result.status, source=StatusEvent.Source.SYSTEM, raw=None)
        if any_held:
            unmatched_reports_replay(route=choice.route, provider=choice.provider, delivery=delivery,
                                     provider_message_id=result.provider_message_id)
        logger.info("delivery sent", extra={"delivery_id": str(delivery.pk), "provider": choice.provider,
                                            "latency_ms": call.latency_ms})
        outcomes.append(SendOutcome(DeliveryStatus.SENT, kind=delivery.kind))
    return outcomes


# --- failure ------------------------------------------------------------------------------------------------
def _close_attempt(attempt: Attempt | None, outcome, latency_ms, *, error_class="", code="", text="", raw=None):
    if attempt is None:
        return
    Attempt.objects.filter(pk=attempt.pk).update(
        outcome=outcome, finished_at=timezone.now(), latency_ms=latency_ms, error_class=error_class,
        provider_code=str(code)[:50], error_text=str(text)[:300],
        raw_response=raw if isinstance(raw, (dict, list)) else None)


def finish(delivery: Delivery, status: str, *, error_class="", code="", text="", event: Event | None = None,
           values: dict | None = None) -> SendOutcome:
    """Move a claimed delivery to a final status (or `unknown`)."""
    now = timezone.now()
    changes = {"error_class": error_class, "error_code": str(code)[:50], "error_text": str(text)[:300],
               "next_attempt_at": None, **(values or {})}
    if status in FINAL_STATUSES:
        changes["finished_at"] = now
    delivery_move(delivery_id=delivery.pk, to=status, only_from=(DeliveryStatus.SENDING,), values=changes,
                  event=event, now=now)
    logger.info("delivery %s", status, extra={"delivery_id": str(delivery.pk), "error_class": error_class})
    return SendOutcome(status, kind=delivery.kind)


def conclude_failure(call) -> SendOutcome | object:
    """Record a call that did not succeed; NEXT_ROUTE when the same claim goes on with the
    delivery's next route."""
    plan, exc = call.plan, call.error
    delivery, choice, attempt, latency = plan.delivery, plan.choice, plan.attempt, call.latency_ms
    if not isinstance(exc, ProviderError):  # an adapter bug: the request may or may not have gone out
        _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, latency, error_class="internal", text=type(exc).__name__)
        return finish(delivery, DeliveryStatus.UNKNOWN, error_class="internal",
                      text=f"adapter error: {type(exc).__name__}")
    error = dict(error_class=str(exc.error_class), code=exc.code, text=exc.message)
    raw = exc.raw if isinstance(exc.raw, (dict, list)) else None
    log_extra = {"delivery_id": str(delivery.pk), "provider": choice.provider, "error_class": str(exc.error_class),
                 "provider_code": exc.code}

    if isinstance(exc, ProviderRejectedError):
        if plan.has_next_route and exc.error_class in ROUTE_SPECIFIC_REJECTIONS:
            _close_attempt(attempt, AttemptOutcome.NEXT_ROUTE, latency, raw=raw, **error)
            logger.warning("route cannot take this message, trying the next one", extra=log_extra)
            return NEXT_ROUTE
        _close_attempt(attempt, AttemptOutcome.REJECTED, latency, raw=raw, **error)
        # The route that refused it is kept: the owner's delivery rate per route counts its refusals.
        return finish(delivery, DeliveryStatus.REJECTED, **error, values=_answered_by(choice))

    if isinstance(exc, ProviderAuthError):
        _close_attempt(attempt, AttemptOutcome.NEXT_ROUTE, latency, raw=raw, **error)
        route_failed(choice, exc)
        logger.warning("route failed, trying the next one", extra=log_extra)
        Delivery.objects.filter(pk=delivery.pk).update(error_class=str(exc.error_class), error_code=exc.code[:50],
                                                       error_text=exc.message[:300])
        return NEXT_ROUTE

    if isinstance(exc, ProviderTemporaryError):
        if exc.ambiguous:
            return _on_ambiguous(call, raw, error)
        _close_attempt(attempt, AttemptOutcome.RETRY, latency, raw=raw, **error)
        failures_here = Attempt.objects.filter(delivery=delivery, route=choice.route,
                                               outcome=AttemptOutcome.RETRY).count()
        if plan.has_next_route and failures_here >= ROUTE_TEMPORARY_BUDGET:
            logger.warning("route keeps failing, trying the next one", extra=log_extra)
            Attempt.objects.filter(pk=attempt.pk).update(outcome=AttemptOutcome.NEXT_ROUTE)
            return NEXT_ROUTE
        return schedule_retry(delivery, exc, error)

    # Bad request or an unclassified permanent error: retrying would not help.
    _close_attempt(attempt, AttemptOutcome.FAILED, latency, raw=raw, **error)
    logger.error("provider refused our request", extra=log_extra)
    return finish(delivery, DeliveryStatus.FAILED, **error, values=_answered_by(choice))


def _answered_by(choice) -> dict:
    """The route and provider whose answer ended the delivery, recorded with its final status."""
    return {"route": choice.route, "provider": choice.provider}


def _on_ambiguous(call, raw, error) -> SendOutcome:
    """No complete answer: the SMS may be on its way. Never resend blindly: the provider was asked
    where it can tell (SMSC by our own id, Twilio by listing the number's messages: `call.found`);
    otherwise a login code may be retried once inside its validity window (a second code is better
    than none), and anything else ends `unknown`."""
    plan, exc = call.plan, call.error
    delivery, choice, attempt = plan.delivery, plan.choice, plan.attempt
    if call.found is not None:
        logger.info("no answer, but the provider has the message", extra={"delivery_id": str(delivery.pk)})
        return record_sent([call], found=True)[0]
    if call.asked:  # the provider has no such message: the request never arrived, safe to resend
        _close_attempt(attempt, AttemptOutcome.RETRY, call.latency_ms, raw=raw, **error)
        return schedule_retry(delivery, exc, error)
    _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, call.latency_ms, raw=raw, **error)
    if ambiguous_may_retry(delivery):
        return schedule_retry(delivery, exc, error)
    reconcilable = provider_class(choice.provider).supports_reconcile
    # Keep the route, so the poller can still ask a provider that looks messages up.
    return finish(delivery, DeliveryStatus.UNKNOWN, error_class=str(ErrorClass.TIMEOUT), code=exc.code,
                  text="no answer from the provider; the SMS may have been sent",
                  values={"route": choice.route, "provider": choice.provider,
                          "next_poll_at": timezone.now() + timedelta(seconds=settings.SMSGATE_POLL_INTERVAL)
                          if reconcilable else None})


def ambiguous_may_retry(delivery: Delivery) -> bool:
    """A login code (or a test SMS) may be sent once more after one ambiguous attempt."""
    ambiguous = Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.AMBIGUOUS).count()
    return delivery.kind in (DeliveryKind.SYSTEM, DeliveryKind.TEST) and ambiguous <= 1


def schedule_retry(delivery: Delivery, exc: ProviderTemporaryError, error: dict) -> SendOutcome:
    delay = backoff_seconds(delivery.attempt_count, exc.retry_after)
    now = timezone.now()
    if now + timedelta(seconds=delay) >= delivery.valid_until:
        return finish(delivery, DeliveryStatus.FAILED, **error)
    in_broker = delay <= BROKER_COUNTDOWN_MAX_SECONDS
    delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.PENDING, only_from=(DeliveryStatus.SENDING,), now=now,
                  values={"next_attempt_at": now + timedelta(seconds=delay), "enqueued_at": now if in_broker else None,
                          "claimed_at": None, "error_class": error["error_class"], "error_code": error["code"][:50],
                          "error_text": error["text"][:300]})
    logger.info("delivery will retry in %.1f s", delay, extra={"delivery_id": str(delivery.pk)})
    return SendOutcome(DeliveryStatus.PENDING, retry_in=delay if in_broker else None, kind=delivery.kind)
