"""Fill the database with realistic deliveries for benchmarks and demos.

PostgreSQL: rows are generated inside the server (`INSERT ... SELECT ... FROM generate_series`),
chunk by chunk, with attempts and status events for a share of them, and the dashboard counters
are added in the same statement (no recount of the table afterwards); on an empty table the
secondary indexes are dropped during the load and rebuilt after it (much faster than
maintaining them row by row). Five million deliveries take well under two minutes on two cores.
Other databases (SQLite in development) get the same data shape through the ORM, slowly: use
small counts there.

Spread: accounts with a skewed volume (a few big ones, a long tail), every registered provider
(the first one most used), 35 days (--days), statuses by age (in progress only in the last
minutes), system SMS mostly, a few test and bulk ones, a handful of "hot" phone numbers.
"""

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models.sql import Query
from django.utils import timezone

from accounts.models import Account, Integration
from routes.models import ProviderRoute
from deliveries import counters
from deliveries.models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryDayStat,
    DeliveryHourCount,
    DeliveryKind,
    DeliveryStatus,
    StatusEvent,
)
from routes.providers import PROVIDERS

SEED_INTEGRATION_UUID = uuid.UUID("00000000-0000-4000-8000-00000000c0de")
SEED_AMO_ID_BASE = 90_000_000
HOT_PHONES = [f"+7912000000{i}" for i in range(10)]
CHUNK = 250_000

# (upper bound of a uniform draw, status, error classes to pick from, provider code)
FINAL_STATUS_SHARES = [
    (0.860, DeliveryStatus.DELIVERED, [""], "103"),
    (0.890, DeliveryStatus.SENT, [""], ""),
    (0.925, DeliveryStatus.UNDELIVERED, ["undelivered", "blocked_recipient"], "105"),
    (0.935, DeliveryStatus.EXPIRED, ["expired"], "104"),
    (0.955, DeliveryStatus.REJECTED, ["invalid_recipient", "blocked_recipient", "no_route", "sender_rejected",
                                      "recipient_rate_limited"], "207"),
    (0.990, DeliveryStatus.FAILED, ["provider_unavailable", "no_route", "validity", "account_disabled",
                                    "canceled"], "500"),
    (1.000, DeliveryStatus.UNKNOWN, ["timeout"], ""),
]


