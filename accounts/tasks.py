"""Celery tasks of accounts: thin wrappers around services."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from .amocrm import amo_tokens_refresh_due


@shared_task(name="accounts.amo_tokens_refresh", ignore_result=True)
def amo_tokens_refresh():
    """Beat: refresh amoCRM token pairs that expire soon (refresh tokens are single-use)."""
    return amo_tokens_refresh_due(margin=timedelta(seconds=settings.AMO_TOKEN_REFRESH_MARGIN))
