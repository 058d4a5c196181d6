"""Business logic of deliveries: accept a system SMS, send it through the account's routes,
apply status reports. Views, tasks and admin actions only call these."""

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account, ProviderRoute
from accounts.selectors import routes_active
from smsgate.celery import QUEUE_BULK, QUEUE_SYSTEM

from .models import (
    FINAL_STATUSES,
    STATUS_RANK,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    StatusEvent,
)
from .phones import PhoneError, phone_mask, phone_parse
from .providers import provider_class
from .providers.base import (
    ErrorClass,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
    SendRequest,
)
from .segments import segment_info
from . import stats

logger = logging.getLogger(__name__)

SEND_TASK = "deliveries.send"
# Temporary errors a route may have for one delivery before the next route (if any) is tried.
ROUTE_TEMPORARY_BUDGET = 3
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 60.0
# Route failures in a row (auth, funds) that mark a route broken.
ROUTE_BROKEN_AFTER = 2
_DOMAIN_REGION = {"amocrm.ru": "RU"}


# --- accepting a system SMS -------------------------------------------------------------------------
class DeliveryRefused(Exception):
    """A request that must not become a delivery; carries what the client is told."""

    http_status = 400
    code = "invalid"

    def __init__(self, message, *, errors: dict | None = None, code: str | None = None):
        self.message = message
        self.errors = errors or {}
        if code:
            self.code = code
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
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DeliveryInvalid(_("The request has invalid fields."), errors={"phone": [_PHONE_MESSAGES["required"]]})
    region = _DOMAIN_REGION.get(account.domain)
    try:
        return phone_parse(raw, default_region=region).e164
    except PhoneError as exc:
        if isinstance(raw, str) and raw.strip().isdigit():  # "79123456789": international without "+"
            try:
                return phone_parse("+" + raw.strip()).e164
            except PhoneError:
                pass
        raise DeliveryInvalid(_("The request has invalid fields."),
                              errors={"phone": [_PHONE_MESSAGES[exc.code]]}) from None


def account_has_route(account: Account) -> bool:
    if settings.SMSGATE_DEFAULT_ROUTE:
        return True
    return ProviderRoute.objects.filter(account=account, is_active=True).exists()


def delivery_create(
    *,
    account: Account,
    phone,
    text,
    kind: str = DeliveryKind.SYSTEM,
    jti: str | None = None,
    validity_seconds: int | None = None,
    route: ProviderRoute | None = None,
) -> CreateResult:
    """Validate and record a delivery, and queue it once the row is committed.

    The same `jti` for the same account returns the first delivery: amoCRM may retry a request,
    and a login code must not go out twice.
    """
    errors = {}
    text_errors = _validate_text(text)
    if text_errors:
        errors["text"] = text_errors
    try:
        e164 = delivery_phone_parse(phone, account=account)
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

    segments = segment_info(text)
    validity = validity_seconds or settings.SMSGATE_SYSTEM_SMS_VALIDITY
    try:
        with transaction.atomic():
            delivery = Delivery.objects.create(
                account=account,
                kind=kind,
                phone=e164,
                text=text,
                encoding=segments.encoding,
                segments=segments.segments,
                jti=jti,
                route=route,
                valid_until=timezone.now() + timedelta(seconds=validity),
            )
            stats.delivery_created(delivery=delivery)
            transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=kind))
    except IntegrityError:
        if jti is None:
            raise
        existing = Delivery.objects.get(account=account, jti=jti)
        logger.info("replayed token: returning the existing delivery", extra={"delivery_id": str(existing.pk)})
        return CreateResult(existing, created=False)
    logger.info(
        "delivery accepted",
        extra={"delivery_id": str(delivery.pk), "account_id": account.pk, "phone": phone_mask(e164)},
    )
    return CreateResult(delivery, created=True)


TEST_SMS_TEXT = _("smsgate test message: your SMS provider is set up correctly.")


def delivery_create_test(*, account: Account, phone, route: ProviderRoute | None = None, text=None) -> CreateResult:
    """A test SMS, through one route or the account's usual routes; never deduplicated."""
    return delivery_create(account=account, phone=phone, text=text or str(TEST_SMS_TEXT), kind=DeliveryKind.TEST,
                           route=route)


def queue_for_kind(kind: str) -> str:
    return QUEUE_BULK if kind == DeliveryKind.BULK else QUEUE_SYSTEM


