"""Delivery counters for the dashboard and the accounts list: how they are keyed and written.

Every delivery is counted exactly once, under the key of its current state: its creation day,
account, kind (the owner's "source": login codes, card, pipeline, Salesbot, lists, ...), parts, the
route and provider that took it, status (pending and sending count together as pending), failure
reason, and for delivered ones a time-to-delivered bucket. Kind and parts never change; route and
provider are recorded by the same writes that move the status, so a move still writes one counter
statement. `Delivery.stats_key` remembers the key a delivery is
counted under. A status change (deliveries.services.status, the only writer of statuses) returns
the rows it moved with the key they were counted under; `moved_counts` turns them into the
statements that move each count (-1 old key, +1 new key, `INSERT ... ON CONFLICT DO UPDATE`
increments, the same SQL on PostgreSQL and SQLite) and store the new keys, run in the change's own
transaction. `stats_rebuild` (`manage.py rebuild_delivery_stats`) recomputes days from the raw table.

Lock order, to stay free of deadlocks: delivery rows first (in id order), then counter rows in
sorted key order (day counters before hour counters).

Reads of the counters are in deliveries.dashboard.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from django.db import connection, transaction
from django.db.models import Case, CharField, Count, DurationField, ExpressionWrapper, F, Q, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, TruncHour
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from smsgate.db import in_chunks, run_batch

from .models import Delivery, DeliveryDayStat, DeliveryHourCount, DeliveryStatus

# Upper bounds (seconds) of the time-to-delivered buckets; slower ones go to LATENCY_OVER.
LATENCY_BUCKETS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600, 86400)
LATENCY_OVER = 2**31 - 1
IN_PROGRESS = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
# Statuses that count as "did not get through"; their error class is kept as the reason.
UNSUCCESSFUL = (DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED,
                DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN)
# Final statuses a delivery rate is computed over (sent and unknown are still open).
RATE_BASE = (DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED,
             DeliveryStatus.REJECTED, DeliveryStatus.FAILED)
# What a status change must return of each row it moved, for `moved_counts`.
KEY_COLUMNS = ("id", "account_id", "created_at", "status", "provider", "error_class", "finished_at", "stats_key",
               "route_id", "kind", "segments")
# Parts of SMS a provider took (what it bills): sent and its outcomes, unknown (it may have it), and
# failed for want of a report (the provider had it). Rejected, expired and other failures never left.
PARTS_BILLED = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.UNKNOWN)
NO_REPORT = "no_report"


@dataclass(frozen=True, order=True)
class StatKey:
    provider: str
    status: str
    error_class: str = ""
    latency_le: int = 0
    route_id: int = 0  # 0: no route (not sent yet, the deployment's default route, or a key of before 0004)
    kind: str = ""  # "": counted before the kind was a dimension (until rebuild_delivery_stats)
    parts: int = 0

    def encode(self) -> str:
        return (f"{self.kind}|{self.parts}|{self.route_id}|{self.provider}|{self.status}|{self.error_class}|"
                f"{self.latency_le}")

    @classmethod
    def decode(cls, text: str) -> StatKey:
        fields = text.split("|", 5)
        if len(fields) == 6 and fields[1].isdigit() and fields[2].isdigit():
            kind, parts, route_id, provider, status, rest = fields
            error_class, latency_le = rest.rsplit("|", 1)
            return cls(provider, status, error_class, int(latency_le), int(route_id), kind, int(parts))
        # A key stored before migration 0004 (provider|status|error|bucket): its counter rows were
        # kept with kind "", parts 0, route 0, so moving it away takes the count from those rows.
        provider, status, rest = text.split("|", 2)
        error_class, latency_le = rest.rsplit("|", 1)
        return cls(provider, status, error_class, int(latency_le))

    @property
    def parts_billed(self) -> bool:
        return self.status in PARTS_BILLED or (self.status == DeliveryStatus.FAILED and self.error_class == NO_REPORT)


PENDING_KEY = StatKey("", DeliveryStatus.PENDING.value)  # of a delivery with no kind or parts (tests, old keys)
# StatKey.decode in SQL: regexp_match(key, KEY_PARTS) gives kind, parts, route, provider, status,
# error class, bucket (keys are rewritten to this form before any SQL rebuild reads them).
KEY_PARTS = r"'^([^|]*)\|([0-9]+)\|([0-9]+)\|([^|]*)\|([^|]*)\|(.*)\|([0-9]+)$'"


def latency_bucket(seconds: float) -> int:
    """The bucket (its upper bound in seconds) a time to delivered falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else LATENCY_OVER


