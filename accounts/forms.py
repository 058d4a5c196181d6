"""Admin forms whose secrets are write-only: a stored secret is never rendered, an empty input
keeps it. Route credential fields are generated from the provider registry."""

from django import forms
from django.utils.functional import lazy
from django.utils.text import capfirst, format_lazy
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from phonenumbers import SUPPORTED_REGIONS

from deliveries.phones import NON_GEOGRAPHIC_CALLING_CODES
from deliveries.providers import PROVIDERS

from .models import LIMIT_NUMBER_FIELDS, AccountCeilings, Integration, ProviderRoute

KEEP_HELP = _("Stored. Leave empty to keep it; type a new value to replace it.")
NOT_SET_HELP = _("Not set yet.")


def _in_language(texts: dict[str, str]) -> str:
    language = (get_language() or "en")[:2]
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


_localised = lazy(_in_language, str)


def credential_form_field_name(provider: str, name: str) -> str:
    return f"cred__{provider}__{name}"


class SecretInput(forms.PasswordInput):
    """A password input that never renders a value, not even the one just posted."""

    def __init__(self, attrs=None):
        super().__init__(attrs={"autocomplete": "new-password", **(attrs or {})}, render_value=False)


class ProviderRouteFormBase(forms.ModelForm):
    """Provider, priority, sender, active, and one input per credential of every provider (the
    page shows those of the chosen provider). Saved through accounts.services.route_save."""

    credential_fields: dict[str, list] = {}  # provider slug -> [(form field name, CredentialField)]

    class Meta:
        model = ProviderRoute
        fields = ("provider", "priority", "sender", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stored = self.instance.credentials if self.instance.pk else {}
        stored_provider = self.instance.provider if self.instance.pk else None
        for provider, fields in self.credential_fields.items():
            for form_name, spec in fields:
                form_field = self.fields[form_name]
                has_value = provider == stored_provider and stored.get(spec.name) not in (None, "")
                if spec.secret:
                    form_field.help_text = KEEP_HELP if has_value else (
                        _localised(spec.help) if spec.help else NOT_SET_HELP)
                elif has_value:
                    form_field.initial = stored[spec.name]  # not a secret: shown, and editable

    def clean(self):
        cleaned = super().clean()
        provider = cleaned.get("provider")
        if provider not in self.credential_fields:
            return cleaned
        stored = self.instance.credentials if self.instance.pk and self.instance.provider == provider else {}
        for form_name, spec in self.credential_fields.get(provider, []):
            if spec.required and not cleaned.get(form_name) and stored.get(spec.name) in (None, ""):
                self.add_error(form_name, _("This provider needs this value."))
        return cleaned

    def credentials_entered(self) -> dict:
        """The chosen provider's credentials typed into the form (empty ones keep the stored values)."""
        provider = self.cleaned_data["provider"]
        return {spec.name: self.cleaned_data.get(form_name, "")
                for form_name, spec in self.credential_fields.get(provider, [])}


def route_form_class(providers=None) -> type[ProviderRouteFormBase]:
    """The route form for the providers in the registry (generic: new providers bring their fields)."""
    providers = PROVIDERS if providers is None else providers
    attrs = {
        "provider": forms.ChoiceField(label=capfirst(_("provider")),
                                      choices=[("", "---------")] + [(slug, cls.name)
                                                                     for slug, cls in sorted(providers.items())]),
    }
    credential_fields = {}
    for slug, provider in sorted(providers.items()):
        credential_fields[slug] = []
        for spec in provider.credential_fields:
            form_name = credential_form_field_name(slug, spec.name)
            widget_attrs = {"data-provider": slug, "data-credential": spec.name}
            attrs[form_name] = forms.CharField(
                label=format_lazy("{}: {}", provider.name, _localised(spec.label)),
                required=False,
                strip=not spec.secret,
                max_length=500,
                widget=SecretInput(widget_attrs) if spec.secret else forms.TextInput(widget_attrs),
                help_text=_localised(spec.help) if spec.help else "",
            )
            credential_fields[slug].append((form_name, spec))
    attrs["credential_fields"] = credential_fields
    return type("ProviderRouteForm", (ProviderRouteFormBase,), attrs)


def credential_form_field_names(providers=None) -> list[str]:
    providers = PROVIDERS if providers is None else providers
    return [credential_form_field_name(slug, spec.name)
            for slug, provider in sorted(providers.items()) for spec in provider.credential_fields]


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


class SendTestSmsForm(forms.Form):
    phone = forms.CharField(label=_("phone"), max_length=40,
                            help_text=_("The number to send the test SMS to, e.g. +79123456789."))


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
