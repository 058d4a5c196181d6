"""Salesbot's "send SMS" step (the widget's `salesbot_designer` handler): the `widget_request` call up to its
200, then the SMS and the bot's continuation.

amoCRM posts `{token, data, return_url}` and wants a 200 within 2 s (amocrm-platform.md §3.8); the bot then
waits until the widget continues it through the API (`POST /api/v4/salesbot/{bot}/continue/{continue id}`).
So:
- the call (`salesbot_call_accept`): the bot token checked (`accounts.tokens.verify_bot_token`: HS512, the
  integration found by `aud` and the signature), the account found by (integration, amoCRM id), the step's
  settings read (`data.text`, whose markers amoCRM has filled in, or `data.template_id`, one of the
  account's templates), the bot and continue ids read from `return_url` (never called: the continue goes
  through `AmoClient` with the account's OAuth pair), one INSERT ... ON CONFLICT DO NOTHING (the continue
  id is unique per account: a repeated call is a 200 "duplicate"), committed, and a task on the CRM lane;
- the task (`salesbot_request_process`, crm.salesbot_run): the bot's entity read through the client (a
  lead with its contacts, or a contact), the phone picked by the pipeline's rule (`crm.pipeline.phone_pick`),
  a template rendered by `crm.markers`, one `crm_sends_create(kind=SALESBOT, write_notes=True,
  dedupe_key="bot:<continue id>")`; then it looks at the delivery every second: the provider took it (sent,
  delivered) → exit "sent"; a refusal, a final failure, or no answer by `deadline_at`
  (SMSGATE_SALESBOT_WAIT_SECONDS after the call, shorter than the bot waits) → exit "failed";
- the continue (`data: {"status": "sent"|"failed", "reason": ...}`; the step's own bot JSON, written by
  the widget's `onSalesbotDesignerSave`, branches on `{{json.status}}` to the exits "sent" and "failed").
  An answer lost after the POST (AmoAmbiguous) is settled by calling again (a second call is a 404 at
  amoCRM); a 404 otherwise means the bot no longer waits (recorded, not retried).
- the sweeper (crm.salesbot_sweep, beat) wakes requests whose look is overdue (a lost task, a dead worker).

May call: crm's models, selectors, markers, sending and pipeline (the phone rule); accounts' tokens, models
and amoCRM client; deliveries' models and queueing; smsgate.inputs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.amocrm import (
    AmoAccountRefused,
    AmoAmbiguous,
    AmoApiError,
    AmoClient,
    AmoNotConnected,
    AmoRejected,
    AmoTemporary,
    AmoUnauthorized,
)
from accounts.models import Account
from accounts.tokens import TokenError, verify_bot_token
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name
from smsgate.inputs import storable_text

from . import markers
from .models import SalesbotExit, SalesbotRequest, SalesbotState
from .pipeline import linked_contacts, phone_pick, phone_region
from .selectors import template_of
from .sending import CrmSend, crm_sends_create

logger = logging.getLogger(__name__)

RUN_TASK = "crm.salesbot_run"
SWEEP_TASK = "crm.salesbot_sweep"
MAX_TEXT = 2000  # the step's text as stored; the send path refuses what an SMS cannot carry
LOOK_EVERY = 1.0  # seconds between looks at the delivery while the provider has not answered
STALE_CLAIM = timedelta(minutes=2)  # a claim older than this belonged to a dead worker
CONTINUE_FOR = timedelta(minutes=10)  # past the deadline, a continue amoCRM keeps failing is given up
_RETURN_URL = re.compile(r"^https?://[^/?#\s]{1,253}/api/v4/(salesbot|marketingbot)/([1-9][0-9]{0,17})"
                         r"/continue/([1-9][0-9]{0,17})/?$")
_DIGITS = re.compile(r"[1-9][0-9]{0,17}")
S = SalesbotState
OPEN_STATES = (S.PENDING, S.SENDING, S.WAITING, S.CONTINUING)
# The provider took the SMS: the bot goes on through "sent". A final failure: "failed".
TAKEN = frozenset({DeliveryStatus.SENT, DeliveryStatus.DELIVERED})


def wait_seconds() -> float:
    return float(settings.SMSGATE_SALESBOT_WAIT_SECONDS)


# --- the call ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP
    code: str  # accepted | duplicate | <token reason> | account_not_connected | account_disabled | invalid
    detail: str = ""
    request_id: int | None = None


class CallInvalid(Exception):
    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class StepCall:
    bot_kind: str
    bot_id: int
    continue_id: int
    text: str
    template_id: int | None


def call_parse(body: dict) -> StepCall:
    """The step's settings and the bot's ids; CallInvalid for anything amoCRM would not have sent."""
    url = body.get("return_url")
    match = _RETURN_URL.fullmatch(url) if isinstance(url, str) and len(url) <= 600 and url.isascii() else None
    if match is None:
        raise CallInvalid("return_url")
    data = body.get("data")
    if data is None or data == [] or data == "":  # PHP encodes an empty map as []
        data = {}
    if not isinstance(data, dict):
        raise CallInvalid("data")
    text = data.get("text")
    if text is None:
        text = ""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or len(text) > MAX_TEXT or not storable_text(text):
        raise CallInvalid("data.text")
    template = data.get("template_id")
    if isinstance(template, str):
        template = template.strip()
        if template == "":
            template = None
        elif _DIGITS.fullmatch(template):
            template = int(template)
        else:
            raise CallInvalid("data.template_id")
    if template is not None and (isinstance(template, bool) or not isinstance(template, int)
                                 or not 0 < template <= 2**53):
        raise CallInvalid("data.template_id")
    if not text.strip() and template is None:
        raise CallInvalid("data.text")
    return StepCall(match[1], int(match[2]), int(match[3]), text, template)


def salesbot_call_accept(*, body: dict) -> Outcome:
    """Check the bot token, read the call, record it (once per continue id) and queue its task."""
    try:
        claims = verify_bot_token(body.get("token"))
    except TokenError as exc:
        logger.info("salesbot token refused: %s", exc.reason, extra={"detail": exc.detail})
        return Outcome(401, str(exc.reason), str(exc.message))
    account = (Account.objects.filter(integration_id=claims.integration_id, amo_id=claims.account_id)
               .only("pk", "is_active").first())
    if account is None:
        logger.info("salesbot call of an account not installed", extra={"amo_id": claims.account_id})
        return Outcome(403, "account_not_connected", str(_("The widget is not installed in this amoCRM account.")))
    if not account.is_active:
        return Outcome(403, "account_disabled", str(_("This amoCRM account is disabled in smsgate.")))
    call = call_parse(body)
    request_id = _request_insert(account.pk, claims, call)
    if request_id is None:
        logger.info("salesbot call repeated", extra={"account_id": account.pk, "continue_id": call.continue_id})
        return Outcome(200, "duplicate")
    task_publish(RUN_TASK, [request_id], queue=queue_name(QUEUE_CRM), log_extra={"account_id": account.pk})
    return Outcome(200, "accepted", request_id=request_id)


@lru_cache(maxsize=1)
def _insert_sql() -> str:
    """One statement, one round trip, the same text for PostgreSQL and SQLite (3.35+)."""
    table = SalesbotRequest._meta.db_table
    return (f"INSERT INTO {table} (account_id, bot_kind, bot_id, continue_id, entity_type, entity_id, text, "
            "template_id, state, exit, reason, detail, phone, attempts, received_at, deadline_at, next_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '', '', '', '', 0, %s, %s, %s) "
            "ON CONFLICT (account_id, continue_id) DO NOTHING RETURNING id")


def _request_insert(account_id: int, claims, call: StepCall) -> int | None:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(), [account_id, call.bot_kind, call.bot_id, call.continue_id, claims.entity_type,
                                       claims.entity_id, call.text, call.template_id, S.PENDING, now,
                                       now + timedelta(seconds=wait_seconds()), now + timedelta(seconds=5)])
        row = cursor.fetchone()
    return row[0] if row else None


# --- the task ----------------------------------------------------------------------------------------------------
def _update(request: SalesbotRequest, expected: str, **fields) -> bool:
    """Move the request on, only from the state this worker saw (another one may have moved it)."""
    done = SalesbotRequest.objects.filter(pk=request.pk, state=expected).update(**fields)
    for name, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(request, name, value)
    return bool(done)


def salesbot_request_process(*, request_id: int) -> float | None:
    """One step of a request: send its SMS, look at its delivery, or continue the bot. Returns the seconds
    until the next step (the task queues itself), None when nothing is left to do here."""
    request = SalesbotRequest.objects.select_related("account").filter(pk=request_id).first()
    if request is None or request.state not in OPEN_STATES:
        return None
    now = timezone.now()
    if request.state in (S.PENDING, S.SENDING):
        if request.state == S.SENDING and request.claimed_at and request.claimed_at > now - STALE_CLAIM:
            return None  # another worker is at it
        if not _update(request, request.state, state=S.SENDING, claimed_at=now, attempts=F("attempts") + 1,
                       next_at=now + STALE_CLAIM):
            return None
        return _send(request)
    if request.state == S.WAITING:
        return _look(request)
    return _continue(request)


def _decide(request: SalesbotRequest, expected: str, exit: str, reason: str, detail: str) -> float | None:
    if not _update(request, expected, state=S.CONTINUING, exit=exit, reason=reason[:30], detail=str(detail)[:300],
                   claimed_at=None, next_at=timezone.now()):
        return None
    return _continue(request)


def _text(request: SalesbotRequest) -> tuple[str | None, int | None]:
    """The text to send (a live, active template of the account first, else the step's own) and its template."""
    if request.template_id is not None:
        template = template_of(account=request.account, template_id=request.template_id)
        if template is not None and template.is_active:
            return template.text, template.pk
    return (request.text, None) if request.text.strip() else (None, None)


def _send(request: SalesbotRequest) -> float | None:
    account = request.account
    if not account.is_active:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "account_disabled", "the account is disabled")
    if request.entity_type not in ("leads", "contacts"):
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "entity_type",
                       f"a bot on {request.entity_type} has no contact to send to")
    text, template_id = _text(request)
    if text is None:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "no_text", "the template is gone and the step has "
                                                                             "no text of its own")
    try:
        client = AmoClient(account)
        lead, contacts = _read(client, request)
    except AmoTemporary as exc:
        if timezone.now() < request.deadline_at:
            again = max(1.0, min(float(exc.retry_after or 0) or 2.0, 10.0))
            _update(request, S.SENDING, state=S.PENDING, claimed_at=None,
                    next_at=timezone.now() + timedelta(seconds=again))
            return again
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "amocrm_unavailable", str(exc.message))
    except (AmoNotConnected, AmoUnauthorized, AmoAccountRefused, AmoRejected) as exc:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "amocrm_refused", str(exc.message))
    if contacts is None:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "not_found", f"amoCRM has no such {request.entity_type}")
    picked = phone_pick(contacts, region=phone_region(account))
    if picked is None:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "no_phone",
                       "no contact of the bot's entity has a phone that can get an SMS")
    phone, contact = picked
    if template_id is not None:  # the step's own text was filled in by amoCRM; a template is filled in here
        text = markers.render(text, markers.context_for(lead=lead, contact=contact)).text
    text = text.strip()
    if not text:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, "empty_text", "the text is empty once filled in")
    [result] = crm_sends_create(account=account, kind=DeliveryKind.SALESBOT, write_notes=True, items=[
        CrmSend(entity_type=request.entity_type, entity_id=request.entity_id, phone=phone, text=text,
                template_id=template_id, dedupe_key=f"bot:{request.continue_id}")])
    if result.delivery_id is None:
        return _decide(request, S.SENDING, SalesbotExit.FAILED, result.code or "refused",
                       f"{result.reason}: {result.detail}" if result.reason else str(result.detail or ""))
    _update(request, S.SENDING, state=S.WAITING, phone=phone[:40], delivery_id=result.delivery_id,
            next_at=timezone.now() + timedelta(seconds=LOOK_EVERY))
    return LOOK_EVERY


