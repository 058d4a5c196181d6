"""Celery tasks of crm: thin wrappers around services. The note tasks run on the CRM lane (`sms-crm`,
worker-crm), so amoCRM being slow never delays login codes."""

from celery import shared_task

from . import notes, retention


@shared_task(name=notes.NOTES_WRITE_TASK, acks_late=True, ignore_result=True)
def crm_notes_write(account_id: int):
    """Write the account's due notes (queued after a CRM send commits, and by crm.notes_flush)."""
    summary = notes.notes_write(account_id=account_id)
    if summary.more:  # a long backlog: the rest in a task of its own, so other accounts get their turn
        notes.notes_write_soon(account_id=account_id)


@shared_task(name=notes.NOTES_FLUSH_TASK, ignore_result=True)
def crm_notes_flush():
    """Beat, every SMSGATE_CRM_NOTE_INTERVAL seconds: final CRM sends concluded ("not delivered" notes),
    a write queued for every account with notes due."""
    notes.notes_flush()


@shared_task(name="crm.retention", ignore_result=True, expires=3600)
def crm_retention():
    retention.crm_retention_run()
