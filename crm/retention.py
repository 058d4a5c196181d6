"""Retention of what crm keeps of message texts (deliveries.retention keeps the deliveries' own).

A `CrmMessage` holds no text (its delivery does, redacted and purged by deliveries.retention). A
`CrmNote` holds its note's text and phone only until the note is written, found not possible or given
up (crm.notes empties them then); this job is the safety net and the end of the rows:
- a note still waiting SMSGATE_PURGE_TEXT_DAYS after it was created is given up, its text emptied;
- a finished note whose text is somehow still there loses it;
- notes finished more than SMSGATE_PURGE_TEXT_DAYS ago are deleted (only recent ones matter: they keep
  a new note of the same entity off their second).
- a Salesbot request's text (amoCRM filled in the contact's data) and its phone, and a list send's text,
  are emptied once finished more than SMSGATE_PURGE_TEXT_DAYS ago (their outcomes stay for the owner).
Beat runs it hourly (task `crm.retention`, maintenance queue); batches keep its locks short.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import CrmMessage, CrmNote, ListSend, NoteKind, NoteState, SalesbotRequest

logger = logging.getLogger(__name__)

BATCH = 1000


@dataclass
class CrmRetentionResult:
    given_up: int = 0
    redacted: int = 0
    deleted: int = 0
    step_texts: int = 0


def _in_batches(queryset, apply) -> int:
    done = 0
    while ids := list(queryset.values_list("pk", flat=True)[:BATCH]):
        apply(CrmNote.objects.filter(pk__in=ids))
        done += len(ids)
    return done


def crm_retention_run() -> CrmRetentionResult:
    now = timezone.now()
    cutoff = now - timedelta(days=settings.SMSGATE_PURGE_TEXT_DAYS)
    result = CrmRetentionResult()

    def give_up(rows):
        message_ids = list(rows.filter(kind=NoteKind.SMS_OUT, message__isnull=False).values_list("message_id",
                                                                                                  flat=True))
        rows.update(state=NoteState.GAVE_UP, finished_at=now, text="", phone="", lease_until=None,
                    last_error="retention: never written")
        CrmMessage.objects.filter(pk__in=message_ids).update(note_state=NoteState.GAVE_UP)

    result.given_up = _in_batches(CrmNote.objects.filter(state=NoteState.PENDING, created_at__lt=cutoff).order_by(),
                                  give_up)
    result.redacted = _in_batches(
        CrmNote.objects.exclude(state=NoteState.PENDING).exclude(text="", phone="").order_by(),
        lambda rows: rows.update(text="", phone=""))
    result.deleted = _in_batches(
        CrmNote.objects.exclude(state=NoteState.PENDING).filter(finished_at__lt=cutoff).order_by(),
        lambda rows: rows.delete())
    result.step_texts = (
        SalesbotRequest.objects.filter(finished_at__lt=cutoff).exclude(text="", phone="").update(text="", phone="")
        + ListSend.objects.filter(finished_at__lt=cutoff).exclude(text="").update(text=""))
    if result.given_up or result.redacted or result.deleted or result.step_texts:
        logger.info("crm retention: %d notes given up, %d texts emptied, %d notes deleted, %d Salesbot/list texts "
                    "emptied", result.given_up, result.redacted, result.deleted, result.step_texts)
    return result
