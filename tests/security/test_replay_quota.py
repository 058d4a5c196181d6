"""A replayed token does not consume quota (issue 13, item 9).

Reproduced before the fix: 20 concurrent requests with one token (and different phones) made 1
delivery but counted 11 against the account's hourly cap and set 11 cooldown keys. The guard's
counting script remembers a token id once it was accepted (`sg:guard:<account>:jti:<jti>`): a replay
gets the same answer and counts nothing, and the unique (account, jti) of the deliveries table then
answers with the first delivery.
"""

import threading
import uuid

import pytest
from django.db import connections
from django.test import Client

from accounts.models import AccountCeilings
from routes.models import ProviderRoute
from accounts.limits import forget_limits
from deliveries import guard
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.intake import DeliveryRefused, delivery_create_test

pytestmark = pytest.mark.guard

URL = "/amocrm/sms"


@pytest.fixture(params=["redis", "local"])
def counters(request, settings):
    """Redis (the production store) and the in-process fallback alike."""
    if request.param == "redis":
        settings.SMSGATE_REDIS_URL = request.getfixturevalue("redis_url")
    else:
        settings.SMSGATE_REDIS_URL = ""
    guard._counters = None
    return request.param


@pytest.fixture
def kommo(other_account):
    """A kommo.com account (any country), with a route; its tokens come from `token()`."""
    ProviderRoute.objects.create(account=other_account, provider="console")
    return other_account


@pytest.fixture
def token(make_token):
    def make(**claims):
        return make_token(account_id=55555, iss="https://beta.kommo.com", subdomain="beta", **claims)

    return make


def phone(n: int) -> str:
    return f"+491512345{n:04d}"  # German mobiles sharing one prefix, as a pumping run would


def redis_keys(account, pattern) -> list[str]:
    return sorted(key.decode() for key in redis_client().keys(f"sg:guard:{account.pk}:{pattern}"))


def redis_client():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.SMSGATE_REDIS_URL)


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_replays_count_once(kommo, token, settings, redis_url):
    settings.SMSGATE_REDIS_URL = redis_url
    guard._counters = None
    redis = redis_client()
    stale = redis_keys(kommo, "*")
    if stale:
        redis.delete(*stale)
    jti = f"replayed-{uuid.uuid4()}"
    shared = token(jti=jti)
    count = 20
    barrier = threading.Barrier(count)
    answers, errors = [None] * count, []

    def request(n):
        try:
            barrier.wait()
            answers[n] = Client().post(URL, {"phone": phone(n), "text": "Код 1234", "token": shared})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [a.status_code for a in answers] == [200] * count, [a.json() for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1  # every answer is the one delivery
    assert Delivery.objects.count() == 1
    base = f"sg:guard:{kommo.pk}"
    assert redis.get(f"{base}:ah") == b"1" and redis.get(f"{base}:ad") == b"1"  # counted once
    assert len(redis_keys(kommo, "cool:*")) == 1 and len(redis_keys(kommo, "ph:*")) == 1
    assert redis.scard(redis_keys(kommo, "pfx:*")[0]) == 1
    ttl = redis.pttl(f"{base}:jti:{jti}") / 1000
    assert 3600 <= ttl <= guard.JTI_TTL_SECONDS  # a token is accepted for at most an hour plus the leeways


@pytest.mark.django_db
def test_sequential_replays_leave_the_quota_to_new_tokens(kommo, token, counters, client):
    AccountCeilings.objects.create(account=kommo, account_per_hour=2)
    shared = token()
    first = client.post(URL, {"phone": phone(1), "text": "Код 1", "token": shared})
    assert first.status_code == 200
    for n in range(2, 7):  # amoCRM retrying, or someone replaying it with other numbers
        again = client.post(URL, {"phone": phone(n), "text": "Код 1", "token": shared})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert client.post(URL, {"phone": phone(7), "text": "Код 2", "token": token()}).status_code == 200
    over = client.post(URL, {"phone": phone(8), "text": "Код 3", "token": token()})
    assert over.status_code == 429 and over.json()["code"] == "account_hourly_cap"
    assert Delivery.objects.exclude(status=DeliveryStatus.REJECTED).count() == 2


@pytest.mark.django_db
def test_a_refused_token_is_checked_again_not_remembered(kommo, token, counters, client):
    """Only acceptance is remembered: a refusal counted nothing, so the same token asked again (after
    its Retry-After, or for another number) gets a fresh check and, if accepted, counts once."""
    assert client.post(URL, {"phone": phone(1), "text": "1", "token": token()}).status_code == 200
    second = token()
    refused = client.post(URL, {"phone": phone(1), "text": "2", "token": second})
    assert refused.status_code == 429 and refused.json()["code"] == "phone_cooldown"
    accepted = client.post(URL, {"phone": phone(2), "text": "2", "token": second})
    assert accepted.status_code == 200
    replayed = client.post(URL, {"phone": phone(3), "text": "2", "token": second})
    assert replayed.json()["id"] == accepted.json()["id"]
    AccountCeilings.objects.create(account=kommo, account_per_hour=3)
    forget_limits(kommo.pk)
    assert client.post(URL, {"phone": phone(4), "text": "3", "token": token()}).status_code == 200  # the 3rd
    assert client.post(URL, {"phone": phone(5), "text": "4", "token": token()}).json()["code"] == "account_hourly_cap"


@pytest.mark.django_db
def test_requests_without_a_token_id_count_each_time(kommo, counters):
    AccountCeilings.objects.create(account=kommo, account_per_hour=2)
    delivery_create_test(account=kommo, phone=phone(1))
    delivery_create_test(account=kommo, phone=phone(2))
    with pytest.raises(DeliveryRefused) as refused:
        delivery_create_test(account=kommo, phone=phone(3))
    assert refused.value.code == "account_hourly_cap"


@pytest.mark.django_db
def test_one_accounts_token_id_does_not_cover_another_account(kommo, token, account, make_token, counters, client):
    """The remembered id is per account, like the deliveries' unique (account, jti)."""
    ProviderRoute.objects.create(account=account, provider="console")
    AccountCeilings.objects.create(account=account, account_per_hour=1)
    assert client.post(URL, {"phone": phone(1), "text": "1", "token": token(jti="same")}).status_code == 200
    assert client.post(URL, {"phone": "+79123456789", "text": "1", "token": make_token(jti="same")}).status_code == 200
    over = client.post(URL, {"phone": "+79123456780", "text": "1", "token": make_token(jti="same-not")})
    assert over.json()["code"] == "account_hourly_cap"
