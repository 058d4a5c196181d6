"""What of a route's secrets may be shown: secret credential values and secret-named fields cut out
of raw provider replies and route errors, wherever staff or an account see them."""

import re

from django.conf import settings

from .providers import PROVIDERS

SECRET_MARK = "•••"
# Keys whose values are secrets in any provider's request or reply.
_SECRET_NAME = re.compile(r"pass|secret|token|api_?id|api_?key|apikey|^key$|_key$|auth|signature|^sign$",
                          re.IGNORECASE)
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words and numbers


def secret_values(credentials: dict, provider: str) -> set[str]:
    """The values of a route's secret credentials (undeclared ones count as secret too)."""
    provider_class = PROVIDERS.get(provider)
    public = {f.name for f in getattr(provider_class, "credential_fields", ()) if not f.secret}
    return {str(value) for name, value in (credentials or {}).items()
            if name not in public and value not in (None, "") and len(str(value)) >= MIN_SECRET_LENGTH}


def deployment_secret_values() -> set[str]:
    credentials = settings.SMSGATE_DEFAULT_ROUTE_CREDENTIALS or {}
    return secret_values(credentials, settings.SMSGATE_DEFAULT_ROUTE)


def redact(value, secrets: set[str], replacements: dict[str, str] | None = None):
    """A copy of a JSON-like value with secret-named fields and known secret values masked, and
    each key of `replacements` replaced by its value (in keys and in texts)."""
    replacements = replacements or {}
    if isinstance(value, dict):
        return {redact(key, secrets, replacements):
                SECRET_MARK if _SECRET_NAME.search(str(key)) else redact(item, secrets, replacements)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets, replacements) for item in value]
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, SECRET_MARK)
        for plain in sorted(replacements, key=len, reverse=True):
            value = value.replace(plain, replacements[plain])
        return value
    if value is not None and not isinstance(value, bool) and str(value) in secrets:
        return SECRET_MARK
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in replacements:
        return replacements[str(value)]
    return value
