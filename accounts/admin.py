"""Accounts and integrations in the admin. Secrets are write-only: a password-style input, empty
keeps the stored value, no page ever renders one. The routes and deliveries apps add to the account
page what they own (routes/admin.py, deliveries/admin.py)."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import OuterRef, Subquery
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from smsgate.admin_lookups import StrictChangeListMixin

from .forms import AccountCeilingsForm, IntegrationForm
from .limits import forget_limits
from .models import LIMIT_NUMBER_FIELDS, Account, AccountCeilings, AccountOwnLimits, AmoApiStatus, AmoToken, Integration
from .selectors import forget_account


@admin.register(Integration)
class IntegrationAdmin(StrictChangeListMixin, admin.ModelAdmin):
    form = IntegrationForm
    list_display = ("name", "client_uuid", "redirect_uri", "is_active", "updated_at")
    fields = ("name", "client_uuid", "redirect_uri", "new_client_secret", "is_active", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")


# --- accounts --------------------------------------------------------------------------------------------
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
    list_display = ("subdomain", "domain", "amo_id", "integration", "is_active", "amo_api")
    list_filter = ("is_active", "domain", "amo_api_status", "crm_default_route_allowed")
    list_select_related = ("integration",)
    search_fields = ("subdomain", "=amo_id")
    show_facets = admin.ShowFacets.NEVER
    fields = ("integration", "amo_id", "subdomain", "domain", "is_active", "disabled_reason",
              "crm_default_route_allowed", "first_seen_at", "last_seen_at", "amo_api", "amo_api_status_reason")
    readonly_fields = ("first_seen_at", "last_seen_at", "amo_api", "amo_api_status_reason")
    inlines = [AccountCeilingsInline, AccountOwnLimitsInline]

    # Accounts are disabled, never deleted: their deliveries keep pointing at them (and the delete
    # page would list every one of them, millions of rows).
    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # None: no token pair. Read as a flag, not by joining the (encrypted) tokens themselves.
        return super().get_queryset(request).annotate(
            amo_needs_reinstall=Subquery(AmoToken.objects.filter(account=OuterRef("pk")).values("needs_reinstall")[:1]),
        )

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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        forget_account(obj.pk)  # e.g. disabled: this process refuses its SMS at once, others within seconds

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is AccountCeilings:
            forget_limits(form.instance.pk)  # this process applies them at once, others within seconds


# --- Django's own staff admins, with the same rule (`?password__startswith=`, `?email__contains=` ...) ----
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class StaffUserAdmin(StrictChangeListMixin, UserAdmin):
    pass


@admin.register(Group)
class StaffGroupAdmin(StrictChangeListMixin, GroupAdmin):
    pass
