"""Business logic of accounts: integrations, account registration, provider routes."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Account, Integration, ProviderRoute
from .tokens import TokenClaims

logger = logging.getLogger(__name__)

# last_seen_at is refreshed at most this often, so the hot path does not write per request.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


def integration_sync_from_settings() -> Integration | None:
    """Create or update the deployment's own integration from AMO_CLIENT_ID/SECRET/REDIRECT_URI."""
    if not settings.AMO_CLIENT_ID:
        return None
    if not (settings.AMO_CLIENT_SECRET and settings.AMO_REDIRECT_URI):
        raise ImproperlyConfigured("AMO_CLIENT_SECRET and AMO_REDIRECT_URI must be set with AMO_CLIENT_ID.")
    try:
        client_uuid = uuid.UUID(settings.AMO_CLIENT_ID)
    except ValueError as exc:
        raise ImproperlyConfigured("AMO_CLIENT_ID must be the integration's UUID.") from exc
    integration, created = Integration.objects.get_or_create(
        client_uuid=client_uuid,
        defaults={
            "name": "amoCRM (from environment)",
            "client_secret": settings.AMO_CLIENT_SECRET,
            "redirect_uri": settings.AMO_REDIRECT_URI,
        },
    )
    if not created and (
        integration.client_secret != settings.AMO_CLIENT_SECRET or integration.redirect_uri != settings.AMO_REDIRECT_URI
    ):
        integration.client_secret = settings.AMO_CLIENT_SECRET
        integration.redirect_uri = settings.AMO_REDIRECT_URI
        integration.save(update_fields=["client_secret", "redirect_uri", "updated_at"])
    return integration


def account_register(*, claims: TokenClaims) -> Account:
    """The account a valid token speaks for; created on its first token, kept current after."""
    now = timezone.now()
    account = Account.objects.filter(integration_id=claims.integration_id, amo_id=claims.account_id).first()
    if account is None:
        try:
            with transaction.atomic():
                account = Account.objects.create(
                    integration_id=claims.integration_id,
                    amo_id=claims.account_id,
                    subdomain=claims.subdomain,
                    domain=claims.domain,
                )
            logger.info("account registered", extra={"account_id": account.pk, "amo_id": claims.account_id})
            return account
        except IntegrityError:  # registered concurrently by another request
            account = Account.objects.get(integration_id=claims.integration_id, amo_id=claims.account_id)
    changes = {}
    if account.subdomain != claims.subdomain or account.domain != claims.domain:
        changes.update(subdomain=claims.subdomain, domain=claims.domain)  # the account was renamed
    if now - account.last_seen_at > LAST_SEEN_RESOLUTION:
        changes["last_seen_at"] = now
    if changes:
        Account.objects.filter(pk=account.pk).update(**changes)
        for field, value in changes.items():
            setattr(account, field, value)
    return account


def route_save(
    *,
    account: Account,
    provider: str,
    credentials: dict | None = None,
    sender: str | None = None,
    priority: int | None = None,
    is_active: bool | None = None,
    route: ProviderRoute | None = None,
) -> ProviderRoute:
    """Create a route, or update the given one. New credentials clear the broken mark."""
    from deliveries.providers import PROVIDERS

    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    if route is None:
        route = ProviderRoute(account=account, provider=provider)
    elif route.provider != provider:
        route.provider = provider
    if credentials is not None:
        merged = dict(route.credentials or {}) if route.pk else {}
        merged.update({k: v for k, v in credentials.items() if v not in (None, "")})
        if merged != route.credentials:
            route.credentials = merged
            route.is_broken = False
            route.broken_reason = ""
            route.broken_at = None
            route.consecutive_failures = 0
    if sender is not None:
        route.sender = sender
    if priority is not None:
        route.priority = priority
    if is_active is not None:
        route.is_active = is_active
    route.save()
    return route


def route_credentials_errors(*, provider: str, credentials: dict, route: ProviderRoute | None = None) -> list[str]:
    """What is wrong with credentials for a provider, checked against its declared fields: unknown
    names, and required fields that neither these credentials nor the existing route provide."""
    from deliveries.providers import PROVIDERS

    if provider not in PROVIDERS:
        return [f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}"]
    fields = {f.name: f for f in PROVIDERS[provider].credential_fields}
    errors = [f"{name!r} is not a credential of {provider} (expected: {', '.join(fields) or 'none'})"
              for name in credentials if name not in fields]
    have = dict(route.credentials or {}) if route is not None and route.provider == provider else {}
    have.update({k: v for k, v in credentials.items() if v not in (None, "")})
    errors += [f"{name!r} is required for {provider}" for name, declared in fields.items()
               if declared.required and not have.get(name)]
    return errors
