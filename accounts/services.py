"""Business logic of accounts: integrations, account registration, provider routes."""

import hashlib
import hmac
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from smsgate.inputs import db_id

from . import selectors
from .models import LIMIT_NUMBER_FIELDS, Account, AccountOwnLimits, AmoToken, Integration, ProviderRoute
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
    cached = selectors.account_cached(integration_id=claims.integration_id, amo_id=claims.account_id)
    if (cached is not None and cached.subdomain == claims.subdomain and cached.domain == claims.domain
            and now - cached.last_seen_at <= LAST_SEEN_RESOLUTION):
        return cached
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
    selectors.account_remember(account)
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
    selectors.forget_account(route.account_id)
    return route


# --- install lifecycle: OAuth install, token refresh, uninstall (issue 5) -------------------------
UNINSTALLED_REASON = "uninstalled in amoCRM"
REFRESH_LEASE = timedelta(seconds=60)  # longer than a refresh call may take (amocrm.REFRESH_TIMEOUT)


class InstallRefused(Exception):
    """An install or uninstall request we cannot act on; `code` is machine-readable."""

    def __init__(self, code: str, message, *, http_status: int = 400):
        self.code = code
        self.message = message
        self.http_status = http_status
        super().__init__(code)


def integration_for_oauth(*, client_id) -> Integration:
    """The integration an install or uninstall speaks for: the one named by `client_id`, or the
    only active one (amoCRM's install webhook does not always name it)."""
    if client_id:
        try:
            if not (isinstance(client_id, str) and client_id.isascii()):  # uuid.UUID() reads any script's digits
                raise ValueError(client_id)
            client_uuid = uuid.UUID(client_id)
        except ValueError:
            raise InstallRefused("unknown_integration", _("Unknown integration.")) from None
        integration = Integration.objects.filter(client_uuid=client_uuid, is_active=True).first()
        if integration is None and settings.AMO_CLIENT_ID and str(client_uuid) == settings.AMO_CLIENT_ID.lower():
            integration = integration_sync_from_settings()
    else:
        integration_sync_from_settings()
        candidates = list(Integration.objects.filter(is_active=True)[:2])
        integration = candidates[0] if len(candidates) == 1 else None
    if integration is None:
        raise InstallRefused("unknown_integration", _("Unknown integration."))
    return integration


def account_install(*, code, referer, client_id=None) -> Account:
    """Exchange an install's authorization code for tokens and record the account.

    The exchange is a network call made outside any transaction; the account and its token pair are
    then written in one short transaction. Reinstalling re-enables an account the uninstall hook
    disabled (not one staff disabled for another reason).
    """
    from . import amocrm

    host = amocrm.account_host_parse(referer)
    if host is None:
        raise InstallRefused("bad_referer", _("The referer is not an amoCRM or Kommo account address."))
    if not isinstance(code, str) or not 0 < len(code) <= 2000 or not (code.isascii() and code.isprintable()):
        raise InstallRefused("bad_code", _("The authorization code is missing or malformed."))
    integration = integration_for_oauth(client_id=client_id)
    subdomain, domain = host
    account_host = f"{subdomain}.{domain}"
    try:
        pair = amocrm.code_exchange(account_host=account_host, client_id=str(integration.client_uuid),
                                    client_secret=integration.client_secret,
                                    redirect_uri=integration.redirect_uri, code=code)
        amo_id = pair.account_id or amocrm.account_id_fetch(account_host=account_host,
                                                            access_token=pair.access_token)
    except amocrm.AmoOAuthError as exc:
        logger.warning("install code refused by amoCRM", extra={"account_host": account_host, "error": str(exc)})
        raise InstallRefused("code_refused", _("amoCRM refused the authorization code (expired or used).")) from None
    except amocrm.AmoUnavailable as exc:
        logger.warning("install code exchange failed", extra={"account_host": account_host, "error": str(exc)})
        raise InstallRefused("amocrm_unavailable", _("amoCRM did not answer; install the widget again."),
                             http_status=502) from None

    now = timezone.now()
    with transaction.atomic():
        account, created = Account.objects.select_for_update().get_or_create(
            integration=integration, amo_id=amo_id, defaults={"subdomain": subdomain, "domain": domain})
        changes = {"subdomain": subdomain, "domain": domain, "last_seen_at": now}
        if not account.is_active and account.disabled_reason == UNINSTALLED_REASON:
            changes.update(is_active=True, disabled_reason="")
        Account.objects.filter(pk=account.pk).update(**changes)
        AmoToken.objects.update_or_create(account=account, defaults={
            "access_token": pair.access_token, "refresh_token": pair.refresh_token,
            "expires_at": now + pair.lifetime, "api_domain": pair.api_domain, "refreshed_at": None,
            "refresh_lease": "", "refresh_lease_until": None, "needs_reinstall": False, "last_error": "",
        })
    selectors.forget_account(account.pk)
    account.refresh_from_db()
    logger.info("account installed", extra={"account_id": account.pk, "amo_id": amo_id, "new_account": created})
    return account


