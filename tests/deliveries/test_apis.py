"""The account API for deliveries: list with cursor pages and filters, one delivery, stats."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Attempt, AttemptOutcome, Delivery, DeliveryStatus, StatusEvent
from deliveries.counters import deliveries_recount

pytestmark = pytest.mark.django_db

LIST = "/api/v1/deliveries/"


def make_delivery(account, *, status=DeliveryStatus.SENT, phone="+79123456789", text="Код для входа: 834622",
                  age=timedelta(0), kind="system"):
    delivery = Delivery.objects.create(account=account, phone=phone, text=text, encoding="ucs2", segments=1,
                                       status=status, kind=kind, valid_until=timezone.now() + timedelta(minutes=10))
    if age:
        Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - age)
        delivery.refresh_from_db()
    return delivery


def ids(response):
    return [d["id"] for d in response.json()["results"]]


def test_list_is_newest_first_with_masked_codes(api, account):
    old = make_delivery(account, age=timedelta(hours=2))
    new = make_delivery(account, text="Ваш код 1234, действует 10 минут")
    response = api.get(LIST)
    assert response.status_code == 200
    body = response.json()
    assert ids(response) == [str(new.pk), str(old.pk)]
    assert body["results"][0]["text"] == "Ваш код ••••, действует •• минут"
    assert body["results"][1]["text"] == "Код для входа: ••••••"
    assert body["results"][0]["phone"] == "+79123456789"
    assert "834622" not in response.content.decode()


def test_cursor_pages_walk_every_delivery_once(api, account):
    made = [make_delivery(account, age=timedelta(minutes=n)) for n in range(7)]
    seen, url = [], f"{LIST}?page_size=3"
    while url:
        body = api.get(url).json()
        seen += [d["id"] for d in body["results"]]
        url = body["next"]
    assert seen == [str(d.pk) for d in made]
    assert api.get(f"{LIST}?cursor=garbage").status_code == 404


def test_filter_by_status(api, account):
    sent = make_delivery(account, status=DeliveryStatus.SENT)
    failed = make_delivery(account, status=DeliveryStatus.FAILED)
    make_delivery(account, status=DeliveryStatus.DELIVERED)
    assert ids(api.get(LIST, {"status": "failed"})) == [str(failed.pk)]
    assert set(ids(api.get(f"{LIST}?status=failed&status=sent"))) == {str(failed.pk), str(sent.pk)}
    assert set(ids(api.get(LIST, {"status": "failed,sent"}))) == {str(failed.pk), str(sent.pk)}
    bad = api.get(LIST, {"status": "lost"})
    assert bad.status_code == 400 and "status" in bad.json()["errors"]


def test_filter_by_date_range(api, account):
    today = make_delivery(account)
    three_days = make_delivery(account, age=timedelta(days=3))
    make_delivery(account, age=timedelta(days=10))
    day = timezone.localdate()
    assert ids(api.get(LIST, {"created_from": str(day)})) == [str(today.pk)]
    window = {"created_from": str(day - timedelta(days=4)), "created_to": str(day - timedelta(days=1))}
    assert ids(api.get(LIST, window)) == [str(three_days.pk)]
    assert api.get(LIST, {"created_from": "yesterday"}).status_code == 400
    reversed_range = api.get(LIST, {"created_from": str(day), "created_to": str(day - timedelta(days=1))})
    assert reversed_range.status_code == 400


@pytest.mark.parametrize("typed", ["+79123456789", "+7 (912) 345-67-89", "8 912 345 67 89", "9123456789",
                                   "79123456789"])
def test_filter_by_phone_normalises_and_matches_exactly(api, account, typed):
    mine = make_delivery(account, phone="+79123456789")
    make_delivery(account, phone="+79123456780")
    assert ids(api.get(LIST, {"phone": typed})) == [str(mine.pk)]


def test_filter_by_phone_refuses_garbage(api, account):
    response = api.get(LIST, {"phone": "not a phone"})
    assert response.status_code == 400 and "phone" in response.json()["errors"]


def test_one_delivery_with_attempts_and_events(api, account):
    delivery = make_delivery(account)
    Attempt.objects.create(delivery=delivery, provider="smsru", started_at=timezone.now(),
                           outcome=AttemptOutcome.SENT, provider_message_id="000-1", latency_ms=120,
                           raw_response={"balance": 1})
    StatusEvent.objects.create(delivery=delivery, source="webhook", status="delivered", provider_code="103",
                               applied=True, raw={"x": 1})
    response = api.get(f"{LIST}{delivery.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "Код для входа: ••••••"
    [attempt] = body["attempts"]
    assert attempt["outcome"] == "sent" and attempt["provider_message_id"] == "000-1"
    assert "raw_response" not in attempt
    [event] = body["events"]
    assert (event["status"], event["provider_code"], event["applied"]) == ("delivered", "103", True)
    assert api.get(f"{LIST}00000000-0000-0000-0000-000000000000/").status_code == 404
    for bad in ("not-a-uuid", "12345", "%00"):
        response = api.get(f"{LIST}{bad}/")
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_stats_count_by_status_per_day(api, account):
    """The figures read the counters: deliveries counted as the services count them (a recount of
    rows made here directly) appear by day and status; the full figures: test_stats_api.py."""
    made = [make_delivery(account, status=DeliveryStatus.DELIVERED), make_delivery(account, status=DeliveryStatus.DELIVERED),
            make_delivery(account, status=DeliveryStatus.FAILED),
            make_delivery(account, status=DeliveryStatus.DELIVERED, age=timedelta(days=2)),
            make_delivery(account, status=DeliveryStatus.DELIVERED, age=timedelta(days=45))]
    deliveries_recount(delivery_ids=[d.pk for d in made])
    body = api.get("/api/v1/stats/").json()
    assert body["days"] == 30 and len(body["series"]) == 30
    by_date = {d["date"]: d for d in body["series"]}
    today = by_date[str(timezone.localdate())]
    assert today["total"] == 3 and today["by_status"]["delivered"] == 2 and today["by_status"]["failed"] == 1
    assert by_date[str(timezone.localdate() - timedelta(days=2))]["total"] == 1
    assert sum(d["total"] for d in body["series"]) == 4
    assert set(today["by_status"]) == {s.value for s in DeliveryStatus}
    assert len(api.get("/api/v1/stats/", {"days": 7}).json()["series"]) == 7
    assert api.get("/api/v1/stats/", {"days": 0}).status_code == 400
    assert api.get("/api/v1/stats/", {"days": 1000}).status_code == 400


# --- one account never reaches another's deliveries -----------------------------------------------------
def test_deliveries_of_another_account_are_invisible(other_api, account):
    delivery = make_delivery(account)
    assert other_api.get(LIST).json()["results"] == []
    assert other_api.get(LIST, {"phone": delivery.phone}).json()["results"] == []
    assert other_api.get(f"{LIST}{delivery.pk}/").status_code == 404
    assert all(d["total"] == 0 for d in other_api.get("/api/v1/stats/").json()["series"])


def test_deliveries_are_read_only(api, account):
    delivery = make_delivery(account)
    assert api.post(LIST, {"phone": "+79123456789", "text": "x"}).status_code == 405
    assert api.delete(f"{LIST}{delivery.pk}/").status_code == 405
    assert api.patch(f"{LIST}{delivery.pk}/", {"status": "delivered"}).status_code == 405
