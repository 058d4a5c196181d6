"""delivery_send: the claim, routes in priority order, retries, deadlines, ambiguity.

Every provider call here is real HTTP to the local fake SMS.ru (tests/fakes/smsru.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from routes.models import ProviderRoute
from deliveries import tasks
from deliveries.models import Attempt, AttemptOutcome, Delivery, DeliveryStatus, StatusEvent
from routes.providers.base import SendResult
from deliveries.services import dispatch
from deliveries.services.dispatch import PlannedSend, ProviderCall, deliveries_claim, delivery_send, delivery_send_plan
from deliveries.services.intake import delivery_create
from deliveries.services.outcomes import record_sent
from deliveries.services.reports import delivery_status_apply
from routes.services import RouteChoice
from tests.deliveries.test_endpoint import queued_task_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def create(account):
    def create(phone="+79123456789", text="Код: 1234", **kwargs):
        return delivery_create(account=account, phone=phone, text=text, **kwargs).delivery

    return create


def test_success_records_provider_id_and_attempt(fake_smsru, smsru_route, create):
    smsru_route(sender="ACME")
    delivery = create()
    outcome = delivery_send(delivery_id=delivery.pk)
    assert outcome.status == DeliveryStatus.SENT and outcome.retry_in is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.provider == "smsru" and delivery.provider_message_id.startswith("000000-")
    assert delivery.sent_at is not None and delivery.attempt_count == 1
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.SENT and attempt.latency_ms is not None
    assert attempt.provider_message_id == delivery.provider_message_id
    [message] = fake_smsru.sent_to("79123456789")
    assert message["msg"] == "Код: 1234" and message["from"] == "ACME"


def test_a_status_that_moved_on_during_the_call_is_kept_and_the_provider_id_still_recorded(smsru_route, create):
    # The worker records a success in one batch of statements; a delivery that a report, staff or the
    # sweeper moved on meanwhile keeps its status, but still gets the provider's id, route and time.
    route = smsru_route()
    moved_on, claimed = create(phone="+79123456780"), create(phone="+79123456781")
    Delivery.objects.filter(pk=moved_on.pk).update(status=DeliveryStatus.DELIVERED)
    Delivery.objects.filter(pk=claimed.pk).update(status=DeliveryStatus.SENDING)
    choice = RouteChoice(route, "smsru", {}, "")
    for delivery, message_id in ((moved_on, "id-1"), (claimed, "id-2")):
        record_sent([ProviderCall(PlannedSend(delivery, choice, has_next_route=False), latency_ms=0,
                                  result=SendResult(provider_message_id=message_id))])
    moved_on.refresh_from_db()
    claimed.refresh_from_db()
    assert (moved_on.status, moved_on.provider_message_id, moved_on.route_id) == ("delivered", "id-1", route.pk)
    assert (claimed.status, claimed.provider_message_id, claimed.route_id) == ("sent", "id-2", route.pk)
    assert moved_on.sent_at is not None and claimed.sent_at is not None



def test_a_batch_of_successes_is_recorded_as_each_one_would_be(smsru_route, create, account):
    """record_sent of a batch (a bulk batch: one round trip of writes on PostgreSQL) does what recording each
    success alone does: provider id, route and times on the delivery, the attempt closed, the
    route's failure count cleared, a report that came first applied, the counters moved."""
    from decimal import Decimal

    from deliveries import counters, dashboard
    from deliveries.models import UnmatchedReport
    from routes.providers.base import ReportStatus

    route = smsru_route()
    ProviderRoute.objects.filter(pk=route.pk).update(consecutive_failures=1)
    deliveries = [create(phone=f"+7912345670{n}", kind="bulk") for n in range(4)]
    claimed = deliveries_claim(delivery_ids=[d.pk for d in deliveries])
    plans = []
    for delivery in sorted(claimed, key=lambda d: d.phone):
        delivery.account = account
        plans.append(delivery_send_plan(delivery, first_try=True))
    dispatch._attempts_open(plans)
    assert [Attempt.objects.get(pk=plan.attempt.pk).delivery_id for plan in plans] == [d.pk for d in deliveries]
    moved_on = deliveries[1]  # deliveries[2]: a report came first; deliveries[3]: sent and delivered at once
    delivery_status_apply(delivery=moved_on, status=DeliveryStatus.DELIVERED,
                          source=StatusEvent.Source.WEBHOOK)  # a report, meanwhile
    UnmatchedReport.objects.create(route=route, provider="smsru", provider_message_id="id-2", source="webhook",
                                   status=DeliveryStatus.DELIVERED)  # came before the worker recorded id-2
    results = [SendResult("id-0", cost=Decimal("1.5"), parts=2, raw={"status": "OK"}), SendResult("id-1"),
               SendResult("id-2"), SendResult("id-3", status=ReportStatus.DELIVERED)]

    outcomes = record_sent([ProviderCall(plan, latency_ms=120 + n, result=result)
                            for n, (plan, result) in enumerate(zip(plans, results))])

    assert [outcome.status for outcome in outcomes] == [DeliveryStatus.SENT] * 4
    rows = {d.pk: d for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])}
    assert [rows[d.pk].status for d in deliveries] == [DeliveryStatus.SENT, DeliveryStatus.DELIVERED,
                                                      DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED]
    assert [rows[d.pk].provider_message_id for d in deliveries] == ["id-0", "id-1", "id-2", "id-3"]
    assert all(rows[d.pk].route_id == route.pk and rows[d.pk].sent_at is not None for d in deliveries)
    attempt = Attempt.objects.get(delivery=deliveries[0])
    assert (attempt.outcome, attempt.latency_ms, attempt.provider_message_id, attempt.cost, attempt.parts,
            attempt.raw_response) == (AttemptOutcome.SENT, 120, "id-0", Decimal("1.5"), 2, {"status": "OK"})
    assert attempt.finished_at is not None
    assert set(Attempt.objects.values_list("outcome", flat=True)) == {AttemptOutcome.SENT}
    assert not UnmatchedReport.objects.exists()
    route.refresh_from_db()
    assert route.consecutive_failures == 0
    today = timezone.localdate()
    counted = dashboard.daily_by_status(since=today, until=today)
    assert counters.stats_rebuild(since=today, until=today).keys_corrected == 0
    assert dashboard.daily_by_status(since=today, until=today) == counted  # rebuilt from the rows: the same

