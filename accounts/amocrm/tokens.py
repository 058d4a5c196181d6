"""The account's OAuth pair for amoCRM's API: refreshed before it expires, one process at a time.

A refresh token works once, so only one worker may spend it: a conditional UPDATE takes a lease, the
call to amoCRM runs outside any transaction, and the new pair is written under a row lock in one
transaction, only if the stored refresh token is still the one we spent.
"""

import logging
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import AmoToken
from . import oauth

logger = logging.getLogger(__name__)

REFRESH_LEASE = timedelta(seconds=60)  # longer than a refresh call may take (oauth.REFRESH_TIMEOUT)


def amo_token_refresh(*, account_id: int) -> bool:
    """Swap the account's token pair for a new one before it expires. True when a new pair is stored.

    A refresh token works once, so only one worker may spend it: a conditional UPDATE takes a
    lease, the call to amoCRM runs outside any transaction, and the new pair is written under a
    row lock in one transaction, only if the stored refresh token is still the one we spent.
    """
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
        pair = oauth.token_refresh(account_host=account.host, client_id=str(integration.client_uuid),
                                    client_secret=integration.client_secret, redirect_uri=integration.redirect_uri,
                                    refresh_token=spent)
    except (oauth.AmoOAuthError, oauth.AmoUnavailable) as exc:
        refused = isinstance(exc, oauth.AmoOAuthError)
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
