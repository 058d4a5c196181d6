"""The digital pipeline's batch reader: an account's recorded events (crm.pipeline_inbox) become SMS.

One run (the task crm.pipeline_run, on the CRM lane) claims up to BATCH pending events of one account,
reads their leads with contacts in as few amoCRM requests as the API allows (250 ids per request:
`AmoClient.leads`, then `AmoClient.contacts` for the contacts whose phones are needed), renders each
lead's text (the action's template or its own text, `crm.markers`), picks one phone per lead and hands
them all to `crm.sending.crm_sends_create(kind=PIPELINE, write_notes=True)` in one call. What becomes of
every event is recorded on it: sent (the delivery), refused (the send service's code), no phone, lead
not found, or amoCRM unreadable.

The phone (README, "The pipeline action"): the lead's contacts, the main one first, then the others in
amoCRM's order; within a contact its PHONE values, the mobile-type ones (enum MOB) first, then the rest
in order; the first that is a valid number able to get an SMS wins. The text's contact markers are
filled in from the contact whose phone is used.

Exactly once: the event is unique (account, lead, stage, event time) and its id is the send's
`dedupe_key`, so a run repeated after a crash (its claim taken back by the sweeper) finds the first
send's delivery instead of sending again.

Leads in "unsorted" (a pipeline's status of type 1): amoCRM takes no notes on them, so their SMS go with
`write_notes=False` and the event says why no note was written.

Batching: one run per account at a time (a lock in the cache); a batch smaller than 250 waits until its
oldest event is GATHER_SECONDS old, so a burst of webhooks is read 250 leads per request.

Fairness: a run stops claiming while the account has MAX_IN_FLIGHT pipeline SMS not yet sent, and
comes back a second later: one account's 5,000 leads never stand in front of another account's SMS
on the shared CRM lane by more than that.

May call: crm's models, selectors, markers and sending; accounts.amocrm (the client); deliveries' models
and queueing; smsgate.phones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.amocrm import (
    AmoAccountRefused,
    AmoApiError,
    AmoClient,
    AmoNotConnected,
    AmoRejected,
    AmoTemporary,
    AmoUnauthorized,
)
from accounts.models import Account
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from smsgate.phones import PhoneError, phone_parse

from . import markers
from .models import PipelineEvent, PipelineEventState
from .selectors import template_of
from .sending import CrmSend, crm_sends_create

logger = logging.getLogger(__name__)

BATCH = 250  # events per claim: amoCRM's ids per request
MAX_IN_FLIGHT = 100  # the account's pipeline SMS not yet sent before the reader waits
# A batch smaller than BATCH waits until its oldest event is this old: a burst's events are read together.
GATHER_SECONDS = 2.0
RUN_SECONDS = 30.0  # a run hands its thread back after this long (it re-queues itself)
MAX_READS = 8  # an event amoCRM could not be read for this many times is given up
STALE_CLAIM = timedelta(minutes=5)  # a claim older than this belonged to a dead worker
ACCOUNT_FACTS_SECONDS = 600  # the account's pipelines, users and time zone are read at most this often
_DOMAIN_REGION = {"amocrm.ru": "RU"}
_PHONE_CODE = "PHONE"
_MOBILE = "MOB"
_USER_MARKERS = ("lead.responsible.", "contact.responsible.")
_ACCOUNT_MARKERS = ("account.name", "current_date", "lead.cf.", "contact.cf.")  # name, or the time zone

S = PipelineEventState


@dataclass
class RunResult:
    events: int = 0
    sent: int = 0
    amo_calls: int = 0
    again_in: float | None = None  # seconds until the account's next run, None: nothing left
    by_state: dict = field(default_factory=dict)


# --- claiming ------------------------------------------------------------------------------------------------
def _claim(account_id: int, limit: int) -> list[PipelineEvent]:
    now = timezone.now()
    with transaction.atomic():
        ids = list(PipelineEvent.objects.select_for_update(skip_locked=True)
                   .filter(account_id=account_id, state=S.PENDING).order_by("id").values_list("id", flat=True)[:limit])
        if ids:
            PipelineEvent.objects.filter(id__in=ids).update(state=S.READING, claimed_at=now,
                                                            attempts=F("attempts") + 1)
    return list(PipelineEvent.objects.filter(id__in=ids).order_by("id")) if ids else []


def _in_flight(account_id: int) -> int:
    since = timezone.now() - timedelta(hours=1)
    return Delivery.objects.filter(account_id=account_id, kind=DeliveryKind.PIPELINE, created_at__gte=since,
                                   status__in=(DeliveryStatus.PENDING, DeliveryStatus.SENDING)).count()


def _finish(events: list[PipelineEvent]) -> None:
    now = timezone.now()
    for event in events:
        event.finished_at = now
    PipelineEvent.objects.bulk_update(events, ["state", "reason", "detail", "phone", "delivery_id", "finished_at"],
                                      batch_size=500)


def _give_back(events: list[PipelineEvent], error: AmoApiError) -> float:
    """amoCRM could not be read now: the events wait for the next run, or are given up after MAX_READS."""
    later = [e for e in events if e.attempts < MAX_READS]
    given_up = [e for e in events if e.attempts >= MAX_READS]
    PipelineEvent.objects.filter(id__in=[e.pk for e in later]).update(state=S.PENDING, claimed_at=None)
    for event in given_up:
        event.state, event.reason, event.detail = S.FAILED, "amocrm_unavailable", str(error.message)[:300]
    _finish(given_up)
    return max(2.0, min(float(error.retry_after or 0) or 2.0 * max(e.attempts for e in events), 60.0))


def pipeline_claims_release(*, older_than: timedelta = STALE_CLAIM) -> int:
    """Claims of a worker that died mid-run go back to pending (their sends, if any, are found again by
    dedupe key)."""
    return (PipelineEvent.objects.filter(state=S.READING, claimed_at__lt=timezone.now() - older_than)
            .update(state=S.PENDING, claimed_at=None))


def pipeline_accounts_due(*, older_than: timedelta = timedelta(seconds=5)) -> list[int]:
    """Accounts with events pending longer than a wake-up takes: the sweeper queues their runs."""
    return list(PipelineEvent.objects.filter(state=S.PENDING, received_at__lt=timezone.now() - older_than)
                .order_by().values_list("account_id", flat=True).distinct())


def pipeline_events_purge(*, batch: int = 1000) -> int:
    """Retention: finished events older than SMSGATE_PURGE_TEXT_DAYS are deleted (they hold the phone picked
    and the action's text; only recent ones matter for a repeated call). Batches keep the locks short."""
    cutoff = timezone.now() - timedelta(days=settings.SMSGATE_PURGE_TEXT_DAYS)
    deleted = 0
    while True:
        ids = list(PipelineEvent.objects.filter(received_at__lt=cutoff)
                   .exclude(state__in=(S.PENDING, S.READING)).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += PipelineEvent.objects.filter(id__in=ids).delete()[0]


# --- reading amoCRM ------------------------------------------------------------------------------------------
class _Counted(AmoClient):
    """The client, counting its requests (the run's figure of calls per lead)."""

    calls = 0

    def request(self, *args, **kwargs):
        self.calls += 1
        return super().request(*args, **kwargs)


def _cached(account_id: int, what: str, read):
    key = f"crm:dp:{what}:{account_id}"
    try:
        value = cache.get(key)
    except Exception:  # the cache is down: read it
        value = None
    if value is None:
        value = read()
        try:
            cache.set(key, value, ACCOUNT_FACTS_SECONDS)
        except Exception:
            pass
    return value


def _unsorted_statuses(client: AmoClient) -> list[int]:
    body = client.get("/api/v4/leads/pipelines")
    pipelines = ((body or {}).get("_embedded") or {}).get("pipelines") or [] if isinstance(body, dict) else []
    found = []
    for pipeline in pipelines:
        statuses = ((pipeline or {}).get("_embedded") or {}).get("statuses") or [] if isinstance(pipeline, dict) else []
        found.extend(s["id"] for s in statuses if isinstance(s, dict) and s.get("type") == 1
                     and isinstance(s.get("id"), int))
    return found


def linked_contacts(lead: dict) -> list[int]:
    """The lead's contact ids, the main one first, then the others in amoCRM's order."""
    embedded = lead.get("_embedded") if isinstance(lead.get("_embedded"), dict) else {}
    linked = [c for c in embedded.get("contacts") or [] if isinstance(c, dict) and isinstance(c.get("id"), int)
              and not isinstance(c.get("id"), bool) and c["id"] > 0]
    linked.sort(key=lambda c: c.get("is_main") is not True)  # stable: the rest keep their order
    return list(dict.fromkeys(c["id"] for c in linked))


def contact_phones(contact: dict) -> list[str]:
    """A contact's PHONE values, the mobile-type ones first, each list in amoCRM's order."""
    mobile, other = [], []
    for one in contact.get("custom_fields_values") or []:
        if not isinstance(one, dict) or one.get("field_code") != _PHONE_CODE:
            continue
        for value in one.get("values") or []:
            if isinstance(value, dict) and isinstance(value.get("value"), str) and value["value"].strip():
                code = value.get("enum_code") or value.get("enum")
                (mobile if code == _MOBILE else other).append(value["value"].strip())
    return mobile + other


def phone_region(account: Account) -> str | None:
    """The region a phone without a country code is read in (the account's amoCRM zone)."""
    return _DOMAIN_REGION.get(account.domain)


def phone_pick(contacts: list[dict], *, region: str | None) -> tuple[str, dict] | None:
    """The first phone (in the README's order) that can get an SMS, with its contact; None if none can."""
    for contact in contacts:
        for raw in contact_phones(contact):
            try:
                phone_parse(raw, default_region=region)
            except PhoneError:
                continue
            return raw, contact
    return None


# --- a run ---------------------------------------------------------------------------------------------------
def _gathered(account_id: int, batch: int, gather: float) -> float | None:
    """None when a batch may be read now (BATCH events wait, or the oldest is `gather` seconds old); else the
    seconds until it may; 0.0 when nothing waits."""
    waiting = list(PipelineEvent.objects.filter(account_id=account_id, state=S.PENDING).order_by("id")
                   .values_list("received_at", flat=True)[:batch])
    if not waiting:
        return 0.0
    age = (timezone.now() - min(waiting)).total_seconds()
    if len(waiting) >= batch or age >= gather:
        return None
    return gather - age


def _run_lock(account_id: int, seconds: float) -> str | None:
    """One run per account at a time (its batches stay full); None: another run holds it. Without the
    cache (Redis down) every run goes ahead: the claims keep them apart."""
    key = f"crm:dp:run:{account_id}"
    try:
        return key if cache.add(key, 1, timeout=round(seconds) + 60) else None
    except Exception:  # the cache is down
        return ""


def _run_unlock(key: str | None) -> None:
    if key:
        try:
            cache.delete(key)
        except Exception:  # it expires by itself
            pass


def pipeline_events_process(*, account_id: int, batch: int = BATCH, run_seconds: float = RUN_SECONDS,
                            max_in_flight: int = MAX_IN_FLIGHT, gather: float = GATHER_SECONDS) -> RunResult:
    """Read and send the account's pending events, a batch at a time, until none is left; `again_in` says
    when to come back when the run stops early (the account has `max_in_flight` SMS waiting, a small batch
    is still gathering, the run took `run_seconds`, amoCRM is unavailable). Another run of the account
    already going: nothing is done (that one reads what waits)."""
    result = RunResult()
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return result
    lock = _run_lock(account_id, run_seconds)
    if lock is None:
        return result
    started = time.monotonic()
    client = None
    try:
        while True:
            if time.monotonic() - started > run_seconds:
                result.again_in = 0.0
                break
            if max_in_flight and _in_flight(account_id) >= max_in_flight:
                result.again_in = 1.0
                break
            wait = _gathered(account_id, batch, gather)
            if wait is not None:
                result.again_in = wait or None
                break
            events = _claim(account_id, batch)
            if not events:
                break
            if not account.is_active:
                _close(events, S.FAILED, "account_disabled", "the account is disabled in smsgate", result)
                continue
            try:
                client = client or _Counted(account)
                _batch_send(account, client, events, result)
            except (AmoNotConnected, AmoUnauthorized, AmoAccountRefused) as exc:
                _close(events, S.FAILED, "amocrm_refused", str(exc.message), result)
            except AmoTemporary as exc:
                result.again_in = _give_back(events, exc)
                break
            except AmoRejected as exc:  # a 4xx on a read: nothing a retry changes
                _close(events, S.FAILED, "amocrm_rejected", str(exc.message), result)
    finally:
        result.amo_calls = client.calls if client else 0
        _run_unlock(lock)
    if result.again_in is None and _gathered(account_id, batch, 0.0) is None:
        result.again_in = 0.0  # events came while the lock was held by this run: read them
    if result.events:
        logger.info("pipeline run", extra={"account_id": account_id, "events": result.events, "sent": result.sent,
                                           "amo_calls": result.amo_calls, **{f"state_{k}": v for k, v in
                                                                             result.by_state.items()}})
    return result


def _close(events, state, reason, detail, result: RunResult):
    for event in events:
        event.state, event.reason, event.detail = state, reason, detail[:300]
    _finish(events)
    _count(events, result)


def _count(events, result: RunResult):
    result.events += len(events)
    for event in events:
        result.by_state[event.state] = result.by_state.get(event.state, 0) + 1
        result.sent += event.state == S.SENT


def _texts(account: Account, events: list[PipelineEvent]) -> dict[int, tuple[str | None, int | None]]:
    """Each event's text to render and the template it comes from: the template's (when the action names a
    live, active one of the account) or the action's own text; (None, None) when it has neither."""
    templates = {}
    texts = {}
    for event in events:
        text, template_id = None, None
        if event.template_id is not None:
            if event.template_id not in templates:
                templates[event.template_id] = template_of(account=account, template_id=event.template_id)
            template = templates[event.template_id]
            if template is not None and template.is_active:
                text, template_id = template.text, template.pk
        if text is None and event.text.strip():
            text = event.text
        texts[event.pk] = (text, template_id)
    return texts


def _batch_send(account: Account, client: AmoClient, events: list[PipelineEvent], result: RunResult):
    texts = _texts(account, events)
    used = markers.markers_in(" ".join(t for t, _template in texts.values() if t))
    unsorted = set(_cached(account.pk, "unsorted", lambda: _unsorted_statuses(client)))
    users = (_cached(account.pk, "users", client.users) if any(m.startswith(_USER_MARKERS) for m in used)
             else None)
    account_facts = (_cached(account.pk, "account", lambda: client.account_info(with_=("datetime_settings",)))
                     if any(m.startswith(_ACCOUNT_MARKERS) for m in used) else None)

    leads = {lead["id"]: lead for lead in client.leads([e.lead_id for e in events], with_contacts=True)
             if isinstance(lead, dict) and isinstance(lead.get("id"), int)}
    linked = {lead_id: linked_contacts(lead) for lead_id, lead in leads.items()}
    # First the main contacts; the others only for leads whose main contact has no phone that can get an SMS.
    contacts = {c["id"]: c for c in client.contacts([ids[0] for ids in linked.values() if ids])
                if isinstance(c, dict) and isinstance(c.get("id"), int)}
    region = _DOMAIN_REGION.get(account.domain)
    lacking = [lead_id for lead_id, ids in linked.items()
               if ids and len(ids) > 1 and phone_pick([contacts.get(ids[0]) or {}], region=region) is None]
    more = [cid for lead_id in lacking for cid in linked[lead_id][1:] if cid not in contacts]
    if more:
        contacts.update({c["id"]: c for c in client.contacts(more) if isinstance(c, dict)
                         and isinstance(c.get("id"), int)})

    with_notes, without_notes = [], []  # (event, CrmSend)
    done = []
    for event in events:
        lead = leads.get(event.lead_id)
        text, template_id = texts[event.pk]
        if lead is None:
            event.state, event.reason, event.detail = S.NOT_FOUND, "lead_not_found", "amoCRM has no such lead"
            done.append(event)
            continue
        if text is None:
            event.state, event.reason = S.REFUSED, "no_text"
            event.detail = "the action has neither a text nor a template of the account"
            done.append(event)
            continue
        picked = phone_pick([contacts[c] for c in linked[event.lead_id] if c in contacts], region=region)
        if picked is None:
            event.state, event.reason = S.NO_PHONE, "no_phone"
            event.detail = ("the lead has no contact" if not linked[event.lead_id]
                            else "no contact of the lead has a phone that can get an SMS")
            done.append(event)
            continue
        phone, contact = picked
        context = markers.context_for(lead=lead, contact=contact, users=users, account=account_facts)
        rendered = markers.render(text, context).text.strip()
        if not rendered:
            event.state, event.reason, event.detail = S.REFUSED, "empty_text", "the text is empty once filled in"
            done.append(event)
            continue
        event.phone = phone[:40]
        item = CrmSend(entity_type="leads", entity_id=event.lead_id, phone=phone, text=rendered,
                       template_id=template_id,
                       dedupe_key=f"dp:{event.pk}")
        (without_notes if lead.get("status_id") in unsorted else with_notes).append((event, item))

    for pairs, write_notes in ((with_notes, True), (without_notes, False)):
        if not pairs:
            continue
        outcomes = crm_sends_create(account=account, kind=DeliveryKind.PIPELINE, items=[i for _e, i in pairs],
                                    write_notes=write_notes)
        for (event, _item), outcome in zip(pairs, outcomes, strict=True):
            if outcome.delivery_id is not None:
                event.state, event.delivery_id = S.SENT, outcome.delivery_id
                if not write_notes:
                    event.reason = "unsorted"
                    event.detail = "amoCRM takes no notes on leads in unsorted: the SMS was sent without one"
            else:
                event.state, event.reason = S.REFUSED, (outcome.code or "refused")[:30]
                event.detail = str(outcome.detail or "")[:300]
            done.append(event)
    _finish(done)
    _count(done, result)
