"""Delivery counters for the dashboard and the accounts list, kept up to date incrementally.

Every delivery is counted exactly once, under the key of its current state: its creation day,
account, provider, status (pending and sending count together as pending), failure reason, and
for delivered ones a time-to-delivered bucket. `Delivery.stats_key` remembers the key a delivery
is counted under; `delivery_recount` compares it with the row's current state under the row's
lock and moves the count (-1 old key, +1 new key) with `INSERT ... ON CONFLICT DO UPDATE`
increments. So a call after any status change keeps the counters exact, concurrent changes of one
delivery serialise on its row, repeated calls change nothing, and a missed call is repaired by
the next one or by `stats_rebuild` (`manage.py rebuild_delivery_stats`), which recomputes days
from the raw table.

Lock order, to stay free of deadlocks: the delivery row first, then counter rows in sorted key
order (day counters before hour counters).
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Concat, TruncHour
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

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


@dataclass(frozen=True, order=True)
class StatKey:
    provider: str
    status: str
    error_class: str = ""
    latency_le: int = 0

    def encode(self) -> str:
        return f"{self.provider}|{self.status}|{self.error_class}|{self.latency_le}"

    @classmethod
    def decode(cls, text: str) -> StatKey:
        provider, status, rest = text.split("|", 2)
        error_class, latency_le = rest.rsplit("|", 1)
        return cls(provider, status, error_class, int(latency_le))


PENDING_KEY = StatKey("", DeliveryStatus.PENDING.value)
# StatKey.decode in SQL: regexp_match(key, KEY_PARTS) gives provider, status, error class, bucket.
KEY_PARTS = r"'^([^|]*)\|([^|]*)\|(.*)\|([0-9]+)$'"


def latency_bucket(seconds: float) -> int:
    """The bucket (its upper bound in seconds) a time to delivered falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else LATENCY_OVER


def key_of(*, status, provider, error_class, created_at, finished_at) -> StatKey:
    """The key a delivery in this state is counted under (mirrored in SQL by `key_expression`)."""
    if status in IN_PROGRESS:
        return PENDING_KEY
    if status == DeliveryStatus.DELIVERED:
        latency = latency_bucket((finished_at - created_at).total_seconds()) if finished_at else 0
        return StatKey(provider, str(status), "", latency)
    if status in UNSUCCESSFUL:
        return StatKey(provider, str(status), error_class or "", 0)
    return StatKey(provider, str(status))


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
    return Case(
        When(status__in=IN_PROGRESS, then=Value(PENDING_KEY.encode())),
        When(status=DeliveryStatus.DELIVERED,
             then=Concat(F("provider"), Value("|delivered||"), latency_text, output_field=CharField())),
        When(status__in=UNSUCCESSFUL,
             then=Concat(F("provider"), Value("|"), F("status"), Value("|"), F("error_class"), Value("|0"),
                         output_field=CharField())),
        default=Concat(F("provider"), Value("|"), F("status"), Value("||0"), output_field=CharField()),
        output_field=CharField(),
    )


def _hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --- writing --------------------------------------------------------------------------------------
def _upsert(model, key_columns: tuple[str, ...], rows: list[tuple]):
    """Add counts to counter rows, creating them as needed: one INSERT ... ON CONFLICT DO UPDATE.
    PostgreSQL and SQLite (3.24+) both speak it. Rows come sorted, so locks are taken in order."""
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    columns = [connection.ops.quote_name(c) for c in (*key_columns, "count")]
    count = connection.ops.quote_name("count")
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES {placeholders} "
           f"ON CONFLICT ({', '.join(columns[:-1])}) DO UPDATE SET {count} = {table}.{count} + EXCLUDED.{count}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def _apply(day_deltas: Counter, hour_deltas: Counter):
    day_rows = sorted((day, account_id, key.provider, key.status, key.error_class, key.latency_le, delta)
                      for (day, account_id, key), delta in day_deltas.items() if delta)
    _upsert(DeliveryDayStat, ("day", "account_id", "provider", "status", "error_class", "latency_le"), day_rows)
    hour_rows = sorted((account_id, hour, delta) for (account_id, hour), delta in hour_deltas.items() if delta)
    _upsert(DeliveryHourCount, ("account_id", "hour"), hour_rows)


