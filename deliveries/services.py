"""Business logic of deliveries: accept a system SMS, send it through the account's routes,
apply status reports. Views, tasks and admin actions only call these."""

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account, ProviderRoute
from accounts.selectors import account_by_pk, account_has_active_route, forget_account, routes_active
from smsgate.celery import QUEUE_BULK, QUEUE_SYSTEM, queue_name

from .models import (
    FINAL_STATUSES,
    STATUS_RANK,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    StatusEvent,
    UnmatchedReport,
)
from . import metrics, stats
from .guard import GuardRefusal, guard_check, guard_policy_refusal
from .phones import Phone, PhoneError, phone_mask, phone_parse
from .providers import provider_class
from .providers.http import default_client
from .providers.base import (
    ErrorClass,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
    SendRequest,
    SendResult,
    StatusQuery,
    StatusReport,
)
from .segments import segment_info

logger = logging.getLogger(__name__)

SEND_TASK = "deliveries.send"
# Temporary errors a route may have for one delivery before the next route (if any) is tried.
ROUTE_TEMPORARY_BUDGET = 3
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 60.0
# Route failures in a row (auth, funds) that mark a route broken.
ROUTE_BROKEN_AFTER = 2
# Rejections that say more about the route (its sender name, its operator coverage) than about the
# recipient: the next route may succeed. An invalid or blocked recipient never fails over.
ROUTE_SPECIFIC_REJECTIONS = frozenset({ErrorClass.NO_ROUTE, ErrorClass.SENDER_REJECTED})
_DOMAIN_REGION = {"amocrm.ru": "RU"}


# --- accepting a system SMS -------------------------------------------------------------------------
class DeliveryRefused(Exception):
    """A request that must not become a delivery; carries what the client is told."""

    http_status = 400
    code = "invalid"

    def __init__(self, message, *, errors: dict | None = None, code: str | None = None,
                 http_status: int | None = None, retry_after: int | None = None, delivery_id=None):
        self.message = message
        self.errors = errors or {}
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status
        self.retry_after = retry_after  # seconds, for 429 answers
        self.delivery_id = delivery_id  # the recorded refusal, for support
        super().__init__(str(message))


class DeliveryInvalid(DeliveryRefused):
    http_status = 400
    code = "invalid"


class NoRouteConfigured(DeliveryRefused):
    http_status = 422
    code = "no_route"


_PHONE_MESSAGES = {
    "required": _("Enter the recipient's phone number."),
    "invalid": _("Enter a valid phone number in international format, e.g. +79123456789."),
    "not_mobile": _("This number cannot receive SMS (it is not a mobile number)."),
}


@dataclass(frozen=True)
class CreateResult:
    delivery: Delivery
    created: bool


def _validate_text(text) -> list:
    if not isinstance(text, str) or not text.strip():
        return [_("Enter the message text.")]
    if len(text) > settings.SMSGATE_MAX_TEXT_LENGTH:
        return [_("The text is longer than %(max)d characters.") % {"max": settings.SMSGATE_MAX_TEXT_LENGTH}]
    if "\x00" in text:
        return [_("The text contains a character that cannot be sent.")]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return [_("The text contains a character that cannot be sent.")]
    return []


def delivery_phone_parse(raw, *, account: Account) -> str:
    """E.164 of a recipient, or DeliveryInvalid with a field error."""
    return _recipient(raw, account=account).e164


def _recipient(raw, *, account: Account) -> Phone:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DeliveryInvalid(_("The request has invalid fields."), errors={"phone": [_PHONE_MESSAGES["required"]]})
    region = _DOMAIN_REGION.get(account.domain)
    try:
        return phone_parse(raw, default_region=region)
    except PhoneError as exc:
        if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():  # "79123456789": no "+"
            try:
                return phone_parse("+" + raw.strip())
            except PhoneError:
                pass
        raise DeliveryInvalid(_("The request has invalid fields."),
                              errors={"phone": [_PHONE_MESSAGES[exc.code]]}) from None


def account_has_route(account: Account) -> bool:
    if settings.SMSGATE_DEFAULT_ROUTE:
        return True
    return account_has_active_route(account=account)


def delivery_create(
    *,
    account: Account,
    phone,
    text,
    kind: str = DeliveryKind.SYSTEM,
    jti: str | None = None,
    validity_seconds: int | None = None,
    route: ProviderRoute | None = None,
    enqueue: bool = True,
) -> CreateResult:
    """Validate and record a delivery, and queue it once the row is committed (`enqueue=False`: the
    caller queues it, as a bulk import does with `bulk.deliveries_enqueue_bulk`).

    The same `jti` for the same account returns the first delivery: amoCRM may retry a request,
    and a login code must not go out twice.
    """
    errors = {}
    text_errors = _validate_text(text)
    if text_errors:
        errors["text"] = text_errors
    try:
        recipient = _recipient(phone, account=account)
    except DeliveryInvalid as exc:
        errors.update(exc.errors)
    if errors:
        raise DeliveryInvalid(_("The request has invalid fields."), errors=errors)
    if route is not None and (route.account_id != account.pk or not route.is_active):
        raise NoRouteConfigured(_("This route is not an active route of the account."))
    if route is None and not account_has_route(account):
        raise NoRouteConfigured(
            _("No SMS provider is set up for this account. Open the widget settings in amoCRM, "
              "choose an SMS provider and enter its credentials.")
        )

    e164 = recipient.e164
    segments = segment_info(text)
    try:
        guard_check(account=account, phone=recipient, jti=jti)
    except GuardRefusal as refusal:
        existing = Delivery.objects.filter(account=account, jti=jti).first() if jti is not None else None
        if existing is not None:  # amoCRM repeating an accepted request: same answer, no second SMS
            return CreateResult(existing, created=False)
        refused = _record_refusal(account=account, kind=kind, phone=e164, text=text, segments=segments,
                                  route=route, refusal=refusal)
        raise DeliveryRefused(refusal.message, code=refusal.reason, http_status=refusal.http_status,
                              retry_after=refusal.retry_after, delivery_id=refused.pk) from None

    validity = validity_seconds or settings.SMSGATE_SYSTEM_SMS_VALIDITY
    now = timezone.now()
    delivery = Delivery(
        account=account,
        kind=kind,
        phone=e164,
        text=text,
        encoding=segments.encoding,
        segments=segments.segments,
        jti=jti,
        route=route,
        valid_until=now + timedelta(seconds=validity),
        enqueued_at=now,  # optimistic: cleared if publishing fails, so the sweeper takes it
    )
    try:
        if connection.in_atomic_block:  # a savepoint, so a repeated jti leaves the caller's transaction usable
            with transaction.atomic():
                stats.delivery_insert_counted(delivery=delivery)
        else:  # one statement: the row and its counters are committed together (PostgreSQL)
            stats.delivery_insert_counted(delivery=delivery)
    except IntegrityError:
        if jti is None:
            raise
        existing = Delivery.objects.get(account=account, jti=jti)
        logger.info("replayed token: returning the existing delivery", extra={"delivery_id": str(existing.pk)})
        return CreateResult(existing, created=False)
    if enqueue:
        transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=kind))
    logger.info(
        "delivery accepted",
        extra={"delivery_id": str(delivery.pk), "account_id": account.pk, "phone": recipient.masked},
    )
    metrics.delivery_status(DeliveryStatus.PENDING, "")
    return CreateResult(delivery, created=True)


