"""Sending SMS from amoCRM: the one service every CRM source calls (the card's panel and feed, the
digital pipeline, Salesbot, lists). A single send is a batch of one.

    results = crm_sends_create(account=account, kind=DeliveryKind.CRM, write_notes=True,
                               items=[CrmSend("leads", 123, "+79161234567", "Добрый день!", amo_user_id=5)])

For a batch it applies, in this order: the items' own shape (entity, key), the caller's idempotency
keys (a key seen before answers with the first send's delivery), the route rule (a CRM send needs a
route of the account's own, unless the operator allows the deployment's default route for the
account: `Account.crm_default_route_allowed`), the phone and text (deliveries.services.intake), the
CRM caps (crm.caps), then the abuse guard. Everything accepted is recorded in one round trip through
intake (the deliveries and their counters, a `CrmMessage` per delivery, an `sms_out` note in the
outbox per delivery when `write_notes`) and queued on the CRM lane (`sms-crm`) once committed.
Refusals come back per item with a code and a message in the active language; refusals by the caps
or the guard are kept as `rejected` deliveries for staff, like refused login codes.

Checking that the phone belongs to the entity is the caller's job (crm.cards for the card; the
pipeline and lists take the phone from amoCRM's own reply). May call: deliveries' intake and queueing,
routes' selectors, accounts' limits, crm.caps, crm.notes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.limits import limits_for
from accounts.models import Account
from deliveries.models import CRM_KINDS, DeliveryKind
from deliveries.services.intake import Verdict, deliveries_guard, deliveries_record, deliveries_validate
from routes.selectors import account_has_active_route
from smsgate.db import insert_statements

from . import notes
from .caps import MESSAGES as CAP_MESSAGES
from .caps import crm_caps_take
from .models import ENTITY_TYPES, CrmMessage, CrmNote, CrmOrigin, NoteKind, NoteState, SmsTemplate

logger = logging.getLogger(__name__)

MAX_ID = 2**53
DEDUPE_KEY_MAX = CrmMessage._meta.get_field("dedupe_key").max_length
RECORD_ATTEMPTS = 3  # a dedupe key or a note's second taken by a send committed at the same moment

# The refusal codes a caller may get, and the HTTP status the account API answers them with.
HTTP_STATUS = {"invalid": 400, "phone": 400, "no_route": 422, "crm_not_allowed": 422, "policy": 422,
               "limits": 429, "crm_caps": 429}

_NO_ROUTE = _("No SMS provider is set up for this account. Open the widget settings in amoCRM, choose an SMS "
              "provider and enter its credentials.")
_NOT_ALLOWED = _("SMS sent from amoCRM need an SMS provider of the account's own: add one in the widget "
                 "settings. The service's shared route is only for login codes.")


@dataclass(frozen=True)
class CrmSend:
    entity_type: str  # "leads" | "contacts"
    entity_id: int
    phone: str  # as read from amoCRM; normalised to E.164 by the service
    text: str  # the final text (already rendered)
    template_id: int | None = None
    amo_user_id: int | None = None  # who sent it (card); None for pipeline / list / Salesbot
    dedupe_key: str | None = None  # idempotency per account (widget's client key, DP event id, bot continue id)


@dataclass(frozen=True)
class CrmSendResult:
    item: CrmSend
    delivery_id: uuid.UUID | None  # None when refused
    code: str | None  # refusal code ("no_route", "policy", "limits", "crm_caps", "phone", ...)
    detail: str | None  # translated refusal message
    duplicate: bool = False  # dedupe_key seen before: the first send's delivery_id
    # Beyond the shared contract: what an API answer needs besides the code.
    retry_after: int | None = None  # seconds, for "limits" and "crm_caps"
    errors: dict | None = None  # field messages, for "invalid" and "phone"
    reason: str | None = None  # the guard's or the caps' own reason (e.g. "phone_cooldown")

    @property
    def accepted(self) -> bool:
        return self.code is None

    @property
    def http_status(self) -> int:
        return 201 if self.code is None else HTTP_STATUS.get(self.code, 400)


def _refused(item: CrmSend, code: str, detail, *, retry_after=None, errors=None, reason=None) -> CrmSendResult:
    return CrmSendResult(item, None, code, str(detail), retry_after=retry_after,
                         errors={k: [str(m) for m in v] for k, v in errors.items()} if errors else None,
                         reason=reason)


def crm_route_refusal(*, account: Account) -> tuple[str, str] | None:
    """Why no CRM send of this account may go out now, as (code, message), or None."""
    if account_has_active_route(account=account):
        return None
    if settings.SMSGATE_DEFAULT_ROUTE:
        return None if account.crm_default_route_allowed else ("crm_not_allowed", str(_NOT_ALLOWED))
    return "no_route", str(_NO_ROUTE)


def origin_of(kind: str, write_notes: bool) -> str:
    """Within kind `crm`, the card's panel writes its note and amoCRM's own SMS input (the feed) does not."""
    if kind == DeliveryKind.CRM:
        return CrmOrigin.PANEL if write_notes else CrmOrigin.FEED
    return {DeliveryKind.PIPELINE: CrmOrigin.PIPELINE, DeliveryKind.SALESBOT: CrmOrigin.SALESBOT,
            DeliveryKind.LIST: CrmOrigin.LIST}[kind]


def _shape_errors(item: CrmSend) -> dict | None:
    errors = {}
    if item.entity_type not in ENTITY_TYPES:
        errors["entity_type"] = [_("Must be leads or contacts.")]
    if not isinstance(item.entity_id, int) or isinstance(item.entity_id, bool) or not 0 < item.entity_id <= MAX_ID:
        errors["entity_id"] = [_("Must be an amoCRM id.")]
    if item.dedupe_key is not None and (not isinstance(item.dedupe_key, str) or not item.dedupe_key
                                        or len(item.dedupe_key) > DEDUPE_KEY_MAX or not item.dedupe_key.isprintable()):
        errors["client_key"] = [_("Must be a short text, e.g. a UUID.")]
    for name in ("template_id", "amo_user_id"):
        value = getattr(item, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID):
            errors[name] = [_("Must be an id.")]
    return errors or None


def _intake_refusal(item: CrmSend, verdict: Verdict) -> CrmSendResult:
    refusal = verdict.refusal
    if refusal.code == "invalid":
        code = "phone" if "phone" in refusal.errors and "text" not in refusal.errors else "invalid"
        return _refused(item, code, refusal.message, errors=refusal.errors)
    if refusal.code in CAP_MESSAGES:
        return _refused(item, "crm_caps", refusal.message, retry_after=refusal.retry_after, reason=refusal.code)
    code = "policy" if refusal.http_status == 422 else "limits"
    return _refused(item, code, refusal.message, retry_after=refusal.retry_after, reason=refusal.code)


def crm_sends_create(*, account: Account, kind: str, items: list[CrmSend], write_notes: bool,
                     origin: str | None = None) -> list[CrmSendResult]:
    """Send each item, or say why not; one result per item, in order. See the module's docstring."""
    if kind not in CRM_KINDS:
        raise ValueError(f"{kind!r} is not a CRM kind")
    origin = origin or origin_of(kind, write_notes)
    results: list[CrmSendResult | None] = [None] * len(items)

    # The items' own shape, then keys seen before (in an earlier call, or earlier in this batch).
    first_of_key: dict[str, int] = {}
    pending: list[int] = []
    for n, item in enumerate(items):
        if errors := _shape_errors(item):
            results[n] = _refused(item, "invalid", _("The request has invalid fields."), errors=errors)
        elif item.dedupe_key is not None and item.dedupe_key in first_of_key:
            continue  # answered with its first occurrence's result below
        else:
            if item.dedupe_key is not None:
                first_of_key[item.dedupe_key] = n
            pending.append(n)
    pending = _drop_seen(account, items, pending, results)

    # The route rule: the whole batch or nothing.
    if pending and (refusal := crm_route_refusal(account=account)):
        for n in pending:
            results[n] = _refused(items[n], *refusal)
        pending = []

    if pending:
        verdicts = deliveries_validate(account=account, kind=kind, items=[(items[n].phone, items[n].text)
                                                                          for n in pending],
                                       validity_seconds=settings.SMSGATE_CRM_SMS_VALIDITY)
        valid = [(n, v) for n, v in zip(pending, verdicts, strict=True) if v.accepted]
        caps = crm_caps_take(account_id=account.pk, limits=limits_for(account),
                             user_ids=[items[n].amo_user_id for n, _v in valid])
        for (_n, verdict), cap in zip(valid, caps, strict=True):
            if cap.reason is not None:
                verdict.refuse(CAP_MESSAGES[cap.reason], code=cap.reason, http_status=429,
                               retry_after=cap.retry_after, error_class="crm_caps")
        deliveries_guard(account=account, verdicts=verdicts)
        _record(account=account, kind=kind, origin=origin, write_notes=write_notes, items=items,
                indexed=list(zip(pending, verdicts, strict=True)), results=results)

    for n, item in enumerate(items):  # repeated keys within the batch: their first occurrence's answer
        if results[n] is None:
            first = results[first_of_key[item.dedupe_key]]
            results[n] = CrmSendResult(item, first.delivery_id, first.code, first.detail, duplicate=first.accepted,
                                       retry_after=first.retry_after, errors=first.errors, reason=first.reason)
    return results