def delivery_enqueue(*, delivery_id, kind: str, countdown: float | None = None) -> bool:
    """Hand the delivery to a worker. A broker outage is not the client's problem: the row is
    committed as `pending`, and the sweeper queues it again later."""
    try:
        current_app.send_task(SEND_TASK, args=[str(delivery_id)], queue=queue_for_kind(kind), countdown=countdown)
        return True
    except Exception:  # kombu raises many types for a broker that is down
        logger.warning("could not enqueue delivery; it stays pending for the sweeper",
                       extra={"delivery_id": str(delivery_id)}, exc_info=True)
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


def _route_candidates(delivery: Delivery) -> list[RouteChoice]:
    """Routes still worth trying for this delivery, best first."""
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
    given_up = set(
        Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.NEXT_ROUTE).values_list("route_id", flat=True)
    )
    return [c for c in candidates if c.route_id not in given_up]


def build_provider(choice: RouteChoice) -> Provider:
    cls = provider_class(choice.provider)
    return cls(credentials=choice.credentials, sender=choice.sender,
               base_url=settings.SMSGATE_PROVIDER_BASE_URLS.get(choice.provider))


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


def delivery_claim(*, delivery_id) -> bool:
    """pending -> sending, atomically: only one worker ever gets a delivery."""
    now = timezone.now()
    return bool(
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(seconds=1)))
        .update(status=DeliveryStatus.SENDING, attempt_count=F("attempt_count") + 1, updated_at=now)
    )


def _finish(delivery: Delivery, status: str, *, error_class="", code="", text="") -> str:
    """Move a claimed delivery to a final status (or `unknown`)."""
    now = timezone.now()
    values = dict(status=status, error_class=error_class, error_code=str(code)[:50], error_text=str(text)[:300],
                  updated_at=now, next_attempt_at=None)
    if status in FINAL_STATUSES:
        values["finished_at"] = now
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**values)
    stats.delivery_recount(delivery_id=delivery.pk)
    logger.info("delivery %s", status, extra={"delivery_id": str(delivery.pk), "error_class": error_class})
    return status


def delivery_send(*, delivery_id) -> SendOutcome | None:
    """Claim a pending delivery and send it through its routes. None when there was nothing to do
    (another worker has it, or it is already past `pending`)."""
    if not delivery_claim(delivery_id=delivery_id):
        logger.debug("delivery not claimable", extra={"delivery_id": str(delivery_id)})
        return None
    delivery = Delivery.objects.select_related("account").get(pk=delivery_id)
    kind = delivery.kind

    while True:
        if timezone.now() >= delivery.valid_until:
            return SendOutcome(_finish(delivery, DeliveryStatus.EXPIRED, error_class="validity",
                                       text="not sent before its validity deadline"), kind=kind)
        if not delivery.account.is_active:
            return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, error_class="account_disabled",
                                       text="the account is disabled"), kind=kind)
        candidates = _route_candidates(delivery)
        if not candidates:
            return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, error_class="no_route",
                                       code=delivery.error_code, text=delivery.error_text or "no usable route"),
                               kind=kind)
        choice = candidates[0]
        outcome = _attempt(delivery, choice, has_next_route=len(candidates) > 1)
        if outcome is not None:
            return outcome
        delivery.refresh_from_db(fields=["error_code", "error_text"])  # next route, same claim


def _attempt(delivery: Delivery, choice: RouteChoice, *, has_next_route: bool) -> SendOutcome | None:
    """One provider call; returns the outcome, or None to go on with the next route."""
    started = timezone.now()
    attempt = Attempt.objects.create(delivery=delivery, route=choice.route, provider=choice.provider,
                                     started_at=started)
    request = SendRequest(
        phone=delivery.phone,
        text=delivery.text,
        reference=str(delivery.pk),
        sender=choice.sender,
        validity_seconds=max(int((delivery.valid_until - started).total_seconds()), 60),
        callback_url=route_callback_url(choice.route) if choice.route else None,
    )
    clock = time.monotonic()
    try:
        result = build_provider(choice).send(request)  # outside any transaction, no row locked
    except ProviderError as exc:
        latency = int((time.monotonic() - clock) * 1000)
        return _on_provider_error(delivery, choice, attempt, exc, latency, has_next_route=has_next_route)
    except Exception as exc:  # an adapter bug: the request may or may not have gone out
        latency = int((time.monotonic() - clock) * 1000)
        logger.exception("provider adapter crashed", extra={"delivery_id": str(delivery.pk),
                                                             "provider": choice.provider})
        _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, latency, error_class="internal", text=type(exc).__name__)
        return SendOutcome(_finish(delivery, DeliveryStatus.UNKNOWN, error_class="internal",
                                   text=f"adapter error: {type(exc).__name__}"), kind=delivery.kind)

    latency = int((time.monotonic() - clock) * 1000)
    _close_attempt(attempt, AttemptOutcome.SENT, latency, message_id=result.provider_message_id, raw=result.raw)
    _route_healthy(choice)
    now = timezone.now()
    common = dict(route=choice.route, provider=choice.provider, provider_message_id=result.provider_message_id,
                  sent_at=now, updated_at=now, next_attempt_at=None)
    # A delivery report may already have moved it on (it can arrive before this line runs).
    moved = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT, error_class="", error_code="", error_text="", **common
    )
    if not moved:
        Delivery.objects.filter(pk=delivery.pk).update(**common)
    stats.delivery_recount(delivery_id=delivery.pk)
    if result.status != ReportStatus.SENT:
        delivery_status_apply(delivery=delivery, status=result.status, source=StatusEvent.Source.SYSTEM,
                              raw=None)
    logger.info("delivery sent", extra={"delivery_id": str(delivery.pk), "provider": choice.provider,
                                        "latency_ms": latency})
    return SendOutcome(DeliveryStatus.SENT, kind=delivery.kind)


