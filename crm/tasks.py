"""Celery tasks of crm: thin wrappers around services. The note and pipeline tasks run on the CRM lane
(`sms-crm`, worker-crm), so amoCRM being slow never delays login codes."""

from celery import shared_task

from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name

from . import lists, notes, pipeline, retention, salesbot
from .pipeline_inbox import RUN_TASK, SWEEP_TASK, pipeline_run_schedule


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


@shared_task(name=RUN_TASK, acks_late=True, ignore_result=True)
def pipeline_run(account_id: int):
    """Read and send an account's pending pipeline events (woken by the webhook, the sweeper or itself)."""
    result = pipeline.pipeline_events_process(account_id=account_id)
    if result.again_in is not None:
        task_publish(RUN_TASK, [account_id], queue=queue_name(QUEUE_CRM), countdown=result.again_in or None,
                     log_extra={"account_id": account_id})


@shared_task(name=SWEEP_TASK, ignore_result=True, expires=30)
def pipeline_sweep():
    """Celery beat: a dead worker's claims go back to pending; accounts whose events wait get a run."""
    pipeline.pipeline_claims_release()
    for account_id in pipeline.pipeline_accounts_due():
        pipeline_run_schedule(account_id=account_id, countdown=0.0)


@shared_task(name="crm.pipeline_purge", ignore_result=True, expires=3600)
def pipeline_purge():
    """Beat, hourly: finished pipeline events past SMSGATE_PURGE_TEXT_DAYS are deleted."""
    pipeline.pipeline_events_purge()


@shared_task(name=salesbot.RUN_TASK, acks_late=True, ignore_result=True)
def salesbot_run(request_id: int):
    """One step of a Salesbot request (send, look at the delivery, continue the bot); queued again while open."""
    again = salesbot.salesbot_request_process(request_id=request_id)
    if again is not None:
        salesbot.salesbot_run_schedule(request_id=request_id, countdown=again)


@shared_task(name=salesbot.SWEEP_TASK, ignore_result=True, expires=10)
def salesbot_sweep():
    """Celery beat: Salesbot requests whose next step is overdue and list sends nobody holds (a lost task, a
    dead worker) are queued."""
    for request_id in salesbot.salesbot_requests_due():
        salesbot.salesbot_run_schedule(request_id=request_id)
    for send_id in lists.list_sends_stale():  # list sends a lost task or a dead worker left
        lists.list_send_schedule(send_id=send_id)


@shared_task(name=lists.RUN_TASK, acks_late=True, ignore_result=True)
def list_send_run(send_id: int):
    """One batch (250 recipients) of a list send; queued again until it is done or cancelled."""
    again = lists.list_send_step(send_id=send_id)
    if again is not None:
        lists.list_send_schedule(send_id=send_id, countdown=again or None)
