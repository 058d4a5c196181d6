from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from accounts.models import Account


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
