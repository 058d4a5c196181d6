"""A delivery's timeline for staff: acceptance, every provider attempt and every status report in
time order, with the raw provider data; secrets always cut out, the phone and text masked unless the
viewer may see them."""

import json
from dataclasses import dataclass, field

from django.utils.html import format_html
from django.utils.translation import gettext

from routes.redaction import deployment_secret_values, redact, secret_values

from . import charts
from .masking import personal_replacements
from .models import Delivery, DeliveryStatus


def status_badge(status: str):
    label = dict(DeliveryStatus.choices).get(status, status)
    return format_html('<span class="sms-badge" style="background:{}">{}</span>',
                       charts.STATUS_COLOURS.get(status, "#78909c"), label)


@dataclass
class TimelineEntry:
    at: object
    title: str
    status: str = ""
    details: list = field(default_factory=list)
    raw: str = ""

    @property
    def badge(self):
        return status_badge(self.status) if self.status else ""


def delivery_timeline(delivery: Delivery, *, show_personal: bool = False) -> list[TimelineEntry]:
    """Acceptance, every provider attempt and every status report, in time order, with raw
    provider replies: secrets always cut out, the phone and text masked unless `show_personal`."""
    attempts = list(delivery.attempts.select_related("route").order_by("started_at", "id"))
    events = list(delivery.events.order_by("received_at", "id"))
    secrets = deployment_secret_values()
    for attempt in attempts:
        if attempt.route is not None:
            secrets |= secret_values(attempt.route.credentials, attempt.route.provider)
    personal = {} if show_personal else personal_replacements(delivery.phone, delivery.text)

    def _pretty(value, secrets) -> str:
        if value in (None, "", {}, []):
            return ""
        return json.dumps(redact(value, secrets, personal), ensure_ascii=False, indent=2, sort_keys=True,
                          default=str)

    entries = [TimelineEntry(delivery.created_at, gettext("Accepted"), DeliveryStatus.PENDING,
                             [(gettext("kind"), delivery.get_kind_display()),
                              (gettext("parts"), delivery.segments)])]
    for attempt in attempts:
        details = [(gettext("provider"), attempt.provider),
                   (gettext("outcome"), attempt.get_outcome_display()),
                   (gettext("latency, ms"), attempt.latency_ms if attempt.latency_ms is not None else "—")]
        if attempt.route_id:
            details.append((gettext("route"), f"#{attempt.route_id} {attempt.route}" if attempt.route else "—"))
        for label, value in ((gettext("provider message ID"), attempt.provider_message_id),
                             (gettext("error class"), attempt.error_class),
                             (gettext("provider code"), attempt.provider_code),
                             (gettext("error text"), redact(attempt.error_text, secrets, personal))):
            if value:
                details.append((label, value))
        entries.append(TimelineEntry(attempt.started_at, gettext("Attempt"), "", details,
                                     _pretty(attempt.raw_response, secrets)))
    for event in events:
        details = [(gettext("source"), event.get_source_display()),
                   (gettext("applied"), gettext("yes") if event.applied else gettext("no, the status was already "
                                                                                    "further"))]
        for label, value in ((gettext("provider code"), event.provider_code),
                             (gettext("error class"), event.error_class),
                             (gettext("occurred"), event.occurred_at)):
            if value:
                details.append((label, value))
        entries.append(TimelineEntry(event.received_at, gettext("Status report"), event.status, details,
                                     _pretty(event.raw, secrets)))
    entries.sort(key=lambda entry: entry.at)
    return entries
