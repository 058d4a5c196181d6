"""Accounts, their provider routes and integrations in the admin. Secrets are write-only: a
password-style input, empty keeps the stored value, no page ever renders one."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format, number_format
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from deliveries import stats
from accounts.selectors import forget_account
from deliveries.guard import forget_limits
from deliveries.providers import PROVIDERS
from deliveries.redaction import redact, secret_values
from deliveries.services import DeliveryRefused, delivery_create_test, route_balance, route_callback_url
from smsgate.admin_lookups import StrictChangeListMixin

from .forms import AccountCeilingsForm, IntegrationForm, SendTestSmsForm, credential_form_field_names, route_form_class
from .models import (LIMIT_NUMBER_FIELDS, Account, AccountCeilings, AccountOwnLimits, AmoApiStatus, AmoToken,
                     Integration, ProviderRoute)
from .services import route_save

ROUTE_FIELDS = ("provider", "priority", "sender", "is_active")
ROUTE_INFO_FIELDS = ("health", "callback_url", "tools")
ACTIONS_LIMIT = 20  # network calls per bulk action


@admin.register(Integration)
class IntegrationAdmin(StrictChangeListMixin, admin.ModelAdmin):
    form = IntegrationForm
    list_display = ("name", "client_uuid", "redirect_uri", "is_active", "updated_at")
    fields = ("name", "client_uuid", "redirect_uri", "new_client_secret", "is_active", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")


# --- routes ----------------------------------------------------------------------------------------------
@admin.display(description=_("health"))
def route_health(route):
    if not route.pk:
        return "—"
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
        return format_html('<a href="{}">{}</a> · <a href="{}">{}</a>',
                           reverse("admin:accounts_providerroute_test_sms", args=[route.pk]), gettext("Send test SMS"),
                           reverse("admin:accounts_providerroute_balance", args=[route.pk]), gettext("Check balance"))


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
        js = ["accounts/route_form.js"]
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
    actions = ("check_balance", "send_test_sms")

    class Media:
        js = ["accounts/route_form.js"]
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

    @admin.action(description=_("Send a test SMS through the selected route"), permissions=["change"])
    def send_test_sms(self, request, queryset):
        routes = list(queryset[:2])
        if len(routes) != 1:
            self.message_user(request, gettext("Select exactly one route."), messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:accounts_providerroute_test_sms", args=[routes[0].pk]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/test-sms/", wrap(self.test_sms_view), name="accounts_providerroute_test_sms"),
            path("<path:object_id>/balance/", wrap(self.balance_view), name="accounts_providerroute_balance"),
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

    def test_sms_view(self, request, object_id):
        if not self.has_change_permission(request):
            raise PermissionDenied
        route = self._route_or_404(request, object_id)
        form = SendTestSmsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = delivery_create_test(account=route.account, phone=form.cleaned_data["phone"], route=route)
            except DeliveryRefused as exc:
                for errors in exc.errors.values():
                    for error in errors:
                        form.add_error("phone", str(error))
                if not exc.errors:
                    form.add_error(None, str(exc.message))
            else:
                self.message_user(request, gettext("The test SMS is queued; its delivery is below."), messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:deliveries_delivery_change", args=[result.delivery.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Send a test SMS through %(route)s") % {"route": route},
            "route": route,
            "form": form,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/accounts/providerroute/test_sms.html", context)


# --- accounts --------------------------------------------------------------------------------------------
def _route_count(**conditions):
    counts = (ProviderRoute.objects.filter(account=OuterRef("pk"), **conditions).order_by()
              .values("account").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counts), 0)


class AccountCeilingsInline(admin.StackedInline):
    """The operator's abuse-limit ceilings of one account (deliveries.guard); empty fields use the
    deployment defaults. Only here, never through the account API."""

    model = AccountCeilings
    form = AccountCeilingsForm
    extra = 0
    max_num = 1
    # The heading of a one-form inline is its verbose_name.
    verbose_name = verbose_name_plural = _(
        "abuse limit ceilings set by the operator (empty: the default, 0: no limit)")


class AccountOwnLimitsInline(admin.StackedInline):
    """What the account chose for itself through the account API: shown, not edited (it can only
    tighten the ceilings above)."""

    model = AccountOwnLimits
    extra = 0
    max_num = 1
    can_delete = False
    fields = readonly_fields = (*LIMIT_NUMBER_FIELDS, "allowed_countries", "updated_at")
    verbose_name = verbose_name_plural = _(
        "the account's own limits (set through the account API, only tighter; empty: the ceiling)")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Account)
class AccountAdmin(StrictChangeListMixin, admin.ModelAdmin):
    list_display = ("subdomain", "domain", "amo_id", "integration", "is_active", "deliveries_24h", "routes_health",
                    "amo_api", "dashboard_link")
    list_filter = ("is_active", "domain", "amo_api_status")
    list_select_related = ("integration",)
    search_fields = ("subdomain", "=amo_id")
    show_facets = admin.ShowFacets.NEVER
    fields = ("integration", "amo_id", "subdomain", "domain", "is_active", "disabled_reason", "first_seen_at",
              "last_seen_at", "amo_api", "amo_api_status_reason", "deliveries_24h", "dashboard_link")
    readonly_fields = ("first_seen_at", "last_seen_at", "amo_api", "amo_api_status_reason", "deliveries_24h",
                       "dashboard_link")
    inlines = [ProviderRouteInline, AccountCeilingsInline, AccountOwnLimitsInline]

    # Accounts are disabled, never deleted: their deliveries keep pointing at them (and the delete
    # page would list every one of them, millions of rows).
    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The 24-hour volume comes from the hourly counters, never from a count over deliveries.
        return super().get_queryset(request).annotate(
            volume_24h=stats.volume_24h_subquery(),
            active_routes=_route_count(is_active=True),
            broken_routes=_route_count(is_active=True, is_broken=True),
            # None: no token pair. Read as a flag, not by joining the (encrypted) tokens themselves.
            amo_needs_reinstall=Subquery(AmoToken.objects.filter(account=OuterRef("pk")).values("needs_reinstall")[:1]),
        )

    @admin.display(description=_("deliveries, 24 h"), ordering="volume_24h")
    def deliveries_24h(self, account):
        return number_format(getattr(account, "volume_24h", 0), force_grouping=True)

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

    @admin.display(description=_("amoCRM API"), ordering="amo_api_status")
    def amo_api(self, account):
        """Whether smsgate can call amoCRM for this account: its token pair, and amoCRM's last refusal of
        the whole account (402 unpaid, 403 blocked, 401), which the next successful call clears."""
        if not account.pk:
            return "—"
        needs_reinstall = getattr(account, "amo_needs_reinstall", None)
        if needs_reinstall is None:
            return gettext("not connected")
        if account.amo_api_status == AmoApiStatus.OK and not needs_reinstall:
            return format_html('<span class="sms-health-ok">{}</span>', account.get_amo_api_status_display())
        label = (account.get_amo_api_status_display() if account.amo_api_status != AmoApiStatus.OK
                 else gettext("needs reinstall"))
        since = (gettext("since %(time)s") % {"time": date_format(localtime(account.amo_api_status_at),
                                                                   "SHORT_DATETIME_FORMAT")}
                 if account.amo_api_status != AmoApiStatus.OK and account.amo_api_status_at else "")
        return format_html('<span class="sms-health-broken">{}</span> <span class="help">{}</span>', label, since)

    @admin.display(description=_("dashboard"))
    def dashboard_link(self, account):
        if not account.pk:
            return "—"
        return format_html('<a href="{}?account={}">{}</a>', reverse("admin:deliveries_delivery_dashboard"),
                           account.pk, gettext("dashboard"))

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        forget_account(obj.pk)  # e.g. disabled: this process refuses its SMS at once, others within seconds

    def save_formset(self, request, form, formset, change):
        if formset.model is AccountCeilings:
            super().save_formset(request, form, formset, change)
            forget_limits(form.instance.pk)  # this process applies them at once, others within seconds
            return None
        if formset.model is not ProviderRoute:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # collects new/changed/deleted objects for the history message
        for route in formset.deleted_objects:
            route.delete()
        forget_account(form.instance.pk)  # this process sees the change at once, others within seconds
        for route_form in formset.forms:
            if route_form in formset.deleted_forms or not route_form.has_changed():
                continue
            save_route_form(route_form, account=form.instance)
        return None


# --- Django's own staff admins, with the same rule (`?password__startswith=`, `?email__contains=` ...) ----
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class StaffUserAdmin(StrictChangeListMixin, UserAdmin):
    pass


@admin.register(Group)
class StaffGroupAdmin(StrictChangeListMixin, GroupAdmin):
    pass
