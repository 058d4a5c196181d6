from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from deliveries.models import Delivery
from smsgate.crypto import EncryptedTextField


class SmsTemplate(models.Model):
    """An account's SMS template: a text with amoCRM markers (`crm.markers`), filled in when sent.

    Deleting one only marks it (`deleted_at`): pipeline actions and sent SMS may still name it, and
    its name is free again for a new template.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sms_templates",
                                verbose_name=_("account"))
    name = models.CharField(_("name"), max_length=100)
    text = models.TextField(_("text"))
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    deleted_at = models.DateTimeField(_("deleted"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("SMS template")
        verbose_name_plural = _("SMS templates")
        ordering = ["name", "id"]
        constraints = [
            # One live template per name and account, whatever the case ("Reminder" = "reminder"); the
            # account leads, so the index also serves the account's list.
            models.UniqueConstraint(F("account"), Lower("name"), condition=Q(deleted_at__isnull=True),
                                    name="smstemplate_unique_live_name"),
        ]

    def __str__(self):
        return self.name


# --- SMS sent from amoCRM (crm.sending) and their notes (crm.notes) ------------------------------------
ENTITY_TYPES = ("leads", "contacts")


class CrmOrigin(models.TextChoices):
    """Where in amoCRM an SMS was sent from. The delivery's kind is the source figures count by; this
    says, within kind `crm`, whether the card's panel (smsgate writes the note) or amoCRM's own SMS
    input in the card's feed (amoCRM writes it) sent it."""

    PANEL = "panel", _("card panel")
    FEED = "feed", _("card feed")
    PIPELINE = "pipeline", _("digital pipeline")
    SALESBOT = "salesbot", _("Salesbot")
    LIST = "list", _("list")


class NoteState(models.TextChoices):
    NONE = "none", _("written by amoCRM")  # feed sends: amoCRM writes the sms_out note itself
    PENDING = "pending", _("waiting to be written")
    WRITTEN = "written", _("written")
    NOT_POSSIBLE = "not_possible", _("not possible")  # amoCRM refuses notes there (an unsorted lead, gone)
    GAVE_UP = "gave_up", _("given up")  # amoCRM could not be reached for SMSGATE_CRM_NOTE_GIVE_UP_HOURS


class CrmMessage(models.Model):
    """What smsgate knows about an SMS sent from amoCRM, beside its delivery: the amoCRM entity it was
    sent from, who sent it, the template, the caller's idempotency key, and its note in amoCRM.

    One per delivery (its primary key is the delivery's). `concluded_at` is set once the delivery is
    final and its outcome handled (a "not delivered" note queued where needed): open ones are few.
    """

    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, primary_key=True,
                                    related_name="crm_message", verbose_name=_("delivery"))
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", verbose_name=_("account"),
                                db_index=False)  # (account, entity_type, entity_id) serves it
    kind = models.CharField(_("kind"), max_length=10)  # the delivery's kind (deliveries.models.CRM_KINDS)
    origin = models.CharField(_("sent from"), max_length=10, choices=CrmOrigin.choices)
    entity_type = models.CharField(_("amoCRM entity"), max_length=10, choices=[(t, t) for t in ENTITY_TYPES])
    entity_id = models.BigIntegerField(_("amoCRM entity ID"))
    amo_user_id = models.BigIntegerField(_("amoCRM user"), null=True, blank=True)
    template = models.ForeignKey(SmsTemplate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 verbose_name=_("template"))
    dedupe_key = models.CharField(_("idempotency key"), max_length=100, null=True, blank=True)
    note_state = models.CharField(_("sms_out note"), max_length=12, choices=NoteState.choices,
                                  default=NoteState.PENDING)
    created_at = models.DateTimeField(_("created"))
    concluded_at = models.DateTimeField(_("outcome handled"), null=True, blank=True)

    class Meta:
        verbose_name = _("SMS sent from amoCRM")
        verbose_name_plural = _("SMS sent from amoCRM")
        constraints = [
            models.UniqueConstraint(fields=["account", "dedupe_key"], name="crmmessage_dedupe_unique_per_account"),
        ]
        indexes = [
            # The card's history: an entity's SMS, newest first.
            models.Index(fields=["account", "entity_type", "entity_id", "-created_at"], name="crmmessage_entity_idx"),
            # The outcome scanner looks only at deliveries not yet concluded.
            models.Index(fields=["created_at"], condition=Q(concluded_at__isnull=True), name="crmmessage_open_idx"),
            models.Index(fields=["-created_at"], name="crmmessage_created_idx"),  # the admin's list
        ]

    def __str__(self):
        return f"{self.entity_type}/{self.entity_id}: {self.delivery_id}"


