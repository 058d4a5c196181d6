"""Accepting deliveries: a login code from amoCRM, a test SMS, a bulk import.

Owns: validating what the caller sends (phone, text, route), the abuse guard's verdict, recording
the delivery with its counters (one INSERT form for one delivery or thousands, the same SQL on
PostgreSQL and SQLite), the replay answer for a repeated token, recording refusals as `rejected`
deliveries, and queueing an accepted one once committed. A batch from another app (crm's sends)
goes `deliveries_validate` -> the caller's own checks -> `deliveries_guard` -> `deliveries_record`,
whose INSERT carries the caller's rows in the same round trip. May call: models, counters, guard,
phones, segments, queueing, routes' selectors, accounts' models, smsgate.db.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from routes.models import ProviderRoute
from routes.selectors import account_has_active_route
from smsgate.db import insert_statements, run_batch
from smsgate.errors import ClientError

from .. import counters, metrics
from ..guard import GuardRefusal, guard_check
from ..models import Delivery, DeliveryKind, DeliveryStatus
from smsgate.phones import Phone, PhoneError, phone_mask, phone_parse
from ..segments import segment_info
from .queueing import deliveries_enqueue, delivery_enqueue

logger = logging.getLogger(__name__)

_DOMAIN_REGION = {"amocrm.ru": "RU"}


class DeliveryRefused(ClientError):
    """A request that must not become a delivery; carries what the client is told (and, for a
    recorded refusal, the `rejected` delivery's id, for support)."""

    http_status = 400
    code = "invalid"

    def __init__(self, message, *, errors: dict | None = None, code: str | None = None,
                 http_status: int | None = None, retry_after: int | None = None, delivery_id=None):
        super().__init__(message, errors=errors, code=code, http_status=http_status, retry_after=retry_after)
        self.delivery_id = delivery_id

    def body(self) -> dict:
        body = super().body()
        if self.delivery_id:
            body["id"] = str(self.delivery_id)
        return body


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
        if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():  # international without "+"
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
    caller queues it, as a bulk import does with `queueing.deliveries_enqueue_bulk`).

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

    segments = segment_info(text)
    now = timezone.now()
    delivery = Delivery(account=account, kind=kind, phone=recipient.e164, text=text, encoding=segments.encoding,
                        segments=segments.segments, jti=jti, route=route)
    try:
        guard_check(account=account, phone=recipient, jti=jti)
    except GuardRefusal as refusal:
        existing = Delivery.objects.filter(account=account, jti=jti).first() if jti is not None else None
        if existing is not None:  # amoCRM repeating an accepted request: same answer, no second SMS
            return CreateResult(existing, created=False)
        _record_refusal(delivery, refusal, now=now)
        raise DeliveryRefused(refusal.message, code=refusal.reason, http_status=refusal.http_status,
                              retry_after=refusal.retry_after, delivery_id=delivery.pk) from None

    delivery.valid_until = now + timedelta(seconds=validity_seconds or settings.SMSGATE_SYSTEM_SMS_VALIDITY)
    delivery.enqueued_at = now  # optimistic: cleared if publishing fails, so the sweeper takes it
    try:
        if connection.in_atomic_block:  # a savepoint, so a repeated jti leaves the caller's transaction usable
            with transaction.atomic():
                deliveries_insert(deliveries=[delivery])
        else:  # one round trip: the row and its counters are committed together
            deliveries_insert(deliveries=[delivery])
    except IntegrityError:
        if jti is None:
            raise
        existing = Delivery.objects.get(account=account, jti=jti)
        logger.info("replayed token: returning the existing delivery", extra={"delivery_id": str(existing.pk)})
        return CreateResult(existing, created=False)
    if enqueue:
        transaction.on_commit(lambda: delivery_enqueue(delivery_id=delivery.pk, kind=kind))
    logger.info("delivery accepted",
                extra={"delivery_id": str(delivery.pk), "account_id": account.pk, "phone": recipient.masked})
    metrics.delivery_status(DeliveryStatus.PENDING, "")
    return CreateResult(delivery, created=True)


def _record_refusal(delivery: Delivery, refusal: GuardRefusal, *, now):
    """A refused request is kept as a `rejected` delivery (never sent) so staff can see it."""
    delivery.status = DeliveryStatus.REJECTED
    delivery.error_class = "policy" if refusal.http_status == 422 else "limit"
    delivery.error_code = refusal.reason
    delivery.error_text = str(refusal.message)[:300]
    delivery.valid_until = delivery.finished_at = now
    delivery.jti = None  # the token may come back once the limit clears; its delivery then takes the jti
    deliveries_insert(deliveries=[delivery])
    logger.warning("delivery refused by the abuse guard: %s", refusal.reason,
                   extra={"delivery_id": str(delivery.pk), "account_id": delivery.account_id,
                          "phone": phone_mask(delivery.phone)})
    metrics.delivery_status(DeliveryStatus.REJECTED, "")


TEST_SMS_TEXT = _("smsgate test message: your SMS provider is set up correctly.")


def delivery_create_test(*, account: Account, phone, route: ProviderRoute | None = None, text=None) -> CreateResult:
    """A test SMS, through one route or the account's usual routes; never deduplicated."""
    return delivery_create(account=account, phone=phone, text=text or str(TEST_SMS_TEXT), kind=DeliveryKind.TEST,
                           route=route)


