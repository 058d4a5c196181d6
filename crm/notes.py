"""The outbox of notes smsgate writes into amoCRM: an `sms_out` note per SMS sent from the card's panel,
the pipeline or a list (amoCRM writes the feed's own), and a "not delivered" note when any CRM send
ends without getting through.

- A note is a `CrmNote` row committed with what asks for it (crm.sending's batch, or the outcome
  scanner below), so it is never lost. `notes_build` gives each its own second in the entity's feed
  (`amo_created_at`, unique per entity: amoCRM shows one note per `created_at` of an entity).
- `notes_write(account_id)` (task `crm.notes_write` on the CRM lane, queued after a send commits and
  by the beat task for whatever is due) takes the account's due notes (a lease: rows are locked only
  while they are taken, and a dead worker's lease runs out), and writes them through AmoClient, up
  to SMSGATE_CRM_NOTE_BATCH (≤ 250) per POST, per entity type; the client keeps the account within
  7 requests/s across every process. `sms_out` params are lower-case `{text, phone}`.
- Never written twice: a note is marked `maybe_written` before its POST and cleared only when amoCRM
  certainly did not act (a 429, a 503, no connection). A note still marked (no answer, a 5xx, a worker
  killed mid-POST) is first looked for in amoCRM (`AmoClient.notes`: same entity, type, time and text)
  and only written again when it is not there.
- amoCRM down: the note waits, SMSGATE_CRM_NOTE_BACKOFF doubled per attempt up to an hour, and is given
  up (recorded) SMSGATE_CRM_NOTE_GIVE_UP_HOURS after it was created. A note amoCRM refuses for its
  entity (a lead in "Неразобранное", a deleted entity: a 400 naming the item) is recorded as not
  possible, with amoCRM's reason; the batch's other notes are written without it.
- `crm_outcomes_conclude` (run by the beat task `crm.notes_flush`) looks at CRM sends not yet
  concluded whose delivery is final: one that did not get through gets a "not delivered: <reason>"
  note (feed sends included); then it is concluded. A delivery closed only because no report came
  (`no_report`) is not called undelivered.
- Texts and phones leave a note's row once it is written or given up (retention: crm.retention).

May call: accounts' AmoClient, deliveries' models and queueing (publishing), crm's models.
About 400 lines, one module: building a note, writing it and looking for it share two invariants (a
note's own second per entity, `maybe_written` before a POST) that should be read in one place.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone, translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.amocrm import AmoAmbiguous, AmoApiError, AmoClient, AmoRejected
from accounts.models import Account
from deliveries.models import FINAL_STATUSES, DeliveryStatus
from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name
from smsgate.db import insert_statements, run_batch

from .models import CrmMessage, CrmNote, NoteKind, NoteState

logger = logging.getLogger(__name__)

NOTES_WRITE_TASK = "crm.notes_write"
NOTES_FLUSH_TASK = "crm.notes_flush"
LEASE_SECONDS = 120  # longer than a POST with its retries (AmoClient: 15 s read timeout, ≤ 10 s waits)
MAX_BATCHES_PER_RUN = 40  # a run writes at most this many POSTs, then queues itself again
BACKOFF_CAP_SECONDS = 3600
LOOKUP_SLACK_SECONDS = 120  # amoCRM's clock vs ours, when looking for a note a lost answer may have written
SERVICE_NAME = "smsgate"
UNSUCCESSFUL = frozenset({DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED,
                          DeliveryStatus.FAILED})
OUTCOME_BATCH = 500

# Why an SMS did not get through, by the delivery's error class (else by its status), for the note.
_REASONS = {
    "invalid_recipient": _("the number is invalid or cannot receive SMS"),
    "blocked_recipient": _("the recipient does not accept SMS"),
    "content_rejected": _("the SMS provider refused the text"),
    "sender_rejected": _("the SMS provider refused the sender name"),
    "insufficient_funds": _("the SMS provider account has no funds"),
    "auth": _("the SMS provider refused the account's credentials"),
    "no_route": _("no SMS provider could send it"),
    "validity": _("it could not be sent in time"),
    "account_disabled": _("the account is disabled in smsgate"),
}
_STATUS_REASONS = {
    DeliveryStatus.UNDELIVERED: _("the operator could not deliver it"),
    DeliveryStatus.EXPIRED: _("it expired before it was delivered"),
    DeliveryStatus.REJECTED: _("the SMS provider rejected it"),
    DeliveryStatus.FAILED: _("it could not be sent"),
}


@dataclass(frozen=True)
class NoteSpec:
    message_id: uuid.UUID | None  # the CrmMessage's (= its delivery's) id
    entity_type: str
    entity_id: int
    text: str
    phone: str


# --- building notes ---------------------------------------------------------------------------------------
def _last_seconds(account: Account, keys: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    by_type: dict[str, set[int]] = defaultdict(set)
    for entity_type, entity_id in keys:
        by_type[entity_type].add(entity_id)
    last = {}
    for entity_type, ids in by_type.items():
        rows = (CrmNote.objects.filter(account=account, entity_type=entity_type, entity_id__in=ids)
                .values_list("entity_id").annotate(last=Max("amo_created_at")).order_by())
        last.update({(entity_type, entity_id): value for entity_id, value in rows})
    return last


def notes_build(*, account: Account, kind: str, specs: list[NoteSpec]) -> list[CrmNote]:
    """New outbox rows (not saved: the caller INSERTs them with what asks for them), each at its own
    second of its entity's feed: now, or the second after the entity's latest note of ours."""
    now = timezone.now()
    base = int(now.timestamp())
    last = _last_seconds(account, {(spec.entity_type, spec.entity_id) for spec in specs})
    rows = []
    for spec in specs:
        key = (spec.entity_type, spec.entity_id)
        second = max(base, last.get(key, base - 1) + 1)
        last[key] = second
        rows.append(CrmNote(account=account, message_id=spec.message_id, kind=kind, entity_type=spec.entity_type,
                            entity_id=spec.entity_id, text=spec.text, phone=spec.phone, request_id=uuid.uuid4().hex,
                            amo_created_at=second, state=NoteState.PENDING, next_attempt_at=now, created_at=now))
    return rows


def notes_write_soon(*, account_id: int) -> bool:
    """Queue a write of the account's due notes on the CRM lane (the broker down: the beat task finds them)."""
    return task_publish(NOTES_WRITE_TASK, [account_id], queue=queue_name(QUEUE_CRM),
                        log_extra={"account_id": account_id})


