import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from routes.models import ProviderRoute


class DeliveryKind(models.TextChoices):
    SYSTEM = "system", _("system SMS")
    TEST = "test", _("test SMS")
    BULK = "bulk", _("bulk SMS")
    # Sent from amoCRM itself (crm app), on their own lane (queue sms-crm): never delay login codes.
    CRM = "crm", _("SMS from a card")  # a person in amoCRM: the card panel or the card's feed
    PIPELINE = "pipeline", _("pipeline SMS")  # a digital-pipeline stage's action
    SALESBOT = "salesbot", _("Salesbot SMS")
    LIST = "list", _("SMS to a list")  # a send to leads or contacts selected in a list


CRM_KINDS = frozenset({DeliveryKind.CRM, DeliveryKind.PIPELINE, DeliveryKind.SALESBOT, DeliveryKind.LIST})


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    DELIVERED = "delivered", _("delivered")
    UNDELIVERED = "undelivered", _("undelivered")
    EXPIRED = "expired", _("expired")
    REJECTED = "rejected", _("rejected")
    FAILED = "failed", _("failed")
    UNKNOWN = "unknown", _("unknown")


FINAL_STATUSES = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.EXPIRED,
        DeliveryStatus.REJECTED,
        DeliveryStatus.FAILED,
    }
)

# Reports only move a delivery up this ladder; the first final status wins.
STATUS_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.SENDING: 10,
    DeliveryStatus.UNKNOWN: 20,
    DeliveryStatus.SENT: 40,
    **{status: 100 for status in FINAL_STATUSES},
}

_S = DeliveryStatus
# Every status change a delivery may make, and who makes it. deliveries.services.status applies them
# (and only it): a change not listed here changes nothing.
TRANSITIONS: dict[str, frozenset[str]] = {
    # a worker claims it; it expires unsent; staff cancel it (failed); a report about an earlier
    # attempt arrives while a retry waits (sent, unknown or final).
    _S.PENDING: frozenset({_S.SENDING, _S.SENT, _S.UNKNOWN, *FINAL_STATUSES}),
    # the provider's answer (sent, a final outcome, unknown: no answer), a retry scheduled or a dead
    # worker's claim given back (pending), a report racing the worker.
    _S.SENDING: frozenset({_S.PENDING, _S.SENT, _S.UNKNOWN, *FINAL_STATUSES}),
    # the provider, asked later, never got it (pending: send again), or has it (sent), or a report.
    _S.UNKNOWN: frozenset({_S.PENDING, _S.SENT, *FINAL_STATUSES}),
    # delivery reports.
    _S.SENT: frozenset(FINAL_STATUSES),
    # staff retry a failed or expired delivery.
    _S.FAILED: frozenset({_S.PENDING}),
    _S.EXPIRED: frozenset({_S.PENDING}),
    _S.DELIVERED: frozenset(),
    _S.UNDELIVERED: frozenset(),
    _S.REJECTED: frozenset(),
}


def may_follow(status: str) -> frozenset[str]:
    """The statuses a delivery in `status` may move to."""
    return TRANSITIONS[DeliveryStatus(status)]


def may_precede(status: str) -> frozenset[str]:
    """The statuses a delivery may be in to move to `status`."""
    return frozenset(source for source, targets in TRANSITIONS.items() if status in targets)