def _record_refusal(*, account, kind, phone, text, segments, route, refusal: GuardRefusal) -> Delivery:
    """A refused request is kept as a `rejected` delivery (never sent) so staff can see it."""
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.create(
            account=account, kind=kind, phone=phone, text=text, encoding=segments.encoding,
            segments=segments.segments, route=route, status=DeliveryStatus.REJECTED,
            error_class="policy" if refusal.http_status == 422 else "limit", error_code=refusal.reason,
            error_text=str(refusal.message)[:300], valid_until=now, finished_at=now,
        )
        stats.delivery_created(delivery=delivery)
        stats.delivery_recount(delivery_id=delivery.pk)
    logger.warning("delivery refused by the abuse guard: %s", refusal.reason,
                   extra={"delivery_id": str(delivery.pk), "account_id": account.pk, "phone": phone_mask(phone)})
    metrics.delivery_status(DeliveryStatus.REJECTED, "")
    return delivery


TEST_SMS_TEXT = _("smsgate test message: your SMS provider is set up correctly.")


def delivery_create_test(*, account: Account, phone, route: ProviderRoute | None = None, text=None) -> CreateResult:
    """A test SMS, through one route or the account's usual routes; never deduplicated."""
    return delivery_create(account=account, phone=phone, text=text or str(TEST_SMS_TEXT), kind=DeliveryKind.TEST,
                           route=route)


def queue_for_kind(kind: str) -> str:
    return queue_name(QUEUE_BULK if kind == DeliveryKind.BULK else QUEUE_SYSTEM)


# After a failed publish, skip the broker for a few seconds: answers stay fast during an outage.
BROKER_RETRY_AFTER_FAILURE = 3.0
_broker_skip_until = 0.0


def task_publish(task_name: str, args: list, *, queue: str, countdown: float | None = None,
                 log_extra: dict | None = None) -> bool:
    """Hand a task to the broker; False when the broker is down (then, for a few seconds, at once)."""
    global _broker_skip_until
    if time.monotonic() < _broker_skip_until:
        return False
    try:
        current_app.send_task(task_name, args=args, queue=queue, countdown=countdown)
        return True
    except Exception as exc:  # kombu and redis-py raise many types for a broker that is down
        _broker_skip_until = time.monotonic() + BROKER_RETRY_AFTER_FAILURE
        logger.warning("could not enqueue %s (%s); it stays pending for the sweeper", task_name, type(exc).__name__,
                       extra=log_extra)
        return False


def delivery_enqueue(*, delivery_id, kind: str, countdown: float | None = None) -> bool:
    """Hand the delivery to a worker. A broker outage is not the client's problem: the row stays
    committed as `pending` with no `enqueued_at`, and the sweeper queues it again later."""
    if task_publish(SEND_TASK, [str(delivery_id)], queue=queue_for_kind(kind), countdown=countdown,
                    log_extra={"delivery_id": str(delivery_id)}):
        return True
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(enqueued_at=None)
    return False


# --- sending ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteChoice:
    """A route to try: one of the account's, or the deployment's default route (route is None)."""

    route: ProviderRoute | None
    provider: str
    credentials: dict = field(repr=False)
    sender: str

    @property
    def route_id(self):
        return self.route.pk if self.route else None


@dataclass(frozen=True)
class SendOutcome:
    status: str
    retry_in: float | None = None
    kind: str = DeliveryKind.SYSTEM


def _default_route() -> RouteChoice | None:
    if not settings.SMSGATE_DEFAULT_ROUTE:
        return None
    return RouteChoice(None, settings.SMSGATE_DEFAULT_ROUTE, settings.SMSGATE_DEFAULT_ROUTE_CREDENTIALS,
                       settings.SMSGATE_DEFAULT_ROUTE_SENDER)


def _route_candidates(delivery: Delivery, *, no_attempts_yet: bool = False) -> list[RouteChoice]:
    """Routes still worth trying for this delivery, best first. `no_attempts_yet` (the first try of
    a first claim) skips looking for routes that gave up on it: there are none."""
    if delivery.kind == DeliveryKind.TEST and delivery.route_id:  # a test of one route uses only it
        routes = [r for r in routes_active(account=delivery.account) if r.pk == delivery.route_id]
        return [RouteChoice(r, r.provider, r.credentials, r.sender) for r in routes
                if not Attempt.objects.filter(delivery=delivery, route=r, outcome=AttemptOutcome.NEXT_ROUTE).exists()]
    routes = routes_active(account=delivery.account)
    if routes:
        candidates = [RouteChoice(r, r.provider, r.credentials, r.sender) for r in routes if not r.is_broken]
    else:
        default = _default_route()
        candidates = [default] if default else []
    if no_attempts_yet:
        return candidates
    given_up = set(
        Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.NEXT_ROUTE).values_list("route_id", flat=True)
    )
    return [c for c in candidates if c.route_id not in given_up]


def build_provider(choice: RouteChoice) -> Provider:
    cls = provider_class(choice.provider)
    return cls(credentials=choice.credentials, sender=choice.sender,
               base_url=settings.SMSGATE_PROVIDER_BASE_URLS.get(choice.provider),
               http=default_client(settings.SMSGATE_PROVIDER_TIMEOUT))


def route_balance(*, route: ProviderRoute):
    """The provider's balance for a route (a network call: never inside a transaction)."""
    return build_provider(RouteChoice(route, route.provider, route.credentials, route.sender)).balance()


def route_callback_url(route: ProviderRoute) -> str:
    return f"{settings.SMSGATE_PUBLIC_URL}/webhooks/{route.provider}/{route.callback_token}/"


def backoff_seconds(attempt_number: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter: 1-2 s, 2-4 s, 4-8 s ... capped at a minute."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt_number - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


@lru_cache(maxsize=64)
def _claim_statement(count: int = 1) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in Delivery._meta.concrete_fields)
    ids = "id = %s" if count == 1 else f"id IN ({', '.join(['%s'] * count)})"
    return (f"UPDATE {quote(Delivery._meta.db_table)} SET status = %s, attempt_count = attempt_count + 1, "
            f"updated_at = %s, claimed_at = %s WHERE {ids} AND status = %s "
            f"AND (next_attempt_at IS NULL OR next_attempt_at <= %s) RETURNING {columns}")


def deliveries_claim_and_read(*, delivery_ids) -> list[Delivery]:
    """pending -> sending, atomically: only one worker ever gets a delivery. One statement (UPDATE ...
    RETURNING, PostgreSQL and SQLite 3.35+) claims every claimable one of `delivery_ids` and reads
    them back: no transaction to hold open while this thread waits for its turn in the interpreter."""
    if not delivery_ids:
        return []
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    prepare_id = Delivery._meta.pk.get_db_prep_value
    return list(Delivery.objects.raw(_claim_statement(len(delivery_ids)), [
        DeliveryStatus.SENDING.value, adapt(now), adapt(now),
        *(prepare_id(delivery_id, connection) for delivery_id in delivery_ids), DeliveryStatus.PENDING.value,
        adapt(now + timedelta(seconds=1)),
    ]))


def delivery_claim_and_read(*, delivery_id) -> Delivery | None:
    claimed = deliveries_claim_and_read(delivery_ids=[delivery_id])
    return claimed[0] if claimed else None


def delivery_claim(*, delivery_id) -> bool:
    return delivery_claim_and_read(delivery_id=delivery_id) is not None