class NoteKind(models.TextChoices):
    SMS_OUT = "sms_out", _("SMS sent")  # amoCRM's own sms_out note: params {text, phone}
    FAILURE = "failure", _("not delivered")  # a service_message saying the SMS did not get through, and why


class CrmNote(models.Model):
    """The outbox of notes smsgate writes into amoCRM (crm.notes). A row is committed with what asks
    for it (the SMS, its final failure), so a note is never lost; `request_id` is sent along, so a
    POST whose answer was lost is looked up before it is written again; `amo_created_at` is the note's
    own second in the entity's feed (amoCRM shows one note per `created_at` of an entity), unique per
    entity. `text` and `phone` are emptied once the note is written or abandoned (retention)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", verbose_name=_("account"),
                                db_index=False)  # (account, entity_type, entity_id, amo_created_at) serves it
    message = models.ForeignKey(CrmMessage, on_delete=models.CASCADE, related_name="notes", null=True, blank=True,
                                verbose_name=_("SMS"))
    kind = models.CharField(_("kind"), max_length=10, choices=NoteKind.choices)
    entity_type = models.CharField(_("amoCRM entity"), max_length=10, choices=[(t, t) for t in ENTITY_TYPES])
    entity_id = models.BigIntegerField(_("amoCRM entity ID"))
    text = models.TextField(_("text"), blank=True)
    phone = models.CharField(_("phone"), max_length=20, blank=True)
    request_id = models.CharField(_("request ID"), max_length=40, unique=True)
    amo_created_at = models.BigIntegerField(_("time in amoCRM"), help_text=_("Unix time"))
    state = models.CharField(_("state"), max_length=12, choices=NoteState.choices, default=NoteState.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    lease_until = models.DateTimeField(_("taken until"), null=True, blank=True, editable=False)
    # A POST that may have landed (no answer): looked up by request id and text before writing again.
    maybe_written = models.BooleanField(_("may have been written"), default=False)
    first_attempt_at = models.DateTimeField(_("first written at"), null=True, blank=True)
    amo_note_id = models.BigIntegerField(_("amoCRM note ID"), null=True, blank=True)
    last_error = models.CharField(_("last error"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created"))
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("amoCRM note")
        verbose_name_plural = _("amoCRM notes")
        constraints = [
            models.UniqueConstraint(fields=["account", "entity_type", "entity_id", "amo_created_at"],
                                    name="crmnote_one_per_second_per_entity"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(state="pending"), name="crmnote_due_idx"),
        ]

    def __str__(self):
        return f"{self.kind} {self.entity_type}/{self.entity_id}"


# --- what the inboxes of the pipeline, Salesbot and list sends share --------------------------------------------
class InboxRecord(models.Model):
    """A row of an inbox a worker on the CRM lane takes (`claimed_at`) and closes (`finished_at`), with what
    it said about the outcome (`detail`, for staff). Each inbox keeps its own `state`: their choices differ.
    Abstract: each child's table has these columns exactly as it had them before (no migration)."""

    detail = models.CharField(_("detail"), max_length=300, blank=True)
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        abstract = True


class SmsInboxRecord(InboxRecord):
    """An inbox row that asks for one SMS (a pipeline event, a Salesbot step): the phone picked from amoCRM,
    the delivery it became, or the reason it did not."""

    reason = models.CharField(_("reason"), max_length=30, blank=True)  # a code: no_phone, unsorted, limits, ...
    phone = models.CharField(_("phone"), max_length=40, blank=True)  # as picked from amoCRM
    delivery_id = models.UUIDField(_("delivery"), null=True, blank=True)

    class Meta:
        abstract = True


