"""The explicit provider registry. A provider slug is the single identifier everywhere:
module name, registry key, database value and URL segment."""

from .base import Provider
from .console import ConsoleProvider
from .devino import DevinoProvider
from .smsaero import SmsAeroProvider
from .smsc import SmscProvider
from .smsru import SmsRuProvider
from .twilio import TwilioProvider

PROVIDERS: dict[str, type[Provider]] = {
    cls.slug: cls
    for cls in (ConsoleProvider, SmsRuProvider, SmscProvider, SmsAeroProvider, TwilioProvider, DevinoProvider)
}


def provider_class(slug: str) -> type[Provider]:
    try:
        return PROVIDERS[slug]
    except KeyError:
        raise LookupError(f"unknown provider {slug!r}") from None