def _finish(delivery: Delivery, status: str, *, error_class="", code="", text="") -> str:
    """Move a claimed delivery to a final status (or `unknown`)."""
    now = timezone.now()
    values = dict(status=status, error_class=error_class, error_code=str(code)[:50], error_text=str(text)[:300],
                  updated_at=now, next_attempt_at=None)
    if status in FINAL_STATUSES:
        values["finished_at"] = now
    if Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**values):
        metrics.delivery_status(status, delivery.provider)
    stats.delivery_recount(delivery_id=delivery.pk)
    logger.info("delivery %s", status, extra={"delivery_id": str(delivery.pk), "error_class": error_class})
    return status


def delivery_send(*, delivery_id) -> SendOutcome | None:
    """Claim a pending delivery and send it through its routes. None when there was nothing to do
    (another worker has it, or it is already past `pending`)."""
    delivery = delivery_claim_and_read(delivery_id=delivery_id)
    if delivery is None:
        logger.debug("delivery not claimable", extra={"delivery_id": str(delivery_id)})
        return None
    return delivery_send_claimed(delivery)


def delivery_send_claimed(delivery: Delivery) -> SendOutcome:
    """Send a delivery this worker has just claimed (`sending`) through its routes."""
    delivery_claim_received(delivery)
    return _send_through_routes(delivery, first_try=delivery.attempt_count == 1)


def delivery_claim_received(delivery: Delivery):
    """A worker has just claimed `delivery`: attach its account (per process, read-only, like its
    routes) and count the time it waited in the queue."""
    delivery.account = account_by_pk(delivery.account_id)
    metrics.queue_latency(delivery.kind, (delivery.claimed_at - (delivery.next_attempt_at or delivery.created_at)))


@dataclass
class PlannedSend:
    """The next provider call for a claimed delivery: its route, and the attempt row opened for it."""

    delivery: Delivery
    choice: RouteChoice
    has_next_route: bool
    started: datetime = field(default_factory=timezone.now)
    attempt: Attempt | None = None


@dataclass
class ProviderCall:
    """What one provider call gave: its result, or the exception it raised."""

    plan: PlannedSend
    latency_ms: int
    result: SendResult | None = None
    error: Exception | None = None


def delivery_send_plan(delivery: Delivery, *, first_try: bool) -> PlannedSend | SendOutcome:
    """The next provider call for a claimed delivery, or its outcome when there is none to make
    (past its validity, account disabled, no usable route left). `first_try`: the first try of a
    first claim (no attempt exists yet)."""
    kind = delivery.kind
    if timezone.now() >= delivery.valid_until:
        return SendOutcome(_finish(delivery, DeliveryStatus.EXPIRED, error_class="validity",
                                   text="not sent before its validity deadline"), kind=kind)
    if not delivery.account.is_active:
        return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, error_class="account_disabled",
                                   text="the account is disabled"), kind=kind)
    candidates = _route_candidates(delivery, no_attempts_yet=first_try)
    if not candidates:
        return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, error_class="no_route",
                                   code=delivery.error_code, text=delivery.error_text or "no usable route"),
                           kind=kind)
    return PlannedSend(delivery, candidates[0], has_next_route=len(candidates) > 1)


def _send_through_routes(delivery: Delivery, *, first_try: bool) -> SendOutcome:
    while True:
        plan = delivery_send_plan(delivery, first_try=first_try)
        first_try = False
        if isinstance(plan, SendOutcome):
            return plan
        attempts_open([plan])
        release_pooled_connection()
        outcome = provider_call_conclude(provider_call(plan))
        if outcome is not None:
            return outcome
        delivery.refresh_from_db(fields=["error_code", "error_text"])  # next route, same claim


def delivery_send_after_failure(call: ProviderCall) -> SendOutcome:
    """A provider call that did not succeed (bulk sends), then the delivery's next routes, the
    single-delivery way."""
    outcome = provider_call_conclude(call)
    if outcome is not None:
        return outcome
    call.plan.delivery.refresh_from_db(fields=["error_code", "error_text"])
    return _send_through_routes(call.plan.delivery, first_try=False)


def provider_call(plan: PlannedSend) -> ProviderCall:
    """Make the planned provider call. No database work: it runs outside any transaction, no row
    locked, and in bulk on a thread that holds no connection."""
    delivery, choice = plan.delivery, plan.choice
    request = SendRequest(
        phone=delivery.phone,
        text=delivery.text,
        reference=str(delivery.pk),
        sender=choice.sender,
        validity_seconds=max(int((delivery.valid_until - plan.started).total_seconds()), 60),
        callback_url=route_callback_url(choice.route) if choice.route else None,
    )
    provider = build_provider(choice)
    clock = time.monotonic()
    try:
        result = provider.send(request)
    except ProviderError as exc:
        latency = int((time.monotonic() - clock) * 1000)
        metrics.provider_call(choice.provider, str(exc.error_class), latency)
        return ProviderCall(plan, latency, error=exc)
    except Exception as exc:  # an adapter bug: the request may or may not have gone out
        logger.exception("provider adapter crashed", extra={"delivery_id": str(delivery.pk),
                                                             "provider": choice.provider})
        return ProviderCall(plan, int((time.monotonic() - clock) * 1000), error=exc)
    latency = int((time.monotonic() - clock) * 1000)
    metrics.provider_call(choice.provider, "ok", latency)
    return ProviderCall(plan, latency, result=result)


def provider_call_conclude(call: ProviderCall) -> SendOutcome | None:
    """Record what one provider call gave; None: go on with the delivery's next route."""
    plan = call.plan
    delivery, choice, attempt, latency = plan.delivery, plan.choice, plan.attempt, call.latency_ms
    if call.error is None:
        _record_sent(delivery, choice, call.result, attempt=attempt, latency_ms=latency)
        _log_sent(call)
        return SendOutcome(DeliveryStatus.SENT, kind=delivery.kind)
    if isinstance(call.error, ProviderError):
        return _on_provider_error(delivery, choice, attempt, call.error, latency, has_next_route=plan.has_next_route)
    _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, latency, error_class="internal", text=type(call.error).__name__)
    return SendOutcome(_finish(delivery, DeliveryStatus.UNKNOWN, error_class="internal",
                               text=f"adapter error: {type(call.error).__name__}"), kind=delivery.kind)


def _log_sent(call: ProviderCall):
    logger.info("delivery sent", extra={"delivery_id": str(call.plan.delivery.pk),
                                        "provider": call.plan.choice.provider, "latency_ms": call.latency_ms})