def _read(client: AmoClient, request: SalesbotRequest) -> tuple[dict | None, list[dict] | None]:
    """(the lead or None, the contacts to pick a phone from: main first), or (None, None) when amoCRM has
    no such entity."""
    if request.entity_type == "contacts":
        contact = client.contact(request.entity_id)
        return None, ([contact] if isinstance(contact, dict) else None)
    lead = client.lead(request.entity_id, with_contacts=True)
    if not isinstance(lead, dict):
        return None, None
    ids = linked_contacts(lead)
    found = {c["id"]: c for c in client.contacts(ids) if isinstance(c, dict) and isinstance(c.get("id"), int)} \
        if ids else {}
    return lead, [found[c] for c in ids if c in found]


def _look(request: SalesbotRequest) -> float | None:
    delivery = (Delivery.objects.filter(pk=request.delivery_id)
                .values("status", "error_code", "error_text").first())
    now = timezone.now()
    if delivery is None:
        return _decide(request, S.WAITING, SalesbotExit.FAILED, "gone", "the SMS is no longer recorded")
    if delivery["status"] in TAKEN:
        return _decide(request, S.WAITING, SalesbotExit.SENT, "", "")
    if delivery["status"] in (DeliveryStatus.FAILED, DeliveryStatus.REJECTED, DeliveryStatus.UNDELIVERED,
                              DeliveryStatus.EXPIRED):
        return _decide(request, S.WAITING, SalesbotExit.FAILED, delivery["error_code"] or delivery["status"],
                       delivery["error_text"] or "")
    if now >= request.deadline_at:
        return _decide(request, S.WAITING, SalesbotExit.FAILED, "timeout",
                       "the provider had not taken the SMS when the bot's wait ran out")
    SalesbotRequest.objects.filter(pk=request.pk, state=S.WAITING).update(
        next_at=now + timedelta(seconds=LOOK_EVERY))
    return LOOK_EVERY


