"""The route form of the admin: credential inputs generated from the provider registry, secrets
write-only (a stored secret is never rendered, an empty input keeps it)."""

from django import forms
from django.utils.functional import lazy
from django.utils.text import capfirst, format_lazy
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from accounts.forms import SecretInput

from .models import ProviderRoute
from .providers import PROVIDERS
from .selectors import CONSOLE, console_allowed

KEEP_HELP = _("Stored. Leave empty to keep it; type a new value to replace it.")
NOT_SET_HELP = _("Not set yet.")


def _in_language(texts: dict[str, str]) -> str:
    language = (get_language() or "en")[:2]
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


_localised = lazy(_in_language, str)


def credential_form_field_name(provider: str, name: str) -> str:
    return f"cred__{provider}__{name}"


class ProviderRouteFormBase(forms.ModelForm):
    """Provider, priority, sender, active, and one input per credential of every provider (the
    page shows those of the chosen provider). Saved through routes.services.route_save."""

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
        new_console = provider == CONSOLE and not (self.instance.pk and self.instance.provider == CONSOLE)
        if new_console and not console_allowed():
            self.add_error("provider", _("The console provider does not send SMS (it only writes them to the log); "
                                         "this deployment does not allow it (SMSGATE_ALLOW_CONSOLE_PROVIDER)."))
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


class SendTestSmsForm(forms.Form):
    phone = forms.CharField(label=_("phone"), max_length=40,
                            help_text=_("The number to send the test SMS to, e.g. +79123456789."))