def release_pooled_connection():
    """With a connection pool (DB_POOL_MAX_SIZE), give the connection back before a slow provider
    call: a hundred threads waiting on providers then share a few connections. The next query takes
    one from the pool again. Without a pool this does nothing (reconnecting would cost more)."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()


@lru_cache(maxsize=1)
def _attempt_open_statement() -> str:
    table = connection.ops.quote_name(Attempt._meta.db_table)
    return (f"INSERT INTO {table} (delivery_id, route_id, provider, started_at, outcome, error_class, provider_code, "
            f"error_text, provider_message_id) VALUES (%s, %s, %s, %s, %s, '', '', '', '') RETURNING id")


@lru_cache(maxsize=1)
def _attempts_open_statement() -> str:
    """Many attempts in one INSERT (PostgreSQL): one array per column."""
    table = connection.ops.quote_name(Attempt._meta.db_table)
    delivery_id, route_id, started_at = (Attempt._meta.get_field(name).db_type(connection)
                                         for name in ("delivery", "route", "started_at"))
    return (f"INSERT INTO {table} (delivery_id, route_id, provider, started_at, outcome, error_class, provider_code, "
            f"error_text, provider_message_id) SELECT *, %s, '', '', '', '' FROM unnest(%s::{delivery_id}[], "
            f"%s::{route_id}[], %s::text[], %s::{started_at}[]) RETURNING id, delivery_id")


def attempts_open(plans: list[PlannedSend]):
    """Each plan's attempt row, written before its provider call, so a worker that dies mid-call
    leaves evidence for the sweeper. Run for every SMS, so prepared-once statements rather than an
    ORM create: one INSERT for a whole bulk batch on PostgreSQL."""
    if not plans:
        return
    prepare_id = Delivery._meta.pk.get_db_prep_value
    in_flight = AttemptOutcome.IN_FLIGHT.value
    if len(plans) > 1 and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_attempts_open_statement(), [
                in_flight, [plan.delivery.pk for plan in plans], [plan.choice.route_id for plan in plans],
                [plan.choice.provider for plan in plans], [plan.started for plan in plans]])
            attempt_ids = {delivery_id: attempt_id for attempt_id, delivery_id in cursor.fetchall()}
    else:
        attempt_ids = {}
        with connection.cursor() as cursor:
            for plan in plans:
                cursor.execute(_attempt_open_statement(), [
                    prepare_id(plan.delivery.pk, connection), plan.choice.route_id, plan.choice.provider,
                    connection.ops.adapt_datetimefield_value(plan.started), in_flight])
                attempt_ids[plan.delivery.pk] = cursor.fetchone()[0]
    for plan in plans:
        plan.attempt = Attempt(pk=attempt_ids[plan.delivery.pk], delivery=plan.delivery, route=plan.choice.route,
                               provider=plan.choice.provider, started_at=plan.started)


@lru_cache(maxsize=1)
def _sent_statements() -> dict[str, str]:
    quote = connection.ops.quote_name
    attempts, deliveries = quote(Attempt._meta.db_table), quote(Delivery._meta.db_table)
    common = ("route_id = %s, provider = %s, provider_message_id = %s, sent_at = %s, updated_at = %s, "
              "next_attempt_at = NULL, next_poll_at = %s, poll_count = 0")
    return {
        "attempt": (f"UPDATE {attempts} SET outcome = %s, finished_at = %s, latency_ms = %s, error_class = '', "
                    f"provider_code = '', error_text = '', provider_message_id = %s, raw_response = %s, cost = %s, "
                    f"parts = %s WHERE id = %s"),
        # sending -> sent; RETURNING tells whether it moved (for the metric).
        "moved": (f"UPDATE {deliveries} SET status = %s, error_class = '', error_code = '', error_text = '', "
                  f"{common} WHERE id = %s AND status = %s RETURNING id"),
        # A report, staff or the sweeper moved it on meanwhile: keep its status, still record the id.
        # Runs right after "moved", which set sent_at to this very value if it moved the row.
        "kept": f"UPDATE {deliveries} SET {common} WHERE id = %s AND (sent_at IS NULL OR sent_at <> %s)",
    }


def _record_sent(delivery: Delivery, choice: RouteChoice, result: SendResult, *, attempt: Attempt | None = None,
                 latency_ms: int | None = None):
    """The provider has the message: with the `attempt` that got it, close that attempt and clear the
    route's failure count; record the provider's id on the delivery (`sent`, unless something moved
    it on meanwhile), move its counters, then apply any report that came before the id.

    This runs for every SMS, so its statements are built once and, on PostgreSQL, sent in one
    round trip: a multi-statement query runs as one implicit transaction, all or nothing, in order.
    Elsewhere (SQLite) they run one by one in one transaction."""
    ops = connection.ops
    now, delivery_pk = ops.adapt_datetimefield_value(timezone.now()), Delivery._meta.pk.get_db_prep_value(
        delivery.pk, connection)
    first_poll = poll_first_delay(provider_class(choice.provider))
    next_poll = ops.adapt_datetimefield_value(timezone.now() + first_poll) if first_poll is not None else None
    common = [choice.route_id, choice.provider, result.provider_message_id, now, now, next_poll]
    sql = _sent_statements()
    batch = [
        (sql["moved"], [DeliveryStatus.SENT.value, *common, delivery_pk, DeliveryStatus.SENDING.value]),
        (sql["kept"], [*common, delivery_pk, now]),
    ]
    if attempt is not None:
        batch.append((sql["attempt"], [
            AttemptOutcome.SENT.value, now, latency_ms, result.provider_message_id,
            Attempt._meta.get_field("raw_response").get_db_prep_save(
                result.raw if isinstance(result.raw, (dict, list)) else None, connection),
            Attempt._meta.get_field("cost").get_db_prep_save(result.cost, connection), result.parts, attempt.pk]))
        if choice.route is not None:
            batch.append((_route_healthy_statement(), [choice.route.pk]))
    held_check = (_any_held_statement(), [choice.provider, result.provider_message_id])
    if connection.vendor == "postgresql":
        results = _run_in_order([*batch, stats.recount_query(delivery.pk), held_check])
    else:
        with transaction.atomic():
            results = _run_in_order([*batch, held_check])
            stats.delivery_recount(delivery_id=delivery.pk)
    _after_sent_recorded(delivery, choice, result, moved=bool(results[0]), held=bool(results[-1]))


def _after_sent_recorded(delivery: Delivery, choice: RouteChoice, result: SendResult, *, moved: bool, held: bool):
    """Once a success is recorded: count the move to `sent`, apply a status the provider gave with
    its answer, and any report that came before the id (`held`)."""
    if moved:
        metrics.delivery_status(DeliveryStatus.SENT, choice.provider)
    if result.status != ReportStatus.SENT:
        delivery_status_apply(delivery=delivery, status=result.status, source=StatusEvent.Source.SYSTEM,
                              raw=None)
    if held:
        unmatched_reports_replay(route=choice.route, provider=choice.provider, delivery=delivery,
                                 provider_message_id=result.provider_message_id)


@lru_cache(maxsize=1)
def _sent_batch_statements() -> dict[str, str]:
    """`_sent_statements` for many deliveries at once (PostgreSQL): one array per column, the same
    text whatever the batch's size."""
    quote = connection.ops.quote_name
    attempts, deliveries = quote(Attempt._meta.db_table), quote(Delivery._meta.db_table)
    routes, held = quote(ProviderRoute._meta.db_table), quote(UnmatchedReport._meta.db_table)
    column = {name: Delivery._meta.get_field(name).db_type(connection)
              for name in ("id", "route", "next_poll_at")}
    attempt_id = Attempt._meta.pk.rel_db_type(connection)
    values = (f"unnest(%s::{column['id']}[], %s::{column['route']}[], %s::text[], %s::text[], "
              f"%s::{column['next_poll_at']}[]) AS v(id, route_id, provider, message_id, next_poll_at)")
    common = ("route_id = v.route_id, provider = v.provider, provider_message_id = v.message_id, sent_at = %s, "
              "updated_at = %s, next_attempt_at = NULL, next_poll_at = v.next_poll_at, poll_count = 0")
    return {
        "moved": (f"UPDATE {deliveries} AS d SET status = %s, error_class = '', error_code = '', error_text = '', "
                  f"{common} FROM {values} WHERE d.id = v.id AND d.status = %s RETURNING d.id"),
        "kept": (f"UPDATE {deliveries} AS d SET {common} FROM {values} "
                 f"WHERE d.id = v.id AND (d.sent_at IS NULL OR d.sent_at <> %s)"),
        "attempts": (f"UPDATE {attempts} AS a SET outcome = %s, finished_at = %s, latency_ms = v.latency_ms, "
                     f"error_class = '', provider_code = '', error_text = '', provider_message_id = v.message_id, "
                     f"raw_response = v.raw::jsonb, cost = v.cost, parts = v.parts "
                     f"FROM unnest(%s::{attempt_id}[], %s::integer[], %s::text[], %s::text[], %s::numeric[], "
                     f"%s::integer[]) AS v(id, latency_ms, message_id, raw, cost, parts) WHERE a.id = v.id"),
        "routes_healthy": (f"UPDATE {routes} SET consecutive_failures = 0 "
                           f"WHERE id = ANY(%s::{column['route']}[]) AND consecutive_failures > 0"),
        "held": (f"SELECT DISTINCT provider, provider_message_id FROM {held} "
                 f"WHERE (provider, provider_message_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"),
    }


