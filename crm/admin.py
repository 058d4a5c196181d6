"""SMS sent from amoCRM, the note outbox and the inboxes of the pipeline, Salesbot and list sends (with the
pipeline's key) in the admin: read-only, for staff to see where an SMS came from (the card, the pipeline,
...), who sent it, what became of a call or a send and why, and what became of its note in amoCRM. Texts
and keys are not shown here (the delivery's page shows a text by its own rule); phones are masked."""

from django.contrib import admin
from django.db.models import BooleanField, ExpressionWrapper, Func, IntegerField, Q
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from deliveries.admin_search import search_account_ids
from deliveries.paginators import EstimatedCountPaginator
from smsgate.admin_lookups import StrictChangeListMixin
from smsgate.inputs import db_id
from smsgate.phones import phone_mask, phone_normalise_for_search

from .models import CrmMessage, CrmNote, ListSend, PipelineEvent, PipelineKey, SalesbotRequest


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


# --- the inboxes of the pipeline, Salesbot and list sends (and the pipeline's key) ---------------------------
class JsonArrayLength(Func):
    """The length of a JSON array column (`ListSend.entity_ids`), counted by the database: the list page shows
    how many were selected without loading up to 500 ids per row."""

    function = "jsonb_array_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="json_array_length", **extra_context)


def inbox_search_q(term: str, entity_field: str | None) -> Q:
    """A search box term as exact matches on indexed columns: an account (our id, its amoCRM id or its
    subdomain, as the deliveries' search reads them) or, where the page has one, an amoCRM lead/entity id.
    Never a text: anything else names nothing."""
    condition = Q(pk__in=[])
    account_ids = search_account_ids(term)
    if account_ids:
        condition |= Q(account_id__in=account_ids)
    number = db_id(term) if entity_field else None
    if number is not None:
        condition |= Q(**{entity_field: number})
    return condition


class InboxAdmin(ReadOnlyAdmin):
    """What the four inbox pages share: the account beside each row, a search on exact ids only, the newest
    first by primary key (rows are numbered as they arrive; no other sort, so no page sorts a big table), texts
    never loaded, and an id that names nothing is a 404 (not Django's redirect to the index)."""

    entity_search_field = None  # the amoCRM id column the search box also matches, if any
    deferred = ("text",)  # never loaded: the page shows no text
    search_fields = ("account__subdomain",)  # shows the search box; get_search_results does the work
    list_select_related = ("account",)
    ordering = ("-pk",)
    sortable_by = ()

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account").defer(*self.deferred)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(inbox_search_q(term, self.entity_search_field)), False

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(_("There is no such record."))
        return obj

    @admin.display(description=_("received"))
    def received(self, obj):  # the list's first column, short: the full date takes a third of a laptop's table
        return date_format(timezone.localtime(obj.received_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("created"))
    def created(self, obj):
        return date_format(timezone.localtime(obj.created_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("account"))
    def account_subdomain(self, obj):
        return obj.account.subdomain

    @admin.display(description=_("phone"))
    def masked_phone(self, obj):
        if not obj.phone:
            return None
        e164 = phone_normalise_for_search(obj.phone)
        return phone_mask(e164) if e164 else "***"

    @admin.display(description=_("delivery"))
    def delivery_link(self, obj):
        if obj.delivery_id is None:
            return None
        url = reverse("admin:deliveries_delivery_change", args=[obj.delivery_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.delivery_id)[:8])


@admin.register(PipelineEvent)
class PipelineEventAdmin(InboxAdmin):
    """The digital pipeline's calls: what became of each (sent, refused, no phone, ...) and why."""

    # Narrow enough for a laptop beside the filters: reads and times are on the event's page.
    list_display = ("received", "account_subdomain", "lead_id", "status_id", "state", "reason", "delivery_link")
    list_filter = ("state",)
    paginator = EstimatedCountPaginator  # one row per lead entering a stage: the biggest of the four
    entity_search_field = "lead_id"
    search_help_text = _("An account's subdomain or amoCRM ID, or an amoCRM lead ID.")
    fields = ("account", "lead_id", "status_id", "pipeline_id", "event_type", "event_time", "template_id", "state",
              "reason", "detail", "masked_phone", "delivery_link", "attempts", "received_at", "claimed_at",
              "finished_at")
    readonly_fields = fields


@admin.register(SalesbotRequest)
class SalesbotRequestAdmin(InboxAdmin):
    """Salesbot's "send SMS" steps: the SMS, the exit the bot was continued with, and why."""

    list_display = ("received", "account_subdomain", "bot", "entity", "state", "exit", "reason", "delivery_link")
    list_filter = ("state", "exit")
    paginator = EstimatedCountPaginator
    entity_search_field = "entity_id"
    search_help_text = _("An account's subdomain or amoCRM ID, or an amoCRM lead or contact ID.")
    fields = ("account", "bot", "continue_id", "entity", "template_id", "state", "exit", "reason", "detail",
              "masked_phone", "delivery_link", "attempts", "received_at", "deadline_at", "next_at", "claimed_at",
              "finished_at")
    readonly_fields = fields

    @admin.display(description=_("bot"))
    def bot(self, obj):
        return f"{obj.bot_kind} {obj.bot_id}"

    @admin.display(description=_("amoCRM entity"))
    def entity(self, obj):
        return f"{obj.entity_type}/{obj.entity_id}"


@admin.register(ListSend)
class ListSendAdmin(InboxAdmin):
    """Sends to a list selected in amoCRM: how far each got and what became of the selected leads/contacts."""

    # Leads or contacts: the filter (and the send's page) says; the counts need the width (short titles).
    list_display = ("created", "account_subdomain", "state", "progress", "sent", "without_phone", "missing",
                    "refusals")
    list_filter = ("state", "entity_type")
    deferred = ("text", "entity_ids")
    search_help_text = _("An account's subdomain or amoCRM ID.")
    fields = ("account", "amo_user_id", "entity_type", "selected", "template", "state", "cancel_requested",
              "processed", "sent", "no_phone", "not_found", "refused", "refused_by", "reads", "detail", "created_at",
              "claimed_at", "finished_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(selected_count=JsonArrayLength("entity_ids"))

    @admin.display(description=_("selected"))
    def selected(self, obj):
        return obj.selected_count

    @admin.display(description=_("processed"))
    def processed(self, obj):  # `position`, whose own name ("done") reads as the state of that name
        return obj.position

    @admin.display(description=_("processed"))
    def progress(self, obj):
        return f"{obj.position} / {obj.selected_count}"

    @admin.display(description=_("no phone"))
    def without_phone(self, obj):
        return obj.no_phone

    @admin.display(description=_("not found"))
    def missing(self, obj):
        return obj.not_found

    @admin.display(description=_("refused"))
    def refusals(self, obj):
        return obj.refused


@admin.register(PipelineKey)
class PipelineKeyAdmin(InboxAdmin):
    """Whether an account has its pipeline key, since when, and the calls refused for a wrong one. Never the
    key nor its digest: neither is even loaded."""

    list_display = ("account_subdomain", "has_key", "created_at", "rotated_at", "refused_count", "refused_last_at")
    deferred = ("key", "key_digest")
    search_help_text = _("An account's subdomain or amoCRM ID.")
    fields = ("account", "has_key", "created_at", "rotated_at", "refused_count", "refused_last_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            key_present=ExpressionWrapper(~Q(key_digest=""), output_field=BooleanField()))

    @admin.display(description=_("key set"), boolean=True)
    def has_key(self, obj):
        return obj.key_present
