"""Reads of crm's models; every one starts from an account."""

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Account
from deliveries.models import DeliveryStatus

from .models import CrmMessage, SmsTemplate

HISTORY_SIZE = 50
# A card's history is "in flight" (the panel asks again) while one of its SMS is on its way, or was
# handed to the provider lately and its delivery report may come any moment.
IN_FLIGHT = frozenset({DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN})
REPORT_WAIT = timedelta(minutes=10)


def templates_of(*, account: Account, active_only: bool = False) -> QuerySet[SmsTemplate]:
    """The account's live (not deleted) templates, by name."""
    templates = SmsTemplate.objects.filter(account=account, deleted_at__isnull=True)
    return templates.filter(is_active=True) if active_only else templates


def template_of(*, account: Account, template_id) -> SmsTemplate | None:
    """One live template of the account, or None (any other id, another account's included)."""
    if not isinstance(template_id, int) or isinstance(template_id, bool):
        return None
    return templates_of(account=account).filter(pk=template_id).first()


def crm_message_of(*, account: Account, delivery_id) -> CrmMessage | None:
    """One SMS sent from amoCRM, with its delivery, if it is the account's."""
    return CrmMessage.objects.select_related("delivery").filter(account=account, pk=delivery_id).first()


def crm_messages_of_entity(*, account: Account, entity_type: str, entity_id: int,
                           limit: int = HISTORY_SIZE) -> tuple[list[CrmMessage], bool]:
    """A card's SMS, newest first, with their deliveries; and whether any is still in flight."""
    messages = list(CrmMessage.objects.select_related("delivery")
                    .filter(account=account, entity_type=entity_type, entity_id=entity_id)
                    .order_by("-created_at", "-pk")[:limit])
    recent = timezone.now() - REPORT_WAIT
    in_flight = any(m.delivery.status in IN_FLIGHT or (m.delivery.status == DeliveryStatus.SENT
                                                       and m.created_at >= recent) for m in messages)
    return messages, in_flight
