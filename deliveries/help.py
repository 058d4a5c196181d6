"""The public help page the widget's `support.link` points at (amoMarket shows it on the widget's
card): what smsgate does, how to connect each provider of the catalogue, what each delivery status
and the common failure reasons mean, whom to write to. Plain HTML in Russian and English.

`/help/` speaks the visitor's language (Accept-Language, as everywhere else; amoCRM has one support
link for all users); `/help/ru/` and `/help/en/` are fixed, so the language switch is a plain link
and either version can be sent to someone.
"""

import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_safe

from deliveries.models import FINAL_STATUSES, DeliveryStatus
from routes.providers import PROVIDERS

LANGUAGES = {"ru": "Русский", "en": "English"}  # each in its own language: the switch is read by either reader
DEVELOPMENT_ONLY = {"console"}  # writes SMS to the log: never something an owner connects


@dataclass(frozen=True)
class ProviderGuide:
    site: str
    reports: str  # where the delivery-report URL goes, if anywhere


# The credentials each provider asks for come from the catalogue itself; this says where its
# delivery-report URL goes, which depends on how the provider takes it (cabinet, per message, none).
PROVIDER_GUIDES = {
    "smsru": ProviderGuide("https://sms.ru", _(
        "SMS.ru takes one report address per SMS.ru account: in the SMS.ru cabinet, open “For developers” → "
        "“Callback” and add the delivery-report URL as a handler. Without it the statuses are still "
        "learned by asking SMS.ru, only later.")),
    "smsc": ProviderGuide("https://smsc.ru", _(
        "In the SMSC.ru cabinet, open “Settings” and paste the delivery-report URL as the handler "
        "(callback) address. smsgate also asks SMSC.ru for the statuses of its messages, so deliveries "
        "are followed even without it.")),
    "smsaero": ProviderGuide("https://smsaero.ru", _(
        "Nothing to paste: smsgate gives SMS Aero the delivery-report URL with each message. smsgate "
        "also asks SMS Aero for the statuses of its messages.")),
    "twilio": ProviderGuide("https://console.twilio.com", _(
        "Nothing to paste: smsgate gives Twilio the status callback URL with each message and checks "
        "the signature of every report with your Auth Token.")),
    "devino": ProviderGuide("https://devino.ru", _(
        "Nothing to paste: Devino's HTTP API sends no delivery reports, so smsgate asks Devino for the "
        "status of each message until it is final.")),
}