def _close_attempt(attempt: Attempt, outcome, latency_ms, *, error_class="", code="", text="", message_id="",
                   raw=None):
    Attempt.objects.filter(pk=attempt.pk).update(
        outcome=outcome, finished_at=timezone.now(), latency_ms=latency_ms, error_class=error_class,
        provider_code=str(code)[:50], error_text=str(text)[:300], provider_message_id=message_id,
        raw_response=raw if isinstance(raw, (dict, list)) else None,
    )


def _on_provider_error(delivery, choice, attempt, exc: ProviderError, latency, *, has_next_route) -> SendOutcome | None:
    kind = delivery.kind
    error = dict(error_class=str(exc.error_class), code=exc.code, text=exc.message)
    raw = exc.raw if isinstance(exc.raw, (dict, list)) else None
    log_extra = {"delivery_id": str(delivery.pk), "provider": choice.provider, "error_class": str(exc.error_class),
                 "provider_code": exc.code}

    if isinstance(exc, ProviderRejectedError):
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
            return _on_ambiguous(delivery, attempt, exc, latency, raw, error)
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


def _on_ambiguous(delivery, attempt, exc, latency, raw, error) -> SendOutcome:
    """No complete answer: the SMS may be on its way. Never resend blindly; a login code may be
    retried once inside its validity window (a second code is better than none)."""
    _close_attempt(attempt, AttemptOutcome.AMBIGUOUS, latency, raw=raw, **error)
    earlier = Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.AMBIGUOUS).count()
    if delivery.kind in (DeliveryKind.SYSTEM, DeliveryKind.TEST) and earlier <= 1:
        return _schedule_retry(delivery, exc, error)
    return SendOutcome(_finish(delivery, DeliveryStatus.UNKNOWN, error_class=str(ErrorClass.TIMEOUT), code=exc.code,
                               text="no answer from the provider; the SMS may have been sent"), kind=delivery.kind)


def _schedule_retry(delivery: Delivery, exc: ProviderTemporaryError, error: dict) -> SendOutcome:
    delay = backoff_seconds(delivery.attempt_count, exc.retry_after)
    now = timezone.now()
    if now + timedelta(seconds=delay) >= delivery.valid_until:
        return SendOutcome(_finish(delivery, DeliveryStatus.FAILED, **error), kind=delivery.kind)
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay), updated_at=now,
        error_class=error["error_class"], error_code=error["code"][:50], error_text=error["text"][:300],
    )
    logger.info("delivery will retry in %.1f s", delay, extra={"delivery_id": str(delivery.pk)})
    return SendOutcome(DeliveryStatus.PENDING, retry_in=delay, kind=delivery.kind)


def _route_failed(choice: RouteChoice, exc: ProviderError):
    if choice.route is None:
        return
    ProviderRoute.objects.filter(pk=choice.route.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    if exc.error_class in (ErrorClass.AUTH, ErrorClass.INSUFFICIENT_FUNDS):
        ProviderRoute.objects.filter(
            pk=choice.route.pk, consecutive_failures__gte=ROUTE_BROKEN_AFTER, is_broken=False
        ).update(is_broken=True, broken_at=timezone.now(), broken_reason=f"{exc.error_class}: {exc.code} {exc.message}"[:200])


def _route_healthy(choice: RouteChoice):
    if choice.route is not None and choice.route.consecutive_failures:
        ProviderRoute.objects.filter(pk=choice.route.pk).update(consecutive_failures=0)


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
    return applied


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
    if not _route_candidates(delivery):
        return _("No route is left to try: every route of the account failed on this delivery or is broken or "
                 "inactive. Fix the route, then send a test SMS.")
    return None


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
