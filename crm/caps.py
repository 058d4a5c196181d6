"""The caps of SMS sent from amoCRM: per account per hour and per day, per amoCRM user per hour.

Which caps apply to an account is accounts.limits' business (`Limits.crm_*`: the operator's ceilings,
tightened by the account's own choices through /api/v1/limits/); this module counts against them, for a
whole batch in one atomic step: items are granted in order while every cap they fall under has room,
and only granted items are counted. Counted in Redis (shared by every process) when SMSGATE_REDIS_URL
is set, else in process memory (development). Windows start at the first SMS, like the abuse guard's.
Redis down: the caps let SMS through (logged), as the guard does; the guard's own account caps still hold.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from accounts.limits import Limits

logger = logging.getLogger(__name__)

REDIS_RETRY_AFTER_FAILURE = 5.0
KEY_PREFIX = "sg:crm:cap:"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000

MESSAGES = {
    "crm_account_hourly": _("This account has sent too many SMS from amoCRM this hour."),
    "crm_account_daily": _("This account has sent too many SMS from amoCRM today."),
    "crm_user_hourly": _("You have sent too many SMS from amoCRM this hour."),
}


@dataclass(frozen=True)
class CapVerdict:
    reason: str | None  # None: granted (and counted); else one of MESSAGES' keys
    retry_after: int | None = None  # seconds until the cap's window ends


# KEYS: account-hour, account-day, then one hour key per distinct user of the batch
# ARGV: account_hour_max, account_day_max, user_hour_max, n, then per item its user key's index (0: none)
# Returns per item a reason ('ok' or a cap), then the PTTL of every key.
_SCRIPT = """
local ah_max, ad_max, uh_max, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local counts = {}
for i = 1, #KEYS do counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
local before = {}
for i = 1, #KEYS do before[i] = counts[i] end
local out = {}
for item = 1, n do
  local u = tonumber(ARGV[4 + item])
  local reason = 'ok'
  if ah_max > 0 and counts[1] >= ah_max then reason = 'crm_account_hourly'
  elseif ad_max > 0 and counts[2] >= ad_max then reason = 'crm_account_daily'
  elseif u > 0 and uh_max > 0 and counts[u] >= uh_max then reason = 'crm_user_hourly' end
  if reason == 'ok' then
    counts[1] = counts[1] + 1
    counts[2] = counts[2] + 1
    if u > 0 then counts[u] = counts[u] + 1 end
  end
  out[item] = reason
end
for i = 1, #KEYS do
  if counts[i] > before[i] then
    redis.call('INCRBY', KEYS[i], counts[i] - before[i])
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], i == 2 and 86400000 or 3600000) end
  end
end
for i = 1, #KEYS do out[n + i] = redis.call('PTTL', KEYS[i]) end
return out
"""


def _keys(account_id: int, users: list[int]) -> list[str]:
    base = f"{KEY_PREFIX}{account_id}"
    return [f"{base}:h", f"{base}:d", *[f"{base}:u:{user}:h" for user in users]]


def _plan(user_ids: list[int | None]) -> tuple[list[int], list[int]]:
    """The batch's distinct users, and per item the index of its user's key (3, 4, ...; 0: no user)."""
    users: list[int] = []
    index = []
    for user in user_ids:
        if user is None:
            index.append(0)
            continue
        if user not in users:
            users.append(user)
        index.append(3 + users.index(user))
    return users, index


def _verdicts(reasons: list[str], pttls: list[int], index: list[int]) -> list[CapVerdict]:
    out = []
    for reason, key in zip(reasons, index, strict=True):
        if reason == "ok":
            out.append(CapVerdict(None))
            continue
        pttl = pttls[{"crm_account_hourly": 0, "crm_account_daily": 1}.get(reason, key - 1)]
        out.append(CapVerdict(reason, max(1, -(-pttl // 1000)) if pttl > 0 else 1))
    return out


class RedisCaps:
    def __init__(self, url: str):
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_SCRIPT)
        self._skip_until = 0.0

    def take(self, account_id: int, limits: Limits, user_ids: list[int | None]) -> list[CapVerdict]:
        if time.monotonic() < self._skip_until:
            return [CapVerdict(None)] * len(user_ids)
        users, index = _plan(user_ids)
        try:
            raw = self._script(keys=_keys(account_id, users),
                               args=[limits.crm_per_hour, limits.crm_per_day, limits.crm_user_per_hour,
                                     len(user_ids), *index])
        except redis.RedisError as exc:
            self._skip_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE
            logger.warning("CRM caps: Redis unavailable (%s); not capping for %.0f s", type(exc).__name__,
                           REDIS_RETRY_AFTER_FAILURE)
            return [CapVerdict(None)] * len(user_ids)
        reasons = [r.decode() if isinstance(r, bytes) else r for r in raw[:len(user_ids)]]
        return _verdicts(reasons, [int(p) for p in raw[len(user_ids):]], index)


class LocalCaps:
    """The same rule in process memory (development without Redis: one process only)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    def take(self, account_id: int, limits: Limits, user_ids: list[int | None]) -> list[CapVerdict]:
        users, index = _plan(user_ids)
        keys = _keys(account_id, users)
        now = time.monotonic()
        with self._lock:
            windows = []
            for n, key in enumerate(keys):
                hit = self._values.get(key)
                windows.append(list(hit) if hit and hit[0] > now else [now + (86400 if n == 1 else 3600), 0])
            reasons = []
            for key_index in index:
                reason = "ok"
                if limits.crm_per_hour > 0 and windows[0][1] >= limits.crm_per_hour:
                    reason = "crm_account_hourly"
                elif limits.crm_per_day > 0 and windows[1][1] >= limits.crm_per_day:
                    reason = "crm_account_daily"
                elif key_index and limits.crm_user_per_hour > 0 and windows[key_index - 1][1] >= limits.crm_user_per_hour:
                    reason = "crm_user_hourly"
                if reason == "ok":
                    for n in (0, 1, *([key_index - 1] if key_index else [])):
                        windows[n][1] += 1
                reasons.append(reason)
            for key, (end, count) in zip(keys, windows, strict=True):
                if count:
                    self._values[key] = (end, count)
        return _verdicts(reasons, [int((end - now) * 1000) for end, _count in windows], index)


_counter = None
_counter_url = None
_counter_lock = threading.Lock()


def _counters():
    global _counter, _counter_url
    url = settings.SMSGATE_REDIS_URL
    if _counter is None or _counter_url != url:
        with _counter_lock:
            if _counter is None or _counter_url != url:
                _counter = RedisCaps(url) if url else LocalCaps()
                _counter_url = url
    return _counter


def crm_caps_take(*, account_id: int, limits: Limits, user_ids: list[int | None]) -> list[CapVerdict]:
    """Grant and count the items of a batch (one per entry of `user_ids`: the amoCRM user who sends it,
    or None) in order, while the account's caps and each user's have room."""
    if not user_ids:
        return []
    if not (limits.crm_per_hour or limits.crm_per_day or limits.crm_user_per_hour):
        return [CapVerdict(None)] * len(user_ids)
    return _counters().take(account_id, limits, user_ids)