# --- what amoCRM is sent ------------------------------------------------------------------------------------
def _payload(note: CrmNote) -> dict:
    item = {"entity_id": note.entity_id, "request_id": note.request_id, "created_at": note.amo_created_at}
    if note.kind == NoteKind.SMS_OUT:
        item.update(note_type="sms_out", params={"text": note.text, "phone": note.phone})
    else:
        item.update(note_type="service_message", params={"service": SERVICE_NAME, "text": note.text})
    return item


def _matches(note: CrmNote, found: dict) -> bool:
    """Whether a note read from amoCRM is this one (a POST whose answer was lost may have written it)."""
    params = found.get("params") if isinstance(found.get("params"), dict) else {}
    if found.get("entity_id") != note.entity_id or found.get("created_at") != note.amo_created_at:
        return False
    if note.kind == NoteKind.SMS_OUT:
        return found.get("note_type") == "sms_out" and params.get("text") == note.text \
            and params.get("phone") == note.phone
    return found.get("note_type") == "service_message" and params.get("text") == note.text


# --- writing ------------------------------------------------------------------------------------------------
@dataclass
class WriteSummary:
    written: int = 0
    found: int = 0  # a lost answer's note, found in amoCRM instead of written again
    not_possible: int = 0
    retry: int = 0
    gave_up: int = 0
    batches: int = 0
    more: bool = False  # due notes were left for the next run