def key_of(*, status, provider, error_class, created_at, finished_at, route_id=None, kind="", parts=0) -> StatKey:
    """The key a delivery in this state is counted under (mirrored in SQL by `key_expression`)."""
    same = {"kind": str(kind or ""), "parts": int(parts or 0)}
    if status in IN_PROGRESS:
        return StatKey("", DeliveryStatus.PENDING.value, **same)
    route = int(route_id or 0)
    if status == DeliveryStatus.DELIVERED:
        latency = latency_bucket((finished_at - created_at).total_seconds()) if finished_at else 0
        return StatKey(provider, str(status), "", latency, route, **same)
    if status in UNSUCCESSFUL:
        return StatKey(provider, str(status), error_class or "", 0, route, **same)
    return StatKey(provider, str(status), "", 0, route, **same)


def key_of_row(row) -> StatKey:
    """`key_of` for a delivery (or a dict of KEY_COLUMNS)."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return key_of(status=get("status"), provider=get("provider"), error_class=get("error_class"),
                  created_at=get("created_at"), finished_at=get("finished_at"), route_id=get("route_id"),
                  kind=get("kind"), parts=get("segments"))


def key_expression():
    """`key_of` as a database expression, for rebuilding and seeding in SQL."""
    latency = ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
    latency_text = Case(
        When(finished_at__isnull=True, then=Value("0")),
        *[When(LessThanOrEqual(latency, Value(timedelta(seconds=bound), output_field=DurationField())),
               then=Value(str(bound))) for bound in LATENCY_BUCKETS],
        default=Value(str(LATENCY_OVER)),
        output_field=CharField(),
    )
    text = CharField()
    kind_parts = (F("kind"), Value("|"), Cast("segments", text), Value("|"))
    route = (Cast(Coalesce(F("route_id"), Value(0)), text), Value("|"))
    return Case(
        When(status__in=IN_PROGRESS, then=Concat(*kind_parts, Value("0||pending||0"), output_field=text)),
        When(status=DeliveryStatus.DELIVERED,
             then=Concat(*kind_parts, *route, F("provider"), Value("|delivered||"), latency_text, output_field=text)),
        When(status__in=UNSUCCESSFUL,
             then=Concat(*kind_parts, *route, F("provider"), Value("|"), F("status"), Value("|"), F("error_class"),
                         Value("|0"), output_field=text)),
        default=Concat(*kind_parts, *route, F("provider"), Value("|"), F("status"), Value("||0"), output_field=text),
        output_field=text,
    )


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --- the statements ---------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _upsert_sql(model, key_columns: tuple[str, ...], rows: int) -> str:
    """Add counts to counter rows, creating them as needed (INSERT ... ON CONFLICT DO UPDATE, which
    PostgreSQL and SQLite 3.24+ both speak). Built once per process and row count."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = [quote(c) for c in (*key_columns, "count")]
    count = quote("count")
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * rows)
    return (f"INSERT INTO {table} AS counter ({', '.join(columns)}) VALUES {placeholders} "
            f"ON CONFLICT ({', '.join(columns[:-1])}) DO UPDATE SET {count} = counter.{count} + EXCLUDED.{count}")


DAY_COLUMNS = ("day", "account_id", "kind", "parts", "route_id", "provider", "status", "error_class", "latency_le")
HOUR_COLUMNS = ("account_id", "hour")


def delta_statements(day_deltas: Counter, hour_deltas: Counter) -> list[tuple[str, list]]:
    """The upserts that add these deltas, rows sorted so that every writer locks them in one order
    (cut into statements of at most smsgate.db.CACHED_PARAMS, in that order)."""
    statements = []
    day_rows = sorted((day, account_id, key.kind, key.parts, key.route_id, key.provider, key.status,
                       key.error_class, key.latency_le, delta)
                      for (day, account_id, key), delta in day_deltas.items() if delta)
    hour_rows = sorted((account_id, hour, delta) for (account_id, hour), delta in hour_deltas.items() if delta)
    for model, columns, rows in ((DeliveryDayStat, DAY_COLUMNS, day_rows), (DeliveryHourCount, HOUR_COLUMNS,
                                                                           hour_rows)):
        for chunk in in_chunks(rows, per_item=len(columns) + 1):
            statements.append((_upsert_sql(model, columns, len(chunk)), [value for row in chunk for value in row]))
    return statements


def new_counts(deliveries: list[Delivery]) -> list[tuple[str, list]]:
    """The statements that count new deliveries (each under the key of its state, usually pending,
    and in its hour). Their `stats_key` must be set to that key (`key_for_new`) before they are written."""
    day_deltas, hour_deltas = Counter(), Counter()
    for delivery in deliveries:
        day_deltas[(timezone.localdate(delivery.created_at), delivery.account_id,
                    StatKey.decode(delivery.stats_key))] += 1
        hour_deltas[(delivery.account_id, hour_of(delivery.created_at))] += 1
    return delta_statements(day_deltas, hour_deltas)


