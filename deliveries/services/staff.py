"""Staff actions on a delivery: retry and cancel (the admin's buttons and list actions).

Owns: the retry policy (what may be retried, when, with which validity) and cancelling a pending
delivery; both are status changes kept as status events with who did them. May call: status,
dispatch (which routes are left), queueing, guard (policy re-checked before a retry).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..guard import guard_policy_refusal
from ..models import Delivery, DeliveryKind, DeliveryStatus, StatusEvent
from smsgate.phones import PhoneError, phone_parse
from .dispatch import route_candidates
from .queueing import delivery_enqueue
from .status import Event, delivery_move

logger = logging.getLogger(__name__)


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
        # A canceled delivery is `failed` too: it only moves if staff's cancel is not what failed it.
        if delivery.error_class == CANCELED or not delivery_move(
                delivery_id=delivery.pk, to=DeliveryStatus.PENDING, only_from=RETRYABLE_STATUSES, now=now,
                values={"valid_until": valid_until, "next_attempt_at": None, "finished_at": None, "error_class": "",
                        "error_code": "", "error_text": ""},
                event=Event(StatusEvent.Source.SYSTEM, occurred_at=now, raw={"action": "retry", "by": by})):
            raise DeliveryActionRefused(_("The delivery changed meanwhile; reload the page."))
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
    if not route_candidates(delivery):
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
    if not delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.FAILED, only_from=(DeliveryStatus.PENDING,),
                         now=now, values={"error_class": CANCELED, "error_code": "", "error_text": "canceled by staff",
                                          "finished_at": now, "next_attempt_at": None},
                         event=Event(StatusEvent.Source.SYSTEM, error_class=CANCELED, occurred_at=now,
                                     raw={"action": "cancel", "by": by})):
        raise DeliveryActionRefused(_("Only a pending delivery can be canceled; this one is already on its way "
                                      "or finished."))
    logger.info("delivery canceled by staff", extra={"delivery_id": str(delivery.pk)})
    delivery.refresh_from_db()
    return delivery
