"""Admin forms of accounts whose secrets are write-only: a stored secret is never rendered, an empty
input keeps it."""

from django import forms
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from phonenumbers import SUPPORTED_REGIONS

from smsgate.phones import NON_GEOGRAPHIC_CALLING_CODES
from .models import LIMIT_NUMBER_FIELDS, AccountCeilings, Integration



class SecretInput(forms.PasswordInput):
    """A password input that never renders a value, not even the one just posted."""

    def __init__(self, attrs=None):
        super().__init__(attrs={"autocomplete": "new-password", **(attrs or {})}, render_value=False)


class IntegrationForm(forms.ModelForm):
    redirect_uri = forms.URLField(label=capfirst(_("redirect URI")), max_length=500, assume_scheme="https")
    new_client_secret = forms.CharField(
        label=_("secret key"), required=False, strip=False, widget=SecretInput(), max_length=500,
        help_text=_("From amoCRM's developer cabinet. Stored encrypted; leave empty to keep the stored one."),
    )

    class Meta:
        model = Integration
        fields = ("name", "client_uuid", "redirect_uri", "is_active")

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("new_client_secret"):
            self.add_error("new_client_secret", _("Enter the integration's secret key."))
        return cleaned

    def save(self, commit=True):
        if self.cleaned_data.get("new_client_secret"):
            self.instance.client_secret = self.cleaned_data["new_client_secret"]
        return super().save(commit)


class AccountCeilingsForm(forms.ModelForm):
    """The operator's abuse-limit ceilings of one account in the admin: empty = the deployment
    default, 0 = no limit. The account may only tighten them through the account API."""

    class Meta:
        model = AccountCeilings
        fields = [*LIMIT_NUMBER_FIELDS, "allowed_countries", "allowed_calling_codes"]

    def clean_allowed_countries(self):
        raw = self.cleaned_data["allowed_countries"].strip()
        if raw in ("", "*"):
            return raw
        codes = sorted({code.strip().upper() for code in raw.replace(";", ",").split(",") if code.strip()})
        unknown = [code for code in codes if code not in SUPPORTED_REGIONS]
        if unknown:
            raise forms.ValidationError(_("Unknown country codes: %(codes)s.") % {"codes": ", ".join(unknown)})
        return ",".join(codes)

    def clean_allowed_calling_codes(self):
        entered = {code.strip().lstrip("+") for code in self.cleaned_data["allowed_calling_codes"].replace(";", ",")
                   .split(",") if code.strip()}
        wrong = sorted(code for code in entered
                       if not (code.isascii() and code.isdigit()) or int(code) not in NON_GEOGRAPHIC_CALLING_CODES)
        if wrong:
            known = ", ".join(f"+{code}" for code in sorted(NON_GEOGRAPHIC_CALLING_CODES))
            raise forms.ValidationError(_("Not a non-geographic calling code: %(codes)s. These are: %(known)s.")
                                        % {"codes": ", ".join(wrong), "known": known})
        return ",".join(str(code) for code in sorted(int(code) for code in entered))