def _drop_seen(account: Account, items: list[CrmSend], pending: list[int], results: list) -> list[int]:
    """Items whose key an earlier send used get that send's delivery (duplicate); the rest go on."""
    keys = [items[n].dedupe_key for n in pending if items[n].dedupe_key is not None]
    if not keys:
        return pending
    seen = dict(CrmMessage.objects.filter(account=account, dedupe_key__in=keys).values_list("dedupe_key",
                                                                                             "delivery_id"))
    still = []
    for n in pending:
        delivery_id = seen.get(items[n].dedupe_key) if items[n].dedupe_key is not None else None
        if delivery_id is not None:
            results[n] = CrmSendResult(items[n], delivery_id, None, None, duplicate=True)
        else:
            still.append(n)
    return still


def _record(*, account, kind, origin, write_notes, items, indexed: list[tuple[int, Verdict]], results) -> None:
    """Record the batch; a key or a note's second that a concurrent send took first is looked at again."""
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        accepted = [(n, verdict) for n, verdict in indexed if verdict.accepted]
        now = timezone.now()
        messages = [CrmMessage(delivery_id=verdict.delivery.pk, account=account, kind=kind, origin=origin,
                               entity_type=items[n].entity_type, entity_id=items[n].entity_id,
                               amo_user_id=items[n].amo_user_id, template_id=items[n].template_id,
                               dedupe_key=items[n].dedupe_key,
                               note_state=NoteState.PENDING if write_notes else NoteState.NONE, created_at=now)
                    for n, verdict in accepted]
        note_rows: list[CrmNote] = []
        if write_notes and messages:
            note_rows = notes.notes_build(account=account, kind=NoteKind.SMS_OUT, specs=[
                notes.NoteSpec(message.delivery_id, message.entity_type, message.entity_id,
                               verdict.delivery.text, verdict.delivery.phone)
                for message, (_n, verdict) in zip(messages, accepted, strict=True)])
        try:
            with transaction.atomic():
                deliveries_record(verdicts=[verdict for _n, verdict in indexed],
                                  also=[*insert_statements(CrmMessage, _templates_checked(account, messages)),
                                        *insert_statements(CrmNote, note_rows)])
        except IntegrityError:
            if attempt == RECORD_ATTEMPTS:
                raise
            logger.info("CRM send raced another with the same key or note time; looking again",
                        extra={"account_id": account.pk})
            still = _drop_seen(account, items, [n for n, _v in indexed], results)
            indexed = [(n, verdict) for n, verdict in indexed if n in still]
            continue
        break
    if note_rows:
        transaction.on_commit(lambda: notes.notes_write_soon(account_id=account.pk))
    for n, verdict in indexed:
        if verdict.accepted:
            results[n] = CrmSendResult(items[n], verdict.delivery.pk, None, None)
        else:
            results[n] = _intake_refusal(items[n], verdict)


def _templates_checked(account: Account, messages: list[CrmMessage]) -> list[CrmMessage]:
    """A template id that is not one of the account's templates is not recorded (the text is what counts)."""
    ids = {message.template_id for message in messages if message.template_id is not None}
    if ids:
        known = set(SmsTemplate.objects.filter(account=account, pk__in=ids).values_list("pk", flat=True))
        for message in messages:
            if message.template_id not in known:
                message.template_id = None
    return messages