def test_claim_is_exclusive_and_a_second_run_sends_nothing(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create()
    assert delivery_send(delivery_id=delivery.pk) is not None
    assert delivery_send(delivery_id=delivery.pk) is None
    assert deliveries_claim(delivery_ids=[delivery.pk]) == []
    assert len(fake_smsru.sent_to("79123456789")) == 1


def test_routes_are_tried_by_priority_and_auth_failure_moves_on(fake_smsru, smsru_route, create):
    first = smsru_route(priority=1, api_id="wrong")
    second = smsru_route(priority=5)
    delivery = create()
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.route == second
    outcomes = list(delivery.attempts.values_list("route_id", "outcome", "provider_code"))
    assert outcomes == [(first.pk, AttemptOutcome.NEXT_ROUTE, "200"), (second.pk, AttemptOutcome.SENT, "")]
    first.refresh_from_db()
    assert first.consecutive_failures == 1 and not first.is_broken


def test_repeated_auth_failures_mark_the_route_broken_until_credentials_change(fake_smsru, smsru_route, create):
    from routes.services import route_save

    route = smsru_route(api_id="wrong")
    for _ in range(2):
        delivery = create()
        delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.FAILED and delivery.error_class == "no_route"
    route.refresh_from_db()
    assert route.is_broken and "auth" in route.broken_reason
    route_save(account=route.account, provider="smsru", credentials={"api_id": "test-api-id"}, route=route)
    route.refresh_from_db()
    assert not route.is_broken and route.consecutive_failures == 0


def test_routes_are_read_once_per_process_and_a_failure_counted_elsewhere_still_resets(
        fake_smsru, smsru_route, create):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.selectors import ACCOUNT_CACHE_SECONDS
    from routes.selectors import routes_active

    route = smsru_route()
    delivery_send(delivery_id=create(phone="+79123456780").pk)  # reads and keeps the routes
    assert routes_active(account=route.account)[0].consecutive_failures == 0
    # Another worker process counts an auth failure; this one still holds the route it read.
    ProviderRoute.objects.filter(pk=route.pk).update(consecutive_failures=1)
    delivery = create()
    with CaptureQueriesContext(connection) as captured:
        delivery_send(delivery_id=delivery.pk)
    routes_table = f'"{ProviderRoute._meta.db_table}"'
    assert not [q for q in captured if q["sql"].startswith("SELECT") and f"FROM {routes_table}" in q["sql"]]
    delivery.refresh_from_db()
    route.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and route.consecutive_failures == 0
    assert ACCOUNT_CACHE_SECONDS <= 10  # how long another process's change can go unseen


def test_broken_routes_are_skipped(fake_smsru, smsru_route, create):
    smsru_route(priority=1).__class__.objects.filter(priority=1).update(is_broken=True)
    healthy = smsru_route(priority=2)
    delivery = create()
    delivery_send(delivery_id=delivery.pk)
    assert delivery.attempts.get().route == healthy


@pytest.mark.parametrize("phone,error_class,code", [
    ("+79000000202", "invalid_recipient", "202"),  # SMS.ru 202: bad recipient number
    ("+79000000209", "blocked_recipient", "209"),  # SMS.ru 209: number in the stop-list
])
def test_recipient_rejection_is_final_and_never_fails_over(fake_smsru, smsru_route, create, phone, error_class,
                                                           code):
    smsru_route(priority=1)
    smsru_route(priority=2)
    delivery = create(phone=phone)
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.REJECTED
    assert (delivery.error_class, delivery.error_code) == (error_class, code)
    assert delivery.finished_at is not None
    assert delivery.attempts.count() == 1


def test_temporary_error_retries_with_backoff_then_succeeds(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create(phone="+79000000220")  # SMS.ru 220: service temporarily unavailable
    outcome = delivery_send(delivery_id=delivery.pk)
    assert outcome.status == DeliveryStatus.PENDING and 1 <= outcome.retry_in <= 2
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at > timezone.now()
    assert delivery.error_code == "220"
    # Not claimable before its time (the claim tolerates a second of clock skew) ...
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=5))
    assert delivery_send(delivery_id=delivery.pk) is None
    # ... and the backoff grows.
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    second = delivery_send(delivery_id=delivery.pk)
    assert 2 <= second.retry_in <= 4
    assert delivery.attempts.filter(outcome=AttemptOutcome.RETRY).count() == 2