# --- the digital pipeline's "send SMS" action (issue 16) -----------------------------------------------
class PipelineKey(models.Model):
    """The account's own key for its pipeline actions. amoCRM does not sign the digital pipeline's webhook,
    so each action carries this key in its settings (the widget's dpSettings fills it in); a call without
    it is refused and counted here, where the owner sees it (GET /api/v1/pipeline/)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="pipeline_key",
                                   verbose_name=_("account"))
    key = EncryptedTextField(_("key"))
    # sha256 of the key: how a webhook finds its account without decrypting every key.
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    refused_count = models.PositiveIntegerField(_("refused webhook calls"), default=0)
    refused_last_at = models.DateTimeField(_("last refused call"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    rotated_at = models.DateTimeField(_("key changed"), null=True, blank=True)

    class Meta:
        verbose_name = _("pipeline key")
        verbose_name_plural = _("pipeline keys")

    def __str__(self):
        return str(_("pipeline key of %(account)s") % {"account": self.account})


class PipelineEventState(models.TextChoices):
    PENDING = "pending", _("waiting to be read")
    READING = "reading", _("being read")
    SENT = "sent", _("SMS accepted")
    REFUSED = "refused", _("SMS refused")
    NO_PHONE = "no_phone", _("no phone")
    NOT_FOUND = "not_found", _("lead not found")
    FAILED = "failed", _("amoCRM could not be read")


class PipelineEvent(SmsInboxRecord):
    """One digital-pipeline webhook call that asks for an SMS: recorded before amoCRM gets its 200 (it never
    retries), read in batches by a worker (crm.pipeline). The same (account, lead, stage, event time) is
    recorded once, so a repeated call sends nothing more."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="pipeline_events",
                                verbose_name=_("account"), db_index=False)  # the unique constraint leads with it
    lead_id = models.BigIntegerField(_("lead ID"))
    status_id = models.BigIntegerField(_("stage ID"))
    pipeline_id = models.BigIntegerField(_("pipeline ID"), null=True, blank=True)
    event_type = models.PositiveSmallIntegerField(_("event type"))
    event_time = models.BigIntegerField(_("event time"), help_text=_("Unix time, as amoCRM sends it"))
    # The action's settings when it fired: its own text and/or one of the account's templates.
    text = models.TextField(_("action text"), blank=True)
    template_id = models.BigIntegerField(_("template ID"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=10, choices=PipelineEventState.choices,
                             default=PipelineEventState.PENDING)
    attempts = models.PositiveSmallIntegerField(_("reads"), default=0)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)

    class Meta:
        verbose_name = _("pipeline event")
        verbose_name_plural = _("pipeline events")
        constraints = [
            models.UniqueConstraint(fields=["account", "lead_id", "status_id", "event_time"],
                                    name="pipelineevent_once"),
        ]
        indexes = [
            # The worker's claim and the sweeper: an account's open events, oldest first.
            models.Index(fields=["state", "account", "id"], name="pipelineevent_open_idx",
                         condition=Q(state__in=["pending", "reading"])),
            models.Index(fields=["received_at"], name="pipelineevent_received_idx"),  # retention
        ]

    def __str__(self):
        return str(_("lead %(lead)s → stage %(stage)s (%(state)s)")
                   % {"lead": self.lead_id, "stage": self.status_id, "state": self.get_state_display()})


# --- Salesbot's "send SMS" step (issue 17) ------------------------------------------------------------------
class SalesbotState(models.TextChoices):
    PENDING = "pending", _("waiting to be read")
    SENDING = "sending", _("being sent")
    WAITING = "waiting", _("waiting for the provider")
    CONTINUING = "continuing", _("continuing the bot")
    DONE = "done", _("bot continued")
    GAVE_UP = "gave_up", _("bot not continued")


class SalesbotExit(models.TextChoices):
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")


