from django.contrib import admin

from .models import Attempt, Delivery, StatusEvent


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    exclude = ("raw_response",)

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False


class StatusEventInline(admin.TabularInline):
    """Every status report kept for the delivery, raw, with whether it moved the delivery."""

    model = StatusEvent
    extra = 0
    can_delete = False
    fields = ("received_at", "source", "status", "provider_code", "error_class", "occurred_at", "applied", "raw")
    readonly_fields = fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "account", "kind", "status", "provider", "segments")
    list_filter = ("status", "kind")
    list_select_related = ("account",)
    show_full_result_count = False
    exclude = ("text",)
    inlines = [AttemptInline, StatusEventInline]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