def test_temporary_errors_stop_at_the_validity_deadline(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create(phone="+79000000500")
    Delivery.objects.filter(pk=delivery.pk).update(valid_until=timezone.now() + timedelta(seconds=1.5))
    for _ in range(5):
        outcome = delivery_send(delivery_id=delivery.pk)
        if outcome.status != DeliveryStatus.PENDING:
            break
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert (delivery.error_class, delivery.error_code) == ("provider_unavailable", "500")


def test_a_route_that_keeps_failing_temporarily_hands_over_to_the_next(fake_smsru, smsru_route, create, account):
    smsru_route(priority=1)
    console = ProviderRoute.objects.create(account=account, provider="console", priority=2)
    delivery = create(phone="+79000000220")  # SMS.ru keeps answering 220 for this number
    outcomes = []
    for _ in range(3):
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        outcomes.append(delivery_send(delivery_id=delivery.pk).status)
    assert outcomes == [DeliveryStatus.PENDING, DeliveryStatus.PENDING, DeliveryStatus.SENT]
    delivery.refresh_from_db()
    assert delivery.route == console and delivery.provider == "console"
    assert list(delivery.attempts.values_list("outcome", flat=True)) == [
        AttemptOutcome.RETRY, AttemptOutcome.RETRY, AttemptOutcome.NEXT_ROUTE, AttemptOutcome.SENT]


def test_past_its_deadline_a_login_code_is_not_sent(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create()
    Delivery.objects.filter(pk=delivery.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.EXPIRED and delivery.finished_at
    assert not delivery.attempts.exists() and not fake_smsru.sent_to("79123456789")


def test_ambiguous_timeout_retries_a_login_code_once_then_unknown(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create(phone="+79000000999")  # the fake drops the connection after accepting
    first = delivery_send(delivery_id=delivery.pk)
    assert first.status == DeliveryStatus.PENDING
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    second = delivery_send(delivery_id=delivery.pk)
    assert second.status == DeliveryStatus.UNKNOWN
    delivery.refresh_from_db()
    assert delivery.error_class == "timeout" and "may have been sent" in delivery.error_text
    assert delivery.attempts.filter(outcome=AttemptOutcome.AMBIGUOUS).count() == 2
    assert len(fake_smsru.sent_to("79000000999")) == 2  # the one permitted retry, never a third


def test_default_route_is_used_without_account_routes(account, settings, create):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    delivery = create()
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.provider == "console"
    assert delivery.attempts.get().route is None


def test_no_usable_route_fails(account, settings, create, smsru_route):
    route = smsru_route()
    delivery = create()
    route.delete()
    settings.SMSGATE_DEFAULT_ROUTE = ""
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.error_class == "no_route"


def test_account_disabled_after_queueing_is_not_sent(fake_smsru, smsru_route, create, account):
    smsru_route()
    delivery = create()
    account.is_active = False
    account.save()
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.error_class == "account_disabled"


def test_task_requeues_a_temporary_failure(fake_smsru, smsru_route, create):
    smsru_route()
    delivery = create(phone="+79000000220")
    queued_task_ids()
    tasks.delivery_send(str(delivery.pk))
    assert queued_task_ids() == [str(delivery.pk)]


def test_task_on_an_unknown_id_does_nothing(db):
    tasks.delivery_send("8c0d6f40-9a35-4d3d-9b8f-4a8f3c0b8d11")


class TestStatusApply:
    @pytest.fixture
    def sent(self, create, settings):
        settings.SMSGATE_DEFAULT_ROUTE = "console"
        delivery = create()
        Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SENT)
        return delivery

    def apply(self, delivery, status):
        return delivery_status_apply(delivery=delivery, status=status, source=StatusEvent.Source.WEBHOOK,
                                     provider_code="x", raw={"status": status})

    def test_moves_forward_and_the_first_final_status_wins(self, sent):
        assert self.apply(sent, DeliveryStatus.DELIVERED) is True
        assert self.apply(sent, DeliveryStatus.UNDELIVERED) is False
        sent.refresh_from_db()
        assert sent.status == DeliveryStatus.DELIVERED and sent.finished_at

    def test_duplicates_and_out_of_order_reports_change_nothing(self, sent):
        assert self.apply(sent, DeliveryStatus.EXPIRED) is True
        assert self.apply(sent, DeliveryStatus.EXPIRED) is False
        assert self.apply(sent, DeliveryStatus.SENT) is False
        sent.refresh_from_db()
        assert sent.status == DeliveryStatus.EXPIRED and sent.error_class == "expired"
        assert list(sent.events.values_list("status", "applied")) == [
            ("expired", True), ("expired", False), ("sent", False)]

    def test_unknown_never_downgrades_sent(self, sent):
        assert self.apply(sent, DeliveryStatus.UNKNOWN) is False

    def test_a_report_for_an_ambiguous_delivery_resolves_it(self, sent):
        Delivery.objects.filter(pk=sent.pk).update(status=DeliveryStatus.UNKNOWN)
        assert self.apply(sent, DeliveryStatus.DELIVERED) is True


def test_attempt_rows_keep_no_credentials(fake_smsru, smsru_route, create):
    smsru_route(api_id="wrong")
    delivery = create()
    delivery_send(delivery_id=delivery.pk)
    for attempt in Attempt.objects.all():
        assert "wrong" not in str(attempt.raw_response) and "wrong" not in attempt.error_text


def test_test_sms_uses_only_the_chosen_route(fake_smsru, smsru_route, account):
    from deliveries.services.intake import delivery_create_test

    smsru_route(priority=1)
    chosen = ProviderRoute.objects.create(account=account, provider="console", priority=9)
    delivery = delivery_create_test(account=account, phone="+79123456789", route=chosen).delivery
    assert delivery.kind == "test" and "smsgate" in delivery.text
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.route == chosen
    assert not fake_smsru.sent_to("79123456789")


def test_a_failing_tested_route_does_not_fall_back_to_others(fake_smsru, smsru_route, account):
    from deliveries.services.intake import delivery_create_test

    ProviderRoute.objects.create(account=account, provider="console", priority=1)
    broken = smsru_route(priority=5, api_id="wrong")
    delivery = delivery_create_test(account=account, phone="+79123456789", route=broken).delivery
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.error_code == "200"


def test_route_balance_asks_the_provider(fake_smsru, smsru_route):
    from decimal import Decimal

    from routes.services import route_balance

    assert route_balance(route=smsru_route()).amount == Decimal("4122.56")


def test_the_statements_of_the_send_path_are_parsed_once(smsru_route, create):
    """psycopg keeps parsed statements up to a size (4,096 characters, 50 parameters): the send path's
    statements stay within it, so a success is recorded without parsing any of them again."""
    from psycopg import _queries

    from tests.staff import require_postgres

    require_postgres("psycopg's statement cache")
    route = smsru_route()
    choice = RouteChoice(route, "smsru", {}, "")
    first, second = create(phone="+79123456780"), create(phone="+79123456781")
    Delivery.objects.filter(pk__in=[first.pk, second.pk]).update(status=DeliveryStatus.SENDING)

    def record(delivery, message_id):
        record_sent([ProviderCall(PlannedSend(delivery, choice, has_next_route=False), latency_ms=0,
                                  result=SendResult(provider_message_id=message_id))])

    record(first, "id-1")
    before = _queries._query2pg_client.cache_info()
    record(second, "id-2")
    after = _queries._query2pg_client.cache_info()
    assert after.hits > before.hits and after.misses == before.misses


def test_a_bulk_batch_is_claimed_opened_and_recorded_without_parsing_a_statement_again(smsru_route, create, account,
                                                                                      settings):
    """A bulk batch (SMSGATE_SEND_BATCH_SIZE deliveries) writes one statement per step for all of them,
    each within psycopg's statement cache: the second batch of the same size parses nothing, and each
    step is a few statements, not one per delivery."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from psycopg import _queries

    from tests.staff import require_postgres

    require_postgres("psycopg's statement cache")
    smsru_route()
    size = settings.SMSGATE_SEND_BATCH_SIZE
    batches = [[create(phone=f"+7912{batch}{n:06d}", kind="bulk").pk for n in range(size)] for batch in (1, 2)]

    def send(ids):
        plans = []
        for delivery in deliveries_claim(delivery_ids=ids):
            delivery.account = account
            plans.append(delivery_send_plan(delivery, first_try=True))
        dispatch._attempts_open(plans)
        return record_sent([ProviderCall(plan, latency_ms=100, result=SendResult(f"m-{plan.delivery.pk}"))
                            for plan in plans])

    assert len(send(batches[0])) == size
    before = _queries._query2pg_client.cache_info()
    with CaptureQueriesContext(connection) as captured:
        assert len(send(batches[1])) == size
    after = _queries._query2pg_client.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    statements = sum(query["sql"].count(";\n") + 1 for query in captured.captured_queries)
    # claim, attempts opened, the provider's ids, attempts closed, held reports, the move, counters:
    # 25 statements for 32 deliveries (one per delivery and step would be ~160)
    assert statements < size
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 2 * size
    assert Attempt.objects.filter(outcome=AttemptOutcome.SENT).count() == 2 * size