def delivery_created(*, delivery: Delivery):
    """Count a new delivery (pending). Call inside the transaction that inserts it."""
    with transaction.atomic(savepoint=False):  # all or nothing with the caller's transaction
        Delivery.objects.filter(pk=delivery.pk, stats_key__isnull=True).update(stats_key=PENDING_KEY.encode())
        day = timezone.localdate(delivery.created_at)
        _apply(Counter({(day, delivery.account_id, PENDING_KEY): 1}),
               Counter({(delivery.account_id, _hour_of(delivery.created_at)): 1}))


def _insert_columns(deliveries: list[Delivery]) -> dict:
    """field -> its value in each new delivery, prepared as the ORM's INSERT compiler prepares plain
    values (pre_save sets created_at and updated_at). A field left to its database default (an
    expression) is not among them: the INSERT leaves it to DEFAULT."""
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own wrapper, not the proxy, once per value
    columns = {}
    for field in Delivery._meta.local_concrete_fields:
        values = [field.pre_save(delivery, add=True) for delivery in deliveries]
        if not any(hasattr(value, "resolve_expression") for value in values):
            columns[field] = [field.get_db_prep_save(value, db) for value in values]
    return columns


@lru_cache(maxsize=8)
def _insert_counted_statement(defaulted: tuple[str, ...]) -> str:
    """delivery_insert_counted's statement, built once per process (the ORM's INSERT compiler cost a
    tenth of the web tier's CPU per SMS). `defaulted`: columns left to their database default."""
    quote = connection.ops.quote_name
    fields = Delivery._meta.local_concrete_fields
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join("DEFAULT" if field.column in defaulted else "%s" for field in fields)
    deliveries, days, hours = (quote(m._meta.db_table) for m in (Delivery, DeliveryDayStat, DeliveryHourCount))
    return f"""
        WITH new_delivery AS (INSERT INTO {deliveries} ({columns}) VALUES ({values}) RETURNING 1),
        day_count AS (
            INSERT INTO {days} (day, account_id, provider, status, error_class, latency_le, count)
            SELECT %s, %s, %s, %s, %s, %s, 1 FROM new_delivery
            ON CONFLICT (day, account_id, provider, status, error_class, latency_le)
            DO UPDATE SET count = {days}.count + EXCLUDED.count)
        INSERT INTO {hours} (account_id, hour, count) SELECT %s, %s, 1 FROM new_delivery
        ON CONFLICT (account_id, hour) DO UPDATE SET count = {hours}.count + EXCLUDED.count
    """


def delivery_insert_counted(*, delivery: Delivery) -> Delivery:
    """INSERT a new (pending) delivery and count it. On PostgreSQL this is one statement (the row and
    both counter increments in data-modifying CTEs), so in autocommit it is its own transaction and
    the hot counter rows stay locked only while the server runs it: no client round trip, no thread
    waiting for the GIL, holds them. Elsewhere: an ORM INSERT and `delivery_created`. The caller
    decides the transaction; an IntegrityError (a repeated jti) leaves nothing behind either way."""
    delivery.stats_key = PENDING_KEY.encode()
    if connection.vendor != "postgresql":
        with transaction.atomic(savepoint=False):
            delivery.save(force_insert=True)
            delivery_created(delivery=delivery)
        return delivery
    columns = _insert_columns([delivery])
    defaulted = tuple(field.column for field in Delivery._meta.local_concrete_fields if field not in columns)
    params = [values[0] for values in columns.values()]
    key = PENDING_KEY
    params += [timezone.localdate(delivery.created_at), delivery.account_id, key.provider, key.status,
               key.error_class, key.latency_le, delivery.account_id, _hour_of(delivery.created_at)]
    sql = _insert_counted_statement(tuple(defaulted))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    delivery._state.adding = False
    delivery._state.db = connection.alias
    return delivery


