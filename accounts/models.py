from urllib.parse import urlsplit

from django.db import models
from django.utils.translation import gettext_lazy as _

from smsgate.crypto import EncryptedTextField

AMO_DOMAINS = ("amocrm.ru", "amocrm.com", "kommo.com")


class Integration(models.Model):
    """An amoCRM/Kommo integration (widget) whose one-time tokens we accept."""

    name = models.CharField(_("name"), max_length=100)
    client_uuid = models.UUIDField(_("integration ID (client_id)"), unique=True)
    client_secret = EncryptedTextField(_("secret key"))
    redirect_uri = models.URLField(_("redirect URI"), max_length=500)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("integration")
        verbose_name_plural = _("integrations")

    def __str__(self):
        return self.name or str(self.client_uuid)

    @property
    def audience(self) -> str:
        """`aud` of its tokens: scheme://host of the redirect URI (no port, no path), as amoCRM builds it."""
        parts = urlsplit(self.redirect_uri)
        return f"{parts.scheme}://{parts.hostname}"


class AmoApiStatus(models.TextChoices):
    """What amoCRM's API last answered this account (accounts.amocrm.api), shown to staff: a refusal
    of the whole account is recorded when it happens and cleared by the next successful call."""

    OK = "ok", _("ok")
    UNPAID = "unpaid", _("unpaid (402)")
    BLOCKED = "blocked", _("blocked (403)")
    UNAUTHORIZED = "unauthorized", _("not authorized (401)")