class SalesbotRequest(SmsInboxRecord):
    """One `widget_request` of a Salesbot "send SMS" step: recorded before amoCRM gets its 200, then (crm.salesbot,
    on the CRM lane) the SMS sent through crm.sending and the bot continued through the API with exit "sent"
    once the provider took the SMS, "failed" when it refused it, the send was refused, or the wait ran out.

    The bot's continue id is unique per account: the same request twice sends one SMS and continues once."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="salesbot_requests",
                                verbose_name=_("account"), db_index=False)  # the unique constraint leads with it
    bot_kind = models.CharField(_("bot kind"), max_length=12, default="salesbot")  # salesbot | marketingbot
    bot_id = models.BigIntegerField(_("bot ID"))
    continue_id = models.BigIntegerField(_("continue ID"))
    entity_type = models.CharField(_("amoCRM entity"), max_length=10)
    entity_id = models.BigIntegerField(_("amoCRM entity ID"))
    # The step's settings: its own text (amoCRM has filled in its markers) and/or one of the account's templates.
    text = models.TextField(_("step text"), blank=True)
    template_id = models.BigIntegerField(_("template ID"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=10, choices=SalesbotState.choices, default=SalesbotState.PENDING)
    exit = models.CharField(_("exit"), max_length=6, choices=SalesbotExit.choices, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    received_at = models.DateTimeField(_("received"))
    deadline_at = models.DateTimeField(_("decide by"))  # past it, still no answer from the provider: "failed"
    next_at = models.DateTimeField(_("next look"))  # the sweeper wakes a request whose look is overdue

    class Meta:
        verbose_name = _("Salesbot request")
        verbose_name_plural = _("Salesbot requests")
        constraints = [
            models.UniqueConstraint(fields=["account", "continue_id"], name="salesbotrequest_once"),
        ]
        indexes = [
            models.Index(fields=["next_at"], name="salesbotrequest_open_idx",
                         condition=Q(state__in=["pending", "sending", "waiting", "continuing"])),
            models.Index(fields=["account", "-received_at"], name="salesbotrequest_account_idx"),
        ]

    def __str__(self):
        return str(_("bot %(bot)s/%(step)s (%(state)s)")
                   % {"bot": self.bot_id, "step": self.continue_id, "state": self.get_state_display()})


# --- sending to a selected list of leads or contacts (issue 17) -----------------------------------------------
class ListSendState(models.TextChoices):
    PENDING = "pending", _("waiting to start")
    RUNNING = "running", _("sending")
    DONE = "done", _("done")
    CANCELLED = "cancelled", _("cancelled")
    FAILED = "failed", _("stopped: amoCRM could not be read")


class ListSend(InboxRecord):
    """An SMS to each of the leads or contacts selected in an amoCRM list (llist, clist): up to 500 per send.
    A worker (crm.lists, on the CRM lane) reads them 250 at a time through the amoCRM client, picks each one's
    phone by the pipeline's rule and sends through crm.sending (kind list, a note per SMS); `position` says how
    many are done, so a cancel stops it between batches and a repeated batch finds its first sends by key."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="list_sends",
                                verbose_name=_("account"), db_index=False)  # the index below leads with it
    amo_user_id = models.BigIntegerField(_("amoCRM user"), null=True, blank=True)
    entity_type = models.CharField(_("amoCRM entity"), max_length=10, choices=[(t, t) for t in ENTITY_TYPES])
    entity_ids = models.JSONField(_("amoCRM entity IDs"), default=list)
    template = models.ForeignKey(SmsTemplate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 verbose_name=_("template"))
    text = models.TextField(_("text"), blank=True)  # the template's text when it started, or the sender's own
    state = models.CharField(_("state"), max_length=10, choices=ListSendState.choices,
                             default=ListSendState.PENDING)
    cancel_requested = models.BooleanField(_("cancel asked for"), default=False)
    position = models.PositiveIntegerField(_("done"), default=0)
    sent = models.PositiveIntegerField(_("SMS accepted"), default=0)
    no_phone = models.PositiveIntegerField(_("without a phone"), default=0)
    not_found = models.PositiveIntegerField(_("not found in amoCRM"), default=0)
    refused = models.PositiveIntegerField(_("SMS refused"), default=0)
    refused_by = models.JSONField(_("refusals by reason"), default=dict, blank=True)
    reads = models.PositiveSmallIntegerField(_("failed reads"), default=0)
    created_at = models.DateTimeField(_("created"))

    class Meta:
        verbose_name = _("list send")
        verbose_name_plural = _("list sends")
        indexes = [
            models.Index(fields=["account", "-created_at"], name="listsend_account_idx"),
            models.Index(fields=["created_at"], name="listsend_open_idx", condition=Q(state__in=["pending", "running"])),
        ]

    def __str__(self):
        return str(_("%(entity_type)s × %(count)d (%(state)s)")
                   % {"entity_type": self.entity_type, "count": len(self.entity_ids), "state": self.get_state_display()})
