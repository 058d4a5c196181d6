"""The owner's alerts: a balance under the owner's threshold (read from the fake SMS.ru), a broken route,
a console route where the deployment does not allow it, a delivery rate of the last 24 hours under
80 % of the 7 days before (at least 50 SMS), from the counters; the settings API (administrators
only, hostile input a 400); the same alerts as amoCRM tasks for the administrator, once a day, over
real HTTP to the fake amoCRM."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from deliveries import alerts
from deliveries.models import AlertSettings, AlertTask, Delivery, DeliveryStatus
from deliveries.services.intake import deliveries_insert
from routes.models import ProviderRoute, RouteBalanceAlert
from tests.accounts.test_amo_client import connect
from tests.conftest import REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM
from tests.security.test_hostile_input import FULLWIDTH, arabic, assert_json_error

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts/"


def codes(reply) -> list[str]:
    return [alert["code"] for alert in reply["alerts"]]


def outcomes(account, *, delivered, undelivered, hours_ago):
    """Deliveries created `hours_ago`, delivered or not, through the one INSERT (counted as they are)."""
    created = timezone.now() - timedelta(hours=hours_ago)
    items = [DeliveryStatus.DELIVERED] * delivered + [DeliveryStatus.UNDELIVERED] * undelivered
    deliveries_insert(deliveries=[
        Delivery(account=account, phone="+79123456789", text="Код: 1", encoding="gsm7", segments=1,
                 valid_until=created + timedelta(minutes=10), status=status, provider="smsru",
                 error_class="" if status == DeliveryStatus.DELIVERED else "blocked_recipient",
                 created_at=created, finished_at=created + timedelta(seconds=5)) for status in items])


# --- balance, broken, console ------------------------------------------------------------------------
def test_a_balance_under_the_threshold_is_an_alert(api, account, fake_smsru, smsru_route):
    route = smsru_route(sender="ACME")
    reply = api.get(ALERTS).json()
    assert reply["alerts"] == [] and reply["amo_tasks"] is False
    assert reply["balances"] == [{"route_id": route.pk, "name": "SMS.ru (ACME)", "supports_balance": True,
                                  "below": None, "amount": None, "currency": "", "checked_at": None, "error": ""}]

    # A threshold above the balance (4122.56 at the fake): the balance is read at once, the alert is up.
    reply = api.put(ALERTS, {"thresholds": [{"route_id": route.pk, "below": "5000"}]},
                    HTTP_ACCEPT_LANGUAGE="en").json()
    assert reply["balances"][0]["amount"] == "4122.5600" and reply["balances"][0]["below"] == "5000.00"
    [alert] = reply["alerts"]
    assert alert == {"code": "balance_low", "key": f"balance:{route.pk}", "route_id": route.pk,
                     "title": "Low balance on SMS.ru (ACME)",
                     "detail": "4,122.56 RUB left, under your threshold of 5,000.00."}
    ru = api.get(ALERTS, HTTP_ACCEPT_LANGUAGE="ru").json()["alerts"][0]
    assert ru["title"] == "Низкий баланс на SMS.ru (ACME)"

    # The provider's balance grows past the threshold: the periodic check reads it, the alert goes.
    fake_smsru.balance = 9000
    assert alerts.alerts_check() == {"balances": 1, "tasks": 0}
    assert api.get(ALERTS).json()["alerts"] == []
    # No threshold: no alert whatever the balance.
    fake_smsru.balance = 10
    api.put(ALERTS, {"thresholds": [{"route_id": route.pk, "below": None}]})
    assert alerts.alerts_check()["balances"] == 0
    assert api.get(ALERTS).json()["alerts"] == []


def test_a_balance_that_cannot_be_read_says_why(api, account, fake_smsru, smsru_route):
    route = smsru_route(api_id="wrong-key")  # the fake refuses it
    reply = api.put(ALERTS, {"thresholds": [{"route_id": route.pk, "below": "100"}]}).json()
    assert reply["balances"][0]["amount"] is None and reply["balances"][0]["error"] == "auth"
    assert reply["alerts"] == []


def test_broken_and_console_routes_are_alerts(api, account, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False
    broken = ProviderRoute.objects.create(account=account, provider="smsru", credentials={"api_id": "x"},
                                          is_broken=True, broken_reason="auth: 200 wrong api_id")
    console = ProviderRoute.objects.create(account=account, provider="console", priority=20, credentials={})
    reply = api.get(ALERTS, HTTP_ACCEPT_LANGUAGE="en").json()
    assert codes(reply) == ["route_broken", "route_sends_nothing"]
    assert reply["alerts"][0]["route_id"] == broken.pk
    assert reply["alerts"][0]["detail"] == ("The provider refused the login or API key (200 wrong api_id). "
                                            "SMS skip it until its login or API key is changed.")
    assert reply["alerts"][1]["route_id"] == console.pk
    assert "only writes SMS to the service's log" in reply["alerts"][1]["detail"]
    # Where the deployment allows the console provider (development), it is not a trap.
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = True
    assert codes(api.get(ALERTS).json()) == ["route_broken"]


# --- the delivery rate ------------------------------------------------------------------------------------
def test_a_drop_in_the_delivery_rate_is_an_alert(api, account):
    for day in range(2, 9):  # the 7 days before: 95 % delivered
        outcomes(account, delivered=19, undelivered=1, hours_ago=24 * day + 1)
    outcomes(account, delivered=30, undelivered=30, hours_ago=1)  # the last 24 hours: 50 %
    [alert] = api.get(ALERTS, HTTP_ACCEPT_LANGUAGE="en").json()["alerts"]
    assert alert["code"] == "delivery_rate_drop" and alert["key"] == "rate"
    assert alert["detail"] == ("Delivered in the last 24 hours: 50.0 %; in the 7 days before: 95.0 % "
                               "(60 SMS in the last 24 hours).")
    recent, previous = alerts.delivery_rate_windows(account=account)
    assert (recent.sms, round(recent.rate, 3), round(previous.rate, 3)) == (60, 0.5, 0.95)


def test_no_rate_alert_under_50_sms_or_above_80_percent_of_before(api, account):
    for day in range(2, 9):
        outcomes(account, delivered=20, undelivered=0, hours_ago=24 * day + 1)
    outcomes(account, delivered=20, undelivered=29, hours_ago=1)  # 49 SMS: too few to mean anything
    assert api.get(ALERTS).json()["alerts"] == []
    outcomes(account, delivered=40, undelivered=0, hours_ago=2)  # 89 SMS, 60/89 = 67 % < 80 % of 100 %
    assert codes(api.get(ALERTS).json()) == ["delivery_rate_drop"]
    outcomes(account, delivered=60, undelivered=0, hours_ago=3)  # 120/149 = 81 %: not an alert
    assert api.get(ALERTS).json()["alerts"] == []


def test_no_rate_alert_without_a_week_before(api, account):
    outcomes(account, delivered=10, undelivered=50, hours_ago=1)
    assert api.get(ALERTS).json()["alerts"] == []


# --- the settings API ---------------------------------------------------------------------------------------
def test_only_an_administrator_changes_the_alerts(viewer_api, account, smsru_route):
    route = smsru_route()
    assert viewer_api.get(ALERTS).status_code == 200
    assert_json_error(viewer_api.put(ALERTS, {"amo_tasks": True}), 403, "admin_required")
    assert_json_error(viewer_api.put(ALERTS, {"thresholds": [{"route_id": route.pk, "below": "1"}]}), 403)
    assert not AlertSettings.objects.exists() and not RouteBalanceAlert.objects.exists()


def test_another_accounts_route_is_refused_and_its_alerts_unseen(api, other_api, account, other_account, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False
    theirs = ProviderRoute.objects.create(account=other_account, provider="console", credentials={})
    body = assert_json_error(api.put(ALERTS, {"thresholds": [{"route_id": theirs.pk, "below": "1"}]}), 400, "invalid")
    assert "thresholds" in body["errors"]
    assert not RouteBalanceAlert.objects.exists()
    assert api.get(ALERTS).json() == {"alerts": [], "amo_tasks": False, "balances": []}
    assert codes(other_api.get(ALERTS).json()) == ["route_sends_nothing"]


@pytest.mark.parametrize("body", [
    {"amo_tasks": "maybe"}, {"amo_tasks": [True]},
    {"thresholds": "100"}, {"thresholds": [{"route_id": "ROUTE", "below": "-1"}]},
    {"thresholds": [{"route_id": "ROUTE", "below": arabic(100)}]},
    {"thresholds": [{"route_id": "ROUTE", "below": "100".translate(FULLWIDTH)}]},
    {"thresholds": [{"route_id": "ROUTE", "below": "NaN"}]}, {"thresholds": [{"route_id": "ROUTE", "below": "1e400"}]},
    {"thresholds": [{"route_id": "ROUTE", "below": "1" * 40}]}, {"thresholds": [{"route_id": "ROUTE", "below": "1.001"}]},
    {"thresholds": [{"route_id": "ROUTE", "below": {"x": 1}}]},
    {"thresholds": [{"route_id": arabic(1), "below": "1"}]}, {"thresholds": [{"route_id": 2**63, "below": "1"}]},
    {"thresholds": [{"route_id": 0, "below": "1"}]}, {"thresholds": [{"below": "1"}]},
    {"thresholds": [{"route_id": "ROUTE", "below": "1"}, {"route_id": "ROUTE", "below": "2"}]},
    {"thresholds": [{"route_id": "ROUTE", "below": "1"}] * 101},
])
def test_hostile_settings_are_a_400(api, account, smsru_route, body):
    route = smsru_route()
    body = json.loads(json.dumps(body).replace('"ROUTE"', str(route.pk)))  # the route's own id put in
    assert_json_error(api.put(ALERTS, body), 400, "invalid")
    assert not RouteBalanceAlert.objects.exists() and not AlertSettings.objects.exists()


# --- amoCRM tasks ---------------------------------------------------------------------------------------
@pytest.fixture
def amo(settings, integration, account):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(account.amo_id, subdomain=account.subdomain)
        settings.AMO_BASE_URL = fake.url
        connect(fake, account)
        yield fake


def test_alerts_become_amocrm_tasks_for_the_administrator_once_a_day(api, account, amo, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False
    ProviderRoute.objects.create(account=account, provider="console", credentials={})
    ProviderRoute.objects.create(account=account, provider="smsru", credentials={"api_id": "x"}, priority=20,
                                 is_broken=True, broken_reason="insufficient_funds")
    assert alerts.alerts_check()["tasks"] == 0  # off by default
    assert amo.tasks(account.amo_id) == []

    api.put(ALERTS, {"amo_tasks": True})
    with timezone.override("Europe/Moscow"):
        assert alerts.alerts_check()["tasks"] == 2
    tasks = amo.tasks(account.amo_id)
    admin = amo.account(account.amo_id).admin_id
    assert [task.responsible_user_id for task in tasks] == [admin, admin]
    # In the account's language: an amocrm.ru account reads Russian (amocrm.com and kommo.com: English).
    assert sorted(task.text for task in tasks) == [
        "smsgate: Маршрут Console (development) ничего не отправляет. Он использует провайдер «консоль», который "
        "только записывает SMS в журнал сервиса. Подключите настоящего SMS-провайдера и удалите этот маршрут.",
        "smsgate: Маршрут SMS.ru не работает. Недостаточно денег на счёте у провайдера. SMS идут в обход него, пока "
        "не изменён логин или API-ключ."]
    assert all(task.complete_till > timezone.now().timestamp() for task in tasks)
    assert sorted(AlertTask.objects.values_list("task_id", flat=True)) == sorted(task.id for task in tasks)

    # Again the same day: nothing new. The next day: the alerts that still hold, once more.
    assert alerts.alerts_check()["tasks"] == 0
    assert len(amo.tasks(account.amo_id)) == 2
    tomorrow = timezone.now() + timedelta(days=1)
    assert alerts.alerts_to_amo_tasks(account=account, now=tomorrow) == 2
    assert len(amo.tasks(account.amo_id)) == 4


def test_a_task_amocrm_refused_is_tried_again_next_time(api, account, amo, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False
    ProviderRoute.objects.create(account=account, provider="console", credentials={})
    AlertSettings.objects.create(account=account, amo_tasks=True)
    amo.fail_next(2, 400, account_id=account.amo_id)  # both calls refused: the users, then the task
    assert alerts.alerts_check()["tasks"] == 0
    assert amo.tasks(account.amo_id) == [] and not AlertTask.objects.exists()
    assert alerts.alerts_check()["tasks"] == 1
    assert len(amo.tasks(account.amo_id)) == 1


def test_balance_threshold_is_kept_per_route(api, account, fake_smsru, smsru_route):
    first, second = smsru_route(), smsru_route(priority=20, api_id="test-api-id")
    api.put(ALERTS, {"thresholds": [{"route_id": first.pk, "below": "10000.50"}, {"route_id": second.pk,
                                                                                  "below": "1"}]})
    assert {w.route_id: w.below for w in RouteBalanceAlert.objects.all()} == {first.pk: Decimal("10000.50"),
                                                                              second.pk: Decimal("1.00")}
    assert [a["route_id"] for a in api.get(ALERTS).json()["alerts"]] == [first.pk]