def _claim(account_id: int, *, limit: int) -> list[CrmNote]:
    """Take up to `limit` due notes of the account (oldest first) for LEASE_SECONDS; other workers skip
    the rows while they are being taken and ignore them while the lease runs."""
    now = timezone.now()
    with transaction.atomic():
        due = (CrmNote.objects.select_for_update(skip_locked=True)
               .filter(account_id=account_id, state=NoteState.PENDING, next_attempt_at__lte=now)
               .exclude(lease_until__gt=now).order_by("next_attempt_at", "id"))
        notes = list(due[:limit])
        if notes:
            CrmNote.objects.filter(pk__in=[n.pk for n in notes]).update(
                lease_until=now + timedelta(seconds=LEASE_SECONDS))
    return notes


def _finish(notes: list[CrmNote], state: str, *, ids: dict[str, int] | None = None, error: str = "") -> None:
    """Record notes as written (with amoCRM's ids), not possible or given up; their texts leave the row."""
    if not notes:
        return
    now = timezone.now()
    ids = ids or {}
    with transaction.atomic():
        for note in notes:
            note.state, note.finished_at, note.lease_until = state, now, None
            note.amo_note_id = ids.get(note.request_id, note.amo_note_id)
            note.text, note.phone = "", ""
            if error:
                note.last_error = error[:300]
        CrmNote.objects.bulk_update(notes, ["state", "finished_at", "lease_until", "amo_note_id", "text", "phone",
                                            "last_error"])
        sms_out = [note.message_id for note in notes if note.kind == NoteKind.SMS_OUT and note.message_id]
        if sms_out:
            CrmMessage.objects.filter(pk__in=sms_out).update(note_state=state)


def _retry_later(notes: list[CrmNote], error: AmoApiError, *, maybe_written: bool) -> tuple[int, int]:
    """Back off (doubling per attempt, at least what amoCRM asked for); give up on notes too old.
    Returns (retrying, given up)."""
    now = timezone.now()
    give_up_before = now - timedelta(hours=settings.SMSGATE_CRM_NOTE_GIVE_UP_HOURS)
    old = [note for note in notes if note.created_at <= give_up_before]
    if old:
        _finish(old, NoteState.GAVE_UP, error=str(error))
        logger.warning("amoCRM notes given up", extra={"account_id": old[0].account_id, "notes": len(old)})
    retrying = [note for note in notes if note.created_at > give_up_before]
    for note in retrying:
        note.attempts += 1
        pause = min(settings.SMSGATE_CRM_NOTE_BACKOFF * 2 ** (note.attempts - 1), BACKOFF_CAP_SECONDS)
        pause = max(pause, error.retry_after or 0)
        note.next_attempt_at, note.lease_until = now + timedelta(seconds=pause), None
        note.maybe_written = note.maybe_written or maybe_written
        note.last_error = str(error)[:300]
    if retrying:
        CrmNote.objects.bulk_update(retrying, ["attempts", "next_attempt_at", "lease_until", "maybe_written",
                                               "last_error"])
    return len(retrying), len(old)


def _look_up(client: AmoClient, entity_type: str, notes: list[CrmNote]) -> tuple[list[CrmNote], dict[str, int]]:
    """Of notes a lost answer may have written, those amoCRM has (with their ids); the rest go out again."""
    since = min(note.first_attempt_at or note.created_at for note in notes)
    types = sorted({"sms_out" if note.kind == NoteKind.SMS_OUT else "service_message" for note in notes})
    found = client.notes(entity_type, note_type=types,
                         updated_from=int(since.timestamp()) - LOOKUP_SLACK_SECONDS)
    ids, there = {}, []
    for note in notes:
        match = next((item for item in found if _matches(note, item)), None)
        if match is not None:
            ids[note.request_id] = match.get("id")
            there.append(note)
    return there, ids


