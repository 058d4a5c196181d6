"""The deliveries admin: search normalisation, masking, permissions, filters, actions, timeline,
the estimated-count paginator and the dashboard."""

import re
from datetime import timedelta

import pytest
from django.test.utils import CaptureQueriesContext
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account
from deliveries.admin_search import delivery_search_q, search_phone
from deliveries.models import Attempt, Delivery, DeliveryKind, DeliveryStatus, StatusEvent
from deliveries.paginators import EstimatedCountPaginator
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.reports import delivery_status_apply
from tests.staff import age, queries_touching_deliveries, require_postgres, set_state, staff_client

pytestmark = pytest.mark.django_db

LIST = reverse("admin:deliveries_delivery_changelist")
VIEWER = ("deliveries.view_delivery",)
ACTOR = ("deliveries.view_delivery", "deliveries.change_delivery")


def change_url(delivery):
    return reverse("admin:deliveries_delivery_change", args=[delivery.pk])


@pytest.fixture
def make(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"

    def make(phone="+79123456789", text="Код для входа: 834622", account=account, **kwargs):
        return delivery_create(account=account, phone=phone, text=text, **kwargs).delivery

    return make


def listed_ids(response) -> set[str]:
    return set(re.findall(r'/admin/deliveries/delivery/([0-9a-f-]{36})/change/', response.content.decode()))


# --- search --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed", ["+79123456789", "+7 912 345-67-89", "8 (912) 345-67-89", "89123456789",
                                   "79123456789", "9123456789", " +7 (912) 345 67 89 "])
def test_a_phone_in_any_common_format_finds_its_deliveries(make, typed):
    mine = make()
    make(phone="+79123456780")
    client, _ = staff_client(*VIEWER)
    assert listed_ids(client.get(LIST, {"q": typed})) == {str(mine.pk)}


def test_phone_normalisation_for_search():
    assert search_phone("+44 7911 123456") == "+447911123456"
    assert search_phone("447911123456") == "+447911123456"
    assert search_phone("12345") is None  # too short: an account id, not a phone
    assert search_phone("acme") is None


def test_search_by_delivery_id_provider_message_id_and_account(make, account, integration):
    other_account = Account.objects.create(integration=integration, amo_id=777001, subdomain="globex")
    mine = make()
    theirs = make(account=other_account, phone="+79123456780")
    set_state(theirs, status=DeliveryStatus.SENT, provider="smsru", provider_message_id="202611-42")
    client, _ = staff_client(*VIEWER)
    assert listed_ids(client.get(LIST, {"q": str(mine.pk)})) == {str(mine.pk)}
    assert listed_ids(client.get(LIST, {"q": "202611-42"})) == {str(theirs.pk)}
    for term in ("globex", "GLOBEX", "globex.amocrm.ru", "777001", str(other_account.pk)):
        assert listed_ids(client.get(LIST, {"q": term})) == {str(theirs.pk)}, term
    assert listed_ids(client.get(LIST, {"q": "12345"})) == {str(mine.pk)}  # the acme account's amoCRM id


@pytest.mark.parametrize("term", ["nobody", "%", "' OR 1=1 --", "x" * 300, "+7 000", "00000000-0000-0000-0000"])
def test_a_search_that_names_nothing_finds_nothing(make, term):
    make()
    client, _ = staff_client(*VIEWER)
    response = client.get(LIST, {"q": term})
    assert response.status_code == 200 and listed_ids(response) == set()


def test_search_conditions_are_exact_matches(make):
    """No LIKE/ILIKE over the big table, whatever is typed."""
    set_state(make(), status=DeliveryStatus.SENT, provider="smsru", provider_message_id="202611-42")
    for term in ("acme", "+79123456789", "12345", "202611-42"):
        sql = str(Delivery.objects.filter(delivery_search_q(term)).query)
        assert "LIKE" not in sql.upper()