def deliveries_record_sent(calls: list[ProviderCall]) -> list[SendOutcome]:
    """Record many successful provider calls (a bulk batch's), each as `provider_call_conclude`
    would: on PostgreSQL in one round trip, one statement per step for all of them rather than
    six per SMS (the database's share of a bulk SMS, measured in bench/README.md)."""
    if connection.vendor != "postgresql" or len(calls) == 1:
        return [provider_call_conclude(call) for call in calls]
    ops = connection.ops
    now = timezone.now()
    sent_at = ops.adapt_datetimefield_value(now)
    delivery_ids, route_ids, providers, message_ids, next_polls = [], [], [], [], []
    attempt_ids, latencies, raws, costs, parts = [], [], [], [], []
    for call in calls:
        plan, result = call.plan, call.result
        first_poll = poll_first_delay(provider_class(plan.choice.provider))
        delivery_ids.append(plan.delivery.pk)
        route_ids.append(plan.choice.route_id)
        providers.append(plan.choice.provider)
        message_ids.append(result.provider_message_id)
        next_polls.append(now + first_poll if first_poll is not None else None)
        attempt_ids.append(plan.attempt.pk)
        latencies.append(call.latency_ms)
        raws.append(json.dumps(result.raw) if isinstance(result.raw, (dict, list)) else None)
        costs.append(result.cost)
        parts.append(result.parts)
    rows = [delivery_ids, route_ids, providers, message_ids, next_polls]
    sql = _sent_batch_statements()
    batch = [
        (sql["moved"], [DeliveryStatus.SENT.value, sent_at, sent_at, *rows, DeliveryStatus.SENDING.value]),
        (sql["kept"], [sent_at, sent_at, *rows, sent_at]),
        (sql["attempts"], [AttemptOutcome.SENT.value, sent_at, attempt_ids, latencies, message_ids, raws, costs,
                           parts]),
    ]
    healthy = sorted({route_id for route_id in route_ids if route_id is not None})
    if healthy:
        batch.append((sql["routes_healthy"], [healthy]))
    batch.append(stats.recount_many_query(delivery_ids))  # the counters, in key order, after the rows
    batch.append((sql["held"], [providers, message_ids]))
    results = _run_in_order(batch)
    moved, held = {row[0] for row in results[0]}, {tuple(row) for row in results[-1]}

    outcomes = []
    for call in calls:
        plan, result = call.plan, call.result
        _after_sent_recorded(plan.delivery, plan.choice, result, moved=plan.delivery.pk in moved,
                             held=(plan.choice.provider, result.provider_message_id) in held)
        _log_sent(call)
        outcomes.append(SendOutcome(DeliveryStatus.SENT, kind=plan.delivery.kind))
    return outcomes


def _run_in_order(batch: list[tuple[str, list]]) -> list[list]:
    """Run statements in order in one transaction; each one's rows ([] when it returns none). On
    PostgreSQL with client-side binding (Django's default) in one round trip."""
    def rows(cursor):
        return cursor.fetchall() if cursor.description is not None else []

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not connection.settings_dict["OPTIONS"].get("server_side_binding"):
            cursor.execute(";\n".join(statement for statement, _ in batch), [p for _, params in batch for p in params])
            results = [rows(cursor)]
            while cursor.nextset():
                results.append(rows(cursor))
            return results
        with transaction.atomic():
            results = []
            for statement, params in batch:
                cursor.execute(statement, params)
                results.append(rows(cursor))
            return results


def _close_attempt(attempt: Attempt, outcome, latency_ms, *, error_class="", code="", text="", message_id="",
                   raw=None, cost=None, parts=None):
    Attempt.objects.filter(pk=attempt.pk).update(
        outcome=outcome, finished_at=timezone.now(), latency_ms=latency_ms, error_class=error_class,
        provider_code=str(code)[:50], error_text=str(text)[:300], provider_message_id=message_id,
        raw_response=raw if isinstance(raw, (dict, list)) else None, cost=cost, parts=parts,
    )


def _on_provider_error(delivery, choice, attempt, exc: ProviderError, latency, *, has_next_route) -> SendOutcome | None:
    kind = delivery.kind
    error = dict(error_class=str(exc.error_class), code=exc.code, text=exc.message)
    raw = exc.raw if isinstance(exc.raw, (dict, list)) else None
    log_extra = {"delivery_id": str(delivery.pk), "provider": choice.provider, "error_class": str(exc.error_class),
                 "provider_code": exc.code}

    if isinstance(exc, ProviderRejectedError):
        if has_next_route and exc.error_class in ROUTE_SPECIFIC_REJECTIONS:
            _close_attempt(attempt, AttemptOutcome.NEXT_ROUTE, latency, raw=raw, **error)
            logger.warning("route cannot take this message, trying the next one", extra=log_extra)
            return None
        _close_attempt(attempt, AttemptOutcome.REJECTED, latency, raw=raw, **error)
        return SendOutcome(_finish(delivery, DeliveryStatus.REJECTED, **error), kind=kind)

    if isinstance(exc, ProviderAuthError):
        _close_attempt(attempt, AttemptOutcome.NEXT_ROUTE, latency, raw=raw, **error)
        _route_failed(choice, exc)
        logger.warning("route failed, trying the next one", extra=log_extra)
        Delivery.objects.filter(pk=delivery.pk).update(error_class=str(exc.error_class), error_code=exc.code[:50],
                                                       error_text=exc.message[:300])
        return None

    if isinstance(exc, ProviderTemporaryError):
        if exc.ambiguous:
            return _on_ambiguous(delivery, choice, attempt, exc, latency, raw, error)
        _close_attempt(attempt, AttemptOutcome.RETRY, latency, raw=raw, **error)
        failures_here = Attempt.objects.filter(delivery=delivery, route=choice.route,
                                               outcome=AttemptOutcome.RETRY).count()
        if has_next_route and failures_here >= ROUTE_TEMPORARY_BUDGET:
            logger.warning("route keeps failing, trying the next one", extra=log_extra)
            Attempt.objects.filter(pk=attempt.pk).update(outcome=AttemptOutcome.NEXT_ROUTE)
            return None
        return _schedule_retry(delivery, exc, error)

    # Bad request or an unclassified permanent error: retrying would not help.
    _close_attempt(attempt, AttemptOutcome.FAILED, latency, raw=raw, **error)
    logger.error("provider refused our request", extra=log_extra)
    return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, **error), kind=kind)


