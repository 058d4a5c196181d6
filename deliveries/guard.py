"""Abuse guard: every send path checks here before a delivery is queued.

Policy (422, no counters), whatever the account's allowed countries say: numbers of the
non-geographic calling codes (region 001: +800 ... +979) are refused unless the operator allowed
that calling code for the account, and premium-rate, shared-cost, UAN and personal numbers are
refused (SMS pumping targets them); then the destination country must be allowed for the account.
Limits (429 with Retry-After), counted in Redis in one atomic script: a cooldown per phone, SMS per
phone per hour and per day, SMS per account per hour and per day, and a velocity check on how many
distinct numbers under one prefix (all but the last 4 digits) got SMS within a window. A token's
first accepted request is remembered by its `jti`: a replay of it counts nothing.

Which limits apply to an account (the operator's ceilings, the account's own tighter choices) is
accounts.limits' business; this module counts against them.

Counters never come from a COUNT over the deliveries table. If Redis is down the guard fails open
(the SMS is sent) and logs a warning: losing login codes is worse than a short unguarded window.
"""

import logging
import threading
import time

import redis
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from accounts.limits import Limits, limits_for
from accounts.models import Account
from accounts.tokens import MAX_LIFETIME_SECONDS

from smsgate.phones import PERSONAL_TYPES, PREMIUM_TYPES, Phone

logger = logging.getLogger(__name__)

REDIS_RETRY_AFTER_FAILURE = 5.0  # seconds the guard skips Redis after an error (no timeout per request)
PREFIX_KEEP_DIGITS = 4
# How long a token's acceptance is remembered: a token is accepted from `iat` - leeway to `exp` +
# leeway, at most MAX_LIFETIME_SECONDS apart, with a leeway of at most 120 s (accounts.tokens).
JTI_TTL_SECONDS = MAX_LIFETIME_SECONDS + 2 * 120



class GuardRefusal(Exception):
    """The request must not become an SMS. `reason` is machine-readable."""

    def __init__(self, reason: str, message, *, http_status: int, retry_after: int | None = None):
        self.reason = reason
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        super().__init__(reason)


_MESSAGES = {
    "country_not_allowed": _("SMS to this country are not allowed for this account."),
    "non_geographic_number": _("SMS to non-geographic numbers (satellite and international services such as "
                               "+870, +881, +882) are not allowed for this account."),
    "premium_number": _("SMS to premium-rate, shared-cost and UAN numbers are not allowed."),
    "personal_number": _("SMS to personal (call-forwarding) numbers are not allowed."),
    "phone_cooldown": _("An SMS was just sent to this number. Try again in a few seconds."),
    "phone_hourly_cap": _("Too many SMS to this number this hour."),
    "phone_daily_cap": _("Too many SMS to this number today."),
    "account_hourly_cap": _("This account has sent too many SMS this hour."),
    "account_daily_cap": _("This account has sent too many SMS today."),
    "prefix_velocity": _("Too many different numbers with the same prefix in a short time."),
}