def _refused_items(error: AmoRejected, notes: list[CrmNote]) -> dict[str, str]:
    """request_id -> amoCRM's reason, for the items a 400 names (e.g. a lead in "Неразобранное")."""
    by_request = {note.request_id for note in notes}
    refused = {}
    for entry in error.validation_errors:
        if not isinstance(entry, dict) or str(entry.get("request_id")) not in by_request:
            continue
        details = [f"{e.get('path', '')}: {e.get('detail') or e.get('code', '')}"
                   for e in entry.get("errors") or [] if isinstance(e, dict)]
        refused[str(entry["request_id"])] = "amoCRM refused the note: " + ("; ".join(details) or error.detail)
    return refused


def _write_group(client: AmoClient, entity_type: str, notes: list[CrmNote], summary: WriteSummary) -> None:
    """Write one entity type's share of a claim: look up what may already be there, POST the rest."""
    maybe = [note for note in notes if note.maybe_written]
    if maybe:
        try:
            there, ids = _look_up(client, entity_type, maybe)
        except AmoApiError as exc:
            retrying, gave_up = _retry_later(notes, exc, maybe_written=False)
            summary.retry, summary.gave_up = summary.retry + retrying, summary.gave_up + gave_up
            return
        _finish(there, NoteState.WRITTEN, ids=ids)
        summary.found += len(there)
        notes = [note for note in notes if note not in there]
    while notes:
        now = timezone.now()
        for note in notes:
            note.maybe_written, note.first_attempt_at = True, note.first_attempt_at or now
        CrmNote.objects.bulk_update(notes, ["maybe_written", "first_attempt_at"])  # before the POST, in case we die
        summary.batches += 1
        try:
            ids = client.add_notes(entity_type, [_payload(note) for note in notes])
        except AmoRejected as exc:
            refused = _refused_items(exc, notes)
            if not refused:  # the request as a whole: it will not pass as it is
                _finish(notes, NoteState.NOT_POSSIBLE, error=str(exc))
                summary.not_possible += len(notes)
                logger.warning("amoCRM refused a batch of notes", extra={"account_id": client.account.pk,
                                                                         "notes": len(notes), "status": exc.status})
                return
            for note in notes:
                note.maybe_written = False  # a 400 wrote nothing
            CrmNote.objects.bulk_update(notes, ["maybe_written"])
            impossible = [note for note in notes if note.request_id in refused]
            for note in impossible:
                _finish([note], NoteState.NOT_POSSIBLE, error=refused[note.request_id])
            summary.not_possible += len(impossible)
            logger.info("amoCRM refused notes for their entity (unsorted or deleted)",
                        extra={"account_id": client.account.pk, "notes": len(impossible)})
            notes = [note for note in notes if note.request_id not in refused]
            continue
        except AmoAmbiguous as exc:
            retrying, gave_up = _retry_later(notes, exc, maybe_written=True)
            summary.retry, summary.gave_up = summary.retry + retrying, summary.gave_up + gave_up
            return
        except AmoApiError as exc:  # nothing was written: temporary, rate-limited, not connected, refused account
            for note in notes:
                note.maybe_written = False  # fresh, or looked for and not there: certainly not written
            retrying, gave_up = _retry_later(notes, exc, maybe_written=False)
            summary.retry, summary.gave_up = summary.retry + retrying, summary.gave_up + gave_up
            return
        _finish(notes, NoteState.WRITTEN, ids=ids)
        summary.written += len(notes)
        return


def notes_write(*, account_id: int, max_batches: int = MAX_BATCHES_PER_RUN) -> WriteSummary:
    """Write the account's due notes, a batch after the other, until none is due (or `max_batches`)."""
    summary = WriteSummary()
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return summary
    client = None
    for _round in range(max_batches):
        notes = _claim(account_id, limit=settings.SMSGATE_CRM_NOTE_BATCH)
        if not notes:
            return summary
        if client is None:
            try:
                client = AmoClient(account)
            except AmoApiError as exc:  # not connected: wait for a reinstall, up to the give-up time
                retrying, gave_up = _retry_later(notes, exc, maybe_written=False)
                summary.retry, summary.gave_up = summary.retry + retrying, summary.gave_up + gave_up
                return summary
        groups: dict[str, list[CrmNote]] = defaultdict(list)
        for note in notes:
            groups[note.entity_type].append(note)
        retry_before = summary.retry
        for entity_type, group in groups.items():
            _write_group(client, entity_type, group, summary)
        if summary.retry > retry_before:
            return summary  # amoCRM is not taking them now: the rest wait for their time
    summary.more = True
    return summary