def _status_meanings():
    validity_minutes = max(settings.SMSGATE_SYSTEM_SMS_VALIDITY // 60, 1)
    horizon_hours = settings.SMSGATE_REPORT_HORIZON_HOURS
    return [
        (DeliveryStatus.PENDING, _("Accepted and recorded, waiting to be sent: just received, or waiting for "
                                   "another try after a temporary error of the provider.")),
        (DeliveryStatus.SENDING, _("Being handed to the provider right now.")),
        (DeliveryStatus.SENT, _("The provider accepted the SMS; the report from the mobile operator has not "
                                "come yet.")),
        (DeliveryStatus.DELIVERED, _("The operator confirmed that the phone received the SMS.")),
        (DeliveryStatus.UNDELIVERED, _("The operator could not deliver the SMS: the phone was off or out of "
                                       "reach for too long, the number is not in service, or the subscriber "
                                       "or the operator blocks such SMS.")),
        (DeliveryStatus.EXPIRED, _("Too late to deliver: a login code not sent within %(minutes)s minutes is "
                                   "dropped (a late code is of no use), or the operator stopped trying.")
         % {"minutes": validity_minutes}),
        (DeliveryStatus.REJECTED, _("Refused before it was sent, by smsgate's rules (limits, premium-rate "
                                    "numbers, a country the account may not send to) or by the provider (a "
                                    "wrong number, a sender name it does not allow, the text). Nothing was "
                                    "sent.")),
        (DeliveryStatus.FAILED, _("Could not be sent: no provider is connected, every connected provider "
                                  "refused it (wrong credentials, no money on the balance), or no final report "
                                  "came within %(hours)s hours.") % {"hours": horizon_hours}),
        (DeliveryStatus.UNKNOWN, _("The outcome is not known: the provider did not answer in time and may or may "
                                   "not have sent the SMS. smsgate does not send it again, so nobody gets a code "
                                   "twice; a later report from the provider still updates the status.")),
    ]


FAILURE_REASONS = [
    (("no_route",), _("No SMS provider is connected to the account (and this service has no default one), or "
                      "every connected provider is switched off or failing. Connect one in the widget's "
                      "settings.")),
    (("phone_cooldown", "phone_hourly_cap", "phone_daily_cap", "account_hourly_cap", "account_daily_cap",
      "prefix_velocity"),
     _("A limit against abuse: too many SMS to one number in a short time, too many from the account in an "
       "hour or a day, or too many different numbers with the same beginning. Such SMS are recorded as "
       "rejected and never sent. The service sets the limits; write to support if one gets in the way of "
       "normal sending.")),
    (("premium_number", "personal_number", "non_geographic_number"),
     _("Premium-rate, shared-cost and UAN numbers, personal (call-forwarding) numbers and non-geographic "
       "numbers (satellite and international services such as +881, +882) are never sent to: an SMS to them "
       "can cost much more than usual and they are used for fraud.")),
    (("country_not_allowed",),
     _("The number belongs to a country the account may not send to. The service sets the allowed "
       "countries (accounts on amocrm.ru: Russia by default); write to support to add a country.")),
    (("auth", "insufficient_funds"),
     _("The provider refused the connection's credentials, or its balance is empty. The next connected "
       "provider is tried. After such failures in a row the provider is shown as failing in the widget's "
       "settings and is left out until new credentials are saved for it; if only the balance was empty, top "
       "it up and write to support to put the provider back in use.")),
    (("invalid_recipient", "blocked_recipient", "sender_rejected", "content_rejected"),
     _("The provider refused this message: the number does not exist or cannot receive SMS, the subscriber "
       "blocked SMS, the sender name is not registered with the provider, or the text was refused.")),
]


@lru_cache(maxsize=4)
def widget_status_words(language: str) -> dict[str, str]:
    """The status names the widget shows (widget_src/i18n), so the page explains the owner's own words;
    Django's labels where the widget's files are not deployed."""
    try:
        words = json.loads((settings.BASE_DIR / "widget_src" / "i18n" / f"{language}.json").read_text("utf-8"))
        return {k: v for k, v in words.get("statuses", {}).items() if isinstance(v, str)}
    except (OSError, ValueError, AttributeError):
        return {}


def support_email() -> str:
    host = urlsplit(settings.SMSGATE_PUBLIC_URL).hostname or "localhost"
    return settings.SMSGATE_SUPPORT_EMAIL or f"support@{host}"


def _pick(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


def help_providers(language: str) -> list[dict]:
    """Every provider of the catalogue an owner can connect, with the credentials it asks for."""
    providers = []
    for slug, cls in PROVIDERS.items():
        if slug in DEVELOPMENT_ONLY:
            continue
        guide = PROVIDER_GUIDES.get(slug)
        providers.append({
            "slug": slug,
            "name": cls.name,
            "site": guide.site if guide else "",
            "fields": [{"label": _pick(f.label, language), "help": _pick(f.help, language),
                        "required": f.required, "secret": f.secret} for f in cls.credential_fields],
            "reports": guide.reports if guide else (
                _("Paste the delivery-report URL where the provider's cabinet asks for a callback or webhook "
                  "address.") if cls.supports_callbacks else
                _("Nothing to paste: smsgate asks the provider for the status of each message.")),
        })
    return providers


@require_safe
def help_page(request, language: str | None = None):
    if language is None:  # /help/: the language LocaleMiddleware picked from the request
        language = request.LANGUAGE_CODE if request.LANGUAGE_CODE in LANGUAGES else settings.LANGUAGE_CODE
    with translation.override(language):
        context = {
            "language": language,
            "languages": [{"code": code, "name": name, "url": reverse("help-language", args=[code]),
                           "current": code == language} for code, name in LANGUAGES.items()],
            "providers": help_providers(language),
            "statuses": [{"code": status.value, "label": widget_status_words(language).get(status, status.label),
                          "meaning": meaning, "final": status in FINAL_STATUSES}
                         for status, meaning in _status_meanings()],
            "reasons": [{"codes": codes, "meaning": meaning} for codes, meaning in FAILURE_REASONS],
            "support_email": support_email(),
        }
        response = render(request, "help/index.html", context)
    response["Content-Language"] = language
    return response
