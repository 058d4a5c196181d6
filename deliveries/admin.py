"""Staff review of deliveries: a read-only list that stays fast at millions of rows, a delivery's
timeline, retry and cancel (through the services), and the dashboard.

Speed rules for the list (see README "Admin"): an estimated count, no full count, no facets, no
date hierarchy, no foreign-key filter, filters with fixed choices, sorting by creation time only,
and a search that turns the term into exact matches on indexed columns (`admin_search.py`); the
timeline is `timeline.py`. The rest stays together (~470 lines): the list, the page, the actions and
the dashboard view share its permission helpers.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from routes.admin import AccountRoutesAdmin, ProviderRouteAdmin
from routes.forms import SendTestSmsForm
from routes.models import ProviderRoute
from routes.providers import PROVIDERS
from smsgate.admin_lookups import StrictChangeListMixin
from smsgate.phones import phone_mask

from . import charts, counters, dashboard
from .admin_search import delivery_search_q, parse_id, search_phone
from .masking import mask_codes
from .models import Delivery, DeliveryKind, DeliveryStatus
from .paginators import EstimatedCountPaginator
from .services.intake import DeliveryRefused, delivery_create_test
from .services.staff import DeliveryActionRefused, delivery_cancel, delivery_retry, delivery_retry_refusal
from .timeline import delivery_timeline, status_badge

# At most this many deliveries per bulk action (a "select all" over millions is refused).
ACTION_LIMIT = 500
VIEW_TEXT_PERMISSION = "deliveries.view_message_text"
ACT_PERMISSION = "deliveries.change_delivery"


# --- list filters: fixed choices, never a DISTINCT over the table ------------------------------------
class ProviderFilter(admin.SimpleListFilter):
    title = _("provider")
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(slug, provider.name) for slug, provider in sorted(PROVIDERS.items())]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


class CreatedFilter(admin.SimpleListFilter):
    title = _("created")
    parameter_name = "created"

    def lookups(self, request, model_admin):
        return [("today", _("Today")), ("7d", _("Past 7 days")), ("30d", _("Past 30 days"))]

    def queryset(self, request, queryset):
        since = created_since(self.value())
        return queryset.filter(created_at__gte=since) if since else queryset


def created_since(choice):
    now = timezone.localtime()
    if choice == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if choice == "7d":
        return now - timedelta(days=7)
    if choice == "30d":
        return now - timedelta(days=30)
    return None


# --- display helpers -----------------------------------------------------------------------------------
def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return gettext("%(seconds)s s") % {"seconds": number_format(round(seconds, 1), 1)}
    if seconds < 3600:
        return gettext("%(minutes)d min %(seconds)d s") % {"minutes": seconds // 60, "seconds": seconds % 60}
    return gettext("%(hours)d h %(minutes)d min") % {"hours": seconds // 3600, "minutes": seconds % 3600 // 60}


def seconds_between(start, end) -> float | None:
    return (end - start).total_seconds() if start and end else None


def can_view_text(request) -> bool:
    return request.user.has_perm(VIEW_TEXT_PERMISSION)


def phone_search_allowed(request) -> bool:
    """A staff member who sees phones masked may make SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR exact phone
    searches an hour: the masked phone hides 5 digits, and without a budget 100,000 searches would
    read it back. Counted in the shared cache (Redis in production), per user and clock hour."""
    budget = settings.SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR
    if budget <= 0 or can_view_text(request):
        return True
    key = f"admin-phone-search:{request.user.pk}:{timezone.now():%Y%m%d%H}"
    cache.add(key, 0, timeout=3600)
    try:
        used = cache.incr(key)
    except ValueError:  # evicted between add and incr: count this one as the first
        cache.set(key, 1, timeout=3600)
        used = 1
    return used <= budget


def can_act(request) -> bool:
    return request.user.has_perm(ACT_PERMISSION)


# --- the admin -----------------------------------------------------------------------------------------
@admin.register(Delivery)
class DeliveryAdmin(StrictChangeListMixin, admin.ModelAdmin):
    list_display = ("created_at", "account_subdomain", "masked_phone", "kind", "status_label", "provider",
                    "segments", "time_to_sent", "time_to_delivered")
    list_display_links = ("created_at",)
    list_filter = ("status", "kind", ProviderFilter, CreatedFilter)
    list_select_related = ("account",)
    list_per_page = 50
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    search_fields = ("phone",)  # shows the search box; get_search_results does the work
    search_help_text = _("An exact phone number in any format, a delivery ID, a provider message ID, "
                         "an account ID, amoCRM account ID or subdomain.")
    actions = ("retry_selected", "cancel_selected")
    change_form_template = "admin/deliveries/delivery/change_form.html"
    fieldsets = (
        (None, {"fields": ("id", "account_link", "kind", "status_label", "phone_display", "message_text",
                           "encoding", "segments", "jti")}),
        (_("Provider"), {"fields": ("route_link", "provider", "provider_message_id", "error_class", "error_code",
                                    "error_text")}),
        (_("Times"), {"fields": ("created_at", "valid_until", "sent_at", "finished_at", "time_to_sent",
                                 "time_to_delivered", "attempt_count", "next_attempt_at", "updated_at")}),
    )

    class Media:
        css = {"all": ["deliveries/admin.css"]}

    # Read-only: staff look and act through services, never edit rows.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_act_permission(self, request):
        return can_act(request)

    def get_object(self, request, object_id, from_field=None):
        try:
            obj = self.get_queryset(request).select_related("account", "route").get(pk=object_id)
        except (Delivery.DoesNotExist, ValidationError, ValueError):
            return None
        # Per request, on the object: the admin instance is shared by every thread.
        obj.viewer_sees_text = can_view_text(request)
        return obj

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        if search_phone(search_term.strip()) and not phone_search_allowed(request):
            messages.warning(request, gettext(
                "You have made too many phone searches this hour. Phones are masked for you, so each search "
                "could test a guess; ask a colleague who may see message texts, or try again later."))
            return queryset.none(), False
        return queryset.filter(delivery_search_q(search_term)), False

    # columns and fields
    @admin.display(description=_("account"))
    def account_subdomain(self, obj):
        return obj.account.subdomain

    @admin.display(description=_("account"))
    def account_link(self, obj):
        url = reverse("admin:accounts_account_change", args=[obj.account_id])
        return format_html('<a href="{}">{}</a>', url, obj.account)

    @admin.display(description=_("route"))
    def route_link(self, obj):
        if not obj.route_id:
            return "—"
        url = reverse("admin:routes_providerroute_change", args=[obj.route_id])
        return format_html('<a href="{}">{}</a>', url, obj.route)

    @admin.display(description=_("phone"))
    def masked_phone(self, obj):
        return phone_mask(obj.phone)

    @admin.display(description=_("phone"))
    def phone_display(self, obj):
        return obj.phone if getattr(obj, "viewer_sees_text", False) else phone_mask(obj.phone)

    @admin.display(description=_("text"))
    def message_text(self, obj):
        if obj.kind == DeliveryKind.TEST or getattr(obj, "viewer_sees_text", False):
            return obj.text
        return format_html('{} <span class="help">({})</span>', mask_codes(obj.text),
                           gettext("digits hidden: viewing them needs the “see the text” permission"))

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return status_badge(obj.status)

    @admin.display(description=_("to sent"))
    def time_to_sent(self, obj):
        return format_seconds(seconds_between(obj.created_at, obj.sent_at))

    @admin.display(description=_("to delivered"))
    def time_to_delivered(self, obj):
        if obj.status != DeliveryStatus.DELIVERED:
            return "—"
        return format_seconds(seconds_between(obj.created_at, obj.finished_at))

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(
                timeline=delivery_timeline(obj, show_personal=obj.viewer_sees_text),
                can_retry=can_act(request) and delivery_retry_refusal(delivery=obj) is None,
                can_cancel=can_act(request) and obj.status == DeliveryStatus.PENDING,
                dashboard_url=reverse("admin:deliveries_delivery_dashboard") + f"?account={obj.account_id}",
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "dashboard_url": reverse("admin:deliveries_delivery_dashboard")}
        return super().changelist_view(request, extra_context)

    # actions
    def _act_on(self, request, queryset, service, done_message):
        if queryset[:ACTION_LIMIT + 1].count() > ACTION_LIMIT:
            self.message_user(request, gettext("Select at most %(limit)d deliveries at a time.")
                              % {"limit": ACTION_LIMIT}, messages.ERROR)
            return
        done, refused = 0, {}
        for delivery in queryset.select_related(None).only("pk")[:ACTION_LIMIT]:
            try:
                service(delivery=delivery, by=request.user.get_username())
                done += 1
            except DeliveryActionRefused as exc:
                refused[str(exc.message)] = refused.get(str(exc.message), 0) + 1
        if done:
            self.message_user(request, done_message % {"count": done}, messages.SUCCESS)
        for reason, count in refused.items():
            self.message_user(request, gettext("Not done for %(count)d: %(reason)s") % {"count": count,
                                                                                      "reason": reason},
                              messages.WARNING)

    @admin.action(description=_("Retry the selected failed or expired deliveries"), permissions=["act"])
    def retry_selected(self, request, queryset):
        self._act_on(request, queryset, delivery_retry, gettext("Queued again: %(count)d."))

    @admin.action(description=_("Cancel the selected pending deliveries"), permissions=["act"])
    def cancel_selected(self, request, queryset):
        self._act_on(request, queryset, delivery_cancel, gettext("Canceled: %(count)d."))

    # extra pages
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="deliveries_delivery_dashboard"),
            path("<path:object_id>/retry/", wrap(self.retry_view), name="deliveries_delivery_retry"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name="deliveries_delivery_cancel"),
            *super().get_urls(),
        ]

    def _single_action(self, request, object_id, service, done_message):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not can_act(request):
            raise PermissionDenied
        delivery = self.get_object(request, unquote(object_id))  # None for an id that is no UUID, too
        if delivery is None:
            raise Http404
        try:
            service(delivery=delivery, by=request.user.get_username())
            self.message_user(request, done_message, messages.SUCCESS)
        except DeliveryActionRefused as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:deliveries_delivery_change", args=[delivery.pk]))

    def retry_view(self, request, object_id):
        return self._single_action(request, object_id, delivery_retry, gettext("The delivery is queued again."))

    def cancel_view(self, request, object_id):
        return self._single_action(request, object_id, delivery_cancel, gettext("The delivery is canceled."))

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(request, "admin/deliveries/dashboard.html",
                                {**self.admin_site.each_context(request), **dashboard_context(request)})


DASHBOARD_DAYS = 30


def median_text(median: float | None) -> str:
    """A median from the time buckets; one in the open last bucket is only known to be over its bound
    (the interpolation there would invent a figure)."""
    if median is not None and median > counters.LATENCY_BUCKETS[-1]:
        return gettext("over %(time)s") % {"time": format_seconds(counters.LATENCY_BUCKETS[-1])}
    return format_seconds(median)


def dashboard_context(request) -> dict:
    """Everything the dashboard shows, read from the counters only (never the deliveries table)."""
    account = None
    account_id = parse_id(request.GET.get("account", ""))
    if account_id is not None:
        account = Account.objects.filter(pk=account_id).first()
    account_id = account.pk if account else None
    until = timezone.localdate()
    since = until - timedelta(days=DASHBOARD_DAYS - 1)

    rows = dashboard.summary_rows(since=since, until=until, account_id=account_id)
    days = dashboard.daily_by_status(since=since, until=until, rows=rows)
    total = sum(sum(counts.values()) for counts in days.values())
    providers = dashboard.provider_summaries(since=since, until=until, rows=rows)
    provider_rows = []
    for summary in providers:
        rate = summary.delivery_rate
        median = summary.median_seconds
        provider_rows.append({
            "provider": summary.provider or gettext("(none: never reached a provider)"),
            "provider_slug": summary.provider,
            "total": summary.total,
            "delivered": summary.delivered,
            "finished": summary.finished,
            "rate": rate,
            "rate_text": f"{number_format(rate * 100, 1)} %" if rate is not None else "—",
            "median_text": median_text(median),
        })
    rate_chart = charts.horizontal_bars(
        [(row["provider"], row["rate"] or 0, f'{row["rate_text"]} · {row["median_text"]}',
          gettext("%(delivered)s of %(finished)s finished deliveries delivered")
          % {"delivered": number_format(row["delivered"], force_grouping=True),
             "finished": number_format(row["finished"], force_grouping=True)})
         for row in provider_rows if row["finished"] and row["provider_slug"]],
        colour=charts.STATUS_COLOURS[DeliveryStatus.DELIVERED], track=True)  # a rate: out of a full 100 % bar
    failures = dashboard.top_failure_reasons(since=since, until=until, rows=rows)
    peak = max((f["n"] for f in failures), default=1)
    labels = dict(DeliveryStatus.choices)
    failure_chart = charts.horizontal_bars(
        [(f"{labels.get(f['status'], f['status'])}: {f['error_class'] or '—'}", f["n"] / peak,
          number_format(f["n"], force_grouping=True), "") for f in failures],
        colour=charts.STATUS_COLOURS[DeliveryStatus.REJECTED])
    title = gettext("Dashboard")
    if account:
        title = gettext("Dashboard: %(account)s") % {"account": account}
    return {
        "title": title,
        "account": account,
        "since": since,
        "until": until,
        "days": DASHBOARD_DAYS,
        "total": number_format(total, force_grouping=True),
        "daily_chart": charts.daily_status_chart(days),
        "provider_rows": provider_rows,
        "rate_chart": rate_chart,
        "failures": failures,
        "failure_chart": failure_chart,
        "deliveries_url": reverse("admin:deliveries_delivery_changelist"),
    }


# --- the account page and the route page: what deliveries add to them -------------------------------------
class AccountDeliveriesAdmin(AccountRoutesAdmin):
    """The account admin with its deliveries: the last 24 hours' volume (hourly counters, never a count
    over deliveries) and a link to its dashboard."""

    list_display = (*AccountRoutesAdmin.list_display[:5], "deliveries_24h", *AccountRoutesAdmin.list_display[5:],
                    "dashboard_link")
    fields = (*AccountRoutesAdmin.fields, "deliveries_24h", "dashboard_link")
    readonly_fields = (*AccountRoutesAdmin.readonly_fields, "deliveries_24h", "dashboard_link")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(volume_24h=dashboard.volume_24h_subquery())

    @admin.display(description=_("deliveries, 24 h"), ordering="volume_24h")
    def deliveries_24h(self, account):
        return number_format(getattr(account, "volume_24h", 0), force_grouping=True)

    @admin.display(description=_("dashboard"))
    def dashboard_link(self, account):
        if not account.pk:
            return "—"
        return format_html('<a href="{}?account={}">{}</a>', reverse("admin:deliveries_delivery_dashboard"),
                           account.pk, gettext("dashboard"))


class ProviderRouteTestSmsAdmin(ProviderRouteAdmin):
    """The route admin with a test SMS through the route (a delivery of kind `test`)."""

    actions = (*ProviderRouteAdmin.actions, "send_test_sms")

    def route_tools(self, route):
        return [(reverse("admin:routes_providerroute_test_sms", args=[route.pk]), gettext("Send test SMS")),
                *super().route_tools(route)]

    @admin.action(description=_("Send a test SMS through the selected route"), permissions=["change"])
    def send_test_sms(self, request, queryset):
        routes = list(queryset[:2])
        if len(routes) != 1:
            self.message_user(request, gettext("Select exactly one route."), messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:routes_providerroute_test_sms", args=[routes[0].pk]))

    def get_urls(self):
        return [path("<path:object_id>/test-sms/", self.admin_site.admin_view(self.test_sms_view),
                     name="routes_providerroute_test_sms"), *super().get_urls()]

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
        return TemplateResponse(request, "admin/routes/providerroute/test_sms.html", context)


admin.site.unregister(Account)
admin.site.register(Account, AccountDeliveriesAdmin)
admin.site.unregister(ProviderRoute)
admin.site.register(ProviderRoute, ProviderRouteTestSmsAdmin)
