"""Reads of accounts data that more than one caller needs."""

import threading
import time
import uuid
from dataclasses import dataclass


from .integrations import integration_sync_from_settings, is_settings_integration
from .models import Account, Integration

# Integration keys are read on every token check; a few seconds of caching saves a query per
# request. A change in the admin takes effect within this many seconds.
INTEGRATION_CACHE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class IntegrationKey:
    integration_id: int
    secret: str
    audience: str


class TTLCache:
    def __init__(self, maxsize=1024):
        self._data = {}
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def get(self, key):
        with self._lock:
            hit = self._data.get(key)
        if hit and hit[0] > time.monotonic():
            return hit
        return None

    def put(self, key, value, ttl):
        with self._lock:
            if len(self._data) >= self._maxsize:
                self._data.clear()
            self._data[key] = (time.monotonic() + ttl, value)

    def clear(self):
        with self._lock:
            self._data.clear()

    def pop(self, key):
        with self._lock:
            self._data.pop(key, None)

    def pop_where(self, predicate):
        with self._lock:
            for key in [k for k, (_expires, value) in self._data.items() if predicate(value)]:
                del self._data[key]


_integration_cache = TTLCache()


def clear_integration_cache():
    _integration_cache.clear()


def _key_of(integration: Integration) -> IntegrationKey:
    return IntegrationKey(integration.pk, integration.client_secret, integration.audience)


def integration_key_by_uuid(client_uuid: uuid.UUID) -> IntegrationKey | None:
    hit = _integration_cache.get(("uuid", client_uuid))
    if hit:
        return hit[1]
    integration = Integration.objects.filter(client_uuid=client_uuid, is_active=True).first()
    if integration is None and is_settings_integration(client_uuid):
        integration = integration_sync_from_settings()
    key = _key_of(integration) if integration and integration.is_active else None
    _integration_cache.put(("uuid", client_uuid), key, INTEGRATION_CACHE_SECONDS)
    return key


def integration_keys_by_audience(audience: str) -> list[IntegrationKey]:
    hit = _integration_cache.get(("aud", audience))
    if hit:
        return hit[1]
    keys = [_key_of(i) for i in Integration.objects.filter(is_active=True) if i.audience == audience]
    _integration_cache.put(("aud", audience), keys, INTEGRATION_CACHE_SECONDS)
    return keys


# The SMS endpoint reads the account and whether it has an active route on every request; a few
# seconds of per-process caching save two queries per request (issue 7). Writes in this process
# forget the entry at once (`forget_account`); other processes see a change within this many seconds.
ACCOUNT_CACHE_SECONDS = 5.0
_account_cache = TTLCache(maxsize=10_000)
_account_by_pk_cache = TTLCache(maxsize=10_000)  # the send path's account of a delivery


def account_cached(*, integration_id: int, amo_id: int) -> Account | None:
    hit = _account_cache.get((integration_id, amo_id))
    return hit[1] if hit else None


def account_remember(account: Account):
    _account_cache.put((account.integration_id, account.amo_id), account, ACCOUNT_CACHE_SECONDS)


def forget_account(account_id: int | None = None):
    """Drop cached reads of one account (or of all): call after changing an account."""
    if account_id is None:
        _account_cache.clear()
        _account_by_pk_cache.clear()
        return
    _account_by_pk_cache.pop(account_id)
    _account_cache.pop_where(lambda account: account.pk == account_id)


def account_by_pk(account_id: int) -> Account:
    """A delivery's account for the send path, kept per process like the routes: shared between
    threads, only read. Disabling an account takes effect for queued SMS within the cache time."""
    hit = _account_by_pk_cache.get(account_id)
    if hit:
        return hit[1]
    account = Account.objects.get(pk=account_id)
    _account_by_pk_cache.put(account_id, account, ACCOUNT_CACHE_SECONDS)
    return account


def account_get(*, integration_id: int, amo_id: int) -> Account | None:
    return Account.objects.filter(integration_id=integration_id, amo_id=amo_id).first()


