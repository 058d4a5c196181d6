from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import Account, Integration, ProviderRoute


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    list_display = ("name", "client_uuid", "redirect_uri", "is_active")
    exclude = ("client_secret",)  # write-only; edited through a dedicated form later


class ProviderRouteInline(admin.TabularInline):
    model = ProviderRoute
    extra = 0
    fields = ("provider", "priority", "sender", "is_active", "is_broken", "broken_reason", "broken_at",
              "callback_url")
    readonly_fields = ("is_broken", "broken_reason", "broken_at", "callback_url")

    @admin.display(description=_("callback URL"))
    def callback_url(self, route):
        from deliveries.services import route_callback_url

        return route_callback_url(route) if route.pk else "—"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("subdomain", "domain", "amo_id", "integration", "is_active", "last_seen_at")
    search_fields = ("subdomain", "=amo_id")
    inlines = [ProviderRouteInline]