# --- list, filters, masking -------------------------------------------------------------------------------
def test_the_list_masks_phones_and_shows_the_columns(make):
    delivery = make()
    set_state(delivery, status=DeliveryStatus.DELIVERED, provider="smsru",
              sent_at=delivery.created_at + timedelta(seconds=1.5),
              finished_at=delivery.created_at + timedelta(seconds=7))
    client, _ = staff_client(*VIEWER)
    body = client.get(LIST).content.decode()
    assert "+7 912 ***-**-89" in body
    assert "+79123456789" not in body and "834622" not in body
    assert "acme" in body and "sms-badge" in body
    assert "1.5 s" in body or "1,5 s" in body or "1,5 с" in body


def test_filters_by_status_kind_provider_and_created(make):
    today = make()
    old = age(make(phone="+79123456780", kind=DeliveryKind.TEST), days=10)
    set_state(old, status=DeliveryStatus.FAILED, provider="smsru", error_class="no_route")
    client, _ = staff_client(*VIEWER)
    assert listed_ids(client.get(LIST, {"status__exact": "failed"})) == {str(old.pk)}
    assert listed_ids(client.get(LIST, {"kind__exact": "test"})) == {str(old.pk)}
    assert listed_ids(client.get(LIST, {"provider": "smsru"})) == {str(old.pk)}
    assert listed_ids(client.get(LIST, {"created": "today"})) == {str(today.pk)}
    assert listed_ids(client.get(LIST, {"created": "7d"})) == {str(today.pk)}
    assert listed_ids(client.get(LIST, {"created": "30d"})) == {str(today.pk), str(old.pk)}


def test_the_list_never_counts_the_whole_table(make):
    require_postgres("estimated counts")  # SQLite, for development only, counts exactly
    make()
    client, _ = staff_client(*VIEWER)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(LIST, {"status__exact": "pending"}).status_code == 200
    counts = [sql for sql in queries_touching_deliveries(captured) if "COUNT(" in sql.upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts)


def test_the_paginator_counts_small_results_exactly(make):
    for i in range(3):
        make(phone=f"+7912345678{i}")
    paginator = EstimatedCountPaginator(Delivery.objects.order_by("-created_at"), 2)
    assert paginator.count == 3 and paginator.num_pages == 2


class SmallLimitsPaginator(EstimatedCountPaginator):
    """The same rules with thresholds that a test table of a few thousand rows crosses."""

    exact_up_to = 500
    trusted_estimate = 2000


def test_the_paginator_uses_postgresql_estimates_for_big_results(db):
    require_postgres("the row estimate")
    from django.core.management import call_command

    call_command("seed_deliveries", count=6000, accounts=3, no_stats=True, stdout=open("/dev/null", "w"))
    queryset = Delivery.objects.order_by("-created_at", "-id")
    total = queryset.count()

    def count(qs):
        with CaptureQueriesContext(connection) as captured:
            value = SmallLimitsPaginator(qs, 50).count
        return value, [q["sql"] for q in captured if "COUNT(" in q["sql"].upper()]

    # The whole table: pg_class.reltuples, no count at all.
    estimate, counts = count(queryset)
    assert estimate == pytest.approx(total, rel=0.2) and counts == []
    # A filter the planner expects thousands of rows for: its estimate, no count.
    delivered = queryset.filter(status=DeliveryStatus.DELIVERED)
    estimate, counts = count(delivered)
    assert estimate == pytest.approx(delivered.count(), rel=0.2) and counts == []
    # A small result: exact, from a count bounded by a LIMIT.
    rare = queryset.filter(status=DeliveryStatus.UNKNOWN)
    exact, counts = count(rare)
    assert exact == rare.count() and len(counts) == 1 and "LIMIT 501" in counts[0].upper()
    # A result bigger than the exact limit that the planner underestimates: at least the bound.
    underestimated = queryset.filter(kind=DeliveryKind.SYSTEM, provider__in=["smsru", "console"])
    value, _ = count(underestimated)
    assert value > 500


