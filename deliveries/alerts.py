"""The account owner's alerts: a route whose balance fell under the owner's threshold, a route marked
broken, a route that sends nothing (the console provider where the deployment does not allow it),
and a delivery rate over the last 24 hours under 80 % of the 7 days before (with at least
RATE_MIN_SMS SMS in the 24 hours), read from the counters (deliveries.figures).

Optionally (AlertSettings.amo_tasks, off by default) each alert also becomes an amoCRM task for the
account's administrator through the API client, at most once per alert per day (AlertTask).
The periodic check (`alerts_check`, Celery beat every SMSGATE_ALERTS_EVERY seconds) reads the
balances of routes that have a threshold, then sends the tasks.
May call: figures, routes' selectors and services, the amoCRM API client.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import number_format
from django.utils import translation
from django.utils.translation import gettext as _

from accounts.amocrm.api import AmoAmbiguous, AmoApiError, AmoClient
from accounts.models import Account
from routes.models import ProviderRoute, RouteBalanceAlert
from routes.providers import PROVIDERS
from routes.selectors import route_sends_nothing
from routes.services import route_balance_check, route_balance_threshold_set

from .figures import delivery_rate_windows, error_class_text
from .models import AlertSettings, AlertTask

logger = logging.getLogger(__name__)

RATE_MIN_SMS = 50  # SMS in the last 24 hours before a drop in the delivery rate means anything
RATE_DROP_RATIO = 0.8  # the last 24 hours' rate under this share of the 7 days before is an alert
# The language of an account's amoCRM tasks: amocrm.ru accounts read Russian, amocrm.com and kommo.com English.
_DOMAIN_LANGUAGE = {"amocrm.ru": "ru"}


@dataclass(frozen=True)
class Alert:
    code: str  # balance_low | route_broken | route_sends_nothing | delivery_rate_drop
    key: str  # one alert of one account: once a day as an amoCRM task
    title: str
    detail: str
    route_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _route_name(route: ProviderRoute) -> str:
    provider = PROVIDERS.get(route.provider)
    name = provider.name if provider else route.provider
    return f"{name} ({route.sender})" if route.sender else name


def _broken_reason(route: ProviderRoute) -> str:
    """Why a route is broken, in plain words: routes keep "<error class>: <provider's code and text>"."""
    error_class, _colon, said = (route.broken_reason or "").partition(":")
    plain = error_class_text(error_class.strip())
    if plain is None:
        return (route.broken_reason or _("The provider refused it")).rstrip(".")
    return f"{plain} ({said.strip()})" if said.strip() else plain


def _amount(value: Decimal) -> str:
    return number_format(value, decimal_pos=2, use_l10n=True, force_grouping=True)


def account_alerts(*, account: Account, now=None) -> list[Alert]:
    """The account's alerts now, in the request's language (no network call: balances as last read)."""
    alerts = []
    routes = list(ProviderRoute.objects.filter(account=account).select_related("balance_alert")
                  .order_by("priority", "id"))
    for route in routes:
        name = _route_name(route)
        if route_sends_nothing(route):
            alerts.append(Alert("route_sends_nothing", f"console:{route.pk}",
                                _("Route %(route)s sends nothing") % {"route": name},
                                _("It uses the console provider, which only writes SMS to the service's log. "
                                  "Add a real SMS provider and delete this route."), route.pk))
        if route.is_broken:
            alerts.append(Alert("route_broken", f"broken:{route.pk}",
                                _("Route %(route)s is broken") % {"route": name},
                                _("%(reason)s. SMS skip it until its login or API key is changed.")
                                % {"reason": _broken_reason(route)},
                                route.pk))
        watch = getattr(route, "balance_alert", None)
        if watch is not None and watch.is_low:
            alerts.append(Alert("balance_low", f"balance:{route.pk}",
                                _("Low balance on %(route)s") % {"route": name},
                                _("%(amount)s %(currency)s left, under your threshold of %(below)s.")
                                % {"amount": _amount(watch.amount), "currency": watch.currency,
                                   "below": _amount(watch.below)}, route.pk))
    recent, previous = delivery_rate_windows(account=account, now=now)
    if (recent.sms >= RATE_MIN_SMS and recent.rate is not None and previous.rate is not None
            and recent.rate < RATE_DROP_RATIO * previous.rate):
        alerts.append(Alert("delivery_rate_drop", "rate",
                            _("Fewer SMS are delivered"),
                            _("Delivered in the last 24 hours: %(recent)s %%; in the 7 days before: %(previous)s %% "
                              "(%(count)s SMS in the last 24 hours).")
                            % {"recent": number_format(recent.rate * 100, decimal_pos=1),
                               "previous": number_format(previous.rate * 100, decimal_pos=1),
                               "count": recent.sms}))
    return alerts


# --- settings ----------------------------------------------------------------------------------------------
def alert_settings_of(*, account: Account) -> AlertSettings:
    return AlertSettings.objects.filter(account=account).first() or AlertSettings(account=account)


def balance_watches(*, account: Account) -> list[tuple[ProviderRoute, RouteBalanceAlert | None]]:
    routes = ProviderRoute.objects.filter(account=account).select_related("balance_alert").order_by("priority", "id")
    return [(route, getattr(route, "balance_alert", None)) for route in routes]


def alert_settings_save(*, account: Account, amo_tasks: bool | None = None,
                        thresholds: dict[int, Decimal | None] | None = None) -> AlertSettings:
    """Save the account's choices. `thresholds`: route id -> balance (None clears it); the ids must
    be the account's routes (ValueError otherwise). A new threshold's balance is read at once (a
    network call per route: this runs outside any transaction)."""
    routes = {}
    if thresholds:
        routes = {r.pk: r for r in ProviderRoute.objects.filter(account=account, pk__in=list(thresholds))}
        if set(routes) != set(thresholds):
            raise ValueError("not a route of this account")
    settings_row = alert_settings_of(account=account)
    if amo_tasks is not None:
        settings_row.amo_tasks = amo_tasks
        settings_row.save()
    for route_id, below in (thresholds or {}).items():
        watch = route_balance_threshold_set(route=routes[route_id], below=below)
        if below is not None and PROVIDERS.get(routes[route_id].provider) is not None:
            if watch.checked_at is None or timezone.now() - watch.checked_at > timedelta(minutes=5):
                route_balance_check(route=routes[route_id])
    return settings_row


# --- the periodic check ---------------------------------------------------------------------------------
def _administrator_id(client: AmoClient) -> int | None:
    """The account's first active administrator in amoCRM (None: amoCRM picks the token's user)."""
    try:
        users = client.users()
    except AmoApiError:
        return None
    for user in users:
        rights = user.get("rights") or {}
        if rights.get("is_admin") and rights.get("is_active", True) and isinstance(user.get("id"), int):
            return user["id"]
    return None


def alerts_to_amo_tasks(*, account: Account, now=None) -> int:
    """Send each of the account's alerts not sent today as an amoCRM task; how many were created."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    fresh = []
    with translation.override(_DOMAIN_LANGUAGE.get(account.domain, "en")):
        current = account_alerts(account=account, now=now)
    for alert in current:
        try:
            with transaction.atomic():
                fresh.append((AlertTask.objects.create(account=account, key=alert.key, day=today), alert))
        except IntegrityError:
            continue  # sent today already
    if not fresh:
        return 0
    client = AmoClient(account)
    responsible = _administrator_id(client)
    deadline = int((now + timedelta(days=1)).timestamp())
    tasks = [{"text": f"smsgate: {alert.title}. {alert.detail}", "complete_till": deadline,
              "request_id": f"{row.pk}", **({"responsible_user_id": responsible} if responsible else {})}
             for row, alert in fresh]
    try:
        created = client.add_tasks(tasks)
    except AmoAmbiguous:
        logger.warning("alert tasks may or may not be in amoCRM; kept as sent", extra={"account_id": account.pk})
        return 0
    except AmoApiError as exc:
        logger.warning("alert tasks not created: %s", type(exc).__name__, extra={"account_id": account.pk})
        AlertTask.objects.filter(pk__in=[row.pk for row, _alert in fresh]).delete()  # tried again next run
        return 0
    for row, _alert in fresh:
        AlertTask.objects.filter(pk=row.pk).update(task_id=created.get(str(row.pk)))
    return len(fresh)


def alerts_check() -> dict:
    """Read the balances of every active route with a threshold, then send the alert tasks of the
    accounts that asked for them. Network calls, one at a time: no transaction is open."""
    checked = tasks = 0
    watched = (RouteBalanceAlert.objects.filter(below__isnull=False, route__is_active=True,
                                                route__account__is_active=True)
               .select_related("route"))
    for watch in watched:
        route_balance_check(route=watch.route)
        checked += 1
    for settings_row in AlertSettings.objects.filter(amo_tasks=True, account__is_active=True).select_related(
            "account"):
        tasks += alerts_to_amo_tasks(account=settings_row.account)
    return {"balances": checked, "tasks": tasks}
