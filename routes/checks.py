from django.conf import settings
from django.core.checks import Error, register

from routes.providers import PROVIDERS


@register()
def default_route_check(app_configs, **kwargs):
    slug = settings.SMSGATE_DEFAULT_ROUTE
    if slug and slug not in PROVIDERS:
        return [
            Error(
                f"SMSGATE_DEFAULT_ROUTE={slug!r} is not a known provider.",
                hint=f"Use one of: {', '.join(sorted(PROVIDERS))}, or leave it empty.",
                id="smsgate.E001",
            )
        ]
    return []