def key_for_new(delivery: Delivery) -> str:
    return key_of_row(delivery).encode()


@lru_cache(maxsize=64)
def _store_key_sql(count: int) -> str:
    quote = connection.ops.quote_name
    ids = f"IN ({', '.join(['%s'] * count)})" if count > 1 else "= %s"
    return f"UPDATE {quote(Delivery._meta.db_table)} SET stats_key = %s WHERE id {ids}"


def _moves(rows: list[dict]) -> list[tuple[dict, StatKey]]:
    """Each row whose count moves, with the key of its state now (pending -> sending moves none)."""
    moves = []
    for row in rows:
        key = key_of_row(row)
        if row["stats_key"] != key.encode():
            moves.append((row, key))
    return moves


def moved_counts(rows: list[dict]) -> list[tuple[str, list]]:
    """The statements that move the counts of rows a status change returned (KEY_COLUMNS, `stats_key`
    the key each was counted under): counter upserts, then the new keys stored (one statement per
    new key: a batch moving to one status shares it). Rows whose key did not change need none."""
    day_deltas, hour_deltas = Counter(), Counter()
    stored: dict[str, list] = {}
    prepare_id = Delivery._meta.pk.get_db_prep_value
    for row, key in _moves(rows):
        day = timezone.localdate(row["created_at"])
        day_deltas[(day, row["account_id"], key)] += 1
        if row["stats_key"] is None:  # never counted: it joins the hourly volume too
            hour_deltas[(row["account_id"], hour_of(row["created_at"]))] += 1
        else:
            day_deltas[(day, row["account_id"], StatKey.decode(row["stats_key"]))] -= 1
        stored.setdefault(key.encode(), []).append(prepare_id(row["id"], connection))
    return [*delta_statements(day_deltas, hour_deltas),
            *((_store_key_sql(len(ids)), [encoded, *ids]) for encoded, ids in sorted(stored.items()))]


def deliveries_recount(*, delivery_ids) -> int:
    """Move each delivery's count to the key of its current state, whatever changed it; returns how
    many moved. A repair tool (status changes keep the counters themselves): safe any number of times."""
    with transaction.atomic():
        rows = list(Delivery.objects.select_for_update().filter(pk__in=list(delivery_ids)).order_by("pk")
                    .values(*KEY_COLUMNS))
        run_batch(moved_counts(rows))
    return len(_moves(rows))


def delivery_recount(*, delivery_id) -> bool:
    return deliveries_recount(delivery_ids=[delivery_id]) == 1


# --- rebuilding ----------------------------------------------------------------------------------------
@dataclass
class RebuildResult:
    days: int = 0
    deliveries: int = 0
    keys_corrected: int = 0


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    zone = timezone.get_current_timezone()
    start = timezone.make_aware(datetime.combine(day, time.min), zone)
    end = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min), zone)
    return start, end


def stats_rebuild(*, since: date, until: date, check_keys: bool = True, progress=None) -> RebuildResult:
    """Recompute the counters of the days since..until (inclusive) from the deliveries table.

    One short transaction per day: first every delivery of the day gets the key of its current
    state, then the counters are locked, deleted and recounted from those keys. Status changes
    that land meanwhile are applied on top by their own transactions, so the result stays exact
    under traffic. `check_keys=False` skips the first step, for rows whose keys were just written
    by `key_expression` itself (the seed command).
    """
    result = RebuildResult()
    key = key_expression()
    day = since
    while day <= until:
        start, end = _day_bounds(day)
        with transaction.atomic():
            corrected = 0
            if check_keys:
                corrected = (Delivery.objects.filter(created_at__gte=start, created_at__lt=end)
                             .filter(Q(stats_key__isnull=True) | ~Q(stats_key=key)).update(stats_key=key))
            if connection.vendor == "postgresql":
                tables = ", ".join(connection.ops.quote_name(m._meta.db_table)
                                   for m in (DeliveryDayStat, DeliveryHourCount))
                with connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE")
            DeliveryDayStat.objects.filter(day=day).delete()
            # Whole hours overlapping the day (a day may start mid-hour in some time zones).
            first_hour, last_hour = hour_of(start), hour_of(end - timedelta(microseconds=1)) + timedelta(hours=1)
            DeliveryHourCount.objects.filter(hour__gte=first_hour, hour__lt=last_hour).delete()
            if connection.vendor == "postgresql":
                result.deliveries += _recount_day_in_sql(day, start, end, first_hour, last_hour)
            else:
                result.deliveries += _recount_day_in_python(day, start, end, first_hour, last_hour)
        result.days += 1
        result.keys_corrected += corrected
        if progress:
            progress(day, corrected)
        day += timedelta(days=1)
    return result


