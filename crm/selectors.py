"""Reads of crm's models; every one starts from an account."""

from django.db.models import QuerySet

from accounts.models import Account

from .models import SmsTemplate


def templates_of(*, account: Account, active_only: bool = False) -> QuerySet[SmsTemplate]:
    """The account's live (not deleted) templates, by name."""
    templates = SmsTemplate.objects.filter(account=account, deleted_at__isnull=True)
    return templates.filter(is_active=True) if active_only else templates


def template_of(*, account: Account, template_id) -> SmsTemplate | None:
    """One live template of the account, or None (any other id, another account's included)."""
    if not isinstance(template_id, int) or isinstance(template_id, bool):
        return None
    return templates_of(account=account).filter(pk=template_id).first()