class Account(models.Model):
    """An amoCRM account, registered on its first valid token."""

    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="accounts",
                                    verbose_name=_("integration"))
    amo_id = models.BigIntegerField(_("amoCRM account ID"))
    subdomain = models.CharField(_("subdomain"), max_length=63)
    domain = models.CharField(_("domain"), max_length=20, default="amocrm.ru",
                              choices=[(d, d) for d in AMO_DOMAINS])
    is_active = models.BooleanField(_("active"), default=True)
    disabled_reason = models.CharField(_("why disabled"), max_length=200, blank=True)
    first_seen_at = models.DateTimeField(_("first seen"), auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen"), auto_now_add=True)
    amo_api_status = models.CharField(_("amoCRM API"), max_length=20, choices=AmoApiStatus.choices,
                                      default=AmoApiStatus.OK)
    amo_api_status_at = models.DateTimeField(_("amoCRM API status since"), null=True, blank=True)
    amo_api_status_reason = models.CharField(_("amoCRM API answer"), max_length=200, blank=True)
    # SMS people send from amoCRM (crm.sending) go through the account's own routes; the deployment's
    # default route is the operator's, for login codes, unless the operator allows it here.
    crm_default_route_allowed = models.BooleanField(
        _("CRM sends may use the default route"), default=False,
        help_text=_("Allow SMS sent from amoCRM (card, pipeline, Salesbot, lists) to go through the deployment's "
                    "default route when the account has no route of its own. Off: such sends are refused."))

    class Meta:
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        constraints = [
            models.UniqueConstraint(fields=["integration", "amo_id"], name="account_unique_per_integration"),
        ]
        indexes = [models.Index(fields=["subdomain"], name="account_subdomain_idx")]

    def __str__(self):
        return f"{self.subdomain}.{self.domain} ({self.amo_id})"

    @property
    def host(self) -> str:
        return f"{self.subdomain}.{self.domain}"


class AmoToken(models.Model):
    """The account's OAuth tokens for amoCRM's API, from the install (code exchange) and refreshes.

    A refresh token works once: each refresh returns a new pair, stored in the same transaction.
    `refresh_lease` keeps two workers from spending the same refresh token (see services).
    """

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="amo_token",
                                   verbose_name=_("account"))
    access_token = EncryptedTextField(_("access token"))
    refresh_token = EncryptedTextField(_("refresh token"))
    expires_at = models.DateTimeField(_("access token expires"))
    api_domain = models.CharField(_("API domain"), max_length=100, blank=True)
    obtained_at = models.DateTimeField(_("installed"), auto_now_add=True)
    refreshed_at = models.DateTimeField(_("last refreshed"), null=True, blank=True)
    refresh_lease = models.CharField(max_length=32, blank=True, editable=False)
    refresh_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    # A refresh amoCRM refused (revoked or spent token): nothing more to try until a new install.
    needs_reinstall = models.BooleanField(_("needs reinstall"), default=False)
    last_error = models.CharField(_("last refresh error"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("amoCRM OAuth token")
        verbose_name_plural = _("amoCRM OAuth tokens")
        indexes = [models.Index(fields=["expires_at"], name="amotoken_expires_idx")]

    def __str__(self):
        return f"tokens of {self.account_id}"
# Caps of SMS people send from amoCRM (crm.caps), on top of the abuse limits: per account per hour and
# per day, and per amoCRM user per hour (card sends name their user).
CRM_CAP_FIELDS = ("crm_per_hour", "crm_per_day", "crm_user_per_hour")
LIMIT_NUMBER_FIELDS = ("phone_cooldown_seconds", "phone_per_hour", "phone_per_day", "account_per_hour",
                       "account_per_day", "prefix_distinct_max", "prefix_window_seconds", *CRM_CAP_FIELDS)


class AccountCeilings(models.Model):
    """The operator's abuse-limit ceilings for one account (deliveries.guard), edited by staff in the
    admin only. Empty = the deployment default (settings); 0 = no limit. The account's own choices
    (AccountOwnLimits) may only tighten them."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="limit_ceilings",
                                   verbose_name=_("account"))
    phone_cooldown_seconds = models.PositiveIntegerField(_("cooldown per phone, s"), null=True, blank=True)
    phone_per_hour = models.PositiveIntegerField(_("SMS per phone per hour"), null=True, blank=True)
    phone_per_day = models.PositiveIntegerField(_("SMS per phone per day"), null=True, blank=True)
    account_per_hour = models.PositiveIntegerField(_("SMS per account per hour"), null=True, blank=True)
    account_per_day = models.PositiveIntegerField(_("SMS per account per day"), null=True, blank=True)
    prefix_distinct_max = models.PositiveIntegerField(
        _("distinct numbers per prefix"), null=True, blank=True,
        help_text=_("How many different numbers sharing all but the last 4 digits may get SMS within the window."))
    prefix_window_seconds = models.PositiveIntegerField(_("prefix window, s"), null=True, blank=True)
    crm_per_hour = models.PositiveIntegerField(_("CRM SMS per account per hour"), null=True, blank=True)
    crm_per_day = models.PositiveIntegerField(_("CRM SMS per account per day"), null=True, blank=True)
    crm_user_per_hour = models.PositiveIntegerField(
        _("CRM SMS per amoCRM user per hour"), null=True, blank=True,
        help_text=_("SMS one amoCRM user may send from cards per hour."))
    allowed_countries = models.CharField(
        _("allowed countries"), max_length=300, blank=True,
        help_text=_("ISO codes separated by commas (RU,KZ,BY), or * for any country. Empty: the country of the "
                    "account's domain zone (Russia for amocrm.ru)."))
    allowed_calling_codes = models.CharField(
        _("allowed non-geographic calling codes"), max_length=100, blank=True,
        help_text=_("Non-geographic calling codes (satellite and international services such as +870, +881, "
                    "+882, +883) this account may send to, separated by commas. Empty: none, every such number is "
                    "refused as a pumping target."))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("abuse limit ceilings")
        verbose_name_plural = _("abuse limit ceilings")

    def __str__(self):
        return str(_("limit ceilings of %(account)s") % {"account": self.account})


class AccountOwnLimits(models.Model):
    """The account's own abuse limits, set by its administrators through the account API: only ever
    tighter than the operator's ceilings (checked on save, and the guard applies the tighter of the
    two). Empty = the ceiling."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="own_limits",
                                   verbose_name=_("account"))
    phone_cooldown_seconds = models.PositiveIntegerField(_("cooldown per phone, s"), null=True, blank=True)
    phone_per_hour = models.PositiveIntegerField(_("SMS per phone per hour"), null=True, blank=True)
    phone_per_day = models.PositiveIntegerField(_("SMS per phone per day"), null=True, blank=True)
    account_per_hour = models.PositiveIntegerField(_("SMS per account per hour"), null=True, blank=True)
    account_per_day = models.PositiveIntegerField(_("SMS per account per day"), null=True, blank=True)
    prefix_distinct_max = models.PositiveIntegerField(_("distinct numbers per prefix"), null=True, blank=True)
    prefix_window_seconds = models.PositiveIntegerField(_("prefix window, s"), null=True, blank=True)
    crm_per_hour = models.PositiveIntegerField(_("CRM SMS per account per hour"), null=True, blank=True)
    crm_per_day = models.PositiveIntegerField(_("CRM SMS per account per day"), null=True, blank=True)
    crm_user_per_hour = models.PositiveIntegerField(
        _("CRM SMS per amoCRM user per hour"), null=True, blank=True,
        help_text=_("SMS one amoCRM user may send from cards per hour."))
    allowed_countries = models.CharField(
        _("allowed countries"), max_length=300, blank=True,
        help_text=_("ISO codes separated by commas, within the operator's list. Empty: the operator's list."))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("account's own abuse limits")
        verbose_name_plural = _("account's own abuse limits")

    def __str__(self):
        return str(_("own limits of %(account)s") % {"account": self.account})
