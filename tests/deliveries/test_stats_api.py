"""GET /api/v1/stats/: the owner's figures from the counters only: per day by status, source and parts,
per route the delivery rate and the median time to delivered, parts sent, failure reasons in plain
words in the request's language; another account's SMS never in them; hostile parameters a 400."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.intake import deliveries_insert
from routes.models import ProviderRoute
from tests.security.test_hostile_input import FULLWIDTH, arabic, assert_json_error
from tests.staff import queries_touching_deliveries

pytestmark = pytest.mark.django_db

STATS = "/api/v1/stats/"


def insert(account, *, n=1, kind=DeliveryKind.SYSTEM, status=DeliveryStatus.DELIVERED, route=None, provider="smsru",
           segments=1, error_class="", age=timedelta(0), seconds=4):
    """`n` deliveries in a chosen state, through the one INSERT (which counts them under that state)."""
    created = timezone.now() - age
    finished = created + timedelta(seconds=seconds) if status not in (DeliveryStatus.PENDING,
                                                                     DeliveryStatus.SENT) else None
    return deliveries_insert(deliveries=[
        Delivery(account=account, kind=kind, phone="+79123456789", text="x" * (160 * segments - 10), encoding="gsm7",
                 segments=segments, valid_until=created + timedelta(minutes=10), status=status,
                 provider=provider if status != DeliveryStatus.PENDING else "", route=route,
                 error_class=error_class, created_at=created, finished_at=finished)
        for _ in range(n)])


@pytest.fixture
def routes(account):
    return (ProviderRoute.objects.create(account=account, provider="smsru", sender="ACME", credentials={"api_id": "a"}),
            ProviderRoute.objects.create(account=account, provider="smsc", priority=20,
                                         credentials={"login": "l", "password": "p"}))


@pytest.fixture
def figures(account, routes):
    smsru, smsc = routes
    insert(account, n=8, route=smsru, seconds=3)  # login codes, delivered in 3 s
    insert(account, n=2, route=smsru, status=DeliveryStatus.UNDELIVERED, error_class="blocked_recipient")
    insert(account, n=3, kind=DeliveryKind.CRM, route=smsc, segments=2, seconds=40)
    insert(account, n=1, kind=DeliveryKind.PIPELINE, route=smsc, status=DeliveryStatus.REJECTED,
           error_class="invalid_recipient", segments=3)
    insert(account, n=2, kind=DeliveryKind.SALESBOT, route=smsc, status=DeliveryStatus.SENT)
    insert(account, n=1, kind=DeliveryKind.LIST, status=DeliveryStatus.PENDING, segments=2)
    insert(account, n=1, kind=DeliveryKind.LIST, status=DeliveryStatus.REJECTED, provider="", error_class="limit")
    insert(account, n=4, route=smsru, age=timedelta(days=3), seconds=8)
    insert(account, n=5, route=smsru, age=timedelta(days=40))  # outside 30 days
    return routes


def test_figures_by_day_status_source_route_parts_and_reason(api, account, figures):
    smsru, smsc = figures
    body = api.get(STATS, HTTP_ACCEPT_LANGUAGE="en").json()
    assert body["days"] == 30 and len(body["series"]) == 30
    assert body["until"] == str(timezone.localdate()) and body["series"][-1]["date"] == body["until"]
    today = body["series"][-1]
    assert today["total"] == 18
    assert today["by_status"] == {"pending": 1, "sending": 0, "sent": 2, "delivered": 11, "undelivered": 2,
                                  "expired": 0, "rejected": 2, "failed": 0, "unknown": 0}
    assert today["by_source"] == {"system": 10, "crm": 3, "pipeline": 1, "salesbot": 2, "list": 2}
    # Parts the providers took: delivered, undelivered and sent (not the rejected or the waiting ones).
    assert today["parts"] == 8 + 2 + 3 * 2 + 2
    three_days_ago = body["series"][-4]
    assert (three_days_ago["total"], three_days_ago["by_source"], three_days_ago["parts"]) == (4, {"system": 4}, 4)
    assert sum(day["total"] for day in body["series"]) == 22
    assert body["parts"] == 22

    assert [(s["source"], s["label"], s["total"], s["parts"]) for s in body["sources"]] == [
        ("system", "Login codes", 14, 14), ("crm", "Card", 3, 6), ("pipeline", "Pipeline", 1, 0),
        ("salesbot", "Salesbot", 2, 2), ("list", "Lists", 2, 0)]

    by_route = {r["route_id"]: r for r in body["routes"]}
    assert set(by_route) == {smsru.pk, smsc.pk}
    assert by_route[smsru.pk]["name"] == "SMS.ru (ACME)"
    assert (by_route[smsru.pk]["total"], by_route[smsru.pk]["delivered"], by_route[smsru.pk]["finished"]) == (14, 12, 14)
    assert by_route[smsru.pk]["delivery_rate"] == round(12 / 14, 4)
    assert 2 <= by_route[smsru.pk]["median_seconds"] <= 5  # 8 in the 3 s bucket, 4 in the 10 s one
    assert by_route[smsc.pk]["delivery_rate"] == 0.75  # 3 delivered, 1 rejected; the 2 sent are open
    assert 30 <= by_route[smsc.pk]["median_seconds"] <= 45
    assert by_route[smsc.pk]["parts"] == 3 * 2 + 2

    assert body["failure_reasons"] == [
        {"status": "undelivered", "error_class": "blocked_recipient", "count": 2,
         "text": "The recipient or the operator blocks these SMS"},
        {"status": "rejected", "error_class": "invalid_recipient", "count": 1,
         "text": "The number is wrong or does not exist"},
        {"status": "rejected", "error_class": "limit", "count": 1,
         "text": "Refused by smsgate's protection: too many SMS at once"},
    ]
    assert len(api.get(STATS, {"days": 7}).json()["series"]) == 7
    assert api.get(STATS, {"days": 90}).json()["series"][0]["date"] == str(timezone.localdate() - timedelta(days=89))


def test_figures_in_russian(api, figures):
    body = api.get(STATS, HTTP_ACCEPT_LANGUAGE="ru").json()
    assert [s["label"] for s in body["sources"]] == ["Коды входа", "Карточка", "Цифровая воронка", "Salesbot",
                                                     "Списки"]
    assert body["failure_reasons"][0]["text"] == "Получатель или оператор блокирует такие SMS"


def test_a_deleted_route_and_the_default_route_keep_their_figures(api, account, figures):
    smsru, _smsc = figures
    insert(account, n=2, route=None, provider="smsaero")  # the deployment's default route
    deleted = smsru.pk
    smsru.delete()  # its history stays in the counters under its number
    names = {r["route_id"]: r["name"] for r in api.get(STATS, HTTP_ACCEPT_LANGUAGE="en").json()["routes"]}
    assert names[None] == "SMS Aero (the service's default route)"
    assert names[deleted] == "SMS.ru (a deleted route)"


def test_figures_never_count_over_the_deliveries_table(api, figures):
    with CaptureQueriesContext(connection) as captured:
        assert api.get(STATS).status_code == 200
    assert queries_touching_deliveries(captured) == []


def test_another_accounts_sms_are_never_in_the_figures(api, other_api, account, other_account, figures):
    insert(other_account, n=3, kind=DeliveryKind.CRM, provider="twilio")
    mine, theirs = api.get(STATS).json(), other_api.get(STATS, HTTP_ACCEPT_LANGUAGE="en").json()
    assert sum(d["total"] for d in mine["series"]) == 22
    assert sum(d["total"] for d in theirs["series"]) == 3
    assert theirs["routes"] == [{"route_id": None, "provider": "twilio", "name": "Twilio (the service's default route)",
                                 "total": 3, "delivered": 3, "finished": 3, "delivery_rate": 1.0,
                                 "median_seconds": theirs["routes"][0]["median_seconds"], "parts": 3}]
    assert {s["source"] for s in theirs["sources"]} == {"crm"}
    assert theirs["failure_reasons"] == []


@pytest.mark.parametrize("days", ["0", "91", "-1", "abc", "1.5", str(10**30), arabic(12),
                                  "12".translate(FULLWIDTH), "1_2", "²", "12\x00", "1e3"])
def test_hostile_parameters_are_a_400(api, figures, days):
    body = assert_json_error(api.get(STATS, {"days": days}), 400, "invalid")
    assert body["detail"]


def test_a_400_is_in_the_requests_language(api):
    body = assert_json_error(api.get(STATS, {"days": "0"}, HTTP_ACCEPT_LANGUAGE="ru"), 400, "invalid")
    assert any("1" in message for message in body["errors"]["days"])
    assert body["detail"] != assert_json_error(api.get(STATS, {"days": "0"}, HTTP_ACCEPT_LANGUAGE="en"), 400)["detail"]