def _continue(request: SalesbotRequest) -> float | None:
    """Continue the bot with the decided exit (one worker at a time: a lease on `claimed_at`)."""
    now = timezone.now()
    taken = SalesbotRequest.objects.filter(pk=request.pk, state=S.CONTINUING).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)).update(claimed_at=now)
    if not taken:
        return None
    data = {"status": request.exit}
    if request.reason:
        data["reason"] = request.reason
    ambiguous = False
    try:
        client = AmoClient(request.account)
        try:
            client.salesbot_continue(request.bot_id, request.continue_id, data, kind=request.bot_kind)
        except AmoAmbiguous:
            ambiguous = True  # it may have landed: once more settles it (a second continue is a 404)
            client.salesbot_continue(request.bot_id, request.continue_id, data, kind=request.bot_kind)
    except AmoRejected as exc:
        if exc.status == 404 and ambiguous:
            return _finish(request, S.DONE, "")
        return _finish(request, S.GAVE_UP, "bot_not_waiting" if exc.status == 404 else "amocrm_rejected",
                       str(exc))
    except AmoTemporary as exc:
        if now > request.deadline_at + CONTINUE_FOR:
            return _finish(request, S.GAVE_UP, "amocrm_unavailable", str(exc))
        again = max(1.0, min(float(exc.retry_after or 0) or 5.0, 30.0))
        SalesbotRequest.objects.filter(pk=request.pk, state=S.CONTINUING).update(
            claimed_at=None, next_at=now + timedelta(seconds=again))
        return again
    except (AmoNotConnected, AmoUnauthorized, AmoAccountRefused, AmoApiError) as exc:
        return _finish(request, S.GAVE_UP, "amocrm_refused", str(exc))
    return _finish(request, S.DONE, "")


