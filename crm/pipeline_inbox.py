"""The digital pipeline's webhook, up to the 200: reading a call (form bracket keys or JSON), the
account's own key, recording the event durably and once, and waking the batch reader.

amoCRM sends the widget's pipeline webhook once, never retries it, and does not sign it
(amocrm-platform.md §3.7). So:
- every action carries the account's own key (a dp setting the widget's dpSettings fills in); a call
  without the right key is refused (403), sends nothing, and is counted on the account it names, where
  the owner sees it (`PipelineKey.refused_count`, GET /api/v1/pipeline/);
- an accepted call is an INSERT committed before the answer; (account, lead, stage, event time) is
  unique, so the same event twice is recorded once;
- the batch reader (crm.pipeline) is woken at most once per GATHER_SECONDS per account, so the events of
  a burst are read together (up to 250 leads per amoCRM request), and the sweeper (crm.tasks) picks up
  whatever a lost wake-up left.

May call: crm's models, accounts' models and selectors' cache, deliveries' queueing (publishing),
smsgate.inputs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from accounts.selectors import TTLCache
from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name
from smsgate.inputs import BIGINT_MAX, storable_text

from .models import PipelineEvent, PipelineEventState, PipelineKey

logger = logging.getLogger(__name__)

RUN_TASK = "crm.pipeline_run"
SWEEP_TASK = "crm.pipeline_sweep"
# The reader starts this long after the first event of a burst, so one read takes many leads (crm.pipeline
# waits as long for a batch smaller than 250).
GATHER_SECONDS = 2.0
KEY_CACHE_SECONDS = 5.0
MAX_SETTING_TEXT = 2000  # the action's text as stored; the send path refuses what an SMS cannot carry
MAX_EVENT_TIME = 2**40  # a Unix time far past any real one, still a bigint
KEY_SETTING = "key"
TEXT_SETTING = "message"
TEMPLATE_SETTING = "template_id"

# digital_pipeline/integrations: the lead events a stage's action is fired by.
LEAD_EVENTS = {1: "lead_added", 14: "lead_status_changed", 15: "lead_appeared_in_status"}
CUSTOMER_EVENTS = {20: "customer_added", 21: "customer_period_changed", 22: "customer_appeared_in_period"}
ELEMENT_LEAD = 2
# With action_multiple false amoCRM sends only went_to_trigger; the other two mean the lead is already in
# (went_in_trigger) or leaving (went_from_trigger) a stage the action spans: no SMS for those.
SEND_DIRECTIONS = {"", "went_to_trigger"}

_key_cache = TTLCache(maxsize=4096)
_woken: dict[int, float] = {}  # account id -> when this process last woke its reader (time.monotonic)
_DIGITS = re.compile(r"[1-9][0-9]{0,18}")  # ASCII digits only (re's \d takes any script's)


# --- the account's key ---------------------------------------------------------------------------------
def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _new_key() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, 192 bits


def pipeline_key_get_or_create(*, account: Account) -> PipelineKey:
    """The account's key, made on first use (the owner opening the action's settings)."""
    existing = PipelineKey.objects.filter(account=account).first()
    if existing is not None:
        return existing
    key = _new_key()
    try:
        with transaction.atomic():
            return PipelineKey.objects.create(account=account, key=key, key_digest=_digest(key))
    except IntegrityError:  # made at the same moment by another request
        return PipelineKey.objects.get(account=account)


def pipeline_key_rotate(*, account: Account) -> PipelineKey:
    """A new key: every action must be saved again with it (the old one is refused from now on, and within
    KEY_CACHE_SECONDS in other processes)."""
    stored = pipeline_key_get_or_create(account=account)
    old_digest = stored.key_digest
    stored.key = _new_key()
    stored.key_digest = _digest(stored.key)
    stored.rotated_at = timezone.now()
    stored.save(update_fields=["key", "key_digest", "rotated_at"])
    _key_cache.pop(old_digest)
    logger.info("pipeline key changed", extra={"account_id": account.pk})
    return stored


@dataclass(frozen=True, slots=True)
class KeyOwner:
    account_id: int
    amo_id: int
    is_active: bool


def _key_owner(key: str) -> KeyOwner | None:
    digest = _digest(key)
    hit = _key_cache.get(digest)
    if hit is not None:
        return hit[1]
    row = (PipelineKey.objects.filter(key_digest=digest)
           .values_list("account_id", "account__amo_id", "account__is_active").first())
    owner = KeyOwner(*row) if row else None
    if owner is not None:  # unknown keys are not cached: a flood of them must not push out the real ones
        _key_cache.put(digest, owner, KEY_CACHE_SECONDS)
    return owner


def forget_pipeline_keys():
    _key_cache.clear()
    _woken.clear()


def _count_refusal(*, account_ids=None, amo_id: int | None = None) -> int:
    """One refused call, counted on the account(s) it names; an id nobody has is only logged."""
    rows = PipelineKey.objects.all()
    if account_ids is not None:
        rows = rows.filter(account_id__in=account_ids)
    elif amo_id is not None:
        rows = rows.filter(account__amo_id=amo_id)
    else:
        return 0
    return rows.update(refused_count=F("refused_count") + 1, refused_last_at=timezone.now())


# --- reading a call --------------------------------------------------------------------------------------
class CallInvalid(Exception):
    """The call cannot be read as a pipeline webhook; `field` says where."""

    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class DpCall:
    amo_id: int | None
    key: str | None
    event_type: int | None
    element_type: int | None
    lead_id: int | None
    status_id: int | None
    pipeline_id: int | None
    event_time: int | None
    direction: str
    text: str
    template_id: int | None


_FIELDS = {
    "amo_id": ("account_id",),
    "event_type": ("event", "type"),
    "element_type": ("event", "data", "element_type"),
    "lead_id": ("event", "data", "id"),
    "status_id": ("event", "data", "status_id"),
    "pipeline_id": ("event", "data", "pipeline_id"),
    "event_time": ("event", "time"),
    "direction": ("event", "data", "direction_of_movement"),
}
_SETTINGS_PATH = ("action", "settings", "widget", "settings")


def _form_key(path) -> str:
    return path[0] + "".join(f"[{part}]" for part in path[1:])


def read_form(post) -> dict:
    """PHP bracket keys (`event[data][id]=1`) as amoCRM posts them: only the fields we use are read."""
    found = {name: post.get(_form_key(path)) for name, path in _FIELDS.items()}
    for setting in (KEY_SETTING, TEXT_SETTING, TEMPLATE_SETTING):
        found[setting] = post.get(_form_key((*_SETTINGS_PATH, setting)))
    return found


def read_json(body: dict) -> dict:
    def walk(path):
        node = body
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    found = {name: walk(path) for name, path in _FIELDS.items()}
    for setting in (KEY_SETTING, TEXT_SETTING, TEMPLATE_SETTING):
        found[setting] = walk((*_SETTINGS_PATH, setting))
    return found


def _number(value, field: str, *, required: bool, maximum: int = BIGINT_MAX) -> int | None:
    """A positive integer: a JSON int or ASCII digits (never "１２", "1_0" or a float)."""
    if value is None or value == "":
        if required:
            raise CallInvalid(field)
        return None
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise CallInvalid(field)
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise CallInvalid(field)
    return value


def _small(value, field: str) -> int | None:
    return _number(value, field, required=False, maximum=1000)


def _text(value, field: str, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a JSON body may carry a number as a setting
    if not isinstance(value, str) or len(value) > limit or not storable_text(value):
        raise CallInvalid(field)
    return value


def call_parse(found: dict) -> DpCall:
    """What a call says, checked; CallInvalid for anything amoCRM would not have sent."""
    key = found.get(KEY_SETTING)
    key = key if isinstance(key, str) and 0 < len(key) <= 200 else None
    direction = found.get("direction")
    template = found.get(TEMPLATE_SETTING)
    template_id = None
    if isinstance(template, str) and template.strip() == "":
        template = None
    if template is not None:
        template_id = _number(template.strip() if isinstance(template, str) else template, "template_id",
                              required=False)
    return DpCall(
        amo_id=_number(found.get("amo_id"), "account_id", required=False),
        key=key,
        event_type=_small(found.get("event_type"), "event.type"),
        element_type=_small(found.get("element_type"), "event.data.element_type"),
        lead_id=_number(found.get("lead_id"), "event.data.id", required=False),
        status_id=_number(found.get("status_id"), "event.data.status_id", required=False),
        pipeline_id=_number(found.get("pipeline_id"), "event.data.pipeline_id", required=False),
        event_time=_number(found.get("event_time"), "event.time", required=False, maximum=MAX_EVENT_TIME),
        direction=direction if isinstance(direction, str) and len(direction) <= 50 else "",
        text=_text(found.get(TEXT_SETTING), "message", MAX_SETTING_TEXT),
        template_id=template_id,
    )


# --- the outcome of a call --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP
    code: str  # accepted | duplicate | ignored | forbidden | account_disabled | invalid
    detail: str = ""
    event_id: int | None = None


def pipeline_call_accept(*, found: dict) -> Outcome:
    """Check the key first (whatever else the call holds), then read the call, record the event (once)
    and wake the reader; or say why not. CallInvalid for a call with the right key that cannot be read."""
    key = found.get(KEY_SETTING)
    key = key if isinstance(key, str) and 0 < len(key) <= 200 else None
    try:
        amo_id = _number(found.get("amo_id"), "account_id", required=False)
    except CallInvalid:
        amo_id = None
    owner = _key_owner(key) if key else None
    if owner is None or (amo_id is not None and amo_id != owner.amo_id):
        counted = _count_refusal(account_ids=[owner.account_id]) if owner else _count_refusal(amo_id=amo_id)
        logger.warning("pipeline webhook refused: %s", "another account's key" if owner else
                       ("unknown key" if key else "no key"), extra={"amo_id": amo_id, "counted_on": counted})
        return Outcome(403, "forbidden", str(_("This call does not carry the account's pipeline key: "
                                                 "open the action's settings in amoCRM and save it again.")))
    call = call_parse(found)
    if not owner.is_active:
        logger.info("pipeline webhook of a disabled account", extra={"account_id": owner.account_id})
        return Outcome(403, "account_disabled", str(_("This amoCRM account is disabled in smsgate.")))
    if call.event_type is None:
        raise CallInvalid("event.type")
    if call.event_type in CUSTOMER_EVENTS or call.element_type == 12:
        return _ignored(owner, call, "customer_event", _("Customer events do not send an SMS."))
    if call.event_type not in LEAD_EVENTS:
        return _ignored(owner, call, "event_type", _("This event does not send an SMS."))
    if call.element_type not in (None, ELEMENT_LEAD):
        return _ignored(owner, call, "element_type", _("Only leads get an SMS from a pipeline action."))
    if call.direction not in SEND_DIRECTIONS:
        return _ignored(owner, call, "direction", _("The lead did not enter the action's stage."))
    for field, value in (("event.data.id", call.lead_id), ("event.data.status_id", call.status_id),
                         ("event.time", call.event_time)):
        if value is None:
            raise CallInvalid(field)
    event_id = _event_insert(owner.account_id, call)
    if event_id is None:
        logger.info("pipeline event repeated", extra={"account_id": owner.account_id, "lead_id": call.lead_id})
        return Outcome(200, "duplicate")
    pipeline_run_schedule(account_id=owner.account_id)
    return Outcome(200, "accepted", event_id=event_id)


@lru_cache(maxsize=1)
def _insert_sql() -> str:
    """One statement, one round trip, the same text for PostgreSQL and SQLite (3.35+): the event, or nothing
    when (account, lead, stage, event time) is there already."""
    table = PipelineEvent._meta.db_table
    return (f"INSERT INTO {table} (account_id, lead_id, status_id, pipeline_id, event_type, event_time, text, "
            "template_id, state, reason, detail, phone, attempts, received_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '', '', '', 0, %s) "
            "ON CONFLICT (account_id, lead_id, status_id, event_time) DO NOTHING RETURNING id")


def _event_insert(account_id: int, call: DpCall) -> int | None:
    """The new event's id, committed (autocommit: no transaction of its own to open and close), or None for
    a repeat."""
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(), [account_id, call.lead_id, call.status_id, call.pipeline_id, call.event_type,
                                       call.event_time, call.text, call.template_id, PipelineEventState.PENDING,
                                       timezone.now()])
        row = cursor.fetchone()
    return row[0] if row else None


def _ignored(owner: KeyOwner, call: DpCall, reason: str, message) -> Outcome:
    logger.info("pipeline webhook ignored: %s", reason,
                extra={"account_id": owner.account_id, "event_type": call.event_type,
                       "element_type": call.element_type, "lead_id": call.lead_id})
    return Outcome(200, "ignored", f"{reason}: {message}")


def pipeline_run_schedule(*, account_id: int, countdown: float = GATHER_SECONDS) -> bool:
    """Wake the account's reader unless it was woken within the last GATHER_SECONDS (a burst of calls
    queues one task, not thousands). Without Redis every call publishes; the sweeper covers a lost one."""
    now = time.monotonic()
    if countdown and now - _woken.get(account_id, -1e9) < countdown:
        return False  # this process woke it a moment ago: not even a Redis round trip
    _woken[account_id] = now
    try:
        first = cache.add(f"crm:dp:due:{account_id}", 1, timeout=max(1, round(countdown)))
    except Exception as exc:  # the cache (Redis) is down: publishing anyway is the safe side
        logger.warning("pipeline wake-up without the cache (%s)", type(exc).__name__)
        first = True
    if not first:
        return False
    return task_publish(RUN_TASK, [account_id], queue=queue_name(QUEUE_CRM), countdown=countdown,
                        log_extra={"account_id": account_id})