def deliveries_insert_counted(*, deliveries: list[Delivery]) -> list[Delivery]:
    """INSERT many new (pending) deliveries and count them, all or nothing: a bulk import. On
    PostgreSQL one INSERT from one array per column: the ORM's multi-row INSERT cost ~0.5 ms of
    CPU per row (30 parameters each, built, then parsed back out of one long statement).
    Elsewhere bulk_create. Columns left to a database default keep it."""
    for delivery in deliveries:
        delivery.stats_key = PENDING_KEY.encode()
    with transaction.atomic(savepoint=False):
        if connection.vendor != "postgresql":
            Delivery.objects.bulk_create(deliveries)
        elif deliveries:
            columns = _insert_columns(deliveries)
            quote = connection.ops.quote_name
            arrays_sql = ", ".join(f"%s::{field.db_type(connection)}[]" for field in columns)
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {quote(Delivery._meta.db_table)} "
                               f"({', '.join(quote(field.column) for field in columns)}) "
                               f"SELECT * FROM unnest({arrays_sql})", list(columns.values()))
            for delivery in deliveries:
                delivery._state.adding, delivery._state.db = False, connection.alias
        deliveries_created(deliveries=deliveries)
    return deliveries


def deliveries_created(*, deliveries: list[Delivery]):
    """Count many new deliveries (pending) at once, e.g. after a bulk INSERT: one statement per
    counter table. Call inside the transaction that inserts them, with their stats_key already set
    to the pending key."""
    day_deltas, hour_deltas = Counter(), Counter()
    for delivery in deliveries:
        day_deltas[(timezone.localdate(delivery.created_at), delivery.account_id, PENDING_KEY)] += 1
        hour_deltas[(delivery.account_id, _hour_of(delivery.created_at))] += 1
    with transaction.atomic(savepoint=False):
        _apply(day_deltas, hour_deltas)


def delivery_recount(*, delivery_id) -> bool:
    """Move a delivery's count to the key of its current state; True if anything changed.
    Safe to call after any change, any number of times, from any process."""
    if connection.vendor == "postgresql":
        return _recount_in_one_statement(delivery_id)
    with transaction.atomic(savepoint=False):
        row = (Delivery.objects.select_for_update().filter(pk=delivery_id)
               .values("account_id", "created_at", "status", "provider", "error_class", "finished_at", "stats_key")
               .first())
        if row is None:
            return False
        key = key_of(status=row["status"], provider=row["provider"], error_class=row["error_class"],
                     created_at=row["created_at"], finished_at=row["finished_at"])
        if row["stats_key"] == key.encode():
            return False
        day = timezone.localdate(row["created_at"])
        day_deltas, hour_deltas = Counter(), Counter()
        day_deltas[(day, row["account_id"], key)] += 1
        if row["stats_key"] is None:  # never counted: it joins the hourly volume too
            hour_deltas[(row["account_id"], _hour_of(row["created_at"]))] += 1
        else:
            day_deltas[(day, row["account_id"], StatKey.decode(row["stats_key"]))] -= 1
        _apply(day_deltas, hour_deltas)
        Delivery.objects.filter(pk=delivery_id).update(stats_key=key.encode())
        return True


_RECOUNT_SENTINEL = uuid.UUID(int=0)
_RECOUNT_MANY_SENTINEL = [_RECOUNT_SENTINEL]


