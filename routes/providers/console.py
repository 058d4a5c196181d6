"""Development provider: logs the SMS (phone masked, text length only) instead of sending it."""

import logging
import uuid

from smsgate.phones import phone_mask
from .base import Provider, ReportStatus, SendRequest, SendResult, StatusReport

logger = logging.getLogger(__name__)


class ConsoleProvider(Provider):
    slug = "console"
    name = "Console (development)"
    credential_fields = ()
    supports_polling = True
    status_map = {"delivered": ReportStatus.DELIVERED}

    def send(self, request: SendRequest) -> SendResult:
        message_id = f"console-{uuid.uuid4().hex}"
        logger.info(
            "console SMS to %s (%d chars)",
            phone_mask(request.phone),
            len(request.text),
            extra={"delivery_id": request.reference, "provider_message_id": message_id},
        )
        return SendResult(provider_message_id=message_id, parts=None, raw={"id": message_id})

    def fetch_statuses(self, provider_message_ids):
        # A console message "arrives" the moment it is logged.
        return [StatusReport(mid, ReportStatus.DELIVERED, provider_code="delivered") for mid in provider_message_ids]
