"""Real replies of the fake amoCRM (API v4 shapes) for the crm tests."""

import httpx
import pytest

from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.amocrm.demo import seed_demo

# 2020-01-01 00:00 in Moscow (UTC+3), and 2020-01-01 00:00 UTC: amoCRM's docs use both kinds of value.
MOSCOW_MIDNIGHT = 1577826000
UTC_MIDNIGHT = 1577836800


@pytest.fixture(scope="module")
def amo():
    """Real replies of the fake amoCRM for the demo account, plus a lead and a contact with every kind of
    custom field a marker may name."""
    with FakeAmoCRM() as fake:
        demo = seed_demo(fake)
        account = fake.account(demo["account_id"])
        account.limit_rps = 0
        fields = {}
        for entity, name, kind, enums in [
            ("leads", "Дата доставки", "date", ()), ("leads", "Встреча", "date_time", ()),
            ("leads", "Оплачено", "checkbox", ()), ("leads", "Пожелания", "multiselect", ("Сборка", "Подъём")),
            ("leads", "Скидка, %", "numeric", ()), ("leads", "Пусто", "text", ()),
            ("contacts", "День рождения", "birthday", ()), ("contacts", "Город", "text", ()),
            ("contacts", "Согласие", "checkbox", ()), ("contacts", "Юрлицо", "legal_entity", ()),
        ]:
            fields[name] = fake.add_custom_field(demo["account_id"], entity, name, kind, enums=enums)
        contact = fake.add_contact(demo["account_id"], first_name="Ольга", last_name="Иванова",
                                   phones=[("+7 912 345-67-89", "MOB"), ("+7 495 000-00-00", "WORK")],
                                   custom_fields={fields["День рождения"]: UTC_MIDNIGHT, fields["Город"]: "Тверь",
                                                  fields["Согласие"]: False,
                                                  fields["Юрлицо"]: {"value": {"name": "ООО Ромашка", "vat_id": "1"}}})
        lead = fake.add_lead(demo["account_id"], name="Кухня на заказ", price=150000, contacts=[contact],
                             custom_fields={fields["Дата доставки"]: MOSCOW_MIDNIGHT,
                                            fields["Встреча"]: MOSCOW_MIDNIGHT + 10 * 3600 + 30 * 60,
                                            fields["Оплачено"]: True, fields["Пожелания"]: ["Сборка", "Подъём"],
                                            fields["Скидка, %"]: "7.5"})
        token = fake.issue_token_pair(demo["account_id"])["access_token"]
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
            def get(path, **params):
                response = client.get(path, params=params)
                assert response.status_code == 200, (path, response.text)
                return response.json()

            yield {
                "fields": fields, "demo": demo,
                "lead": get(f"/api/v4/leads/{lead}", **{"with": "contacts"}),
                "contact": get(f"/api/v4/contacts/{contact}"),
                "delivery_lead": get(f"/api/v4/leads/{demo['leads']['delivery']}", **{"with": "contacts"}),
                "sergey": get(f"/api/v4/contacts/{demo['contacts']['sergey']}"),
                "users": get("/api/v4/users"),
                "account": get("/api/v4/account", **{"with": "datetime_settings"}),
                "account_plain": get("/api/v4/account"),
            }


# --- a fake amoCRM the account is connected to, for the send path and the note outbox --------------------
from datetime import timedelta  # noqa: E402

import redis  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.amocrm import ratelimit  # noqa: E402
from accounts.models import AmoToken  # noqa: E402
from crm import caps  # noqa: E402
from tests.conftest import REDIRECT_URI, SECRET, service_missing  # noqa: E402

AMO_ID = 12345  # the `account` fixture's amoCRM id


def connect(fake, account, **pair_args) -> AmoToken:
    """The account installed: a token pair of the fake stored for it, as the install stores one."""
    pair = fake.issue_token_pair(account.amo_id, subdomain=account.subdomain, **pair_args)
    return AmoToken.objects.update_or_create(account=account, defaults={
        "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
        "expires_at": timezone.now() + timedelta(seconds=pair["expires_in"]), "needs_reinstall": False})[0]


@pytest.fixture
def shared_redis(settings):
    """Redis as production counts in it (the amoCRM limiter, the CRM caps), with this suite's keys cleared."""
    url = settings.SMSGATE_REDIS_URL or "redis://127.0.0.1:6379/15"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"the CRM send tests need Redis at {url}: {exc}")
    for prefix in (ratelimit.KEY_PREFIX, caps.KEY_PREFIX, ":1:crm:card:", "smsgate:1:crm:card:"):
        stale = list(client.scan_iter(prefix + "*"))
        if stale:
            client.delete(*stale)
    settings.SMSGATE_REDIS_URL = url
    ratelimit._limiter = None
    caps._counter = None
    yield client
    ratelimit._limiter = None
    caps._counter = None


@pytest.fixture
def amocrm(settings, integration, account, shared_redis):
    """The fake amoCRM with the `account` fixture's amoCRM account in it, connected (a stored token pair);
    every amoCRM call points at it. `amocrm.card` is a lead with a contact and two phones."""
    from django.core.cache import cache

    cache.clear()
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(AMO_ID, subdomain=account.subdomain)
        settings.AMO_BASE_URL = fake.url
        connect(fake, account)
        contact = fake.add_contact(AMO_ID, first_name="Ольга", last_name="Иванова",
                                   phones=[("+7 912 345-67-89", "MOB"), ("8 (916) 123-45-67", "WORK")])
        other = fake.add_contact(AMO_ID, name="Пётр", phones=[("+79031112233", "MOB")])
        lead = fake.add_lead(AMO_ID, name="Кухня на заказ", price=150000, contacts=[contact, other])
        fake.ids_ = {"contact": contact, "other": other, "lead": lead}
        yield fake
    cache.clear()