class Command(BaseCommand):
    help = "Generate N realistic deliveries (with attempts and status events for some) and their dashboard counters."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True, help="deliveries to add")
        parser.add_argument("--accounts", type=int, default=200, help="accounts to spread them over")
        parser.add_argument("--days", type=int, default=35, help="how far back creation times go")
        parser.add_argument("--history-share", type=float, default=0.2,
                            help="share of deliveries that get attempt and status-event rows")
        parser.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
        parser.add_argument("--no-stats", action="store_true", help="skip rebuilding the dashboard counters")
        parser.add_argument("--workers", type=int, default=2,
                            help="PostgreSQL connections generating in parallel (one per core)")

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        if options["count"] <= 0:
            raise CommandError("--count must be positive")
        started = time.monotonic()
        accounts, routes = self.ensure_accounts(options["accounts"])
        self.stdout.write(f"{len(accounts)} accounts, {len(routes)} routes ready")
        load_started = time.monotonic()
        if connection.vendor == "postgresql":
            self.seed_postgres(options, accounts, routes)
        else:
            self.seed_orm(options, accounts, routes)
        self.stdout.write(f"deliveries loaded in {time.monotonic() - load_started:.1f} s")
        # PostgreSQL counts each chunk in its own INSERT statement; other databases rebuild after.
        if not options["no_stats"] and connection.vendor != "postgresql":
            stats_started = time.monotonic()
            today = timezone.localdate()
            # The seeded keys come from counters.key_expression itself: no need to check them again.
            result = counters.stats_rebuild(since=today - timedelta(days=options["days"] + 1), until=today,
                                         check_keys=False)
            self.stdout.write(f"dashboard counters rebuilt for {result.days} days ({result.deliveries} deliveries, "
                              f"{result.keys_corrected} keys corrected) in {time.monotonic() - stats_started:.1f} s")
        self.stdout.write(self.style.SUCCESS(f"done in {time.monotonic() - started:.1f} s"))

    # --- accounts and routes -----------------------------------------------------------------------
    def ensure_accounts(self, count):
        integration, _ = Integration.objects.get_or_create(
            client_uuid=SEED_INTEGRATION_UUID,
            defaults={"name": "seed data", "client_secret": uuid.uuid4().hex,
                      "redirect_uri": "https://smsgate.example.com/amocrm/oauth"})
        existing = {a.amo_id: a for a in Account.objects.filter(integration=integration)}
        missing = [Account(integration=integration, amo_id=SEED_AMO_ID_BASE + i, subdomain=f"seed{i:04d}")
                   for i in range(count) if SEED_AMO_ID_BASE + i not in existing]
        Account.objects.bulk_create(missing, batch_size=1000)
        accounts = list(Account.objects.filter(integration=integration, amo_id__lt=SEED_AMO_ID_BASE + count)
                        .order_by("amo_id"))
        slugs = sorted(PROVIDERS, key=lambda slug: (slug == "console", slug))
        have = set(ProviderRoute.objects.filter(account__in=accounts).values_list("account_id", "provider"))
        new_routes = []
        for account in accounts:
            for priority, slug in enumerate(slugs, start=1):
                if (account.pk, slug) not in have:
                    credentials = {f.name: f"seed-{f.name}-{account.pk}" for f in PROVIDERS[slug].credential_fields}
                    new_routes.append(ProviderRoute(account=account, provider=slug, priority=priority,
                                                    credentials=credentials))
        ProviderRoute.objects.bulk_create(new_routes, batch_size=1000)
        routes = {(r.account_id, r.provider): r.pk for r in ProviderRoute.objects.filter(account__in=accounts)}
        return accounts, routes

    @staticmethod
    def provider_slugs():
        # The first provider carries most traffic; the development console provider the least.
        return sorted(PROVIDERS, key=lambda slug: (slug == "console", slug))

    # --- PostgreSQL: generated in the server ----------------------------------------------------------
    def seed_postgres(self, options, accounts, routes):
        slugs = self.provider_slugs()
        account_ids = [a.pk for a in accounts]
        route_ids = [routes.get((a.pk, slug)) for a in accounts for slug in slugs]
        key_sql, key_params = self.stats_key_sql()
        count_stats = not options["no_stats"]
        sql = self.insert_sql(key_sql, count_stats=count_stats)
        # Inside a transaction (tests) other connections cannot see the accounts: one connection then.
        workers = 1 if connection.in_atomic_block else max(1, options["workers"])
        run = uuid.uuid4().hex[:8]  # token ids (jti) stay unique when seeding again
        chunks = [(first, min(first + CHUNK - 1, options["count"]), n)
                  for n, first in enumerate(range(1, options["count"] + 1, CHUNK))]

        def load(chunk):
            first, last, n = chunk
            started = time.monotonic()
            with transaction.atomic(), connection.cursor() as cursor:
                if superuser:  # skip per-row foreign-key triggers: every reference is generated valid
                    cursor.execute("SET LOCAL session_replication_role = replica")
                cursor.execute("SELECT setseed(%s)", [((options["seed"] * 7919 + n) % 10_000) / 10_000])
                # Placeholders in the order they appear in the statement.
                cursor.execute(sql, [*key_params, account_ids, HOT_PHONES, route_ids, slugs, run, len(account_ids),
                                     len(slugs), options["days"], options["count"], first, last,
                                     options["history_share"],
                                     *([timezone.get_current_timezone_name()] if count_stats else []),
                                     options["history_share"]])
            return last - first + 1, time.monotonic() - started

        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            superuser = cursor.fetchone()[0]
            table_empty = not Delivery.objects.exists()
            rebuild = self.drop_keys_and_indexes(cursor) if table_empty else None
        try:
            done = 0
            for size, seconds in self.in_parallel(load, chunks, workers):
                done += size
                self.stdout.write(f"  {done:>10,} deliveries (a chunk in {seconds:.1f} s)")
        finally:
            if rebuild:  # also after a failure: the table must get its keys and indexes back
                index_started = time.monotonic()
                self.rebuild_keys_and_indexes(rebuild, workers)
                self.stdout.write(f"  keys and indexes rebuilt in {time.monotonic() - index_started:.1f} s")
        analyze_started = time.monotonic()
        with connection.cursor() as cursor:
            # VACUUM sets the visibility map (index-only scans); it cannot run inside a transaction.
            command = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
            for model in (Delivery, Attempt, StatusEvent, DeliveryDayStat, DeliveryHourCount):
                cursor.execute(f"{command} {connection.ops.quote_name(model._meta.db_table)}")
        self.stdout.write(f"  vacuum and analyze in {time.monotonic() - analyze_started:.1f} s")

    @staticmethod
    def in_parallel(function, items, workers):
        """function(item) for each item, on `workers` threads (each with its own connection)."""
        if workers == 1:
            yield from map(function, items)
            return

        def run(item):
            try:
                return function(item)
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(run, items)

    @staticmethod
    def drop_keys_and_indexes(cursor) -> dict:
        """On an empty table: drop the deliveries table's indexes, its primary and unique keys and
        the foreign keys that point at it, and return what recreates them. Building an index once
        by sorting is far cheaper than maintaining random UUID keys row by row."""
        table = Delivery._meta.db_table
        cursor.execute("""
            SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype,
                   pg_get_indexdef(c.conindid)
            FROM pg_constraint c
            WHERE (c.conrelid = %s::regclass AND c.contype IN ('p', 'u'))
               OR (c.confrelid = %s::regclass AND c.contype = 'f')
        """, [table, table])
        constraints = cursor.fetchall()
        cursor.execute("""
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = %s AND i.schemaname = current_schema()
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """, [table])
        indexes = cursor.fetchall()
        quote = connection.ops.quote_name
        for owner, name, _definition, _kind, _index in sorted(constraints, key=lambda c: c[3] != "f"):
            cursor.execute(f"ALTER TABLE {quote(owner)} DROP CONSTRAINT {quote(name)}")
        for name, _definition in indexes:
            cursor.execute(f"DROP INDEX {quote(name)}")
        keys = [(owner, name, kind, index) for owner, name, _d, kind, index in constraints if kind in "pu"]
        return {
            # Unique keys are built as plain unique indexes (in parallel with the others), then
            # attached as constraints; the foreign keys come last, once the primary key is back.
            "indexes": [definition for _name, definition in indexes] + [index for *_rest, index in keys],
            "attach": [f"ALTER TABLE {quote(owner)} ADD CONSTRAINT {quote(name)} "
                       f"{'PRIMARY KEY' if kind == 'p' else 'UNIQUE'} USING INDEX {quote(name)}"
                       for owner, name, kind, _index in keys],
            "foreign_keys": [f"ALTER TABLE {quote(owner)} ADD CONSTRAINT {quote(name)} {definition}"
                             for owner, name, definition, kind, _index in constraints if kind == "f"],
        }

    def rebuild_keys_and_indexes(self, rebuild: dict, workers: int):
        def build(statement):
            started = time.monotonic()
            with connection.cursor() as cursor:
                cursor.execute("SET maintenance_work_mem = '512MB'")  # sorts in memory
                if workers > 1:  # our threads already use the cores
                    cursor.execute("SET max_parallel_maintenance_workers = 0")
                cursor.execute(statement)
            return statement, time.monotonic() - started

        # Dearest first (sorting text costs most), so the threads finish together.
        for statement, seconds in self.in_parallel(build, sorted(rebuild["indexes"], key=self.index_cost, reverse=True),
                                                   workers):
            self.report_statement(statement, seconds)
        with connection.cursor() as cursor:
            for statement in rebuild["attach"] + rebuild["foreign_keys"]:
                started = time.monotonic()
                cursor.execute(statement)
                self.report_statement(statement, time.monotonic() - started)

    def report_statement(self, statement: str, seconds: float):
        if self.verbosity >= 2:
            self.stdout.write(f"    {seconds:5.1f} s  {statement}")

    @staticmethod
    def index_cost(definition: str) -> float:
        """A rough build cost from an index definition: text keys sort slowly, partial indexes
        cover fewer rows."""
        columns = definition[definition.rindex("(", 0, definition.index(")")) + 1:definition.index(")")]
        cost = 1.0
        for column in columns.split(","):
            name = column.split()[0].strip('"')
            field = next((f for f in Delivery._meta.concrete_fields if f.column == name), None)
            cost += 2.0 if field is not None and field.get_internal_type() in ("CharField", "TextField") else 0.5
        return cost / 2 if " WHERE " in definition else cost

    @staticmethod
    def stats_key_sql():
        """deliveries.counters.key_expression compiled to SQL over columns of "deliveries_delivery",
        so seeded keys are exactly what the service would store."""
        query = Query(Delivery)
        expression = counters.key_expression().resolve_expression(query)
        sql, params = expression.as_sql(query.get_compiler(connection=connection), connection)
        return sql, list(params)

    @staticmethod
    def insert_sql(key_sql: str, *, count_stats: bool) -> str:
        table = Delivery._meta.db_table
        thresholds = "\n".join(
            f"WHEN r_status < {bound} THEN '{status.value}'" for bound, status, _, _ in FINAL_STATUS_SHARES)
        errors = "\n".join(
            f"WHEN '{status.value}' THEN (ARRAY{[e for e in classes]!r})[1 + floor(r_err * {len(classes)})::int]"
            for _, status, classes, _ in FINAL_STATUS_SHARES)
        codes = "\n".join(f"WHEN '{status.value}' THEN '{code}'" for _, status, _, code in FINAL_STATUS_SHARES)
        # Nested subqueries, not CTEs: random() would make every CTE materialise its rows.
        return f"""
WITH inserted AS (
    INSERT INTO {table} (id, account_id, kind, phone, text, encoding, segments, status, route_id, provider,
        provider_message_id, error_class, error_code, error_text, jti, valid_until, attempt_count,
        next_attempt_at, created_at, updated_at, sent_at, finished_at, stats_key)
    SELECT id, account_id, kind, phone, text, encoding, segments, status, route_id, provider,
        provider_message_id, error_class, error_code, error_text, jti, valid_until, attempt_count,
        next_attempt_at, created_at, coalesce(finished_at, sent_at, created_at), sent_at, finished_at,
        {key_sql}
    FROM (
    SELECT
        gen_random_uuid() AS id,
        (%s::bigint[])[acc_idx + 1] AS account_id,
        kind_value AS kind,
        CASE WHEN r_phone < 0.001 THEN (%s::text[])[1 + mod(g, 10)::int]
             ELSE '+79' || lpad(floor(r_phone * 1e9)::bigint::text, 9, '0') END AS phone,
        CASE kind_value
            WHEN 'system' THEN 'Код для входа: ' || lpad(floor(r_code * 1e6)::int::text, 6, '0')
            WHEN 'bulk' THEN 'Скидка ' || (5 + floor(r_code * 30)::int) || '%% до конца недели по промокоду SALE'
                             || floor(r_code * 1e4)::int
            ELSE 'smsgate test message: your SMS provider is set up correctly.' END AS text,
        CASE kind_value WHEN 'test' THEN 'gsm7' ELSE 'ucs2' END AS encoding,
        CASE kind_value WHEN 'bulk' THEN 2 ELSE 1 END AS segments,
        status_value AS status,
        CASE WHEN no_provider THEN NULL
             ELSE (%s::bigint[])[acc_idx * n_providers + provider_idx + 1] END AS route_id,
        CASE WHEN no_provider THEN '' ELSE (%s::text[])[provider_idx + 1] END AS provider,
        CASE WHEN status_value IN ('pending', 'sending', 'failed', 'rejected') THEN ''
             ELSE to_char(created, 'YYMMDD') || '-' || g END AS provider_message_id,
        CASE status_value {errors} ELSE '' END AS error_class,
        CASE WHEN status_value IN ('delivered', 'sent') THEN '' ELSE CASE status_value {codes} ELSE '' END
        END AS error_code,
        '' AS error_text,
        CASE kind_value WHEN 'system' THEN 'seed-' || %s || '-' || g END AS jti,
        created + interval '10 minutes' AS valid_until,
        CASE WHEN status_value = 'pending' THEN 0 ELSE 1 END AS attempt_count,
        NULL::timestamptz AS next_attempt_at,
        created AS created_at,
        CASE WHEN status_value IN ('sent', 'delivered', 'undelivered', 'expired', 'unknown')
             THEN created + (0.3 + r_sent * r_sent * 5) * interval '1 second' END AS sent_at,
        CASE WHEN status_value = 'delivered'
                  THEN created + (2 + r_done * r_done * r_done * 300) * interval '1 second'
             WHEN status_value IN ('undelivered', 'expired')
                  THEN created + (60 + r_done * 3600) * interval '1 second'
             WHEN status_value IN ('rejected', 'failed') THEN created + interval '1 second' END AS finished_at
    FROM (
        SELECT s.*, status_value IN ('pending', 'sending') OR (status_value = 'failed' AND r_err < 0.4)
                    AS no_provider
        FROM (
            SELECT d.*,
                floor(n_accounts * power(r_acc, 2.5))::int AS acc_idx,
                -- Oldest first, as a live table grows: creation time follows the row order.
                now() - age * interval '1 second' AS created,
                CASE WHEN r_provider < 0.7 OR n_providers = 1 THEN 0
                     ELSE 1 + floor((r_provider - 0.7) / 0.3 * (n_providers - 1))::int END AS provider_idx,
                CASE WHEN r_kind < 0.97 THEN 'system' WHEN r_kind < 0.99 THEN 'bulk' ELSE 'test' END AS kind_value,
                CASE WHEN age < 120 AND r_status < 0.5 THEN
                          CASE WHEN r_status < 0.25 THEN 'pending' ELSE 'sending' END
                     {thresholds}
                END AS status_value
            FROM (
                SELECT g, %s::int AS n_accounts, %s::int AS n_providers,
                       %s::int * 86400 * (1 - (g - 1 + random()) / %s::bigint) AS age,
                       random() AS r_acc, random() AS r_status, random() AS r_err, random() AS r_kind,
                       random() AS r_provider, random() AS r_phone, random() AS r_sent, random() AS r_done,
                       random() AS r_code
                FROM generate_series(%s::bigint, %s::bigint) AS g
            ) d
        ) s
    ) s
    ) AS deliveries_delivery
    RETURNING id, account_id, status, provider, route_id, provider_message_id, error_class, error_code,
              created_at, finished_at, stats_key
),
with_history AS (
    SELECT * FROM inserted
    WHERE provider <> '' AND get_byte(uuid_send(id), 15) < 256 * %s::float
),
attempts AS (
    INSERT INTO {Attempt._meta.db_table} (delivery_id, route_id, provider, started_at, finished_at, outcome,
        error_class, provider_code, error_text, provider_message_id, latency_ms, raw_response)
    SELECT id, route_id, provider, created_at + interval '200 milliseconds',
        created_at + interval '200 milliseconds' + (40 + get_byte(uuid_send(id), 14)) * interval '1 millisecond',
        CASE status WHEN 'rejected' THEN '{AttemptOutcome.REJECTED.value}'
                    WHEN 'failed' THEN '{AttemptOutcome.FAILED.value}'
                    WHEN 'unknown' THEN '{AttemptOutcome.AMBIGUOUS.value}'
                    ELSE '{AttemptOutcome.SENT.value}' END,
        CASE WHEN status IN ('rejected', 'failed', 'unknown') THEN error_class ELSE '' END,
        CASE WHEN status IN ('rejected', 'failed') THEN error_code ELSE '' END,
        '', provider_message_id, 40 + get_byte(uuid_send(id), 14),
        CASE WHEN status IN ('rejected', 'failed')
             THEN jsonb_build_object('status', 'ERROR', 'status_code', error_code::int,
                                     'status_text', 'refused by the provider')
             ELSE jsonb_build_object('status', 'OK', 'status_code', 100, 'balance', 4122.5,
                                     'sms', jsonb_build_object('sms_id', provider_message_id, 'status', 'OK'))
        END
    FROM with_history
    RETURNING 1
){counters.counters_from_sql("inserted") if count_stats else ""}
INSERT INTO {StatusEvent._meta.db_table} (delivery_id, source, status, provider_code, error_class, occurred_at,
    received_at, applied, raw)
SELECT id, 'webhook', status, error_code, CASE WHEN status = 'delivered' THEN '' ELSE error_class END,
    finished_at, finished_at + interval '300 milliseconds', true,
    jsonb_build_object('sms_id', provider_message_id, 'sms_status', error_code)
FROM inserted
WHERE status IN ('delivered', 'undelivered', 'expired') AND get_byte(uuid_send(id), 15) < 256 * %s::float
"""

    # --- other databases: the same shape through the ORM -------------------------------------------------
    def seed_orm(self, options, accounts, routes):
        rng = random.Random(options["seed"])
        slugs = self.provider_slugs()
        now = timezone.now()
        batch, history = [], []
        for n in range(options["count"]):
            account = accounts[int(len(accounts) * rng.random() ** 2.5)]
            created = now - timedelta(seconds=options["days"] * 86400 * rng.random())
            r_status = rng.random()
            status = next(s for bound, s, _, _ in FINAL_STATUS_SHARES if r_status < bound)
            classes, code = next((c, code) for _, s, c, code in FINAL_STATUS_SHARES if s == status)
            kind = DeliveryKind.SYSTEM if rng.random() < 0.97 else DeliveryKind.TEST
            provider = slugs[0] if rng.random() < 0.7 or len(slugs) == 1 else rng.choice(slugs[1:])
            sent_at = created + timedelta(seconds=0.3 + rng.random() * 5) if status not in (
                DeliveryStatus.REJECTED, DeliveryStatus.FAILED) else None
            finished = None
            if status == DeliveryStatus.DELIVERED:
                finished = created + timedelta(seconds=2 + rng.random() ** 3 * 300)
            elif status in (DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED,
                            DeliveryStatus.FAILED):
                finished = created + timedelta(seconds=60)
            error_class = rng.choice(classes) if status not in (DeliveryStatus.DELIVERED, DeliveryStatus.SENT) else ""
            delivery = Delivery(
                account=account, kind=kind, phone=rng.choice(HOT_PHONES) if rng.random() < 0.01
                else f"+79{rng.randrange(10**9):09d}", text=f"Код для входа: {rng.randrange(10**6):06d}",
                encoding="ucs2", segments=1, status=status, provider=provider,
                route_id=routes.get((account.pk, provider)),
                provider_message_id=f"{created:%y%m%d}-{n}" if sent_at else "", error_class=error_class,
                error_code=code if error_class else "", valid_until=created + timedelta(minutes=10),
                attempt_count=1, created_at=created, updated_at=finished or sent_at or created, sent_at=sent_at,
                finished_at=finished)
            delivery.stats_key = counters.key_of(status=status, provider=provider, error_class=error_class,
                                              route_id=delivery.route_id, kind=kind, parts=delivery.segments,
                                              created_at=created, finished_at=finished).encode()
            batch.append(delivery)
            if rng.random() < options["history_share"]:
                history.append(delivery)
            if len(batch) >= 2000:
                self._flush_orm(batch, history)
        self._flush_orm(batch, history)

    @staticmethod
    def _flush_orm(batch, history):
        created_times = [(d, d.created_at) for d in batch]
        with transaction.atomic():
            Delivery.objects.bulk_create(batch)
            # created_at is auto_now_add: put the generated times back.
            for delivery, created in created_times:
                delivery.created_at = created
            Delivery.objects.bulk_update(batch, ["created_at"], batch_size=500)
            Attempt.objects.bulk_create([
                Attempt(delivery=d, route_id=d.route_id, provider=d.provider, started_at=d.created_at,
                        finished_at=d.created_at + timedelta(milliseconds=80), latency_ms=80,
                        outcome=AttemptOutcome.SENT if d.sent_at else AttemptOutcome.FAILED,
                        provider_message_id=d.provider_message_id, raw_response={"status": "OK"})
                for d in history])
            StatusEvent.objects.bulk_create([
                StatusEvent(delivery=d, source=StatusEvent.Source.WEBHOOK, status=d.status, occurred_at=d.finished_at,
                            applied=True, raw={"sms_id": d.provider_message_id, "status": d.status})
                for d in history if d.status in (DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED,
                                                 DeliveryStatus.EXPIRED)])
        batch.clear()
        history.clear()