# --- counters ---------------------------------------------------------------------------------------------
# KEYS: cooldown, phone-hour, phone-day, account-hour, account-day, prefix-set, jti
# ARGV: cooldown_ms, phone_hour_max, phone_day_max, account_hour_max, account_day_max, phone, prefix_max,
#       prefix_window_ms, jti_ttl_ms (0: the request has no token id)
# All checks first, then all increments: a refused request counts nothing. Windows start at the first SMS.
# A token id that was accepted before gets 'ok' again and counts nothing (amoCRM retrying, or a replay: the
# unique (account, jti) of the deliveries table then answers with the first delivery). Only acceptance is
# remembered: a refusal counted nothing, so the same token asked again is simply checked again.
_SCRIPT = """
local jti_ttl = tonumber(ARGV[9])
if jti_ttl > 0 and redis.call('EXISTS', KEYS[7]) == 1 then
  return {'ok', 0}
end
local function over(key, max)
  max = tonumber(max)
  if max <= 0 then return false end
  return tonumber(redis.call('GET', key) or '0') >= max
end
if tonumber(ARGV[1]) > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  return {'phone_cooldown', redis.call('PTTL', KEYS[1])}
end
local caps = {{KEYS[2], ARGV[2], 'phone_hourly_cap'}, {KEYS[3], ARGV[3], 'phone_daily_cap'},
              {KEYS[4], ARGV[4], 'account_hourly_cap'}, {KEYS[5], ARGV[5], 'account_daily_cap'}}
for _, cap in ipairs(caps) do
  if over(cap[1], cap[2]) then return {cap[3], redis.call('PTTL', cap[1])} end
end
local prefix_max = tonumber(ARGV[7])
if prefix_max > 0 and redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 0
   and redis.call('SCARD', KEYS[6]) >= prefix_max then
  return {'prefix_velocity', redis.call('PTTL', KEYS[6])}
end
if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
local windows = {{KEYS[2], 3600000}, {KEYS[3], 86400000}, {KEYS[4], 3600000}, {KEYS[5], 86400000}}
for _, w in ipairs(windows) do
  if redis.call('INCR', w[1]) == 1 then redis.call('PEXPIRE', w[1], w[2]) end
end
if prefix_max > 0 then
  if redis.call('SADD', KEYS[6], ARGV[6]) == 1 and redis.call('SCARD', KEYS[6]) == 1 then
    redis.call('PEXPIRE', KEYS[6], ARGV[8])
  end
end
if jti_ttl > 0 then redis.call('SET', KEYS[7], '1', 'PX', jti_ttl) end
return {'ok', 0}
"""


def _keys(account_id: int, e164: str, jti: str | None) -> list[str]:
    prefix = e164[:-PREFIX_KEEP_DIGITS]
    base = f"sg:guard:{account_id}"
    return [f"{base}:cool:{e164}", f"{base}:ph:{e164}", f"{base}:pd:{e164}", f"{base}:ah", f"{base}:ad",
            f"{base}:pfx:{prefix}", f"{base}:jti:{jti or ''}"]


def _args(limits: Limits, e164: str, jti: str | None) -> list:
    return [limits.phone_cooldown_seconds * 1000, limits.phone_per_hour, limits.phone_per_day,
            limits.account_per_hour, limits.account_per_day, e164, limits.prefix_distinct_max,
            max(limits.prefix_window_seconds, 1) * 1000, JTI_TTL_SECONDS * 1000 if jti else 0]


class RedisCounters:
    def __init__(self, url: str):
        self._client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25,
                                            health_check_interval=30)
        self._script = self._client.register_script(_SCRIPT)
        self._skip_until = 0.0

    def check_and_count(self, account_id: int, e164: str, limits: Limits, *, jti: str | None = None
                        ) -> tuple[str, int]:
        if time.monotonic() < self._skip_until:
            return "ok", 0
        try:
            reason, pttl = self._script(keys=_keys(account_id, e164, jti), args=_args(limits, e164, jti))
        except redis.RedisError as exc:
            self._skip_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE
            logger.warning("abuse guard: Redis unavailable (%s); allowing SMS unguarded for %.0f s",
                           type(exc).__name__, REDIS_RETRY_AFTER_FAILURE)
            return "ok", 0
        return (reason.decode() if isinstance(reason, bytes) else reason), int(pttl)