def _finish(request: SalesbotRequest, state: str, why: str, detail: str = "") -> None:  # the request is closed
    fields = {"state": state, "finished_at": timezone.now(), "claimed_at": None}
    if why:  # why the bot was not continued; the exit's own reason stays when there is none
        fields.update(reason=why[:30], detail=detail[:300])
    _update(request, S.CONTINUING, **fields)
    logger.info("salesbot %s", "continued" if state == S.DONE else "not continued",
                extra={"account_id": request.account_id, "continue_id": request.continue_id, "exit": request.exit,
                       "reason": request.reason})


def salesbot_requests_due(*, late: timedelta = timedelta(seconds=5), limit: int = 1000) -> list[int]:
    """Open requests whose next look is overdue (a lost task, a dead worker): the sweeper queues them."""
    return list(SalesbotRequest.objects.filter(state__in=OPEN_STATES, next_at__lt=timezone.now() - late)
                .order_by("next_at").values_list("id", flat=True)[:limit])


def salesbot_run_schedule(*, request_id: int, countdown: float | None = None) -> bool:
    if countdown:
        SalesbotRequest.objects.filter(pk=request_id, state__in=OPEN_STATES).update(
            next_at=timezone.now() + timedelta(seconds=countdown))
    return task_publish(RUN_TASK, [request_id], queue=queue_name(QUEUE_CRM), countdown=countdown or None,
                        log_extra={"salesbot_request": request_id})