def _recount_day_in_python(day, start, end, first_hour, last_hour) -> int:
    counted = Delivery.objects.filter(created_at__gte=start, created_at__lt=end, stats_key__isnull=False)
    day_rows, total = [], 0
    for item in counted.values("account_id", "stats_key").annotate(n=Count("pk")).order_by():
        k = StatKey.decode(item["stats_key"])
        day_rows.append(DeliveryDayStat(day=day, account_id=item["account_id"], kind=k.kind, parts=k.parts,
                                        route_id=k.route_id, provider=k.provider, status=k.status,
                                        error_class=k.error_class, latency_le=k.latency_le, count=item["n"]))
        total += item["n"]
    DeliveryDayStat.objects.bulk_create(day_rows, batch_size=1000)
    hours = (Delivery.objects.filter(created_at__gte=first_hour, created_at__lt=last_hour, stats_key__isnull=False)
             .annotate(h=TruncHour("created_at", tzinfo=UTC)).values("account_id", "h")
             .annotate(n=Count("pk")).order_by())
    DeliveryHourCount.objects.bulk_create(
        [DeliveryHourCount(account_id=i["account_id"], hour=i["h"], count=i["n"]) for i in hours], batch_size=1000)
    return total


def _recount_day_in_sql(day, start, end, first_hour, last_hour) -> int:
    """`_recount_day_in_python` in two statements, for days of millions of rows on PostgreSQL (the
    embedded SQLite never holds that many): the key is split as StatKey.decode does."""
    quote = connection.ops.quote_name
    deliveries, days, hours = (quote(m._meta.db_table) for m in (Delivery, DeliveryDayStat, DeliveryHourCount))
    with connection.cursor() as cursor:
        cursor.execute(rf"""
            INSERT INTO {days} (day, account_id, kind, parts, route_id, provider, status, error_class, latency_le,
                                count)
            SELECT %s, account_id, part[1], part[2]::int, part[3]::int, part[4], part[5], part[6], part[7]::int, n
            FROM (SELECT account_id, regexp_match(stats_key, {KEY_PARTS}) AS part,
                         count(*) AS n
                  FROM {deliveries}
                  WHERE created_at >= %s AND created_at < %s AND stats_key IS NOT NULL
                  GROUP BY account_id, stats_key) grouped
            RETURNING count
        """, [day, start, end])
        total = sum(row[0] for row in cursor.fetchall())
        cursor.execute(f"""
            INSERT INTO {hours} (account_id, hour, count)
            SELECT account_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
            FROM {deliveries}
            WHERE created_at >= %s AND created_at < %s AND stats_key IS NOT NULL
            GROUP BY 1, 2
        """, [first_hour, last_hour])
    return total


def counters_from_sql(source: str) -> str:
    """Two data-modifying CTEs (to append to a WITH list) that add the rows of `source` (a CTE
    returning account_id, created_at and stats_key) to the day and hour counters, as
    _recount_day_in_sql counts them: for the seed command's millions of rows (PostgreSQL only). One
    placeholder: the name of the current time zone (days are local, hours UTC)."""
    quote = connection.ops.quote_name
    days, hours = (quote(m._meta.db_table) for m in (DeliveryDayStat, DeliveryHourCount))
    count = quote("count")
    return rf""",
counted_days AS (
    INSERT INTO {days} AS counter (day, account_id, kind, parts, route_id, provider, status, error_class,
                                   latency_le, count)
    SELECT day, account_id, part[1], part[2]::int, part[3]::int, part[4], part[5], part[6], part[7]::int, n
    FROM (SELECT (created_at AT TIME ZONE %s)::date AS day, account_id,
                 regexp_match(stats_key, {KEY_PARTS}) AS part, count(*) AS n
          FROM {source} WHERE stats_key IS NOT NULL
          GROUP BY 1, 2, stats_key) grouped
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (day, account_id, kind, parts, route_id, provider, status, error_class, latency_le)
        DO UPDATE SET {count} = counter.{count} + EXCLUDED.{count}
    RETURNING 1
),
counted_hours AS (
    INSERT INTO {hours} AS counter (account_id, hour, count)
    SELECT account_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, count(*)
    FROM {source} WHERE stats_key IS NOT NULL
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (account_id, hour) DO UPDATE SET {count} = counter.{count} + EXCLUDED.{count}
    RETURNING 1
)"""
