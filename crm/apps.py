from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmConfig(AppConfig):
    """Sending SMS from amoCRM itself (templates now; the card, pipeline, Salesbot and lists later).
    It may import `accounts` and `deliveries`; they never import it."""

    name = "crm"
    verbose_name = _("SMS from amoCRM")