class Delivery(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="deliveries",
                                verbose_name=_("account"), db_index=False)  # (account, -created_at) serves it
    kind = models.CharField(_("kind"), max_length=10, choices=DeliveryKind.choices, default=DeliveryKind.SYSTEM)
    phone = models.CharField(_("phone"), max_length=20, help_text=_("E.164"))
    text = models.TextField(_("text"))
    encoding = models.CharField(_("encoding"), max_length=4, choices=[("gsm7", "GSM-7"), ("ucs2", "UCS-2")])
    segments = models.PositiveSmallIntegerField(_("parts"))
    status = models.CharField(_("status"), max_length=12, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    route = models.ForeignKey(ProviderRoute, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="deliveries", verbose_name=_("route"))
    provider = models.CharField(_("provider"), max_length=30, blank=True)
    provider_message_id = models.CharField(_("provider message ID"), max_length=100, blank=True)
    error_class = models.CharField(_("error class"), max_length=30, blank=True)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    error_text = models.CharField(_("error text"), max_length=300, blank=True)
    # amoCRM's token id: the idempotency key of a system SMS (one delivery per token).
    jti = models.CharField(_("token ID"), max_length=128, null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"))
    attempt_count = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # Recovery: when it was last handed to the broker (None: publishing failed, the sweeper
    # re-enqueues it) and when a worker claimed it (a stale claim means a dead worker).
    enqueued_at = models.DateTimeField(_("queued"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    # Retention: the text is redacted (its length, parts and a keyed hash kept), the phone can be hashed.
    text_length = models.PositiveIntegerField(_("text length"), null=True, blank=True)
    text_hash = models.CharField(_("text hash"), max_length=64, blank=True, db_default="")
    text_redacted_at = models.DateTimeField(_("text redacted"), null=True, blank=True)
    phone_hashed_at = models.DateTimeField(_("phone hashed"), null=True, blank=True)
    # Status polling (deliveries.poll_statuses): when to ask the provider next, and how often we did.
    next_poll_at = models.DateTimeField(_("next status poll at"), null=True, blank=True)
    poll_count = models.PositiveIntegerField(_("status polls"), default=0, db_default=0)
    # The dashboard key this delivery is counted under (deliveries.counters); NULL until counted.
    stats_key = models.CharField(_("statistics key"), max_length=160, null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        constraints = [
            models.UniqueConstraint(fields=["account", "jti"], name="delivery_jti_unique_per_account"),
        ]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="delivery_account_created_idx"),
            models.Index(fields=["status", "-created_at"], name="delivery_status_created_idx"),
            models.Index(fields=["provider", "provider_message_id"], name="delivery_provider_msg_idx"),
            # Retention jobs only ever look at rows not yet redacted / hashed.
            models.Index(fields=["finished_at"], condition=models.Q(text_redacted_at__isnull=True),
                         name="delivery_unredacted_fin_idx"),
            models.Index(fields=["created_at"], condition=models.Q(text_redacted_at__isnull=True),
                         name="delivery_unredacted_cre_idx"),
            models.Index(fields=["next_poll_at"], name="delivery_poll_due_idx",
                         condition=models.Q(status__in=["sent", "unknown"])),
            # Admin: the newest-first list and the "created" filter; an exact phone search (also the
            # account API's phone filter); the provider filter; the kind filter for the rare kinds
            # (system SMS are most rows).
            models.Index(fields=["-created_at"], name="delivery_created_idx"),
            models.Index(fields=["phone", "-created_at"], name="delivery_phone_created_idx"),
            models.Index(fields=["provider", "-created_at"], name="delivery_provider_created_idx"),
            models.Index(fields=["kind", "-created_at"], name="delivery_rare_kind_created_idx",
                         condition=~models.Q(kind="system")),
        ]
        permissions = [("view_message_text", _("Can see the unmasked text of system SMS"))]

    def __str__(self):
        return str(self.id)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class AttemptOutcome(models.TextChoices):
    IN_FLIGHT = "in_flight", _("in flight")
    SENT = "sent", _("accepted by the provider")
    RETRY = "retry", _("temporary error, will retry")
    NEXT_ROUTE = "next_route", _("route failed, trying the next")
    REJECTED = "rejected", _("rejected")
    FAILED = "failed", _("failed")
    AMBIGUOUS = "ambiguous", _("no answer: may have been sent")


class Attempt(models.Model):
    """One call to a provider for a delivery."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts",
                                 verbose_name=_("delivery"))
    route = models.ForeignKey(ProviderRoute, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="attempts", verbose_name=_("route"))
    provider = models.CharField(_("provider"), max_length=30)
    started_at = models.DateTimeField(_("started"))
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=12, choices=AttemptOutcome.choices,
                               default=AttemptOutcome.IN_FLIGHT)
    error_class = models.CharField(_("error class"), max_length=30, blank=True)
    provider_code = models.CharField(_("provider code"), max_length=50, blank=True)
    error_text = models.CharField(_("error text"), max_length=300, blank=True)
    provider_message_id = models.CharField(_("provider message ID"), max_length=100, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency, ms"), null=True, blank=True)
    raw_response = models.JSONField(_("provider reply"), null=True, blank=True)
    cost = models.DecimalField(_("cost"), max_digits=12, decimal_places=4, null=True, blank=True)
    parts = models.PositiveSmallIntegerField(_("parts billed"), null=True, blank=True)

    class Meta:
        verbose_name = _("attempt")
        verbose_name_plural = _("attempts")
        ordering = ["started_at", "id"]


class StatusEvent(models.Model):
    """A status report from a provider (webhook or poll), kept raw; `applied` says if it moved the delivery."""

    class Source(models.TextChoices):
        WEBHOOK = "webhook", _("webhook")
        POLL = "poll", _("poll")
        SYSTEM = "system", _("smsgate")

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events",
                                 verbose_name=_("delivery"))
    source = models.CharField(_("source"), max_length=10, choices=Source.choices)
    status = models.CharField(_("status"), max_length=12, choices=DeliveryStatus.choices)
    provider_code = models.CharField(_("provider code"), max_length=50, blank=True)
    error_class = models.CharField(_("error class"), max_length=30, blank=True)
    occurred_at = models.DateTimeField(_("occurred"), null=True, blank=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    applied = models.BooleanField(_("applied"), default=False)
    raw = models.JSONField(_("raw report"), null=True, blank=True)

    class Meta:
        verbose_name = _("status event")
        verbose_name_plural = _("status events")
        ordering = ["received_at", "id"]


class UnmatchedReport(models.Model):
    """A status report for a provider message id no delivery has yet: the provider can report faster
    than our worker records the id it was given. Applied as soon as the id is recorded."""

    route = models.ForeignKey(ProviderRoute, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="unmatched_reports", verbose_name=_("route"))
    provider = models.CharField(_("provider"), max_length=30)
    provider_message_id = models.CharField(_("provider message ID"), max_length=100)
    source = models.CharField(_("source"), max_length=10, choices=StatusEvent.Source.choices)
    status = models.CharField(_("status"), max_length=12, choices=DeliveryStatus.choices)
    provider_code = models.CharField(_("provider code"), max_length=50, blank=True)
    error_class = models.CharField(_("error class"), max_length=30, blank=True)
    occurred_at = models.DateTimeField(_("occurred"), null=True, blank=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)
    raw = models.JSONField(_("raw report"), null=True, blank=True)

    class Meta:
        verbose_name = _("unmatched status report")
        verbose_name_plural = _("unmatched status reports")
        ordering = ["received_at", "id"]
        indexes = [models.Index(fields=["provider", "provider_message_id"], name="unmatched_provider_msg_idx")]
# --- dashboard counters (kept by deliveries.counters) -------------------------------------------------
class DeliveryDayStat(models.Model):
    """How many deliveries created on a day are now in one state: the dashboard reads only this.

    `status` is the delivery's status, with pending and sending counted together as pending;
    `error_class` is set for unsuccessful statuses; `latency_le` is, for delivered ones, the upper
    bound in seconds of the time-to-delivered bucket (0 otherwise). `kind` is the delivery's kind
    (the owner's figures call it the source), `parts` its number of SMS parts (parts sent = the sum of
    count x parts), `route_id` the account's route that took it (0: none; a plain number, so a
    deleted route's history stays).
    """

    day = models.DateField(_("day"))
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", verbose_name=_("account"),
                                db_index=False)  # (account, day) below serves it
    kind = models.CharField(_("kind"), max_length=10, blank=True, default="", db_default="")
    parts = models.PositiveSmallIntegerField(_("parts"), default=0, db_default=0)
    route_id = models.PositiveIntegerField(_("route"), default=0, db_default=0)
    provider = models.CharField(_("provider"), max_length=30, blank=True)
    status = models.CharField(_("status"), max_length=12, choices=DeliveryStatus.choices)
    error_class = models.CharField(_("error class"), max_length=30, blank=True)
    latency_le = models.PositiveIntegerField(_("delivered within, s"), default=0)
    count = models.BigIntegerField(_("deliveries"), default=0)

    class Meta:
        verbose_name = _("daily delivery counter")
        verbose_name_plural = _("daily delivery counters")
        constraints = [
            models.UniqueConstraint(fields=["day", "account", "kind", "parts", "route_id", "provider", "status",
                                            "error_class", "latency_le"], name="delivery_day_stat_dims_key"),
        ]
        indexes = [models.Index(fields=["account", "day"], name="delivery_day_stat_account_idx")]


class DeliveryHourCount(models.Model):
    """Deliveries created per account and hour (UTC): the accounts list's "last 24 h" column."""

    hour = models.DateTimeField(_("hour"))
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", verbose_name=_("account"),
                                db_index=False)  # the unique (account, hour) serves it
    count = models.BigIntegerField(_("deliveries"), default=0)

    class Meta:
        verbose_name = _("hourly delivery counter")
        verbose_name_plural = _("hourly delivery counters")
        constraints = [models.UniqueConstraint(fields=["account", "hour"], name="delivery_hour_count_key")]


# --- the owner's alerts (deliveries.alerts) -----------------------------------------------------------------
class AlertSettings(models.Model):
    """An account's alert choices (a route's balance threshold is on routes.RouteBalanceAlert)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="+",
                                   verbose_name=_("account"))
    amo_tasks = models.BooleanField(_("alerts as amoCRM tasks"), default=False,
                                    help_text=_("Also create an amoCRM task for the account's administrator, "
                                                "at most once per alert per day."))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("alert settings")
        verbose_name_plural = _("alert settings")


class AlertTask(models.Model):
    """An alert sent to amoCRM as a task: one per account, alert and day."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+", verbose_name=_("account"),
                                db_index=False)  # the unique key serves it
    key = models.CharField(_("alert"), max_length=60)
    day = models.DateField(_("day"))
    task_id = models.BigIntegerField(_("amoCRM task ID"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("alert task")
        verbose_name_plural = _("alert tasks")
        constraints = [models.UniqueConstraint(fields=["account", "key", "day"], name="alert_task_once_a_day")]