def amo_token_refresh(*, account_id: int) -> bool:
    """Swap the account's token pair for a new one before it expires. True when a new pair is stored.

    A refresh token works once, so only one worker may spend it: a conditional UPDATE takes a
    lease, the call to amoCRM runs outside any transaction, and the new pair is written under a
    row lock in one transaction, only if the stored refresh token is still the one we spent.
    """
    from . import amocrm

    lease = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        AmoToken.objects.filter(account_id=account_id, needs_reinstall=False)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
        .update(refresh_lease=lease, refresh_lease_until=now + REFRESH_LEASE)
    )
    if not claimed:
        return False
    token = AmoToken.objects.select_related("account__integration").get(account_id=account_id)
    account, integration = token.account, token.account.integration
    spent = token.refresh_token
    try:
        pair = amocrm.token_refresh(account_host=account.host, client_id=str(integration.client_uuid),
                                    client_secret=integration.client_secret, redirect_uri=integration.redirect_uri,
                                    refresh_token=spent)
    except (amocrm.AmoOAuthError, amocrm.AmoUnavailable) as exc:
        refused = isinstance(exc, amocrm.AmoOAuthError)
        AmoToken.objects.filter(pk=token.pk, refresh_lease=lease).update(
            refresh_lease="", refresh_lease_until=None, last_error=f"{type(exc).__name__}: {exc}"[:200],
            needs_reinstall=refused)
        logger.warning("token refresh failed", extra={"account_id": account_id, "refused": refused})
        return False

    with transaction.atomic():
        current = AmoToken.objects.select_for_update().get(pk=token.pk)
        if current.refresh_token != spent:  # a reinstall stored a newer pair meanwhile: keep it
            logger.warning("token pair changed during refresh; keeping the stored one",
                           extra={"account_id": account_id})
            return False
        now = timezone.now()
        current.access_token, current.refresh_token = pair.access_token, pair.refresh_token
        current.expires_at = now + pair.lifetime
        current.api_domain = pair.api_domain or current.api_domain
        current.refreshed_at = now
        current.refresh_lease, current.refresh_lease_until, current.last_error = "", None, ""
        current.save()
    logger.info("token pair refreshed", extra={"account_id": account_id})
    return True


def amo_tokens_refresh_due(*, margin: timedelta) -> int:
    """Refresh every token pair that expires within `margin`; returns how many were refreshed."""
    due = AmoToken.objects.filter(needs_reinstall=False, expires_at__lt=timezone.now() + margin)
    return sum(amo_token_refresh(account_id=account_id) for account_id in due.values_list("account_id", flat=True))


def uninstall_signature(*, client_secret: str, client_uuid: str, account_id: str) -> str:
    return hmac.new(client_secret.encode(), f"{client_uuid}|{account_id}".encode(), hashlib.sha256).hexdigest()