# --- the beat task: what is due, and the outcomes of CRM sends -----------------------------------------------
def notes_due_accounts(*, limit: int = 1000) -> list[int]:
    """Accounts with notes due now."""
    now = timezone.now()
    return list(CrmNote.objects.filter(state=NoteState.PENDING, next_attempt_at__lte=now)
                .exclude(lease_until__gt=now).values_list("account_id", flat=True).order_by("account_id")
                .distinct()[:limit])


def _language(account: Account) -> str:
    return "ru" if account.domain == "amocrm.ru" else "en"


def failure_reason(*, status: str, error_class: str) -> str:
    """Why a delivery did not get through, in the active language; "" while it is not unsuccessful."""
    if status not in UNSUCCESSFUL:
        return ""
    return str(_REASONS.get(error_class) or _STATUS_REASONS.get(status) or _STATUS_REASONS[DeliveryStatus.FAILED])


def failure_text(*, status: str, error_class: str, phone: str, language: str) -> str:
    """The "not delivered" note's text, in the account's language."""
    with translation.override(language):
        reason = failure_reason(status=status, error_class=error_class) or str(_STATUS_REASONS[DeliveryStatus.FAILED])
        return gettext("SMS to %(phone)s was not delivered: %(reason)s.") % {"phone": phone, "reason": reason}


def crm_outcomes_conclude(*, limit: int = OUTCOME_BATCH) -> int:
    """CRM sends whose delivery is now final: a "not delivered" note for each that did not get through;
    then concluded. Returns how many were concluded."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(CrmMessage.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(concluded_at__isnull=True, delivery__status__in=FINAL_STATUSES)
                    .select_related("delivery", "account").order_by("created_at")[:limit])
        if not rows:
            return 0
        failed = [row for row in rows if row.delivery.status in UNSUCCESSFUL and row.delivery.error_class != "no_report"]
        by_account: dict[int, list[CrmMessage]] = defaultdict(list)
        for row in failed:
            by_account[row.account_id].append(row)
        statements = []
        accounts = []
        for group in by_account.values():
            account = group[0].account
            specs = [NoteSpec(row.pk, row.entity_type, row.entity_id,
                              failure_text(status=row.delivery.status, error_class=row.delivery.error_class,
                                           phone=row.delivery.phone, language=_language(account)),
                              row.delivery.phone) for row in group]
            statements += insert_statements(CrmNote, notes_build(account=account, kind=NoteKind.FAILURE, specs=specs))
            accounts.append(account.pk)
        CrmMessage.objects.filter(pk__in=[row.pk for row in rows]).update(concluded_at=now)
        try:
            with transaction.atomic():
                run_batch(statements)
        except IntegrityError:  # a send took the same second of an entity meanwhile: next run
            transaction.set_rollback(True)
            logger.info("CRM outcomes: a note's second was taken meanwhile; trying again next run")
            return 0
    for account_id in accounts:
        transaction.on_commit(lambda account_id=account_id: notes_write_soon(account_id=account_id))
    if failed:
        logger.info("CRM sends not delivered: notes queued", extra={"notes": len(failed)})
    return len(rows)


def notes_flush() -> dict:
    """The beat task's work: conclude final CRM sends, then queue a write for each account with notes due."""
    concluded = crm_outcomes_conclude()
    accounts = notes_due_accounts()
    for account_id in accounts:
        notes_write_soon(account_id=account_id)
    return {"concluded": concluded, "accounts": len(accounts)}

