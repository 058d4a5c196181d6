"""Routes: an account's SMS provider accounts, how they are chosen, built and kept healthy.

Owns: saving, deleting and ordering routes; the route a send takes (`RouteChoice`: one of the
account's, or the deployment's default route); building a provider adapter for it; its balance and
delivery-report URL; its health (two auth or funds failures in a row mark it broken until its
credentials change; a success clears the count). May call: models, selectors, providers, accounts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account

from .models import ProviderRoute, RouteBalanceAlert
from .providers import PROVIDERS, provider_class
from .providers.base import ErrorClass, Provider, ProviderError
from .providers.http import default_client
from .selectors import forget_routes

logger = logging.getLogger(__name__)

ROUTE_PRIORITY_STEP = 10
# Route failures in a row (auth, funds) that mark a route broken.
ROUTE_BROKEN_AFTER = 2


@dataclass(frozen=True)
class RouteChoice:
    """A route to try: one of the account's, or the deployment's default route (route is None)."""

    route: ProviderRoute | None
    provider: str
    credentials: dict = field(repr=False)
    sender: str

    @classmethod
    def of(cls, route: ProviderRoute) -> RouteChoice:
        return cls(route, route.provider, route.credentials, route.sender)

    @property
    def route_id(self):
        return self.route.pk if self.route else None


def default_route() -> RouteChoice | None:
    """The deployment's default route (SMSGATE_DEFAULT_ROUTE), for accounts without a route of their own."""
    if not settings.SMSGATE_DEFAULT_ROUTE:
        return None
    return RouteChoice(None, settings.SMSGATE_DEFAULT_ROUTE, settings.SMSGATE_DEFAULT_ROUTE_CREDENTIALS,
                       settings.SMSGATE_DEFAULT_ROUTE_SENDER)


def route_choice_for(route: ProviderRoute | None, provider: str) -> RouteChoice | None:
    """The choice that sent a message through `route` (or the default route, for `provider`), to ask
    the provider about it later; None when that route is gone."""
    if route is not None:
        return RouteChoice.of(route)
    default = default_route()
    return default if default and default.provider == provider else None


def build_provider(choice: RouteChoice) -> Provider:
    cls = provider_class(choice.provider)
    return cls(credentials=choice.credentials, sender=choice.sender,
               base_url=settings.SMSGATE_PROVIDER_BASE_URLS.get(choice.provider),
               http=default_client(settings.SMSGATE_PROVIDER_TIMEOUT))


def route_balance(*, route: ProviderRoute):
    """The provider's balance for a route (a network call: never inside a transaction)."""
    return build_provider(RouteChoice.of(route)).balance()


def route_balance_check(*, route: ProviderRoute) -> RouteBalanceAlert:
    """Read a route's balance from its provider (a network call: never inside a transaction) and keep
    it for the low-balance alert, or why it could not be read."""
    alert, _created = RouteBalanceAlert.objects.get_or_create(route=route)
    try:
        balance = route_balance(route=route)
    except NotImplementedError:
        alert.error = "unsupported"
    except ProviderError as exc:
        logger.info("balance check failed", extra={"route_id": route.pk, "error_class": str(exc.error_class)})
        alert.error = str(exc.error_class)[:60]
    else:
        alert.amount, alert.currency, alert.error = balance.amount, (balance.currency or "")[:8], ""
    alert.checked_at = timezone.now()
    alert.save(update_fields=["amount", "currency", "error", "checked_at"])
    return alert


def route_balance_threshold_set(*, route: ProviderRoute, below) -> RouteBalanceAlert:
    """Set (a Decimal) or clear (None) the balance under which the owner is alerted."""
    alert, _created = RouteBalanceAlert.objects.update_or_create(route=route, defaults={"below": below})
    return alert


def route_callback_url(route: ProviderRoute) -> str:
    return f"{settings.SMSGATE_PUBLIC_URL}/webhooks/{route.provider}/{route.callback_token}/"


# --- health --------------------------------------------------------------------------------------------
def route_failed(choice: RouteChoice, exc: ProviderError):
    """Count an auth or funds failure of a route; the second in a row marks it broken. (An account's
    daily limit is not a credentials problem and clears by itself: not counted.)"""
    if choice.route is None or exc.error_class not in (ErrorClass.AUTH, ErrorClass.INSUFFICIENT_FUNDS):
        return
    ProviderRoute.objects.filter(pk=choice.route.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    ProviderRoute.objects.filter(
        pk=choice.route.pk, consecutive_failures__gte=ROUTE_BROKEN_AFTER, is_broken=False
    ).update(is_broken=True, broken_at=timezone.now(),
             broken_reason=f"{exc.error_class}: {exc.code} {exc.message}"[:200])
    forget_routes(choice.route.account_id)  # this process reads the new counts at once


@lru_cache(maxsize=64)
def _healthy_sql(count: int) -> str:
    table = connection.ops.quote_name(ProviderRoute._meta.db_table)
    return (f"UPDATE {table} SET consecutive_failures = 0 WHERE id IN ({', '.join(['%s'] * count)}) "
            f"AND consecutive_failures > 0")


def routes_healthy_statement(route_ids: list[int]) -> tuple[str, list]:
    """The statement that clears the failure count of routes that just got a message through: run with
    the send's own writes. Conditional, not read from the (cached) route: another process may have
    counted a failure."""
    return _healthy_sql(len(route_ids)), list(route_ids)


# --- saving ------------------------------------------------------------------------------------------------
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
    forget_routes(route.account_id)
    return route



def route_delete(*, route: ProviderRoute) -> None:
    """Remove a route. Its past deliveries and attempts keep their history (route set to NULL)."""
    logger.info("route deleted", extra={"account_id": route.account_id, "route_id": route.pk})
    route.delete()
    forget_routes(route.account_id)


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



def route_credentials_errors(*, provider: str, credentials: dict, route: ProviderRoute | None = None) -> list[str]:
    """What is wrong with credentials for a provider, checked against its declared fields: unknown
    names, and required fields that neither these credentials nor the existing route provide."""
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