def account_uninstall(*, client_uuid, account_id, signature) -> Account | None:
    """amoCRM's uninstall hook: check its HMAC signature, then disable the account and drop its
    tokens (amoCRM has revoked them). None when we never saw the account; repeating is harmless."""
    if not all(isinstance(v, str) and 0 < len(v) <= 200 for v in (client_uuid, account_id, signature)):
        raise InstallRefused("bad_request", _("account_id, client_uuid and signature are required."))
    amo_id = db_id(account_id)  # ASCII digits in the bigint range ("²".isdigit() is true, int("²") fails)
    if amo_id is None:
        raise InstallRefused("bad_request", _("account_id must be a number."))
    integration = integration_for_oauth(client_id=client_uuid)
    expected = uninstall_signature(client_secret=integration.client_secret, client_uuid=client_uuid,
                                   account_id=account_id)
    if not hmac.compare_digest(expected, signature.lower().encode("ascii", "replace").decode()):
        raise InstallRefused("bad_signature", _("The signature is not valid."), http_status=403)
    with transaction.atomic():
        account = Account.objects.select_for_update().filter(integration=integration, amo_id=amo_id).first()
        if account is None:
            logger.info("uninstall of an unknown account", extra={"amo_id": amo_id})
            return None
        Account.objects.filter(pk=account.pk).update(is_active=False, disabled_reason=UNINSTALLED_REASON)
        selectors.forget_account(account.pk)
        AmoToken.objects.filter(account=account).delete()
    logger.info("account uninstalled", extra={"account_id": account.pk})
    account.refresh_from_db()
    return account


# --- routes, for the account API (issue 5) --------------------------------------------------------
ROUTE_PRIORITY_STEP = 10


def route_delete(*, route: ProviderRoute) -> None:
    """Remove a route. Its past deliveries and attempts keep their history (route set to NULL)."""
    logger.info("route deleted", extra={"account_id": route.account_id, "route_id": route.pk})
    route.delete()
    selectors.forget_account(route.account_id)


def routes_reorder(*, account: Account, route_ids: list[int]) -> list[ProviderRoute]:
    """Give the account's routes priorities 10, 20, 30 ... in the given order.

    `route_ids` must name every route of the account exactly once (anything else is a ValueError),
    so a stale page cannot silently leave a route out of the order.
    """
    with transaction.atomic():
        routes = {r.pk: r for r in ProviderRoute.objects.select_for_update().filter(account=account)}
        if len(route_ids) != len(set(route_ids)) or set(route_ids) != set(routes):
            raise ValueError("route_ids must list each of the account's routes once")
        for position, route_id in enumerate(route_ids, start=1):
            route = routes[route_id]
            if route.priority != position * ROUTE_PRIORITY_STEP:
                route.priority = position * ROUTE_PRIORITY_STEP
                route.save(update_fields=["priority", "updated_at"])
    return [routes[route_id] for route_id in route_ids]


def account_limits_save(*, account: Account, values: dict) -> AccountOwnLimits:
    """Set the account's own abuse limits (None: back to the operator's ceiling). Only the given keys
    change. An account may only tighten its ceilings: a value that would loosen one raises
    ValidationError with a message per field that names the ceiling, and nothing is saved."""
    from deliveries.guard import ceilings_for, forget_limits, own_limits_errors

    errors = own_limits_errors(ceilings=ceilings_for(account), values=values)
    if errors:
        raise ValidationError(errors)
    limits, _created = AccountOwnLimits.objects.get_or_create(account=account)
    for name in LIMIT_NUMBER_FIELDS:
        if name in values:
            setattr(limits, name, values[name])
    if "allowed_countries" in values:
        codes = values["allowed_countries"]
        limits.allowed_countries = ",".join(codes) if codes else ""
    limits.save()
    forget_limits(account.pk)
    return limits
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
