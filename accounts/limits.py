"""An account's abuse limits: the operator's ceilings and the account's own, tighter choices; the
caps of SMS sent from amoCRM (`crm_*`, counted by crm.caps) are limits of the same kind.

The operator's ceilings are the deployment defaults (settings), and per account what staff set in the
admin (AccountCeilings), including the non-geographic calling codes an account may reach. The
account's own choices (AccountOwnLimits, through the account API) may only tighten them;
`limits_for` gives what deliveries.guard applies: the tighter of the two, so a choice stored before
a ceiling was lowered cannot loosen it either.
"""

import threading
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .models import CRM_CAP_FIELDS, LIMIT_NUMBER_FIELDS, Account, AccountCeilings, AccountOwnLimits

LIMITS_CACHE_SECONDS = 10.0

# Caps: lower is tighter, 0 = no limit. Durations: longer is tighter (a longer cooldown, a longer window
# over which distinct numbers under a prefix are counted).
CAP_FIELDS = ("phone_per_hour", "phone_per_day", "account_per_hour", "account_per_day", "prefix_distinct_max",
              *CRM_CAP_FIELDS)
DURATION_FIELDS = ("phone_cooldown_seconds", "prefix_window_seconds")


@dataclass(frozen=True)
class Limits:
    phone_cooldown_seconds: int
    phone_per_hour: int
    phone_per_day: int
    account_per_hour: int
    account_per_day: int
    prefix_distinct_max: int
    prefix_window_seconds: int
    allowed_countries: frozenset[str] | None  # None: any country
    # SMS people send from amoCRM (crm.caps counts them): per account per hour and day, per amoCRM user per hour.
    crm_per_hour: int = 0
    crm_per_day: int = 0
    crm_user_per_hour: int = 0
    # Non-geographic calling codes (+882, ...) the operator allows for this account; only ever a ceiling.
    allowed_calling_codes: frozenset[int] = frozenset()


def countries_parse(raw: str) -> frozenset[str] | None:
    """"RU, kz;BY" -> {"RU", "KZ", "BY"}; "*" -> None (any country)."""
    raw = raw.strip()
    if raw == "*":
        return None
    return frozenset(code.strip().upper() for code in raw.replace(";", ",").split(",") if code.strip())


def calling_codes_parse(raw: str) -> frozenset[int]:
    """"+882, 883" -> {882, 883} (validated on input: accounts.forms)."""
    codes = (code.strip().lstrip("+") for code in raw.replace(";", ",").split(","))
    return frozenset(int(code) for code in codes if code.isascii() and code.isdigit())


def default_limits(account: Account) -> Limits:
    """The deployment's defaults (settings): the operator's ceilings where staff set nothing else."""
    countries = settings.SMSGATE_DEFAULT_COUNTRIES.get(account.domain, "*")
    return Limits(
        phone_cooldown_seconds=settings.SMSGATE_LIMIT_PHONE_COOLDOWN,
        phone_per_hour=settings.SMSGATE_LIMIT_PHONE_HOUR,
        phone_per_day=settings.SMSGATE_LIMIT_PHONE_DAY,
        account_per_hour=settings.SMSGATE_LIMIT_ACCOUNT_HOUR,
        account_per_day=settings.SMSGATE_LIMIT_ACCOUNT_DAY,
        prefix_distinct_max=settings.SMSGATE_LIMIT_PREFIX_DISTINCT,
        prefix_window_seconds=settings.SMSGATE_LIMIT_PREFIX_WINDOW,
        allowed_countries=countries_parse(countries),
        crm_per_hour=settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR,
        crm_per_day=settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY,
        crm_user_per_hour=settings.SMSGATE_CRM_LIMIT_USER_HOUR,
    )


def ceilings_for(account: Account) -> Limits:
    """The operator's ceilings for the account: the defaults, with what staff set for it on top."""
    limits = default_limits(account)
    stored = AccountCeilings.objects.filter(account_id=account.pk).first()
    if stored is None:
        return limits
    values = {name: getattr(stored, name) for name in LIMIT_NUMBER_FIELDS if getattr(stored, name) is not None}
    if stored.allowed_countries.strip():
        values["allowed_countries"] = countries_parse(stored.allowed_countries)
    values["allowed_calling_codes"] = calling_codes_parse(stored.allowed_calling_codes)
    return replace(limits, **values)


def _tighter_cap(own: int | None, ceiling: int) -> int:
    if own is None or own == 0:  # 0 (no limit) is never tighter; the API refuses it under a ceiling
        return ceiling
    return own if ceiling == 0 else min(own, ceiling)


def limits_tighten(ceilings: Limits, own: AccountOwnLimits | None) -> Limits:
    """What the guard applies: the account's own choice where it is tighter, else the ceiling."""
    if own is None:
        return ceilings
    values = {name: _tighter_cap(getattr(own, name), getattr(ceilings, name)) for name in CAP_FIELDS}
    for name in DURATION_FIELDS:
        value = getattr(own, name)
        values[name] = getattr(ceilings, name) if value is None else max(value, getattr(ceilings, name))
    countries = ceilings.allowed_countries
    if own.allowed_countries.strip():
        chosen = countries_parse(own.allowed_countries)
        if chosen is not None:
            countries = chosen if countries is None else chosen & countries
    return replace(ceilings, **values, allowed_countries=countries)


def own_limits_errors(*, ceilings: Limits, values: dict) -> dict[str, list]:
    """Field errors for the account's own choices that would loosen the operator's ceilings.

    `values` as the account API validated them (None: back to the ceiling; countries a sorted list).
    """
    errors = {}
    for name in CAP_FIELDS:
        value, ceiling = values.get(name), getattr(ceilings, name)
        if value is None or ceiling == 0:
            continue
        if value == 0:
            errors[name] = [_("0 (no limit) is not allowed: the limit set for this account is %(ceiling)d.")
                            % {"ceiling": ceiling}]
        elif value > ceiling:
            errors[name] = [_("At most %(ceiling)d: the limit set for this account.") % {"ceiling": ceiling}]
    for name in DURATION_FIELDS:
        value, ceiling = values.get(name), getattr(ceilings, name)
        if value is not None and value < ceiling:
            errors[name] = [_("At least %(ceiling)d seconds: the limit set for this account.") % {"ceiling": ceiling}]
    codes = values.get("allowed_countries")
    if codes and ceilings.allowed_countries is not None:
        outside = [code for code in codes if code == "*" or code not in ceilings.allowed_countries]
        if outside:
            errors["allowed_countries"] = [
                _("Only these countries are allowed for this account: %(allowed)s.")
                % {"allowed": ", ".join(sorted(ceilings.allowed_countries)) or "—"}]
    return errors


_limits_cache: dict[int, tuple[float, Limits]] = {}
_limits_lock = threading.Lock()


def clear_limits_cache():
    with _limits_lock:
        _limits_cache.clear()


def forget_limits(account_id: int):
    """This process reads the account's limits afresh (other processes within LIMITS_CACHE_SECONDS)."""
    with _limits_lock:
        _limits_cache.pop(account_id, None)


def limits_for(account: Account) -> Limits:
    """The limits the guard applies to the account now (cached a few seconds)."""
    now = time.monotonic()
    with _limits_lock:
        hit = _limits_cache.get(account.pk)
    if hit and hit[0] > now:
        return hit[1]
    limits = limits_tighten(ceilings_for(account), AccountOwnLimits.objects.filter(account_id=account.pk).first())
    with _limits_lock:
        if len(_limits_cache) > 10_000:
            _limits_cache.clear()
        _limits_cache[account.pk] = (now + LIMITS_CACHE_SECONDS, limits)
    return limits


