"""Business logic of accounts: integrations, account registration, provider routes."""

import hashlib
import hmac
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from smsgate.inputs import db_id

from . import amocrm, selectors
from .integrations import integration_sync_from_settings
from .limits import ceilings_for, forget_limits, own_limits_errors
from .models import LIMIT_NUMBER_FIELDS, Account, AccountOwnLimits, AmoToken, Integration
from .tokens import TokenClaims

logger = logging.getLogger(__name__)

# last_seen_at is refreshed at most this often, so the hot path does not write per request.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


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


# --- install lifecycle: OAuth install, token refresh, uninstall (issue 5) -------------------------
UNINSTALLED_REASON = "uninstalled in amoCRM"


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


def account_limits_save(*, account: Account, values: dict) -> AccountOwnLimits:
    """Set the account's own abuse limits (None: back to the operator's ceiling). Only the given keys
    change. An account may only tighten its ceilings: a value that would loosen one raises
    ValidationError with a message per field that names the ceiling, and nothing is saved."""
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
