"""The abuse guard on the amoCRM endpoint and on test SMS: limits answer 429 + Retry-After, policy 422;
every refusal is recorded as a rejected delivery and never sent. Counters live in Redis."""

import pytest

from accounts.models import AccountCeilings, AccountOwnLimits
from routes.models import ProviderRoute
from deliveries import guard
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.intake import DeliveryRefused, delivery_create_test
from tests.conftest import service_missing

URL = "/amocrm/sms"
pytestmark = [pytest.mark.django_db, pytest.mark.guard]


@pytest.fixture(params=["redis", "local"])
def counters(request, settings):
    """Each test runs against Redis (the production store) and the in-process fallback."""
    if request.param == "redis":
        import redis

        url = settings.SMSGATE_REDIS_URL or "redis://127.0.0.1:6379/15"
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            service_missing(f"the guard tests need Redis at {url}: {exc}")
        settings.SMSGATE_REDIS_URL = url
        client = redis.Redis.from_url(url)
        stale = client.keys("sg:guard:*")
        if stale:
            client.delete(*stale)
    else:
        settings.SMSGATE_REDIS_URL = ""
    guard._counters = None
    return request.param


@pytest.fixture
def route(account):
    return ProviderRoute.objects.create(account=account, provider="console")


@pytest.fixture
def post(client, make_token, route, counters):
    def post(phone="+79123456789", text="Код 1234"):
        return client.post(URL, {"phone": phone, "text": text, "token": make_token()})

    return post


def test_cooldown_refuses_a_second_code_with_retry_after(post):
    assert post().status_code == 200
    response = post()
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "phone_cooldown"
    assert 1 <= int(response["Retry-After"]) <= 30
    refused = Delivery.objects.get(pk=body["id"])
    assert refused.status == DeliveryStatus.REJECTED and refused.error_code == "phone_cooldown"
    assert refused.finished_at and not refused.attempts.exists()


def test_phone_hourly_cap(post, account, settings):
    settings.SMSGATE_LIMIT_PHONE_COOLDOWN = 0
    statuses = [post().status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert Delivery.objects.filter(status=DeliveryStatus.REJECTED, error_code="phone_hourly_cap").count() == 1


def test_phone_daily_cap_from_the_operators_ceiling(post, account):
    AccountCeilings.objects.create(account=account, phone_cooldown_seconds=0, phone_per_hour=0, phone_per_day=2)
    assert [post().status_code for _ in range(3)] == [200, 200, 429]
    assert Delivery.objects.get(status=DeliveryStatus.REJECTED).error_code == "phone_daily_cap"


def test_account_caps(post, account):
    AccountCeilings.objects.create(account=account, account_per_hour=3, prefix_distinct_max=0)
    phones = ["+79123456781", "+79123456782", "+79223456783", "+79323456784"]
    assert [post(phone=p).status_code for p in phones] == [200, 200, 200, 429]
    assert Delivery.objects.get(status=DeliveryStatus.REJECTED).error_code == "account_hourly_cap"


def test_prefix_velocity(post, account):
    AccountOwnLimits.objects.create(account=account, prefix_distinct_max=3)  # the account's own, tighter choice
    phones = [f"+7912345{n:04d}" for n in (1, 2, 3, 4)]
    assert [post(phone=p).status_code for p in phones] == [200, 200, 200, 429]
    assert Delivery.objects.get(status=DeliveryStatus.REJECTED).error_code == "prefix_velocity"
    assert post(phone="+79223450005").status_code == 200  # another prefix is fine


def test_refusals_do_not_count(post, account):
    AccountCeilings.objects.create(account=account, phone_cooldown_seconds=0, phone_per_hour=1,
                                 allowed_countries="RU")
    assert post(phone="+375291234567").status_code == 422  # refused by policy: counts nothing
    assert post().status_code == 200
    assert post().status_code == 429


def test_default_countries_follow_the_domain_zone(post):
    response = post(phone="+375291234567")  # Belarus, from an amocrm.ru account
    assert response.status_code == 422
    assert response.json()["code"] == "country_not_allowed"
    assert "Retry-After" not in response
    assert Delivery.objects.get().status == DeliveryStatus.REJECTED


def test_the_operator_may_widen_an_accounts_countries(post, account):
    AccountCeilings.objects.create(account=account, allowed_countries="RU, by,KZ")
    assert post(phone="+375291234567").status_code == 200
    assert post(phone="+77710009998").status_code == 200
    assert post(phone="+4915123456789").status_code == 422


def test_kommo_accounts_may_send_anywhere_by_default(client, make_token, counters, integration):
    from accounts.models import Account

    account = Account.objects.create(integration=integration, amo_id=5, subdomain="shop", domain="kommo.com")
    ProviderRoute.objects.create(account=account, provider="console")
    token = make_token(account_id=5, iss="https://shop.kommo.com", subdomain="shop")
    assert client.post(URL, {"phone": "+4915123456789", "text": "x", "token": token}).status_code == 200


@pytest.mark.parametrize("phone", ["+78091234567", "+449012345678", "+445512345678"])
def test_premium_shared_cost_and_uan_numbers_are_refused(post, account, phone):
    AccountCeilings.objects.create(account=account, allowed_countries="*")
    response = post(phone=phone)
    assert response.status_code == 422
    assert response.json()["code"] == "premium_number"
    assert Delivery.objects.get().status == DeliveryStatus.REJECTED


def test_a_replayed_token_within_the_cooldown_gets_its_first_answer(client, make_token, route, counters):
    token = make_token(jti="once")
    first = client.post(URL, {"phone": "+79123456789", "text": "1", "token": token})
    again = client.post(URL, {"phone": "+79123456789", "text": "1", "token": token})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert Delivery.objects.count() == 1


def test_test_sms_goes_through_the_guard(account, route, counters):
    delivery_create_test(account=account, phone="+79123456789", route=route)
    with pytest.raises(DeliveryRefused) as refused:
        delivery_create_test(account=account, phone="+79123456789", route=route)
    assert refused.value.http_status == 429 and refused.value.code == "phone_cooldown"


def test_redis_down_fails_open_with_a_warning(client, make_token, route, settings, caplog):
    settings.SMSGATE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    guard._counters = None
    caplog.set_level("WARNING", logger="deliveries.guard")
    for _ in range(3):
        assert client.post(URL, {"phone": "+79123456789", "text": "1", "token": make_token()}).status_code == 200
    assert "Redis unavailable" in caplog.text
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 3


def test_refusal_messages_speak_russian(post):
    post()
    assert post().json()["detail"] == "На этот номер только что отправлено SMS. Повторите через несколько секунд."