# --- the delivery's page --------------------------------------------------------------------------------
@pytest.fixture
def sent_delivery(account, smsru_route, fake_smsru, make):
    smsru_route(api_id="route-secret-api-id-123")
    delivery = make()
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    delivery_status_apply(delivery=delivery, status=DeliveryStatus.DELIVERED, source=StatusEvent.Source.WEBHOOK,
                          provider_code="103", raw={"sms_id": delivery.provider_message_id, "status": "103",
                                                    "api_id": "route-secret-api-id-123"})
    # A provider that echoed the credential back in its reply, inside a text.
    Attempt.objects.filter(delivery=delivery).update(
        raw_response={"status": "OK", "note": "called with route-secret-api-id-123",
                      "sms": {"79123456789": {"status": "OK", "sms_id": delivery.provider_message_id}}})
    return delivery


def test_the_page_shows_the_timeline_without_secrets(sent_delivery):
    client, _ = staff_client(*VIEWER)
    body = client.get(change_url(sent_delivery)).content.decode()
    assert 'id="timeline"' in body
    # Accepted, one attempt (the fake refuses this api_id), smsgate's decision (no route left: a status
    # event since the status owner keeps one for every change not made by a provider call), one report.
    assert body.count("sms-timeline-entry") == 4
    assert sent_delivery.provider_message_id in body and "103" in body
    assert "route-secret-api-id-123" not in body
    assert "called with •••" in body


def test_system_sms_text_is_masked_without_the_permission(sent_delivery):
    viewer, _ = staff_client(*VIEWER)
    body = viewer.get(change_url(sent_delivery)).content.decode()
    assert "834622" not in body and "Код для входа: ••••••" in body
    # Not even in the raw provider reply, where SMS.ru echoes the number as a key.
    assert "79123456789" not in body and "+7 912 ***-**-89" in body and "&quot;7 912 ***-**-89&quot;" in body

    reader, _ = staff_client(*VIEWER, "deliveries.view_message_text", username="reader")
    body = reader.get(change_url(sent_delivery)).content.decode()
    assert "Код для входа: 834622" in body and "+79123456789" in body and "&quot;79123456789&quot;" in body


def test_raw_data_is_redacted_in_keys_values_and_numbers():
    from deliveries.masking import personal_replacements
    from routes.redaction import redact

    raw = {"79123456789": {"status": "OK", "api_key": "k", "echo": "to +79123456789: Код 834622"},
           "to": 79123456789, "token": {"nested": True}, "list": ["s3cret-value", 5]}
    redacted = redact(raw, {"s3cret-value"}, personal_replacements("+79123456789", "Код 834622"))
    assert redacted == {
        "7 912 ***-**-89": {"status": "OK", "api_key": "•••", "echo": "to +7 912 ***-**-89: Код ••••••"},
        "to": "7 912 ***-**-89", "token": "•••", "list": ["•••", 5]}


def test_test_sms_text_is_not_masked(make):
    delivery = make(kind=DeliveryKind.TEST, text="smsgate test 2024")
    viewer, _ = staff_client(*VIEWER)
    assert "smsgate test 2024" in viewer.get(change_url(delivery)).content.decode()


def test_the_page_is_read_only_and_has_no_add_or_delete(make):
    delivery = make()
    client, _ = staff_client(*ACTOR, "deliveries.add_delivery", "deliveries.delete_delivery")
    body = client.get(change_url(delivery)).content.decode()
    assert 'name="_save"' not in body
    assert client.get(reverse("admin:deliveries_delivery_add")).status_code == 403
    assert client.get(reverse("admin:deliveries_delivery_delete", args=[delivery.pk])).status_code == 403
    assert client.post(change_url(delivery), {"phone": "+79000000000"}).status_code == 403


# --- permissions and actions ------------------------------------------------------------------------------
def test_staff_without_the_view_permission_see_nothing(make):
    delivery = make()
    client, _ = staff_client(username="nobody")
    assert client.get(LIST).status_code == 403
    assert client.get(change_url(delivery)).status_code == 403
    assert client.get(reverse("admin:deliveries_delivery_dashboard")).status_code == 403


