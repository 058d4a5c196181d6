"""Reads of routes that more than one caller needs: the send path's active routes of an account (kept
per process for a few seconds), the route of a delivery-report URL, the provider catalogue (without
`console` where the deployment does not allow it) and the routes that are a trap (console in production)."""

from django.conf import settings

from accounts.models import Account
from accounts.selectors import ACCOUNT_CACHE_SECONDS, TTLCache

from .models import ProviderRoute
from .providers import PROVIDERS
from .providers.base import Provider

_has_route_cache = TTLCache(maxsize=10_000)
_routes_cache = TTLCache(maxsize=10_000)  # the send path's active routes of an account


def forget_routes(account_id: int | None = None):
    """Drop cached reads of one account's routes (or of all): call after changing them. This process
    sees the change at once, others within ACCOUNT_CACHE_SECONDS."""
    if account_id is None:
        _has_route_cache.clear()
        _routes_cache.clear()
        return
    _has_route_cache.pop(account_id)
    _routes_cache.pop(account_id)


def account_has_active_route(*, account: Account) -> bool:
    """Whether the account has an active route; only a yes is cached (a new route counts at once)."""
    if _has_route_cache.get(account.pk):
        return True
    exists = ProviderRoute.objects.filter(account=account, is_active=True).exists()
    if exists:
        _has_route_cache.put(account.pk, True, ACCOUNT_CACHE_SECONDS)
    return exists


def routes_active(*, account: Account) -> list[ProviderRoute]:
    """The routes to try, in order: active ones by ascending priority. Read for every SMS a worker
    sends, so kept per process like the account (credentials decrypted once, not per message); the
    instances are shared between threads and only read. A route marked broken or changed elsewhere
    counts here within ACCOUNT_CACHE_SECONDS."""
    hit = _routes_cache.get(account.pk)
    if hit:
        return hit[1]
    routes = list(ProviderRoute.objects.filter(account=account, is_active=True).order_by("priority", "id"))
    _routes_cache.put(account.pk, routes, ACCOUNT_CACHE_SECONDS)
    return routes


def route_by_callback_token(*, provider: str, token: str) -> ProviderRoute | None:
    """The route a delivery-report URL /webhooks/<provider>/<token>/ belongs to (active or not:
    reports for messages it sent earlier still count)."""
    return ProviderRoute.objects.filter(callback_token=token, provider=provider).first()


CONSOLE = "console"


def console_allowed() -> bool:
    """Whether this deployment offers the `console` provider (it logs SMS instead of sending them)."""
    return bool(settings.SMSGATE_ALLOW_CONSOLE_PROVIDER)


def offered_providers() -> list[str]:
    return [slug for slug in PROVIDERS if slug != CONSOLE or console_allowed()]


def route_sends_nothing(route: ProviderRoute) -> bool:
    """A console route where the deployment does not allow it: its SMS are only logged."""
    return route.provider == CONSOLE and not console_allowed()


def provider_catalogue(*, language: str) -> list[dict]:
    """Every offered provider with the credentials it needs, labels in `language` (en fallback).

    Generic over the registry: a new provider appears here and in the widget's form by itself.
    """
    def pick(texts: dict) -> str:
        return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")

    return [
        {
            "slug": cls.slug,
            "name": cls.name,
            "supports_callbacks": bool(cls.supports_callbacks),
            "supports_balance": cls.balance is not Provider.balance,
            "credential_fields": [
                {"name": f.name, "label": pick(f.label), "help": pick(f.help) if f.help else "",
                 "secret": f.secret, "required": f.required}
                for f in cls.credential_fields
            ],
        }
        for cls in PROVIDERS.values() if cls.slug in offered_providers()
    ]
