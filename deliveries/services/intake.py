"""Accepting deliveries: a login code from amoCRM, a test SMS, a bulk import.

Owns: validating what the caller sends (phone, text, route), the abuse guard's verdict, recording
the delivery with its counters (one INSERT form for one delivery or thousands, the same SQL on
PostgreSQL and SQLite), the replay answer for a repeated token, recording refusals as `rejected`
deliveries, and queueing an accepted one once committed. May call: models, counters, guard,
phones, segments, queueing, routes' selectors, accounts' models, smsgate.db.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from routes.models import ProviderRoute
from routes.selectors import account_has_active_route
from smsgate.db import CACHED_PARAMS, run_batch
from smsgate.errors import ClientError

from .. import counters, metrics
from ..guard import GuardRefusal, guard_check
from ..models import Delivery, DeliveryKind, DeliveryStatus
from smsgate.phones import Phone, PhoneError, phone_mask, phone_parse
from ..segments import segment_info
from .queueing import delivery_enqueue

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


# --- the one INSERT ------------------------------------------------------------------------------------
def deliveries_insert(*, deliveries: list[Delivery]) -> list[Delivery]:
    """INSERT new deliveries with their counters, all or nothing: one for a request, thousands for a
    bulk import. The same SQL on PostgreSQL and SQLite, in one round trip on PostgreSQL; inside a
    caller's transaction it joins it. A repeated (account, jti) raises
    IntegrityError and leaves nothing behind."""
    if not deliveries:
        return deliveries
    for delivery in deliveries:
        delivery.stats_key = counters.key_for_new(_with_times(delivery))
    columns = _insert_columns(deliveries)
    names = tuple(field.column for field in columns)
    # Rows per statement: as many as psycopg's statement cache takes (smsgate.db; one delivery's
    # columns nearly fill it), the statements composed into one query: a statement of many rows'
    # parameters would be parsed again at every call.
    step = max(1, CACHED_PARAMS // len(columns))
    statements = []
    for start in range(0, len(deliveries), step):
        rows = range(start, min(start + step, len(deliveries)))
        statements.append((_insert_sql(names, len(rows)),
                           [values[index] for index in rows for values in columns.values()]))
    run_batch([*statements, *counters.new_counts(deliveries)])
    for delivery in deliveries:
        delivery._state.adding, delivery._state.db = False, connection.alias
    return deliveries


def _with_times(delivery: Delivery) -> Delivery:
    """Set created_at and updated_at as the ORM's INSERT would (its fields' pre_save), once."""
    for name in ("created_at", "updated_at"):
        if getattr(delivery, name) is None:
            Delivery._meta.get_field(name).pre_save(delivery, add=True)
    return delivery


def _insert_columns(deliveries: list[Delivery]) -> dict:
    """field -> its value in each new delivery, prepared as the ORM's INSERT compiler prepares plain
    values. A field left to its database default (an expression) is not among them: the INSERT
    leaves it to DEFAULT."""
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own wrapper, not the proxy, once per value
    columns = {}
    for field in Delivery._meta.local_concrete_fields:
        values = [getattr(delivery, field.attname) if field.name in ("created_at", "updated_at")
                  else field.pre_save(delivery, add=True) for delivery in deliveries]
        if not any(hasattr(value, "resolve_expression") for value in values):
            columns[field] = [field.get_db_prep_save(value, db) for value in values]
    return columns


@lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...], rows: int) -> str:
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (f"INSERT INTO {quote(Delivery._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES {', '.join([row] * rows)}")
