import os
import time
import uuid

import jwt
import pytest
from django.core.cache import cache

from accounts.models import Account, Integration
from routes.models import ProviderRoute
from accounts.selectors import clear_integration_cache, forget_account
from routes.selectors import forget_routes
from smsgate.celery import app as celery_app
from tests.fakes.smsru import FakeSmsRu

# Unit tests publish to an in-memory broker; end-to-end tests start their own processes on the
# broker of CELERY_BROKER_URL (RabbitMQ). (Celery reads that variable before its own configuration.)
E2E_BROKER_URL = os.environ.pop("CELERY_BROKER_URL", "")
celery_app.conf.broker_url = "memory://"
celery_app.conf.broker_transport_options = {}

SECRET = "test-secret-" + "k" * 52
REDIRECT_URI = "https://smsgate.example.com/amocrm/oauth"
AUDIENCE = "https://smsgate.example.com"
DROP = object()  # a claim value meaning "leave this claim out"


def require_services() -> bool:
    """In CI (SMSGATE_REQUIRE_SERVICES=1) a missing service fails the test instead of skipping it."""
    return os.environ.get("SMSGATE_REQUIRE_SERVICES") == "1"


def service_missing(message: str):
    """A test needs a service that is not there: fail in CI, skip on a developer's machine."""
    if require_services():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url(settings):
    """A real Redis for tests of shared counters: the configured one (CI), or a spare database of the
    local one; fails in CI, skips elsewhere, when there is none."""
    import redis

    url = settings.SMSGATE_REDIS_URL or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis is needed at {url}: {exc}")
    return url


@pytest.fixture(autouse=True)
def _abuse_guard(request, settings):
    """Fresh guard counters per test. Tests about other things send freely; tests marked
    `guard` get the production defaults."""
    from accounts.limits import clear_limits_cache
    from deliveries import guard

    clear_limits_cache()
    guard._counters = None
    if settings.SMSGATE_REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.SMSGATE_REDIS_URL)
        try:
            keys = list(client.scan_iter("sg:guard:*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            pass  # the guard fails open; tests that need Redis check for it themselves
    if request.node.get_closest_marker("guard") is None:
        settings.SMSGATE_LIMIT_PHONE_COOLDOWN = 0
        for name in ("PHONE_HOUR", "PHONE_DAY", "ACCOUNT_HOUR", "ACCOUNT_DAY", "PREFIX_DISTINCT"):
            setattr(settings, f"SMSGATE_LIMIT_{name}", 0)
        settings.SMSGATE_DEFAULT_COUNTRIES = {"amocrm.ru": "*", "amocrm.com": "*", "kommo.com": "*"}
    yield
    clear_limits_cache()


@pytest.fixture(autouse=True)
def _console_provider_allowed(settings):
    """Tests use the `console` provider as development does (it sends nothing, instantly); the tests of
    the production trap (tests/routes/test_console_trap.py, the alerts) switch it off themselves."""
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = True


@pytest.fixture(autouse=True)
def _fresh_integration_cache():
    clear_integration_cache()
    forget_account()
    forget_routes()
    cache.clear()  # Django's per-process cache (the dashboard's past days)
    yield
    clear_integration_cache()
    forget_account()
    forget_routes()
    cache.clear()


@pytest.fixture
def integration(db):
    return Integration.objects.create(
        name="test widget", client_uuid=uuid.uuid4(), client_secret=SECRET, redirect_uri=REDIRECT_URI
    )


@pytest.fixture
def account(integration):
    return Account.objects.create(integration=integration, amo_id=12345, subdomain="acme", domain="amocrm.ru")


def claims_for(integration, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": "https://acme.amocrm.ru",
        "aud": AUDIENCE,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 1800,
        "account_id": 12345,
        "subdomain": "acme",
        "client_uuid": str(integration.client_uuid),
        "user_id": 777,
        "is_admin": True,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not DROP}


@pytest.fixture
def make_token(integration):
    def make(*, secret=SECRET, algorithm="HS256", headers=None, **overrides):
        return jwt.encode(claims_for(integration, **overrides), secret, algorithm=algorithm, headers=headers)

    return make


@pytest.fixture
def fake_smsru(settings):
    with FakeSmsRu(status_delays=(0.05, 0.05)) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        yield fake


@pytest.fixture
def smsru_route(account):
    def make(*, priority=10, api_id="test-api-id", sender="", is_active=True):
        return ProviderRoute.objects.create(account=account, provider="smsru", priority=priority,
                                            credentials={"api_id": api_id}, sender=sender, is_active=is_active)

    return make


# --- the account API (issue 5) --------------------------------------------------------------------
class ApiCaller:
    """Calls /api/v1/ as one amoCRM user of one account, with a fresh token per request."""

    def __init__(self, client, make_token, **claims):
        self.client, self.make_token, self.claims = client, make_token, claims

    def _headers(self, headers):
        token = headers.pop("token", None) or self.make_token(**self.claims)
        return {"HTTP_X_AUTH_TOKEN": token, **headers}

    def get(self, path, params=None, **headers):
        return self.client.get(path, params or {}, **self._headers(headers))

    def send(self, method, path, data=None, **headers):
        import json

        return getattr(self.client, method)(path, json.dumps(data if data is not None else {}),
                                            content_type="application/json", **self._headers(headers))

    def post(self, path, data=None, **headers):
        return self.send("post", path, data, **headers)

    def patch(self, path, data=None, **headers):
        return self.send("patch", path, data, **headers)

    def put(self, path, data=None, **headers):
        return self.send("put", path, data, **headers)

    def delete(self, path, **headers):
        return self.client.delete(path, **self._headers(headers))


@pytest.fixture
def api(client, make_token, account):
    """An admin of the `account` fixture (acme, 12345)."""
    return ApiCaller(client, make_token)


@pytest.fixture
def other_account(integration):
    return Account.objects.create(integration=integration, amo_id=55555, subdomain="beta", domain="kommo.com")


@pytest.fixture
def other_api(client, make_token, other_account):
    """An admin of another account of the same integration."""
    return ApiCaller(client, make_token, account_id=55555, iss="https://beta.kommo.com", subdomain="beta")


@pytest.fixture
def viewer_api(client, make_token, account):
    """A user of the `account` fixture who is not an administrator."""
    return ApiCaller(client, make_token, is_admin=False)
# --- every provider: fakes and routes (issue 3) --------------------------------------------------------
@pytest.fixture
def start_fake(settings):
    """Start a fake provider and point the provider's base URL at it: start_fake("twilio", **options)."""
    from tests.fakes.registry import FAKES

    started = []

    def start(slug, **options):
        options.setdefault("status_delays", (0.02, 0.02))
        fake = FAKES[slug](**options).start()
        started.append(fake)
        settings.SMSGATE_PROVIDER_BASE_URLS = {**settings.SMSGATE_PROVIDER_BASE_URLS, slug: fake.base_url}
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def route_for(account):
    """A route of the test account to a running fake, with the credentials the fake accepts."""

    def make(fake, *, priority=10, sender="ACME", credentials=None, is_active=True):
        return ProviderRoute.objects.create(account=account, provider=fake.slug, priority=priority, sender=sender,
                                            credentials=credentials or fake.credentials, is_active=is_active)

    return make


def eventually(predicate, *, timeout=5.0, interval=0.01, message="condition not met"):
    """Wait for something another thread does (a fake's timer, a callback); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(message)
