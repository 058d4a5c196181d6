"""Routes in the admin: the route list and page (credentials write-only, balance, health), and the
routes of an account on its page (an inline), with their health in the accounts list."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.formats import date_format, number_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.admin import AccountAdmin
from accounts.models import Account
from smsgate.admin_lookups import StrictChangeListMixin

from .forms import credential_form_field_names, route_form_class
from .models import ProviderRoute
from .providers import PROVIDERS
from .redaction import redact, secret_values
from .selectors import forget_routes, route_sends_nothing
from .services import route_balance, route_callback_url, route_save

ROUTE_FIELDS = ("provider", "priority", "sender", "is_active")
ROUTE_INFO_FIELDS = ("health", "callback_url", "tools")
ACTIONS_LIMIT = 20  # network calls per bulk action


@admin.display(description=_("health"))
def route_health(route):
    if not route.pk:
        return "—"
    if route_sends_nothing(route):
        return format_html('<span class="sms-health-broken sms-console-trap">{}</span>',
                           gettext("sends nothing: the console provider only logs SMS, and this deployment "
                                   "does not allow it"))
    if route.is_broken:
        reason = redact(route.broken_reason or "", secret_values(route.credentials, route.provider))
        since = gettext("since %(time)s") % {"time": date_format(localtime(route.broken_at), "SHORT_DATETIME_FORMAT")}
        return format_html('<span class="sms-health-broken">{}</span> {} <span class="help">{}</span>',
                           gettext("broken:"), reason, since if route.broken_at else "")
    if not route.is_active:
        return gettext("inactive")
    return format_html('<span class="sms-health-ok">{}</span>', gettext("ok"))


class RouteInfoMixin:
    """Read-only route fields shared by the inline and the route admin."""

    @admin.display(description=_("health"))
    def health(self, route):
        return route_health(route)

    @admin.display(description=_("callback URL"))
    def callback_url(self, route):
        if not route.pk:
            return "—"
        provider = PROVIDERS.get(route.provider)
        if provider is None or not provider.supports_callbacks:
            return gettext("not used: this provider's statuses are polled")
        return format_html("<code>{}</code>", route_callback_url(route))

    @admin.display(description=_("tools"))
    def tools(self, route):
        if not route.pk:
            return "—"
        return format_html_join(" · ", '<a href="{}">{}</a>', self.route_tools(route))

    def route_tools(self, route) -> list[tuple[str, str]]:
        """(URL, label) of the tools shown with a route; other apps add theirs (deliveries: a test SMS)."""
        return [(reverse("admin:routes_providerroute_balance", args=[route.pk]), gettext("Check balance"))]


def save_route_form(route_form, *, account):
    data = route_form.cleaned_data
    return route_save(account=account, provider=data["provider"], credentials=route_form.credentials_entered(),
                      sender=data.get("sender") or "", priority=data.get("priority"),
                      is_active=data.get("is_active"), route=route_form.instance)


class ProviderRouteInline(RouteInfoMixin, admin.StackedInline):
    model = ProviderRoute
    form = route_form_class()
    extra = 0
    readonly_fields = ROUTE_INFO_FIELDS

    class Media:
        js = ["routes/route_form.js"]
        css = {"all": ["deliveries/admin.css"]}

    def get_fields(self, request, obj=None):
        return [*ROUTE_FIELDS, *credential_form_field_names(), *ROUTE_INFO_FIELDS]


class RouteProviderFilter(admin.SimpleListFilter):
    title = _("provider")
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(slug, provider.name) for slug, provider in sorted(PROVIDERS.items())]

    def queryset(self, request, queryset):
        return queryset.filter(provider=self.value()) if self.value() else queryset


@admin.register(ProviderRoute)
class ProviderRouteAdmin(StrictChangeListMixin, RouteInfoMixin, admin.ModelAdmin):
    form = route_form_class()
    list_display = ("__str__", "account", "provider", "priority", "sender", "is_active", "health", "updated_at")
    list_filter = (RouteProviderFilter, "is_broken", "is_active")
    list_select_related = ("account",)
    search_fields = ("account__subdomain", "=account__amo_id")
    raw_id_fields = ("account",)
    readonly_fields = ROUTE_INFO_FIELDS
    actions = ("check_balance",)

    class Media:
        js = ["routes/route_form.js"]
        css = {"all": ["deliveries/admin.css"]}

    def get_fields(self, request, obj=None):
        return ["account", *ROUTE_FIELDS, *credential_form_field_names(), *ROUTE_INFO_FIELDS]

    def save_model(self, request, obj, form, change):
        save_route_form(form, account=obj.account)

    # balance
    def _balance_message(self, request, route):
        try:
            balance = route_balance(route=route)  # a network call, outside any transaction
        except NotImplementedError:
            self.message_user(request, gettext("%(route)s: this provider does not report a balance.")
                              % {"route": route}, messages.WARNING)
        except Exception as exc:  # noqa: BLE001 - any provider failure is shown, never a 500
            self.message_user(request, gettext("%(route)s: the balance could not be read (%(error)s).")
                              % {"route": route, "error": type(exc).__name__ if not hasattr(exc, "error_class")
                                 else f"{exc.error_class} {getattr(exc, 'code', '')}".strip()}, messages.ERROR)
        else:
            self.message_user(request, gettext("%(route)s: balance %(amount)s %(currency)s.")
                              % {"route": route, "amount": number_format(balance.amount, force_grouping=True),
                                 "currency": balance.currency}, messages.SUCCESS)

    @admin.action(description=_("Check the balance of the selected routes"), permissions=["view"])
    def check_balance(self, request, queryset):
        for route in queryset[:ACTIONS_LIMIT]:
            self._balance_message(request, route)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/balance/", wrap(self.balance_view), name="routes_providerroute_balance"),
            *super().get_urls(),
        ]

    def _route_or_404(self, request, object_id):
        route = self.get_object(request, unquote(object_id))
        if route is None:
            raise Http404
        return route

    def balance_view(self, request, object_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        route = self._route_or_404(request, object_id)
        self._balance_message(request, route)
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[route.account_id]))


# --- the account page: its routes ----------------------------------------------------------------------
def _route_count(**conditions):
    counts = (ProviderRoute.objects.filter(account=OuterRef("pk"), **conditions).order_by()
              .values("account").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counts), 0)


class AccountRoutesAdmin(AccountAdmin):
    """The account admin with the account's routes: an inline on its page, their health in the list."""

    list_display = (*AccountAdmin.list_display[:-1], "routes_health", AccountAdmin.list_display[-1])
    inlines = [ProviderRouteInline, *AccountAdmin.inlines]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            active_routes=_route_count(is_active=True),
            broken_routes=_route_count(is_active=True, is_broken=True),
        )

    @admin.display(description=_("routes"))
    def routes_health(self, account):
        if not account.active_routes:
            return gettext("none (default route)")
        if account.broken_routes:
            return format_html('<span class="sms-health-broken">{}</span>',
                               gettext("%(broken)d of %(total)d broken")
                               % {"broken": account.broken_routes, "total": account.active_routes})
        return format_html('<span class="sms-health-ok">{}</span>', gettext("%(total)d ok")
                           % {"total": account.active_routes})

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProviderRoute:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # collects new/changed/deleted objects for the history message
        for route in formset.deleted_objects:
            route.delete()
        forget_routes(form.instance.pk)  # this process sees the change at once, others within seconds
        for route_form in formset.forms:
            if route_form in formset.deleted_forms or not route_form.has_changed():
                continue
            save_route_form(route_form, account=form.instance)
        return None


admin.site.unregister(Account)
admin.site.register(Account, AccountRoutesAdmin)