def _on_ambiguous(delivery, choice, attempt, exc, latency, raw, error) -> SendOutcome:
    """No complete answer: the SMS may be on its way. Never resend blindly: ask the provider where it
    can tell (SMSC by our own id, Twilio by listing the number's messages); otherwise a login code
    may be retried once inside its validity window (a second code is better than none), and
    anything else ends `unknown`."""
    provider = build_provider(choice)
    reconciled, found = provider_has_message(provider, delivery, since=attempt.started_at)
    if found is not None:
        _close_attempt(attempt, AttemptOutcome.SENT, latency, message_id=found.provider_message_id, raw=raw,
                       error_class=error["error_class"], code=error["code"], text="reconciled after no answer")
        _route_healthy(choice)
        _record_sent(delivery, choice, found)
        logger.info("no answer, but the provider has the message", extra={"delivery_id": str(delivery.pk)})
        return SendOutcome(DeliveryStatus.SENT, kind=delivery.kind)
    if reconciled:  # the provider has no such message: the request never arrived, safe to resend
        _close_attempt(attempt, AttemptOutcome.RETRY, latency, raw=raw, **error)
        return _schedule_retry(delivery, exc, error)
    _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, latency, raw=raw, **error)
    if _ambiguous_may_retry(delivery):
        return _schedule_retry(delivery, exc, error)
    outcome = _finish(delivery, DeliveryStatus.UNKNOWN, error_class=str(ErrorClass.TIMEOUT), code=exc.code,
                      text="no answer from the provider; the SMS may have been sent")
    # Keep the route, so the poller can still ask a provider that looks messages up by our id.
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.UNKNOWN).update(
        route=choice.route, provider=choice.provider,
        next_poll_at=now + timedelta(seconds=settings.SMSGATE_POLL_INTERVAL) if provider.supports_reconcile else None)
    stats.delivery_recount(delivery_id=delivery.pk)
    return SendOutcome(outcome, kind=delivery.kind)


def provider_has_message(provider: Provider, delivery: Delivery, *, since) -> tuple[bool, SendResult | None]:
    """Ask the provider whether it took this delivery's message in an attempt started at `since`:
    (whether it could tell, the message if it has it). A network call: never inside a transaction."""
    if not provider.supports_reconcile:
        return False, None
    try:
        return True, provider.reconcile(reference=str(delivery.pk), phone=delivery.phone, text=delivery.text,
                                        since=since)
    except (ProviderError, NotImplementedError) as exc:
        logger.warning("the provider could not tell whether it has the message",
                       extra={"delivery_id": str(delivery.pk), "provider": provider.slug,
                              "error_class": str(getattr(exc, "error_class", "unsupported"))})
        return False, None


def _ambiguous_may_retry(delivery: Delivery) -> bool:
    """A login code (or a test SMS) may be sent once more after one ambiguous attempt."""
    ambiguous = Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.AMBIGUOUS).count()
    return delivery.kind in (DeliveryKind.SYSTEM, DeliveryKind.TEST) and ambiguous <= 1


# Retries wait in the broker for at most this long (Celery holds the message unacknowledged until
# it is due, and RabbitMQ closes a channel holding one past its consumer timeout, 30 minutes by
# default). A later retry (a provider's long Retry-After) is left to the sweeper, which queues it
# when it is due.
BROKER_COUNTDOWN_MAX_SECONDS = 60.0


def _schedule_retry(delivery: Delivery, exc: ProviderTemporaryError, error: dict) -> SendOutcome:
    delay = backoff_seconds(delivery.attempt_count, exc.retry_after)
    now = timezone.now()
    if now + timedelta(seconds=delay) >= delivery.valid_until:
        return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, **error), kind=delivery.kind)
    in_broker = delay <= BROKER_COUNTDOWN_MAX_SECONDS
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay), updated_at=now,
        enqueued_at=now if in_broker else None, claimed_at=None,
        error_class=error["error_class"], error_code=error["code"][:50], error_text=error["text"][:300],
    )
    stats.delivery_recount(delivery_id=delivery.pk)
    logger.info("delivery will retry in %.1f s", delay, extra={"delivery_id": str(delivery.pk)})
    return SendOutcome(DeliveryStatus.PENDING, retry_in=delay if in_broker else None, kind=delivery.kind)


def _route_failed(choice: RouteChoice, exc: ProviderError):
    # Only auth and funds failures count towards "broken": an account's daily limit is not a
    # credentials problem and clears by itself.
    if choice.route is None or exc.error_class not in (ErrorClass.AUTH, ErrorClass.INSUFFICIENT_FUNDS):
        return
    ProviderRoute.objects.filter(pk=choice.route.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    ProviderRoute.objects.filter(
        pk=choice.route.pk, consecutive_failures__gte=ROUTE_BROKEN_AFTER, is_broken=False
    ).update(is_broken=True, broken_at=timezone.now(),
             broken_reason=f"{exc.error_class}: {exc.code} {exc.message}"[:200])
    forget_account(choice.route.account_id)  # this process reads the new counts at once


@lru_cache(maxsize=1)
def _route_healthy_statement() -> str:
    table = connection.ops.quote_name(ProviderRoute._meta.db_table)
    return f"UPDATE {table} SET consecutive_failures = 0 WHERE id = %s AND consecutive_failures > 0"


def _route_healthy(choice: RouteChoice):
    # Conditional, not read from the (cached) route: another process may have counted a failure.
    # Run after every successful send, so one prepared-once statement rather than an ORM update.
    if choice.route is not None:
        with connection.cursor() as cursor:
            cursor.execute(_route_healthy_statement(), [choice.route.pk])



# --- status reports ------------------------------------------------------------------------------------
def delivery_status_apply(
    *,
    delivery: Delivery,
    status: str,
    source: str,
    provider_code: str = "",
    error_class: str = "",
    occurred_at=None,
    raw=None,
) -> bool:
    """Apply a status report monotonically: only a higher rank moves the delivery, so the first final
    status wins and duplicate or out-of-order reports change nothing. Every report is kept."""
    status = DeliveryStatus(status)
    lower = [s for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]
    now = timezone.now()
    values = dict(status=status, updated_at=now)
    if status in FINAL_STATUSES:
        values["finished_at"] = occurred_at or now
        if status != DeliveryStatus.DELIVERED:
            values.update(error_class=error_class or status, error_code=str(provider_code)[:50])
    with transaction.atomic():
        applied = bool(Delivery.objects.filter(pk=delivery.pk, status__in=lower).update(**values))
        StatusEvent.objects.create(delivery=delivery, source=source, status=status, provider_code=str(provider_code)[:50],
                                   error_class=error_class, occurred_at=occurred_at, applied=applied, raw=raw)
        stats.delivery_recount(delivery_id=delivery.pk)
    if applied:
        metrics.delivery_status(status, delivery.provider)
    return applied


# --- recovery: lost messages, dead workers, missed deadlines --------------------------------------------
@dataclass
class SweepResult:
    expired: int = 0
    requeued: int = 0
    stale_resolved: int = 0


def delivery_sweep(*, batch: int = 500) -> SweepResult:
    """Run by Celery beat every few seconds. Idempotent: every change is a conditional UPDATE.

    - a pending delivery past its validity deadline ends `expired` (no worker needed);
    - a pending delivery the broker never got (publishing failed) or lost is queued again;
    - a `sending` claim older than any provider call can take belongs to a dead worker: resolved
      without a blind resend (see `_resolve_stale_claim`).
    """
    result = SweepResult()
    now = timezone.now()
    for delivery_id in (Delivery.objects.filter(status=DeliveryStatus.PENDING, valid_until__lte=now)
                        .values_list("pk", flat=True)[:batch]):
        if Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.EXPIRED, finished_at=now, updated_at=now, next_attempt_at=None,
                error_class="validity", error_text="not sent before its validity deadline"):
            stats.delivery_recount(delivery_id=delivery_id)
            result.expired += 1
    if result.expired:
        metrics.delivery_status(DeliveryStatus.EXPIRED, "", result.expired)

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
        result.stale_resolved += _resolve_stale_claim(delivery)
    if result.expired or result.requeued or result.stale_resolved:
        logger.info("sweep: %d expired, %d re-queued, %d stale claims resolved",
                    result.expired, result.requeued, result.stale_resolved)
    return result


