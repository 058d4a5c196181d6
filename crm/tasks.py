"""Celery tasks of crm: thin wrappers around services."""

from celery import shared_task

from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name

from . import pipeline
from .pipeline_inbox import RUN_TASK, SWEEP_TASK, pipeline_run_schedule


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
