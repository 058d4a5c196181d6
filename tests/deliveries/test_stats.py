"""Dashboard counters: kept exact incrementally through a delivery's life, equal to a rebuild from
the raw table, safe under concurrent status changes, and read back as the dashboard's numbers."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from deliveries import counters, dashboard
from deliveries.models import Delivery, DeliveryDayStat, DeliveryHourCount, DeliveryStatus, StatusEvent
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import deliveries_insert, delivery_create
from deliveries.services.reports import delivery_status_apply
from deliveries.services.staff import DeliveryActionRefused, delivery_cancel
from tests.staff import counters_snapshot, rebuilt_snapshot, require_postgres

pytestmark = pytest.mark.django_db


@pytest.fixture
def create(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"

    def create(phone="+79123456789", text="Код: 1234", **kwargs):
        return delivery_create(account=account, phone=phone, text=text, **kwargs).delivery

    return create


def day_counts(**filters) -> dict:
    """(provider, status, reason, bucket) -> deliveries, summed over the other dimensions."""
    counts = Counter()
    for r in DeliveryDayStat.objects.filter(**filters).exclude(count=0):
        counts[(r.provider, r.status, r.error_class, r.latency_le)] += r.count
    return dict(counts)


# --- keys --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "bucket"), [
    (-3, 1), (0, 1), (1, 1), (1.000001, 2), (2, 2), (4, 5), (59.9, 60), (60, 60), (61, 90), (86400, 86400),
    (86401, counters.LATENCY_OVER),
])
def test_latency_buckets_are_upper_bounds(seconds, bucket):
    assert counters.latency_bucket(seconds) == bucket


def test_keys_round_trip_and_group_in_progress_statuses():
    now = timezone.now()
    for status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING):
        assert counters.key_of(status=status, provider="smsru", error_class="x", created_at=now,
                            finished_at=None) == counters.PENDING_KEY
    key = counters.key_of(status=DeliveryStatus.FAILED, provider="smsru", error_class="odd|class", created_at=now,
                       finished_at=now)
    assert counters.StatKey.decode(key.encode()) == key
    delivered = counters.key_of(status=DeliveryStatus.DELIVERED, provider="smsru", error_class="ignored",
                             created_at=now, finished_at=now + timedelta(seconds=8))
    assert delivered == counters.StatKey("smsru", "delivered", "", 10)


def test_the_sql_key_expression_agrees_with_python(account):
    """Seeding and rebuilding compute keys in SQL; the services compute them in Python."""
    now = timezone.now()
    cases = [
        dict(status="pending", provider="", error_class=""),
        dict(status="sending", provider="smsru", error_class="provider_unavailable"),
        dict(status="sent", provider="smsru", error_class=""),
        dict(status="delivered", provider="smsru", error_class="", finished_at=now + timedelta(seconds=2)),
        dict(status="delivered", provider="console", error_class="", finished_at=now + timedelta(seconds=2.5)),
        dict(status="delivered", provider="smsru", error_class="", finished_at=now + timedelta(days=3)),
        dict(status="delivered", provider="smsru", error_class="", finished_at=now - timedelta(seconds=5)),
        dict(status="delivered", provider="smsru", error_class="", finished_at=None),
        dict(status="undelivered", provider="smsru", error_class="blocked_recipient"),
        dict(status="failed", provider="", error_class="canceled"),
        dict(status="unknown", provider="smsru", error_class="timeout"),
    ]
    for i, case in enumerate(cases):
        Delivery.objects.create(account=account, phone="+79123456789", text="x", encoding="gsm7", segments=1,
                                valid_until=now, created_at=now, **case)
    Delivery.objects.update(created_at=now)
    expression = counters.key_expression()
    for row in Delivery.objects.annotate(sql_key=expression).values():
        python_key = counters.key_of_row(row).encode()
        assert row["sql_key"] == python_key, row["status"]


# --- incremental counting -------------------------------------------------------------------------------
def test_counters_follow_a_delivery_through_its_life(fake_smsru, smsru_route, create, account):
    smsru_route()
    delivery = create()
    today = timezone.localdate()
    assert day_counts(day=today, account=account) == {("", "pending", "", 0): 1}
    assert DeliveryHourCount.objects.get(account=account).count == 1

    delivery_send(delivery_id=delivery.pk)
    assert day_counts(day=today) == {("smsru", "sent", "", 0): 1}

    delivery.refresh_from_db()
    Delivery.objects.filter(pk=delivery.pk).update(created_at=delivery.sent_at - timedelta(seconds=1))
    delivery.refresh_from_db()
    delivery_status_apply(delivery=delivery, status=DeliveryStatus.DELIVERED, source=StatusEvent.Source.WEBHOOK,
                          occurred_at=delivery.created_at + timedelta(seconds=4))
    assert day_counts(day=today) == {("smsru", "delivered", "", 5): 1}
    # A duplicate report moves nothing and counts nothing twice.
    delivery_status_apply(delivery=delivery, status=DeliveryStatus.DELIVERED, source=StatusEvent.Source.WEBHOOK)
    assert day_counts(day=today) == {("smsru", "delivered", "", 5): 1}
    assert DeliveryHourCount.objects.get(account=account).count == 1
    assert counters_snapshot() == rebuilt_snapshot()


def test_rejections_and_retries_count_once_with_their_reason(fake_smsru, smsru_route, create):
    smsru_route()
    rejected = create(phone="+79000000207")  # SMS.ru 207: no route to this number
    retrying = create(phone="+79000000220")  # SMS.ru 220: temporarily unavailable
    delivery_send(delivery_id=rejected.pk)
    delivery_send(delivery_id=retrying.pk)  # back to pending, waiting for a retry
    # The route that refused it is kept with it (the owner's delivery rate per route counts it).
    assert day_counts() == {("smsru", "rejected", "no_route", 0): 1, ("", "pending", "", 0): 1}
    delivery_cancel(delivery=retrying)
    assert day_counts() == {("smsru", "rejected", "no_route", 0): 1, ("", "failed", "canceled", 0): 1}
    assert counters_snapshot() == rebuilt_snapshot()


def test_recount_is_idempotent_and_repairs_a_missed_change(create):
    delivery = create()
    before = counters_snapshot()
    assert counters.delivery_recount(delivery_id=delivery.pk) is False
    assert counters_snapshot() == before
    # A status changed by code that forgot to recount: the next recount (or a rebuild) repairs it.
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED, error_class="no_route")
    assert counters.delivery_recount(delivery_id=delivery.pk) is True
    assert day_counts() == {("", "failed", "no_route", 0): 1}


def test_a_batch_recount_moves_each_counter_once_by_the_sum_of_its_deltas(create, account, integration, settings):
    """deliveries_recount: many deliveries of several accounts and statuses in one go; a second run
    moves nothing; the counters equal what a rebuild computes."""
    from accounts.models import Account

    other = Account.objects.create(integration=integration, amo_id=2, subdomain="other")
    for _round in range(2):
        Delivery.objects.all().delete()
        DeliveryDayStat.objects.all().delete()
        DeliveryHourCount.objects.all().delete()
        mine = [create(phone=f"+7912345670{n}") for n in range(4)]
        theirs = [delivery_create(account=other, phone=f"+7912345671{n}", text="x").delivery for n in range(3)]
        Delivery.objects.filter(pk__in=[d.pk for d in mine[:3] + theirs[:2]]).update(
            status=DeliveryStatus.SENT, provider="smsru")
        Delivery.objects.filter(pk=mine[3].pk).update(status=DeliveryStatus.FAILED, error_class="no_route")
        ids = [d.pk for d in reversed(mine + theirs)]

        assert counters.deliveries_recount(delivery_ids=ids) == 6
        assert counters.deliveries_recount(delivery_ids=ids) == 0
        assert day_counts(account=account) == {("smsru", "sent", "", 0): 3, ("", "failed", "no_route", 0): 1}
        assert day_counts(account=other) == {("smsru", "sent", "", 0): 2, ("", "pending", "", 0): 1}
        assert counters_snapshot() == rebuilt_snapshot()


def test_a_bulk_insert_records_every_row_and_counts_it_all_or_nothing(account, integration):
    """deliveries_insert (a bulk import; a single delivery is a batch of one): the same rows, database
    defaults kept, counted as pending; a bad row keeps none."""
    from django.db import IntegrityError, transaction

    from accounts.models import Account

    other = Account.objects.create(integration=integration, amo_id=2, subdomain="other")
    valid_until = timezone.now() + timedelta(hours=1)

    def rows(prefix, jti=None):
        return [Delivery(account=owner, kind="bulk", phone=f"+7912{prefix}{n:05d}", text=f"Скидка {n}%",
                         encoding="ucs2", segments=1, valid_until=valid_until, jti=jti)
                for n, owner in enumerate([account, account, other])]

    inserted = deliveries_insert(deliveries=rows("11"))

    stored = {d.pk: d for d in Delivery.objects.all()}
    assert set(stored) == {d.pk for d in inserted}
    for delivery in inserted:
        row = stored[delivery.pk]
        assert (row.account_id, row.phone, row.text, row.kind, row.status) == (
            delivery.account_id, delivery.phone, delivery.text, "bulk", DeliveryStatus.PENDING)
        assert row.created_at == delivery.created_at and row.valid_until == valid_until
        assert (row.text_hash, row.poll_count, row.stats_key) == ("", 0, "bulk|1|0||pending||0")  # defaults kept
    assert day_counts(account=account) == {("", "pending", "", 0): 2}
    assert day_counts(account=other) == {("", "pending", "", 0): 1}
    assert counters_snapshot() == rebuilt_snapshot()

    before = counters_snapshot()
    with pytest.raises(IntegrityError), transaction.atomic():
        deliveries_insert(deliveries=rows("22", jti="same-token"))  # one jti per account
    assert Delivery.objects.count() == 3 and counters_snapshot() == before

def test_a_rebuild_repairs_drifted_counters_and_uncounted_rows(create, account):
    counted = create()
    Delivery.objects.filter(pk=counted.pk).update(status=DeliveryStatus.EXPIRED, error_class="validity")
    uncounted = Delivery.objects.create(account=account, phone="+79123456780", text="x", encoding="gsm7",
                                        segments=1, valid_until=timezone.now(), status=DeliveryStatus.SENT,
                                        provider="smsru")
    DeliveryDayStat.objects.update(count=99)  # drift
    today = timezone.localdate()
    result = counters.stats_rebuild(since=today, until=today)
    assert (result.deliveries, result.keys_corrected) == (2, 2)
    assert day_counts() == {("", "expired", "validity", 0): 1, ("smsru", "sent", "", 0): 1}
    assert DeliveryHourCount.objects.get(account=account).count == 2
    uncounted.refresh_from_db()
    assert uncounted.stats_key == "system|1|0|smsru|sent||0"
    assert counters.stats_rebuild(since=today, until=today).keys_corrected == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_status_changes_keep_the_counters_exact(account, settings):
    """Threads race on the same deliveries: recounts of rows a worker just changed (as after the
    send path's UPDATE), status reports in any order, cancels. The counters end up equal to what a
    rebuild computes from the final rows: no change counted twice, none lost."""
    require_postgres("the concurrency test (row locks)")
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    deliveries = [delivery_create(account=account, phone=f"+7912345{i:04d}", text="Код: 1").delivery
                  for i in range(40)]
    sent, reported, pending = deliveries[:20], deliveries[20:30], deliveries[30:]
    # A worker moved these to sent and has not recounted yet: every thread recounts them at once.
    Delivery.objects.filter(pk__in=[d.pk for d in sent + reported]).update(status=DeliveryStatus.SENT,
                                                                         provider="smsru")
    threads_count = 6
    barrier = threading.Barrier(threads_count)
    errors = []

    def worker(n):
        try:
            barrier.wait()
            if n % 2:  # as a bulk batch does, in any order
                counters.deliveries_recount(delivery_ids=[d.pk for d in (sent if n % 4 == 1 else reversed(sent))])
            else:
                for delivery in sent:
                    counters.delivery_recount(delivery_id=delivery.pk)
            for i, delivery in enumerate(reported):
                status = [DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED][(i + n) % 3]
                delivery_status_apply(delivery=delivery, status=status, source=StatusEvent.Source.WEBHOOK,
                                      error_class="" if status == DeliveryStatus.DELIVERED else "x")
            for delivery in pending:
                try:
                    delivery_cancel(delivery=delivery)
                except DeliveryActionRefused:  # only one thread's cancel wins
                    counters.delivery_recount(delivery_id=delivery.pk)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    incremental = counters_snapshot()
    assert sum(row[-1] for row in incremental[0]) == 40
    assert incremental == rebuilt_snapshot()


# --- reading: the dashboard's numbers --------------------------------------------------------------------
def put(account, day, provider, status, n, *, error_class="", latency_le=0):
    DeliveryDayStat.objects.create(day=day, account=account, provider=provider, status=status,
                                   error_class=error_class, latency_le=latency_le, count=n)


def test_dashboard_numbers_from_the_counters(account, integration):
    from accounts.models import Account

    other = Account.objects.create(integration=integration, amo_id=2, subdomain="other")
    today = timezone.localdate()
    put(account, today, "smsru", "delivered", 6, latency_le=2)
    put(account, today, "smsru", "delivered", 2, latency_le=10)
    put(account, today, "smsru", "undelivered", 1, error_class="blocked_recipient")
    put(account, today, "smsru", "sent", 5)  # still open: not part of the rate
    put(account, today - timedelta(days=1), "smsru", "rejected", 1, error_class="invalid_recipient")
    put(account, today, "", "failed", 3, error_class="no_route")
    put(other, today, "console", "delivered", 4, latency_le=1)
    put(account, today - timedelta(days=40), "smsru", "failed", 100, error_class="old")  # out of range

    since = today - timedelta(days=29)
    summaries = {s.provider: s for s in dashboard.provider_summaries(since=since, until=today)}
    smsru = summaries["smsru"]
    assert (smsru.total, smsru.delivered, smsru.finished) == (15, 8, 10)
    assert smsru.delivery_rate == pytest.approx(0.8)
    # 8 delivered: 6 within (1, 2] s, 2 within (7, 10] s; the median (4th of 8) is inside the first bucket.
    assert smsru.median_seconds == pytest.approx(1 + (2 - 1) * 4 / 6)
    assert summaries[""].delivery_rate == 0.0 and summaries["console"].median_seconds == pytest.approx(0.5)

    reasons = dashboard.top_failure_reasons(since=since, until=today)
    assert [(r["status"], r["error_class"], r["n"]) for r in reasons] == [
        ("failed", "no_route", 3), ("rejected", "invalid_recipient", 1), ("undelivered", "blocked_recipient", 1)]

    days = dashboard.daily_by_status(since=since, until=today, account_id=account.pk)
    assert len(days) == 30
    assert days[today] == {"delivered": 8, "undelivered": 1, "sent": 5, "failed": 3}
    assert days[today - timedelta(days=1)] == {"rejected": 1}
    assert days[today - timedelta(days=2)] == {}


def test_past_days_of_the_deployment_wide_summary_are_cached_today_is_live(account):
    today = timezone.localdate()
    since = today - timedelta(days=29)
    put(account, today - timedelta(days=3), "smsru", "delivered", 2, latency_le=2)
    put(account, today, "smsru", "delivered", 1, latency_le=2)
    assert dashboard.daily_by_status(since=since, until=today)[today - timedelta(days=3)] == {"delivered": 2}

    DeliveryDayStat.objects.filter(day=today - timedelta(days=3)).update(count=5)
    DeliveryDayStat.objects.filter(day=today).update(count=4)
    days = dashboard.daily_by_status(since=since, until=today)
    assert days[today - timedelta(days=3)] == {"delivered": 2}  # kept for PAST_DAYS_CACHE_SECONDS
    assert days[today] == {"delivered": 4}
    # One account's numbers are cheap to read (its own rows only) and always live.
    assert dashboard.daily_by_status(since=since, until=today, account_id=account.pk)[today - timedelta(days=3)] == {
        "delivered": 5}


def test_histogram_median():
    assert dashboard.histogram_median(Counter()) is None
    assert dashboard.histogram_median(Counter({5: 1})) == pytest.approx(4.0)  # halfway into (3, 5]
    assert dashboard.histogram_median(Counter({1: 1, 60: 1})) == pytest.approx(1.0)
    assert dashboard.histogram_median(Counter({counters.LATENCY_OVER: 2})) > 86400


def test_volume_of_the_last_24_hours_counts_hourly_buckets(account):
    from accounts.models import Account

    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    for hours_ago, n in ((0, 3), (23, 4), (24, 50), (30, 7)):
        DeliveryHourCount.objects.create(account=account, hour=hour - timedelta(hours=hours_ago), count=n)
    volume = Account.objects.annotate(v=dashboard.volume_24h_subquery()).get(pk=account.pk).v
    assert volume == 7