def deliveries_recount(*, delivery_ids) -> int:
    """`delivery_recount` for many deliveries; returns how many counts moved. On PostgreSQL one
    statement, which moves each counter row once and in key order."""
    if connection.vendor != "postgresql":
        return sum(delivery_recount(delivery_id=delivery_id) for delivery_id in delivery_ids)
    if not delivery_ids:
        return 0
    sql, params = recount_many_query(delivery_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


@lru_cache(maxsize=2)
def _recount_statement(many: bool = False) -> tuple[str, list, int]:
    """The SQL of `_recount_in_one_statement`, built once per process: compiling `key_expression`
    costs several milliseconds, the statement itself a fraction of one. Returns the SQL, its
    parameters and the position of the delivery id among them. `many`: the parameter is an array
    of ids, and every counter row moves once, by the sum of its deltas, in key order: a batch
    locks counter rows in the same order as everyone else (no deadlock), never twice."""
    quote = connection.ops.quote_name
    deliveries = quote(Delivery._meta.db_table)
    days, hours = quote(DeliveryDayStat._meta.db_table), quote(DeliveryHourCount._meta.db_table)
    if many:
        rows = Delivery.objects.filter(pk__in=RawSQL(f"SELECT unnest(%s::{Delivery._meta.pk.db_type(connection)}[])",
                                                     (_RECOUNT_MANY_SENTINEL,))).order_by("pk")
        sentinel = _RECOUNT_MANY_SENTINEL
    else:
        rows, sentinel = Delivery.objects.filter(pk=_RECOUNT_SENTINEL), _RECOUNT_SENTINEL
    current = rows.annotate(new_key=key_expression()).values("id", "account_id", "created_at", "stats_key", "new_key")
    current_sql, current_params = current.query.get_compiler(connection=connection).as_sql()
    id_position = [index for index, value in enumerate(current_params) if value is sentinel][0]
    sql = rf"""
        WITH current_row AS ({current_sql} FOR UPDATE),
        moved AS (
            UPDATE {deliveries} AS d SET stats_key = c.new_key FROM current_row AS c
            WHERE d.id = c.id AND c.stats_key IS DISTINCT FROM c.new_key
            RETURNING c.account_id, c.created_at, c.stats_key AS old_key, c.new_key),
        deltas AS (
            SELECT account_id, created_at, new_key AS key, 1 AS delta FROM moved
            UNION ALL
            SELECT account_id, created_at, old_key, -1 FROM moved WHERE old_key IS NOT NULL),
        day_count AS (
            INSERT INTO {days} (day, account_id, provider, status, error_class, latency_le, count)
            SELECT day, account_id, part[1], part[2], part[3], part[4]::int, sum(delta)
            FROM (SELECT (created_at AT TIME ZONE %s)::date AS day, account_id, delta,
                         regexp_match(key, {KEY_PARTS}) AS part
                  FROM deltas) AS split
            GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(delta) <> 0
            ORDER BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (day, account_id, provider, status, error_class, latency_le)
            DO UPDATE SET count = {days}.count + EXCLUDED.count),
        hour_count AS (
            INSERT INTO {hours} (account_id, hour, count)
            SELECT account_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
            FROM moved WHERE old_key IS NULL
            GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (account_id, hour) DO UPDATE SET count = {hours}.count + EXCLUDED.count)
        SELECT count(*) FROM moved
    """
    return sql, list(current_params), id_position


def _recount_in_one_statement(delivery_id) -> bool:
    """`delivery_recount` as one PostgreSQL statement: lock the delivery row, compute its key in SQL
    (`key_expression`), and if it changed, store it and move the count (-1 old key, +1 new key, the
    hourly volume for a row never counted), all in data-modifying CTEs. One round trip: the counter
    rows, hot when many deliveries of one account move at once, are never locked across a client
    round trip. Lock order as everywhere: the delivery row, then day counters sorted, then hours."""
    sql, params = recount_query(delivery_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.fetchone()[0])


def recount_query(delivery_id) -> tuple[str, list]:
    """The SQL and parameters of `_recount_in_one_statement` (PostgreSQL), for callers that send it
    together with other statements in one round trip. Its one row: whether the count moved."""
    delivery_id = delivery_id if isinstance(delivery_id, uuid.UUID) else uuid.UUID(str(delivery_id))
    return _recount_query(delivery_id, many=False)


def recount_many_query(delivery_ids) -> tuple[str, list]:
    """`recount_query` for many deliveries in one statement (a bulk batch). Its one row: how many
    deliveries' counts moved."""
    return _recount_query([d if isinstance(d, uuid.UUID) else uuid.UUID(str(d)) for d in delivery_ids], many=True)


def _recount_query(ids, *, many: bool) -> tuple[str, list]:
    zone = timezone.get_current_timezone_name()
    if settings.SMSGATE_DB_PREPARED_STATEMENTS:
        return f"EXECUTE {_recount_prepared_here(many)}(%s, %s)", [ids, zone]
    sql, params, id_position = _recount_statement(many)
    params = list(params)
    params[id_position] = ids
    return sql, [*params, zone]


# The recount runs on every status change. PostgreSQL took ~0.7 ms to parse and plan it each time
# and 0.12 ms to run it prepared (pgbench, one connection): so each connection PREPAREs it once.
_ID_MARK, _ZONE_MARK = "smsgate-recount-delivery-id", "smsgate-recount-time-zone"
_prepared_on: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # psycopg connection -> names


@lru_cache(maxsize=2)
def _recount_prepare_statement(many: bool = False) -> tuple[str, str]:
    """(name, PREPARE statement): the recount with its constants as literals, $1 the delivery id
    and $2 the time zone. The name carries a hash of the text, so a release that changes the
    statement never runs an older one prepared on a pooled connection."""
    sql, params, id_position = _recount_statement(many)
    values = list(params)
    values[id_position] = _ID_MARK
    text = connection.ops.compose_sql(sql, [*values, _ZONE_MARK])
    for mark, placeholder in ((_ID_MARK, "$1"), (_ZONE_MARK, "$2")):
        assert text.count(f"'{mark}'") == 1, mark
        text = text.replace(f"'{mark}'", placeholder)
    name = "smsgate_recount_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return name, f"PREPARE {name} ({'uuid[]' if many else 'uuid'}, text) AS {text}"


def _recount_prepared_here(many: bool = False) -> str:
    """The recount's prepared name, PREPAREd on this connection first if it is not yet (asked of
    pg_prepared_statements once per connection; a PREPARE outlives a rolled-back transaction).

    The connection also keeps the generic plan of its prepared statements (they are ours only:
    Django binds parameters on the client). Both recounts look rows up by id, which the generic plan
    does well; PostgreSQL's "auto" mode planned the array form afresh on every run instead (3.0 ms
    per batch of 32 against 1.5)."""
    name, prepare = _recount_prepare_statement(many)
    connection.ensure_connection()
    names = _prepared_on.setdefault(connection.connection, set())
    if name not in names:
        with connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(prepare)
        names.add(name)
    return name


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
    that land meanwhile are applied on top by their own `delivery_recount`, so the result stays
    exact under traffic. `check_keys=False` skips the first step, for rows whose keys were just
    written by `key_expression` itself (the seed command).
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
            first_hour, last_hour = _hour_of(start), _hour_of(end - timedelta(microseconds=1)) + timedelta(hours=1)
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
        day_rows.append(DeliveryDayStat(day=day, account_id=item["account_id"], provider=k.provider, status=k.status,
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
    """The same as _recount_day_in_python, in two statements (millions of rows on PostgreSQL):
    the key is split as StatKey.decode does."""
    quote = connection.ops.quote_name
    deliveries, days, hours = (quote(m._meta.db_table) for m in (Delivery, DeliveryDayStat, DeliveryHourCount))
    with connection.cursor() as cursor:
        cursor.execute(rf"""
            INSERT INTO {days} (day, account_id, provider, status, error_class, latency_le, count)
            SELECT %s, account_id, part[1], part[2], part[3], part[4]::int, n
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
    _recount_day_in_sql counts them. One placeholder: the name of the current time zone (days are
    local, hours UTC). Rows go in key order, so concurrent statements lock counters in one order."""
    quote = connection.ops.quote_name
    days, hours = (quote(m._meta.db_table) for m in (DeliveryDayStat, DeliveryHourCount))
    count = quote("count")
    return rf""",
counted_days AS (
    INSERT INTO {days} AS counter (day, account_id, provider, status, error_class, latency_le, count)
    SELECT day, account_id, part[1], part[2], part[3], part[4]::int, n
    FROM (SELECT (created_at AT TIME ZONE %s)::date AS day, account_id,
                 regexp_match(stats_key, {KEY_PARTS}) AS part, count(*) AS n
          FROM {source} WHERE stats_key IS NOT NULL
          GROUP BY 1, 2, stats_key) grouped
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (day, account_id, provider, status, error_class, latency_le)
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


# --- reading --------------------------------------------------------------------------------------
def volume_24h_subquery():
    """Deliveries an account created in the last 24 hours, as a subquery for an Account queryset:
    a sum over at most 25 hourly counter rows, never a count over the deliveries table."""
    since = _hour_of(timezone.now()) - timedelta(hours=23)
    total = (DeliveryHourCount.objects.filter(account=OuterRef("pk"), hour__gte=since)
             .values("account").annotate(total=Sum("count")).values("total"))
    return Coalesce(Subquery(total), 0)


# The deployment-wide sum of past days reads every account's counter rows (hundreds of thousands
# on a big deployment, ~0.3 s); it changes only through late reports, so it is kept for a while.
PAST_DAYS_CACHE_SECONDS = 300


def summary_rows(*, since: date, until: date, account_id=None) -> list[dict]:
    """The counters of a date range summed over accounts (or for one account): grouped rows, a few
    thousand, that feed every number of the dashboard. Today is always read live."""
    today = timezone.localdate()
    if account_id is not None or until < today or since >= today:
        return _summary_query(since, until, account_id)
    key = f"smsgate:summary:{since.isoformat()}:{(today - timedelta(days=1)).isoformat()}"
    past = cache.get(key)
    if past is None:
        past = _summary_query(since, today - timedelta(days=1), None)
        cache.set(key, past, PAST_DAYS_CACHE_SECONDS)
    return past + _summary_query(today, until, None)


def _summary_query(since: date, until: date, account_id) -> list[dict]:
    rows = DeliveryDayStat.objects.filter(day__gte=since, day__lte=until)
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    query = rows.values("day", "provider", "status", "error_class", "latency_le").annotate(n=Sum("count")).order_by()
    if connection.vendor != "postgresql":
        return list(query)
    with transaction.atomic():
        with connection.cursor() as cursor:  # hash the groups in memory rather than sort on disk
            cursor.execute("SET LOCAL work_mem = '32MB'")
        return list(query)


def daily_by_status(*, since: date, until: date, account_id=None, rows=None) -> dict[date, dict[str, int]]:
    """{day: {status: deliveries}} for every day of the range (empty days included)."""
    days = {since + timedelta(days=i): defaultdict(int) for i in range((until - since).days + 1)}
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        if row["n"]:
            days[row["day"]][row["status"]] += row["n"]
    return {day: {status: n for status, n in counts.items() if n} for day, counts in days.items()}


@dataclass
class ProviderSummary:
    provider: str
    total: int = 0
    delivered: int = 0
    finished: int = 0  # final outcomes the rate is computed over
    latency: Counter | None = None

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.finished if self.finished else None

    @property
    def median_seconds(self) -> float | None:
        return histogram_median(self.latency or Counter())


def histogram_median(histogram: Counter) -> float | None:
    """The median from bucket counts ({upper bound: n}), interpolated linearly inside its bucket."""
    total = sum(histogram.values())
    if not total:
        return None
    half, seen = total / 2, 0
    for bound in sorted(histogram):
        n = histogram[bound]
        if n and seen + n >= half:
            index = bisect.bisect_left(LATENCY_BUCKETS, bound)
            lower = float(LATENCY_BUCKETS[index - 1]) if index > 0 else 0.0
            upper = float(bound if bound != LATENCY_OVER else LATENCY_BUCKETS[-1] * 2)
            return lower + (upper - lower) * (half - seen) / n
        seen += n
    return None


def provider_summaries(*, since: date, until: date, account_id=None, rows=None) -> list[ProviderSummary]:
    """Per provider: deliveries, delivery rate over final outcomes, time-to-delivered histogram."""
    summaries: dict[str, ProviderSummary] = {}
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        summary = summaries.setdefault(row["provider"], ProviderSummary(row["provider"], latency=Counter()))
        summary.total += row["n"]
        if row["status"] in RATE_BASE:
            summary.finished += row["n"]
        if row["status"] == DeliveryStatus.DELIVERED:
            summary.delivered += row["n"]
            if row["latency_le"]:
                summary.latency[row["latency_le"]] += row["n"]
    return sorted(summaries.values(), key=lambda s: (-s.total, s.provider))


def top_failure_reasons(*, since: date, until: date, account_id=None, limit: int = 10, rows=None) -> list[dict]:
    """The most frequent (status, error class) pairs among deliveries that did not get through."""
    reasons = Counter()
    for row in rows if rows is not None else summary_rows(since=since, until=until, account_id=account_id):
        if row["status"] in UNSUCCESSFUL:
            reasons[(row["status"], row["error_class"])] += row["n"]
    ranked = sorted(((n, status, error) for (status, error), n in reasons.items() if n > 0),
                    key=lambda item: (-item[0], item[1], item[2]))
    return [{"status": status, "error_class": error, "n": n} for n, status, error in ranked[:limit]]