def test_viewers_cannot_retry_or_cancel(make):
    delivery = make()
    client, _ = staff_client(*VIEWER)
    body = client.get(LIST).content.decode()
    assert "cancel_selected" not in body and "retry_selected" not in body
    assert client.post(reverse("admin:deliveries_delivery_cancel", args=[delivery.pk])).status_code == 403
    response = client.post(LIST, {"action": "cancel_selected", "_selected_action": [delivery.pk]})
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.PENDING
    assert response.status_code in (200, 302)


def test_cancel_and_retry_from_the_delivery_page(make, django_capture_on_commit_callbacks):
    delivery = make()
    client, _ = staff_client(*ACTOR)
    body = client.get(change_url(delivery)).content.decode()
    assert reverse("admin:deliveries_delivery_cancel", args=[delivery.pk]) in body
    assert client.get(reverse("admin:deliveries_delivery_cancel", args=[delivery.pk])).status_code == 405
    response = client.post(reverse("admin:deliveries_delivery_cancel", args=[delivery.pk]), follow=True)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_class) == (DeliveryStatus.FAILED, "canceled")
    assert response.redirect_chain[-1][0] == change_url(delivery)
    # Canceled: no retry button, and a forced retry is refused with a message.
    assert reverse("admin:deliveries_delivery_retry", args=[delivery.pk]) not in response.content.decode()
    response = client.post(reverse("admin:deliveries_delivery_retry", args=[delivery.pk]), follow=True)
    assert "canceled" in response.content.decode() or "отмен" in response.content.decode()
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED

    failed = set_state(make(phone="+79123456780"), status=DeliveryStatus.FAILED, error_class="provider_unavailable")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:deliveries_delivery_retry", args=[failed.pk]))
    assert Delivery.objects.get(pk=failed.pk).status == DeliveryStatus.PENDING


def test_bulk_actions_report_what_was_done_and_what_was_refused(make):
    pending = [make(phone=f"+7912345678{i}") for i in range(3)]
    sent = set_state(make(phone="+79123456770"), status=DeliveryStatus.SENT, provider="smsru")
    client, _ = staff_client(*ACTOR)
    response = client.post(LIST, {"action": "cancel_selected",
                                  "_selected_action": [d.pk for d in pending] + [sent.pk]}, follow=True)
    assert Delivery.objects.filter(status=DeliveryStatus.FAILED, error_class="canceled").count() == 3
    assert Delivery.objects.get(pk=sent.pk).status == DeliveryStatus.SENT
    messages = [str(m) for m in response.context["messages"]]
    assert len(messages) == 2 and any("3" in m for m in messages)


# --- dashboard ---------------------------------------------------------------------------------------------
def test_the_dashboard_renders_inline_svg_from_the_counters(make, account):
    delivery = make()
    set_state(delivery, status=DeliveryStatus.DELIVERED, provider="smsru",
              finished_at=delivery.created_at + timedelta(seconds=3))
    set_state(make(phone="+79123456780"), status=DeliveryStatus.REJECTED, error_class="invalid_recipient",
              provider="smsru", finished_at=timezone.now())
    client, _ = staff_client(*VIEWER)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("admin:deliveries_delivery_dashboard"))
    body = response.content.decode()
    assert response.status_code == 200
    assert queries_touching_deliveries(captured) == []  # counters only
    assert body.count("<svg id=\"chart-") == 3 and "<script" not in body.split("sms-dashboard")[1]
    assert "50.0 %" in body or "50,0 %" in body  # 1 delivered of 2 finished
    assert "invalid_recipient" in body
    per_account = client.get(reverse("admin:deliveries_delivery_dashboard"), {"account": account.pk})
    assert per_account.status_code == 200 and account.subdomain in per_account.content.decode()