# --- a batch: what other apps send (crm: the card, the pipeline, lists) ---------------------------------
@dataclass
class Verdict:
    """One item of a batch: accepted (`delivery` built as `pending`, not yet recorded), refused by the
    abuse guard (`delivery` built as `rejected`, recorded with the batch for staff, and `refusal`), or
    invalid (`refusal` only: nothing to record)."""

    delivery: Delivery | None
    refusal: DeliveryRefused | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None

    def refuse(self, message, *, code: str, http_status: int, retry_after: int | None = None,
               error_class: str = "limit") -> None:
        """Turn an accepted item into a refused one, kept as a `rejected` delivery (its caller's own
        limit, e.g. crm's caps)."""
        delivery, now = self.delivery, timezone.now()
        delivery.status = DeliveryStatus.REJECTED
        delivery.error_class, delivery.error_code, delivery.error_text = error_class, code, str(message)[:300]
        delivery.finished_at, delivery.enqueued_at = now, None
        self.refusal = DeliveryRefused(message, code=code, http_status=http_status, retry_after=retry_after,
                                       delivery_id=delivery.pk)


def deliveries_validate(*, account: Account, kind: str, items: list[tuple[object, object]],
                        validity_seconds: int | None = None) -> list[Verdict]:
    """Validate each (phone, text) as `delivery_create` does for one and build its delivery; writes and
    counts nothing. Then `deliveries_guard`, then `deliveries_record` (with rows of the caller's own in
    the same round trip). Which routes may carry them is the caller's rule."""
    now = timezone.now()
    valid_until = now + timedelta(seconds=validity_seconds or settings.SMSGATE_SYSTEM_SMS_VALIDITY)
    verdicts = []
    for phone, text in items:
        errors = {}
        if text_errors := _validate_text(text):
            errors["text"] = text_errors
        recipient = None
        try:
            recipient = _recipient(phone, account=account)
        except DeliveryInvalid as exc:
            errors.update(exc.errors)
        if errors:
            verdicts.append(Verdict(None, DeliveryInvalid(_("The request has invalid fields."), errors=errors)))
            continue
        segments = segment_info(text)
        verdicts.append(Verdict(Delivery(account=account, kind=kind, phone=recipient.e164, text=text,
                                         encoding=segments.encoding, segments=segments.segments,
                                         valid_until=valid_until, enqueued_at=now)))
    return verdicts


def deliveries_guard(*, account: Account, verdicts: list[Verdict]) -> None:
    """The abuse guard for each accepted item (counted when it passes); a refused one becomes a
    `rejected` delivery, recorded with the batch."""
    for verdict in verdicts:
        if not verdict.accepted:
            continue
        try:
            guard_check(account=account, phone=phone_parse(verdict.delivery.phone))
        except GuardRefusal as refusal:
            verdict.refuse(refusal.message, code=refusal.reason, http_status=refusal.http_status,
                           retry_after=refusal.retry_after,
                           error_class="policy" if refusal.http_status == 422 else "limit")


def deliveries_record(*, verdicts: list[Verdict], also: list[tuple[str, list]] = (), enqueue: bool = True) -> None:
    """Record a batch from `deliveries_validate` (accepted and refused deliveries, with their counters, and
    the caller's `also` statements) in one round trip, and queue the accepted ones on their lane once
    committed. Inside the caller's transaction it joins it (IntegrityError: nothing was written)."""
    deliveries = [verdict.delivery for verdict in verdicts if verdict.delivery is not None]
    deliveries_insert(deliveries=deliveries, also=also)
    accepted = [delivery for delivery in deliveries if delivery.status == DeliveryStatus.PENDING]
    for delivery in deliveries:
        metrics.delivery_status(delivery.status, "")
    if enqueue and accepted:
        transaction.on_commit(lambda: deliveries_enqueue(deliveries=accepted))
    logger.info("deliveries accepted", extra={"account_id": deliveries[0].account_id if deliveries else None,
                                             "accepted": len(accepted), "refused": len(deliveries) - len(accepted)})


# --- the one INSERT ------------------------------------------------------------------------------------
def deliveries_insert(*, deliveries: list[Delivery], also: list[tuple[str, list]] = ()) -> list[Delivery]:
    """INSERT new deliveries with their counters, all or nothing: one for a request, thousands for a
    bulk import (rows per statement as smsgate.db.insert_statements cuts them). The same SQL on
    PostgreSQL and SQLite, in one round trip on PostgreSQL; inside a caller's transaction it joins it. A repeated (account, jti) raises
    IntegrityError and leaves nothing behind. `also`: statements of the caller's own rows that belong
    with these deliveries (crm's record of each, built with smsgate.db.insert_statements), run after
    the INSERT in the same round trip and the same all or nothing."""
    if not deliveries:
        run_batch(list(also))
        return deliveries
    for delivery in deliveries:
        delivery.stats_key = counters.key_for_new(_with_times(delivery))
    run_batch([*insert_statements(Delivery, deliveries), *counters.new_counts(deliveries),
               *also])
    for delivery in deliveries:
        delivery._state.adding, delivery._state.db = False, connection.alias
    return deliveries


def _with_times(delivery: Delivery) -> Delivery:
    """Set created_at and updated_at as the ORM's INSERT would (its fields' pre_save), once."""
    for name in ("created_at", "updated_at"):
        if getattr(delivery, name) is None:
            Delivery._meta.get_field(name).pre_save(delivery, add=True)
    return delivery