class LocalCounters:
    """The same rules in process memory, for development without Redis (one process only)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, object]] = {}

    def _get(self, key, now):
        hit = self._values.get(key)
        if hit and hit[0] > now:
            return hit
        self._values.pop(key, None)
        return None

    def check_and_count(self, account_id: int, e164: str, limits: Limits, *, jti: str | None = None
                        ) -> tuple[str, int]:
        cool, ph, pd, ah, ad, pfx, seen = _keys(account_id, e164, jti)
        now = time.monotonic()
        with self._lock:
            if jti and self._get(seen, now):
                return "ok", 0
            if limits.phone_cooldown_seconds > 0 and (hit := self._get(cool, now)):
                return "phone_cooldown", int((hit[0] - now) * 1000)
            for key, cap, reason in ((ph, limits.phone_per_hour, "phone_hourly_cap"),
                                     (pd, limits.phone_per_day, "phone_daily_cap"),
                                     (ah, limits.account_per_hour, "account_hourly_cap"),
                                     (ad, limits.account_per_day, "account_daily_cap")):
                hit = self._get(key, now)
                if cap > 0 and hit and hit[1] >= cap:
                    return reason, int((hit[0] - now) * 1000)
            numbers = self._get(pfx, now)
            if limits.prefix_distinct_max > 0 and numbers and e164 not in numbers[1] \
                    and len(numbers[1]) >= limits.prefix_distinct_max:
                return "prefix_velocity", int((numbers[0] - now) * 1000)
            if limits.phone_cooldown_seconds > 0:
                self._values[cool] = (now + limits.phone_cooldown_seconds, 1)
            for key, ttl in ((ph, 3600), (pd, 86400), (ah, 3600), (ad, 86400)):
                hit = self._get(key, now)
                self._values[key] = (hit[0], hit[1] + 1) if hit else (now + ttl, 1)
            if limits.prefix_distinct_max > 0:
                numbers = numbers or (now + max(limits.prefix_window_seconds, 1), set())
                numbers[1].add(e164)
                self._values[pfx] = numbers
            if jti:
                self._values[seen] = (now + JTI_TTL_SECONDS, 1)
        return "ok", 0


_counters = None
_counters_url = None
_counters_lock = threading.Lock()


def counters():
    """Redis when SMSGATE_REDIS_URL is set (shared by all processes), else process memory."""
    global _counters, _counters_url
    url = settings.SMSGATE_REDIS_URL
    if _counters is None or _counters_url != url:
        with _counters_lock:
            if _counters is None or _counters_url != url:
                _counters = RedisCounters(url) if url else LocalCounters()
                _counters_url = url
    return _counters


# --- the check -------------------------------------------------------------------------------------------
def _policy(reason: str) -> GuardRefusal:
    return GuardRefusal(reason, _MESSAGES[reason], http_status=422)


def policy_refusal(*, phone: Phone, limits: Limits) -> GuardRefusal | None:
    """Why policy refuses any SMS to this number for these limits, or None. Counts nothing."""
    if phone.non_geographic and phone.country_code not in limits.allowed_calling_codes:
        return _policy("non_geographic_number")
    if phone.number_type in PREMIUM_TYPES:
        return _policy("premium_number")
    if phone.number_type in PERSONAL_TYPES:
        return _policy("personal_number")
    # A non-geographic number the operator allowed belongs to no country of the allowlist.
    if not phone.non_geographic and limits.allowed_countries is not None \
            and phone.region not in limits.allowed_countries:
        return _policy("country_not_allowed")
    return None


def guard_policy_refusal(*, account: Account, phone: Phone) -> GuardRefusal | None:
    """The policy half of the guard alone (e.g. before staff send a stored delivery again)."""
    return policy_refusal(phone=phone, limits=limits_for(account))


def guard_check(*, account: Account, phone: Phone, jti: str | None = None) -> None:
    """Raise GuardRefusal if this SMS must not be sent; otherwise count it (once per token id)."""
    limits = limits_for(account)
    refusal = policy_refusal(phone=phone, limits=limits)
    if refusal is not None:
        raise refusal
    reason, pttl = counters().check_and_count(account.pk, phone.e164, limits, jti=jti)
    if reason != "ok":
        retry_after = max(1, -(-pttl // 1000)) if pttl > 0 else 1
        raise GuardRefusal(reason, _MESSAGES[reason], http_status=429, retry_after=retry_after)
