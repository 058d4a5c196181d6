"""amoCRM's API limit, shared by every process: at most AMO_API_RPS (7) requests per second per account.

Counted the way amoCRM (and the fake in tests/fakes/amocrm) counts: a request is refused when its arrival
falls within one second of `rate` requests already accepted, a sliding window. Each call first reserves a
time slot, then sleeps until it and sends; slots are reserved in one atomic Redis script over a sorted set
of reservation times per account, on Redis's own clock (TIME in a script that writes: Redis 5 or later),
so processes on several hosts share one count.

The window is a little longer than amoCRM's second (WINDOW): a request arrives there some milliseconds
after our slot (the wake-up, the connection, the network), and two requests of the same window arriving
closer together than we sent them must not make an eighth. A thread that wakes up later than LATE after
its slot (a loaded machine: the scheduler ran other work first) would crowd the requests of the next
slots: it takes a new slot instead (the stale one still counts, which only errs on the safe side).

Without SMSGATE_REDIS_URL (development) each process counts alone, as the abuse guard does; if Redis
fails the process counts alone for a few seconds and says so (amoCRM's 429, retried with backoff, is then
the backstop).
"""

import logging
import os
import threading
import time
from collections import deque

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

WINDOW = 1.1  # seconds: amoCRM's sliding second plus a margin for the time our request takes to arrive
LATE = 0.03  # seconds: woken this much after its slot, a request takes a new one
MAX_RESERVATIONS = 5  # per call: a machine so loaded that every wake-up is late sends anyway (429 is the backstop)
REDIS_RETRY_AFTER_FAILURE = 5.0  # seconds a process counts alone after a Redis error
KEY_PREFIX = "sg:amo:rl:"


class SlotTooFar(Exception):
    """The next free slot is further away than the caller will wait: try again in `wait` seconds."""

    def __init__(self, wait: float):
        self.wait = wait
        super().__init__(f"next amoCRM API slot in {wait:.2f} s")


# KEYS[1]: the account's sorted set of reservation times (microseconds, Redis clock).
# ARGV: rate, window (us), longest wait (us), a unique member.
# The new slot is the later of now and (the rate-th latest reservation + window): then no window of that
# length holds more than `rate` reservations, including reservations already made for the future.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, window, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local at = now
if n >= rate then
  local kth = redis.call('ZRANGE', KEYS[1], n - rate, n - rate, 'WITHSCORES')
  at = math.max(now, tonumber(kth[2]) + window)
end
local wait = at - now
if wait > longest then return {0, wait} end
redis.call('ZADD', KEYS[1], at, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.floor((wait + window) / 1000) + 1000)
return {1, wait}
"""


class RedisSlots:
    def __init__(self, url: str):
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                            health_check_interval=30)
        self._script = self._client.register_script(_SCRIPT)
        self._member = f"{os.getpid()}-{os.urandom(4).hex()}-"  # unique across processes and hosts
        self._counter = 0
        self._lock = threading.Lock()

    def reserve(self, account_id: int, *, rate: int, window: float, max_wait: float) -> float:
        """Seconds until the reserved slot; SlotTooFar if it would be more than `max_wait`."""
        with self._lock:
            self._counter += 1
            member = f"{self._member}{self._counter}"
        granted, wait_us = self._script(keys=[f"{KEY_PREFIX}{account_id}"],
                                        args=[rate, int(window * 1e6), int(max_wait * 1e6), member])
        if not granted:
            raise SlotTooFar(wait_us / 1e6)
        return wait_us / 1e6


class LocalSlots:
    """The same rule in process memory (development; and a process's fallback while Redis fails)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._slots: dict[int, deque[float]] = {}

    def reserve(self, account_id: int, *, rate: int, window: float, max_wait: float) -> float:
        now = time.monotonic()
        with self._lock:
            slots = self._slots.setdefault(account_id, deque())
            while slots and slots[0] <= now - window:
                slots.popleft()
            at = max(now, slots[-rate] + window) if len(slots) >= rate else now
            wait = at - now
            if wait > max_wait:
                raise SlotTooFar(wait)
            slots.append(at)  # slots are reserved in time order, so the deque stays sorted
            if len(self._slots) > 10_000:  # accounts that stopped calling
                for key in [k for k, v in self._slots.items() if not v or v[-1] <= now - window]:
                    del self._slots[key]
        return wait


class Limiter:
    """Reserve a slot in Redis (or in this process without it) and sleep until it comes."""

    def __init__(self, url: str):
        self._redis = RedisSlots(url) if url else None
        self._local = LocalSlots()
        self._skip_redis_until = 0.0

    def reserve(self, account_id: int, *, rate: int, max_wait: float, window: float = WINDOW) -> float:
        if self._redis is not None and time.monotonic() >= self._skip_redis_until:
            try:
                return self._redis.reserve(account_id, rate=rate, window=window, max_wait=max_wait)
            except redis.RedisError as exc:
                self._skip_redis_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE
                logger.warning("amoCRM rate limit: Redis unavailable (%s); this process counts alone for %.0f s",
                               type(exc).__name__, REDIS_RETRY_AFTER_FAILURE, extra={"account_id": account_id})
        return self._local.reserve(account_id, rate=rate, window=window, max_wait=max_wait)

    def acquire(self, account_id: int, *, rate: int, max_wait: float) -> float:
        """Wait for the account's next slot; returns the seconds waited. SlotTooFar: not reserved."""
        waited = 0.0
        for _attempt in range(MAX_RESERVATIONS):
            wait = self.reserve(account_id, rate=rate, max_wait=max(max_wait - waited, 0.0))
            slot = time.monotonic() + wait
            if wait > 0:
                time.sleep(wait)
            waited += wait
            if time.monotonic() - slot <= LATE:
                break
        return waited


_limiter: Limiter | None = None
_limiter_key: tuple | None = None
_limiter_lock = threading.Lock()


def limiter() -> Limiter:
    """The process's limiter for SMSGATE_REDIS_URL (a new one after a fork or a settings change)."""
    global _limiter, _limiter_key
    key = (settings.SMSGATE_REDIS_URL, os.getpid())
    if _limiter is None or _limiter_key != key:
        with _limiter_lock:
            if _limiter is None or _limiter_key != key:
                _limiter, _limiter_key = Limiter(settings.SMSGATE_REDIS_URL), key
    return _limiter
