from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
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


class PipelineEvent(models.Model):
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
    reason = models.CharField(_("reason"), max_length=30, blank=True)  # a code: no_phone, unsorted, ...
    detail = models.CharField(_("detail"), max_length=300, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)  # as picked from amoCRM
    delivery_id = models.UUIDField(_("delivery"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("reads"), default=0)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

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
        ]

    def __str__(self):
        return f"lead {self.lead_id} → stage {self.status_id} ({self.state})"