def _resolve_stale_claim(delivery: Delivery) -> int:
    """A worker claimed this delivery and died. What its last attempt shows decides:
    the provider accepted it → `sent`; a call was in flight → ask the provider where it can tell
    (it has the message → `sent`; it has none → safe to send again), else ambiguous (a login code
    gets its one retry, otherwise `unknown`); no call was made → back to `pending`, safe to send."""
    claim = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING, claimed_at=delivery.claimed_at)
    last = delivery.attempts.select_related("route").order_by("-started_at", "-id").first()
    now = timezone.now()
    if last is not None and last.outcome == AttemptOutcome.SENT:
        if not claim.exists():
            return 0
        _record_sent(delivery, RouteChoice(last.route, last.provider, {}, ""),
                     SendResult(provider_message_id=last.provider_message_id))
        return 1
    if last is not None and last.outcome == AttemptOutcome.IN_FLIGHT:
        choice = _poll_choice(last.route, last.provider)
        asked, found = provider_has_message(build_provider(choice), delivery, since=last.started_at) \
            if choice is not None else (False, None)
        in_flight = Attempt.objects.filter(pk=last.pk, outcome=AttemptOutcome.IN_FLIGHT)
        if found is not None:
            if not claim.exists():
                return 0
            in_flight.update(outcome=AttemptOutcome.SENT, finished_at=now, error_class="worker_lost",
                             provider_message_id=found.provider_message_id[:100],
                             error_text="the worker died during the call; the provider has the message")
            _record_sent(delivery, choice, found)
            logger.info("a dead worker's call reached the provider", extra={"delivery_id": str(delivery.pk)})
            return 1
        if asked:  # the provider never got it: sending it again cannot double it
            in_flight.update(outcome=AttemptOutcome.RETRY, finished_at=now, error_class="worker_lost",
                             error_text="the worker died before the provider got the message")
        else:
            in_flight.update(outcome=AttemptOutcome.AMBIGUOUS, finished_at=now, error_class="worker_lost",
                             error_text="the worker died during the provider call")
            if not _ambiguous_may_retry(delivery):
                reconcilable = provider_class(last.provider).supports_reconcile
                moved = claim.update(
                    status=DeliveryStatus.UNKNOWN, updated_at=now, error_class="worker_lost", route=last.route_id,
                    provider=last.provider,
                    error_text="the worker died during the provider call; the SMS may have been sent",
                    # The poller can still ask a provider that looks messages up.
                    next_poll_at=now + timedelta(seconds=settings.SMSGATE_POLL_INTERVAL) if reconcilable else None)
                if moved:
                    metrics.delivery_status(DeliveryStatus.UNKNOWN, last.provider)
                    stats.delivery_recount(delivery_id=delivery.pk)
                return moved
    moved = claim.update(status=DeliveryStatus.PENDING, claimed_at=None, next_attempt_at=None, enqueued_at=now,
                         updated_at=now)
    if moved:
        stats.delivery_recount(delivery_id=delivery.pk)
        delivery_enqueue(delivery_id=delivery.pk, kind=delivery.kind)
    return moved


CLAIM_CHECK_TASK = "deliveries.claim_check"


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
    resolved = 0
    limit = redelivered_claim_seconds()
    for delivery in Delivery.objects.filter(pk__in=list(delivery_ids), status=DeliveryStatus.SENDING,
                                            claimed_at__isnull=False):
        age = (timezone.now() - delivery.claimed_at).total_seconds()
        if age >= limit:
            resolved += _resolve_stale_claim(delivery)
        else:
            task_publish(CLAIM_CHECK_TASK, [[str(delivery.pk)]], queue=queue_for_kind(delivery.kind),
                         countdown=limit - age + 0.2, log_extra={"delivery_id": str(delivery.pk)})
    return resolved


# --- delivery reports: webhooks, polling, reconciliation, the report horizon -----------------------------
POLL_TASK = "deliveries.poll_statuses"
POLLABLE_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
# Not final, so the horizon closes them if no report ever comes.
OPEN_STATUSES = (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
POLL_BACKOFF_CAP_SECONDS = 3600
# A held report whose delivery turned up later than this is re-matched by the poller (belt and braces:
# the webhook and the worker each check for the other after writing).
UNMATCHED_REMATCH_AFTER = timedelta(seconds=30)
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


def _report_raw(raw):
    return raw if isinstance(raw, (dict, list, str)) else None


def _apply_report(delivery: Delivery, report: StatusReport, source: str) -> bool:
    return delivery_status_apply(delivery=delivery, status=report.status, source=source,
                                 provider_code=report.provider_code, error_class=str(report.error_class or ""),
                                 occurred_at=report.occurred_at, raw=_report_raw(report.raw))


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


def _any_held(provider: str, provider_message_id: str) -> bool:
    """Whether any report waits for this id: asked after every send and almost always "no", so it is
    one prepared-once statement on the (provider, provider message id) index, not an ORM query."""
    with connection.cursor() as cursor:
        cursor.execute(_any_held_statement(), [provider, provider_message_id])
        return cursor.fetchone() is not None


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
                error_class=str(report.error_class or ""), occurred_at=report.occurred_at, raw=_report_raw(report.raw))
            # The worker may have recorded the id meanwhile; it looks for held reports after writing it.
            delivery = _delivery_for_report(route, report.provider_message_id)
            if delivery is None or not _claim_held(held.pk):
                result.held += 1
                continue
        if _apply_report(delivery, report, source):
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
    if not _any_held(provider, provider_message_id):
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
    """One run of the poller (a Celery beat task): close deliveries past the report horizon, then ask
    the providers about deliveries whose poll is due, in batches, backing off per delivery."""
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


def _poll_choice(route: ProviderRoute | None, provider: str) -> RouteChoice | None:
    if route is not None:
        return RouteChoice(route, route.provider, route.credentials, route.sender)
    default = _default_route()
    return default if default and default.provider == provider else None


def _poll_batch(batch: list[Delivery], result: PollResult):
    groups: dict[tuple, list[Delivery]] = {}
    for delivery in batch:
        groups.setdefault((delivery.route_id, delivery.provider), []).append(delivery)
    routes = ProviderRoute.objects.in_bulk([route_id for route_id, _ in groups if route_id])
    for (route_id, slug), deliveries in groups.items():
        try:
            choice = _poll_choice(routes.get(route_id), slug)
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
            if _apply_report(delivery, report, StatusEvent.Source.POLL):
                result.moved += 1


