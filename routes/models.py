"""An SMS provider account of an amoCRM account: a route its SMS can take."""

import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _

from smsgate.crypto import EncryptedJSONField
from accounts.models import Account


def new_callback_token() -> str:
    return secrets.token_urlsafe(24)


class ProviderRoute(models.Model):
    """One SMS provider account of an amoCRM account; routes are tried by ascending priority."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="routes",
                                verbose_name=_("account"))
    provider = models.CharField(_("provider"), max_length=30)
    priority = models.PositiveSmallIntegerField(_("priority"), default=10,
                                                help_text=_("Lower numbers are tried first."))
    sender = models.CharField(_("sender name"), max_length=20, blank=True)
    credentials = EncryptedJSONField(_("credentials"))
    is_active = models.BooleanField(_("active"), default=True)
    # Unguessable and per route: the provider's delivery reports come to /webhooks/<provider>/<token>/.
    callback_token = models.CharField(_("callback token"), max_length=64, unique=True,
                                      default=new_callback_token, editable=False)
    # Health: a route with repeated auth or funds failures is broken until its credentials change.
    is_broken = models.BooleanField(_("broken"), default=False)
    broken_reason = models.CharField(_("why broken"), max_length=200, blank=True)
    broken_at = models.DateTimeField(_("broken since"), null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("provider route")
        verbose_name_plural = _("provider routes")
        ordering = ["priority", "id"]
        indexes = [models.Index(fields=["account", "is_active", "priority"], name="route_account_active_idx")]
        # The model moved here from accounts; its table (and its rows) kept their name.
        db_table = "accounts_providerroute"

    def __str__(self):
        return f"{self.provider} #{self.priority}"




class RouteBalanceAlert(models.Model):
    """The owner's low-balance alert of a route: the threshold, and the balance last read from the
    provider (deliveries.alerts reads it; routes.services.route_balance_check writes it)."""

    route = models.OneToOneField(ProviderRoute, on_delete=models.CASCADE, primary_key=True,
                                 related_name="balance_alert", verbose_name=_("route"))
    below = models.DecimalField(_("alert below"), max_digits=14, decimal_places=2, null=True, blank=True)
    amount = models.DecimalField(_("last balance"), max_digits=18, decimal_places=4, null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=8, blank=True)
    checked_at = models.DateTimeField(_("balance read at"), null=True, blank=True)
    error = models.CharField(_("why the balance could not be read"), max_length=60, blank=True)

    class Meta:
        verbose_name = _("balance alert")
        verbose_name_plural = _("balance alerts")
        db_table = "routes_balance_alert"

    @property
    def is_low(self) -> bool:
        return self.below is not None and self.amount is not None and self.amount < self.below
