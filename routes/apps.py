from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RoutesConfig(AppConfig):
    name = "routes"
    verbose_name = _("SMS routes")

    def ready(self):
        from . import checks  # noqa: F401  (registers the default route's system check)