def _reconcile_unknown(provider: Provider, delivery: Delivery, result: PollResult):
    """An `unknown` delivery (no answer when it was sent) at a provider that can look it up."""
    full = Delivery.objects.only("pk", "phone", "text", "created_at").get(pk=delivery.pk)
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
            provider_message_id=found.provider_message_id, sent_at=now, error_class="", error_code="", error_text="")
        status = found.status if found.status != ReportStatus.UNKNOWN else ReportStatus.SENT
        delivery_status_apply(delivery=delivery, status=status, source=StatusEvent.Source.POLL,
                              raw={"reconciled": "found", "reply": _report_raw(found.raw)})
        return
    # The provider never got it: send it after all if it is still worth sending, else it failed.
    full = Delivery.objects.only("pk", "kind", "valid_until").get(pk=delivery.pk)
    if now < full.valid_until and Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.UNKNOWN).update(
            status=DeliveryStatus.PENDING, next_attempt_at=None, next_poll_at=None, updated_at=now,
            error_text="the provider never received it: sending again"):
        StatusEvent.objects.create(delivery=delivery, source=StatusEvent.Source.SYSTEM, status=DeliveryStatus.PENDING,
                                   applied=True, raw={"reconciled": "not_found"})
        stats.delivery_recount(delivery_id=delivery.pk)
        transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=full.kind))
        return
    if delivery_status_apply(delivery=delivery, status=DeliveryStatus.FAILED, source=StatusEvent.Source.SYSTEM,
                             error_class=str(ErrorClass.TIMEOUT), raw={"reconciled": "not_found"}):
        Delivery.objects.filter(pk=delivery.pk).update(error_text="the provider never received it", next_poll_at=None)


def deliveries_close_without_report(*, limit: int = 1000) -> int:
    """Deliveries with no final status after the report horizon end `failed` with reason `no_report`."""
    hours = settings.SMSGATE_REPORT_HORIZON_HOURS
    cutoff = timezone.now() - timedelta(hours=hours)
    stale = list(Delivery.objects.filter(status__in=OPEN_STATUSES, created_at__lt=cutoff)
                 .values_list("pk", flat=True)[:limit])
    closed = 0
    for pk in stale:
        if delivery_status_apply(delivery=Delivery(pk=pk), status=DeliveryStatus.FAILED,
                                 source=StatusEvent.Source.SYSTEM, error_class=NO_REPORT,
                                 raw={"reason": NO_REPORT, "horizon_hours": hours}):
            Delivery.objects.filter(pk=pk).update(error_text=f"no final delivery report within {hours} h",
                                                  next_poll_at=None)
            closed += 1
    return closed



# --- staff actions: retry and cancel ----------------------------------------------------------------
class DeliveryActionRefused(Exception):
    """A retry or cancel the policy does not allow; `message` tells staff why."""

    def __init__(self, message):
        self.message = message
        super().__init__(str(message))


RETRYABLE_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.EXPIRED)
# error_class of a delivery that staff canceled.
CANCELED = "canceled"
# A test or bulk SMS can be retried this long after it was created; a login code only while valid.
RETRY_MAX_AGE = timedelta(days=1)


def delivery_retry(*, delivery: Delivery, by: str = "") -> Delivery:
    """Give a failed or expired delivery another attempt, when the policy allows it:

    - only `failed` or `expired`: `rejected` would be refused again, `unknown` may have been sent,
      and a canceled delivery stays canceled;
    - a system SMS (a login code) only inside its validity window: a late code is useless, the
      user asks amoCRM for a new one;
    - a test or bulk SMS up to RETRY_MAX_AGE after it was created, with a fresh validity window
      as long as its first one;
    - the account is active and a route is left to try (routes that failed on this delivery with
      an auth or funds error are not tried again: send a test SMS once the route is fixed).

    The delivery goes back to `pending` with a conditional UPDATE (two clicks make one retry),
    the retry is recorded as a status event, and it is queued once committed.
    """
    delivery = Delivery.objects.select_related("account").get(pk=delivery.pk)
    now = timezone.now()
    refusal = delivery_retry_refusal(delivery=delivery, now=now)
    if refusal:
        raise DeliveryActionRefused(refusal)
    if delivery.kind == DeliveryKind.SYSTEM:
        valid_until = delivery.valid_until
    else:
        valid_until = now + max(delivery.valid_until - delivery.created_at, timedelta(minutes=1))
    with transaction.atomic():
        moved = (Delivery.objects.filter(pk=delivery.pk, status__in=RETRYABLE_STATUSES).exclude(error_class=CANCELED)
                 .update(status=DeliveryStatus.PENDING, valid_until=valid_until, next_attempt_at=None,
                         finished_at=None, error_class="", error_code="", error_text="", updated_at=now))
        if not moved:
            raise DeliveryActionRefused(_("The delivery changed meanwhile; reload the page."))
        StatusEvent.objects.create(delivery=delivery, source=StatusEvent.Source.SYSTEM, status=DeliveryStatus.PENDING,
                                   occurred_at=now, applied=True, raw={"action": "retry", "by": by})
        stats.delivery_recount(delivery_id=delivery.pk)
        transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=delivery.kind))
    logger.info("delivery retried by staff", extra={"delivery_id": str(delivery.pk)})
    delivery.refresh_from_db()
    return delivery


def delivery_retry_refusal(*, delivery: Delivery, now=None):
    """Why the retry policy (see delivery_retry) refuses this delivery now, or None if it allows it."""
    now = now or timezone.now()
    if delivery.status not in RETRYABLE_STATUSES or delivery.error_class == CANCELED:
        return _("Only a failed or expired delivery that was not canceled can be retried.")
    if delivery.kind == DeliveryKind.SYSTEM and now >= delivery.valid_until:
        return _("This login code is past its validity window: a late code is useless, the user should ask "
                 "for a new one.")
    if delivery.kind != DeliveryKind.SYSTEM and now - delivery.created_at > RETRY_MAX_AGE:
        return _("This SMS is more than a day old and can no longer be retried.")
    if not delivery.account.is_active:
        return _("The account is disabled.")
    policy = _policy_refusal_now(delivery)
    if policy is not None:
        return policy
    if not _route_candidates(delivery):
        return _("No route is left to try: every route of the account failed on this delivery or is broken or "
                 "inactive. Fix the route, then send a test SMS.")
    return None


def _policy_refusal_now(delivery: Delivery):
    """Why the abuse policy would refuse this stored number today (e.g. a pumping range closed since
    it was accepted), or None. A retry skips the limits (staff chose to send once more), not the policy."""
    try:
        phone = phone_parse(delivery.phone)
    except PhoneError:
        return None  # a hashed or redacted phone: nothing left to send to, the route check decides
    refusal = guard_policy_refusal(account=delivery.account, phone=phone)
    return refusal.message if refusal is not None else None


def delivery_cancel(*, delivery: Delivery, by: str = "") -> Delivery:
    """Stop a pending delivery (also one waiting for a retry): it ends `failed` with the reason
    `canceled` and is never sent. The conditional UPDATE races the worker's claim (pending ->
    sending), so exactly one of them wins; a delivery already `sending` cannot be canceled, as the
    provider call may be under way."""
    now = timezone.now()
    with transaction.atomic():
        moved = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, error_class=CANCELED, error_code="", error_text="canceled by staff",
            finished_at=now, next_attempt_at=None, updated_at=now)
        if not moved:
            raise DeliveryActionRefused(_("Only a pending delivery can be canceled; this one is already on its way "
                                          "or finished."))
        StatusEvent.objects.create(delivery=delivery, source=StatusEvent.Source.SYSTEM, status=DeliveryStatus.FAILED,
                                   error_class=CANCELED, occurred_at=now, applied=True,
                                   raw={"action": "cancel", "by": by})
        stats.delivery_recount(delivery_id=delivery.pk)
    logger.info("delivery canceled by staff", extra={"delivery_id": str(delivery.pk)})
    delivery.refresh_from_db()
    return delivery
