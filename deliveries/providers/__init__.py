"""The explicit provider registry. A provider slug is the single identifier everywhere:
module name, registry key, database value and URL segment."""

from .base import Provider
from .console import ConsoleProvider
from .smsru import SmsRuProvider

PROVIDERS: dict[str, type[Provider]] = {cls.slug: cls for cls in (ConsoleProvider, SmsRuProvider)}


def provider_class(slug: str) -> type[Provider]:
    try:
        return PROVIDERS[slug]
    except KeyError:
        raise LookupError(f"unknown provider {slug!r}") from None
