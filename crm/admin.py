"""SMS sent from amoCRM and the note outbox in the admin: read-only, for staff to see where an SMS came
from (the card, the pipeline, ...), who sent it, and what became of its note in amoCRM. Texts are not
shown here (the delivery's page shows them by its own rule); phones are masked."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from smsgate.admin_lookups import StrictChangeListMixin
from smsgate.phones import phone_mask

from .models import CrmMessage, CrmNote


class ReadOnlyAdmin(StrictChangeListMixin, admin.ModelAdmin):
    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CrmNoteInline(admin.TabularInline):
    model = CrmNote
    extra = 0
    can_delete = False
    fields = readonly_fields = ("kind", "state", "amo_created_at", "attempts", "next_attempt_at", "amo_note_id",
                                "last_error", "finished_at")
    verbose_name_plural = _("its notes in amoCRM")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CrmMessage)
class CrmMessageAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "account_subdomain", "origin", "entity", "amo_user_id", "masked_phone",
                    "delivery_status", "note_state")
    list_filter = ("origin", "note_state", "kind")
    list_select_related = ("account", "delivery")
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("=entity_id",)
    search_help_text = _("An amoCRM lead or contact ID.")
    fields = ("delivery_link", "account", "kind", "origin", "entity", "amo_user_id", "template", "dedupe_key",
              "note_state", "created_at", "concluded_at")
    readonly_fields = fields
    inlines = [CrmNoteInline]

    @admin.display(description=_("account"))
    def account_subdomain(self, obj):
        return obj.account.subdomain

    @admin.display(description=_("amoCRM entity"))
    def entity(self, obj):
        return f"{obj.entity_type}/{obj.entity_id}"

    @admin.display(description=_("phone"))
    def masked_phone(self, obj):
        return phone_mask(obj.delivery.phone)

    @admin.display(description=_("status"))
    def delivery_status(self, obj):
        return obj.delivery.get_status_display()

    @admin.display(description=_("delivery"))
    def delivery_link(self, obj):
        url = reverse("admin:deliveries_delivery_change", args=[obj.delivery_id])
        return format_html('<a href="{}">{}</a>', url, obj.delivery_id)


@admin.register(CrmNote)
class CrmNoteAdmin(ReadOnlyAdmin):
    """The outbox: what waits to be written into amoCRM, what was, and what could not be."""

    list_display = ("created_at", "account_subdomain", "kind", "entity", "state", "attempts", "next_attempt_at",
                    "last_error")
    list_filter = ("state", "kind")
    list_select_related = ("account",)
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    fields = ("account", "message", "kind", "entity", "state", "request_id", "amo_created_at", "attempts",
              "next_attempt_at", "maybe_written", "first_attempt_at", "amo_note_id", "last_error", "created_at",
              "finished_at")
    readonly_fields = fields

    @admin.display(description=_("account"))
    def account_subdomain(self, obj):
        return obj.account.subdomain

    @admin.display(description=_("amoCRM entity"))
    def entity(self, obj):
        return f"{obj.entity_type}/{obj.entity_id}"
