"""crm.sending.crm_sends_create on PostgreSQL and Redis: the route rule, the CRM caps (tighten-only), the
abuse guard, idempotency keys, one INSERT for a batch with a CrmMessage and an sms_out note each, and the
send path refusing the default route for a CRM delivery the operator did not allow."""

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from accounts.limits import clear_limits_cache
from accounts.models import AccountCeilings, AccountOwnLimits
from accounts.selectors import forget_account
from crm import caps
from crm.models import CrmMessage, CrmNote, CrmOrigin, NoteKind, NoteState
from crm.sending import CrmSend, crm_route_refusal, crm_sends_create
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.dispatch import delivery_send
from routes.models import ProviderRoute

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def send(account, *items, kind=DeliveryKind.CRM, write_notes=True):
    return crm_sends_create(account=account, kind=kind, items=list(items), write_notes=write_notes)


def item(n=0, **overrides):
    values = {"entity_type": "leads", "entity_id": 1000 + n, "phone": f"+7912345{n:04d}", "text": f"Привет {n}"}
    return CrmSend(**{**values, **overrides})


# --- the route rule -------------------------------------------------------------------------------------
def test_without_any_route_a_crm_send_is_refused_as_no_route(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = ""
    [result] = send(account, item())
    assert (result.code, result.delivery_id, result.http_status) == ("no_route", None, 422)
    assert "SMS provider" in result.detail
    assert not Delivery.objects.exists() and not CrmMessage.objects.exists()


def test_the_default_route_carries_crm_sends_only_where_the_operator_allows_it(account, settings, shared_redis):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    [refused] = send(account, item())
    assert (refused.code, refused.http_status) == ("crm_not_allowed", 422)
    assert crm_route_refusal(account=account)[0] == "crm_not_allowed"

    account.crm_default_route_allowed = True
    account.save(update_fields=["crm_default_route_allowed"])
    [accepted] = send(account, item())
    assert accepted.accepted and accepted.delivery_id
    assert Delivery.objects.get(pk=accepted.delivery_id).kind == DeliveryKind.CRM


def test_an_own_route_is_enough_whatever_the_flag(account, smsru_route, settings, shared_redis):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    smsru_route()
    [result] = send(account, item())
    assert result.accepted


def test_a_crm_delivery_is_never_sent_on_the_default_route_unless_allowed(account, settings, shared_redis):
    """Accepted while the account had a route; the route is gone when the worker plans the send."""
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    account.crm_default_route_allowed = True
    account.save(update_fields=["crm_default_route_allowed"])
    [result] = send(account, item())
    account.crm_default_route_allowed = False
    account.save(update_fields=["crm_default_route_allowed"])
    forget_account(account.pk)
    delivery_send(delivery_id=result.delivery_id)
    delivery = Delivery.objects.get(pk=result.delivery_id)
    assert (delivery.status, delivery.error_class) == (DeliveryStatus.FAILED, "no_route")
    assert delivery.provider == ""


# --- a batch in one INSERT ------------------------------------------------------------------------------------
def test_a_batch_is_recorded_in_one_round_trip_with_a_message_and_a_note_each(account, smsru_route, shared_redis):
    smsru_route()
    items = [item(n, entity_id=555 if n < 3 else 1000 + n, amo_user_id=77, template_id=None) for n in range(6)]
    with CaptureQueriesContext(connection) as queries:
        results = send(account, *items)
    assert all(r.accepted for r in results)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # deliveries, their counters, the CRM rows and the notes: one pipeline (captured one statement each)
    assert any('"deliveries_delivery"' in sql for sql in inserts)
    assert any('"crm_crmmessage"' in sql for sql in inserts) and any('"crm_crmnote"' in sql for sql in inserts)
    assert Delivery.objects.filter(kind=DeliveryKind.CRM, status=DeliveryStatus.PENDING).count() == 6
    messages = {m.pk: m for m in CrmMessage.objects.all()}
    assert set(messages) == {r.delivery_id for r in results}
    assert {m.origin for m in messages.values()} == {CrmOrigin.PANEL}
    assert {m.note_state for m in messages.values()} == {NoteState.PENDING}
    notes = list(CrmNote.objects.order_by("amo_created_at"))
    assert len(notes) == 6 and {n.kind for n in notes} == {NoteKind.SMS_OUT}
    # Three notes of lead 555: three different seconds (amoCRM shows one note per created_at).
    seconds = [n.amo_created_at for n in notes if n.entity_id == 555]
    assert len(set(seconds)) == 3 and max(seconds) - min(seconds) == 2
    assert {(n.text, n.phone) for n in notes} == {(f"Привет {n}", f"+7912345{n:04d}") for n in range(6)}

    # A later send to the same lead takes the next second after its latest note.
    [later] = send(account, item(9, entity_id=555))
    assert CrmNote.objects.get(message_id=later.delivery_id).amo_created_at == max(seconds) + 1


def test_feed_sends_have_no_note_of_ours_and_other_kinds_keep_their_origin(account, smsru_route, shared_redis):
    smsru_route()
    [feed] = send(account, item(1), write_notes=False)
    [pipeline] = send(account, item(2), kind=DeliveryKind.PIPELINE)
    assert CrmMessage.objects.get(pk=feed.delivery_id).note_state == NoteState.NONE
    assert CrmMessage.objects.get(pk=feed.delivery_id).origin == CrmOrigin.FEED
    assert not CrmNote.objects.filter(message_id=feed.delivery_id).exists()
    message = CrmMessage.objects.get(pk=pipeline.delivery_id)
    assert (message.origin, message.kind) == (CrmOrigin.PIPELINE, DeliveryKind.PIPELINE)
    with pytest.raises(ValueError):
        send(account, item(3), kind=DeliveryKind.SYSTEM)


def test_items_that_cannot_be_sent_are_refused_one_by_one(account, smsru_route, shared_redis):
    smsru_route()
    results = send(account, item(0), item(1, phone="not a phone"), item(2, text=""), item(3, entity_type="companies"),
                   item(4, entity_id=2**60), item(5, dedupe_key="x" * 200), item(6, phone="+7 495 123-45-67"))
    assert [r.code for r in results] == [None, "phone", "invalid", "invalid", "invalid", "invalid", "phone"]
    assert results[1].errors["phone"] and results[2].errors["text"] and results[3].errors["entity_type"]
    assert results[6].errors["phone"] == ["This number cannot receive SMS (it is not a mobile number)."]
    assert Delivery.objects.count() == 1


# --- idempotency ------------------------------------------------------------------------------------------------
def test_a_key_seen_before_answers_with_the_first_delivery(account, smsru_route, shared_redis):
    smsru_route()
    [first] = send(account, item(1, dedupe_key="card:abc"))
    [again] = send(account, item(1, dedupe_key="card:abc", text="другой текст"))
    assert again.duplicate and again.delivery_id == first.delivery_id
    results = send(account, item(2, dedupe_key="dp:1"), item(2, dedupe_key="dp:1"), item(3, dedupe_key="dp:2"))
    assert results[0].accepted and not results[0].duplicate
    assert results[1].duplicate and results[1].delivery_id == results[0].delivery_id
    assert results[2].delivery_id not in (results[0].delivery_id, None)
    assert Delivery.objects.count() == 3 and CrmNote.objects.count() == 3


def test_the_same_key_in_another_account_is_another_send(account, other_account, smsru_route, shared_redis):
    smsru_route()
    ProviderRoute.objects.create(account=other_account, provider="smsru", priority=1, credentials={"api_id": "x"})
    [mine] = send(account, item(1, dedupe_key="k-1"))
    [theirs] = send(other_account, item(1, dedupe_key="k-1"))
    assert mine.accepted and theirs.accepted and not theirs.duplicate and mine.delivery_id != theirs.delivery_id


# --- the CRM caps and the guard ---------------------------------------------------------------------------------
def test_caps_per_user_and_per_account_refuse_what_is_over_and_count_nothing_refused(
        account, smsru_route, settings, shared_redis):
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 2
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = 5
    clear_limits_cache()
    results = send(account, *[item(n, amo_user_id=1) for n in range(3)], item(3, amo_user_id=2))
    assert [r.code for r in results] == [None, None, "crm_caps", None]
    assert results[2].reason == "crm_user_hourly" and results[2].http_status == 429
    assert 3500 <= results[2].retry_after <= 3600
    assert "too many SMS from amoCRM" in results[2].detail
    # The refused one is kept for staff as a rejected delivery, with no CRM record and no note.
    rejected = Delivery.objects.get(status=DeliveryStatus.REJECTED)
    assert (rejected.error_class, rejected.error_code) == ("crm_caps", "crm_user_hourly")
    assert CrmMessage.objects.count() == 3
    # The account's cap: 3 counted so far, 2 more fit (pipeline sends name no user).
    results = send(account, *[item(10 + n) for n in range(3)], kind=DeliveryKind.PIPELINE)
    assert [r.code for r in results] == [None, None, "crm_caps"]
    assert results[2].reason == "crm_account_hourly"


def test_the_accounts_own_caps_only_tighten(account, smsru_route, settings, shared_redis):
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    AccountCeilings.objects.create(account=account, crm_per_day=10)
    AccountOwnLimits.objects.create(account=account, crm_per_day=1, crm_per_hour=50)
    clear_limits_cache()
    results = send(account, item(1), item(2))
    assert [r.code for r in results] == [None, "crm_caps"] and results[1].reason == "crm_account_daily"


def test_the_abuse_guard_applies_to_crm_sends(account, smsru_route, settings, shared_redis):
    smsru_route()
    settings.SMSGATE_DEFAULT_COUNTRIES = {"amocrm.ru": "RU"}
    settings.SMSGATE_LIMIT_PHONE_COOLDOWN = 30
    clear_limits_cache()
    results = send(account, item(1), item(1), item(2, phone="+12025550123"))
    assert [r.code for r in results] == [None, "limits", "policy"]
    assert (results[1].reason, results[1].http_status) == ("phone_cooldown", 429)
    assert (results[2].reason, results[2].http_status) == ("country_not_allowed", 422)
    assert Delivery.objects.filter(status=DeliveryStatus.REJECTED).count() == 2


def test_without_redis_the_caps_count_in_process_memory_the_same_way(account, smsru_route, settings):
    smsru_route()
    settings.SMSGATE_REDIS_URL = ""
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 1
    clear_limits_cache()
    caps._counter = None
    try:
        results = send(account, item(1, amo_user_id=9), item(2, amo_user_id=9), item(3, amo_user_id=10))
        assert [r.code for r in results] == [None, "crm_caps", None]
        assert isinstance(caps._counters(), caps.LocalCaps) and 3500 <= results[1].retry_after <= 3600
    finally:
        caps._counter = None


def test_with_redis_down_the_caps_let_sms_through_and_say_so(account, smsru_route, settings, caplog):
    smsru_route()
    settings.SMSGATE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 1
    clear_limits_cache()
    caps._counter = None
    try:
        results = send(account, item(1, amo_user_id=9), item(2, amo_user_id=9))
        assert [r.code for r in results] == [None, None]
        assert "CRM caps: Redis unavailable" in caplog.text
    finally:
        caps._counter = None


@pytest.mark.django_db(transaction=True)
def test_two_sends_with_one_key_at_the_same_moment_make_one_sms(account, smsru_route, shared_redis):
    """Both may pass the look for the key; the unique key refuses the second INSERT, which then answers
    with the first's delivery. Either way: one delivery, one note, the same id for both."""
    smsru_route()
    barrier = threading.Barrier(8)
    results = []

    def one():
        barrier.wait()
        try:
            results.extend(send(account, item(1, dedupe_key="card:same-click", entity_id=4242)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and {r.code for r in results} == {None}
    assert len({r.delivery_id for r in results}) == 1 and sum(not r.duplicate for r in results) == 1
    assert Delivery.objects.count() == 1 and CrmNote.objects.count() == 1 and CrmMessage.objects.count() == 1
