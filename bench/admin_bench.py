"""Server time of the admin pages staff use, on a big deliveries table.

Requests go through Django's whole stack in-process (middleware, admin, ORM, templates; no
network), as a logged-in staff user, with DEBUG off. For each page it prints the median, p95 and
worst time over --runs requests, the number of SQL queries and their total time, and the plan
shape of every query that reads the deliveries table (EXPLAIN; "SEQ SCAN" would stand out).

    # a separate database: five million rows, then the timings, then drop it
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/smsgate_bench DEBUG=1 \\
        .venv/bin/python bench/admin_bench.py --create --seed 5000000 --drop-after

    # or against a database already seeded with `manage.py seed_deliveries` (same environment)
    DATABASE_URL=... DEBUG=1 .venv/bin/python bench/admin_bench.py

DEBUG=1 only lets the settings load development keys (the seeded route credentials are
encrypted with them); the benchmark itself runs with DEBUG off. Results are also written to
bench/results/admin_bench-<time>.json (git-ignored).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")

LIMIT_MS = 300  # the issue's budget for the list, a status filter, a phone search, a delivery's page
BUDGETED = {"list", "status filter: failed", "status filter: pending (rare)", "phone search (hot number)",
            "phone search (one number)", "delivery page"}


def admin_database(url: str) -> tuple[str, str]:
    """(maintenance database URL, database name) for CREATE/DROP DATABASE."""
    base, _, name = url.rpartition("/")
    return f"{base}/postgres", name.split("?")[0]


def create_or_drop(url: str, action: str):
    import psycopg

    maintenance, name = admin_database(url)
    with psycopg.connect(maintenance, autocommit=True) as conn:
        if action == "create":
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{action}d database {name}")


def plan_shape(connection, sql: str) -> str:
    """A compact plan: node types and indexes, outermost first."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node, depth=0):
        label = node["Node Type"]
        if node.get("Scan Direction") == "Backward":
            label += " Backward"
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
        elif "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "deliveries_delivery":
            label = label.upper()  # the one thing that must not appear
        parts = [label]
        for child in node.get("Plans", []):
            parts.append(walk(child, depth + 1))
        return parts[0] if len(parts) == 1 else f"{parts[0]} > " + " + ".join(parts[1:])

    return walk(plan[0]["Plan"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="timed requests per page (after 2 warm-ups)")
    parser.add_argument("--create", action="store_true", help="(re)create the database and migrate it first")
    parser.add_argument("--seed", type=int, default=0, help="seed this many deliveries first")
    parser.add_argument("--drop-after", action="store_true", help="drop the database when done (frees disk)")
    parser.add_argument("--no-plans", action="store_true", help="skip the EXPLAIN plan shapes")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("Set DATABASE_URL=postgres://... to a database of its own (it may be recreated and dropped).")
    if args.create:
        create_or_drop(url, "create")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    try:
        if args.create:
            call_command("migrate", verbosity=0)
        if args.seed:
            call_command("seed_deliveries", count=args.seed)
        settings.DEBUG = False
        setup_test_environment()  # the test client needs it (templates rendered signal, ALLOWED_HOSTS)
        results = run_pages(args, Client, CaptureQueriesContext, connection)
    finally:
        if args.drop_after:
            connection.close()
            create_or_drop(url, "drop")
    return results


def run_pages(args, Client, CaptureQueriesContext, connection):
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.urls import reverse

    from accounts.models import Account
    from django.db.models import Sum

    from deliveries.models import Delivery, DeliveryDayStat, DeliveryKind

    user, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'deliveries_delivery'::regclass")
        total = cursor.fetchone()[0]
    sample = (Delivery.objects.filter(attempts__isnull=False, events__isnull=False)
              .exclude(provider_message_id="").order_by("-created_at").first())
    if sample is None:
        sys.exit("No delivery with attempts and events: seed first (--seed N or manage.py seed_deliveries).")
    one_phone = Delivery.objects.filter(created_at__lt=sample.created_at).values_list("phone", flat=True)[:1][0]
    busiest = Account.objects.filter(pk=sample.account_id).first()
    changelist = reverse("admin:deliveries_delivery_changelist")
    dashboard = reverse("admin:deliveries_delivery_dashboard")
    # The least used provider, from the counters: its filter has the fewest rows to find.
    minor_provider = (DeliveryDayStat.objects.exclude(provider="").values("provider")
                      .annotate(n=Sum("count")).order_by("n")[0]["provider"])
    pages = [
        ("list", changelist),
        ("list, page 20", changelist + "?p=20"),
        ("status filter: failed", changelist + "?status__exact=failed"),
        ("status filter: pending (rare)", changelist + "?status__exact=pending"),
        ("kind filter: test", changelist + f"?kind__exact={DeliveryKind.TEST}"),
        (f"provider filter: {minor_provider}", changelist + f"?provider={minor_provider}"),
        ("created: today", changelist + "?created=today"),
        ("created: 7 days + delivered", changelist + "?created=7d&status__exact=delivered"),
        ("phone search (hot number)", changelist + "?q=%2B7+912+000-00-01"),
        ("phone search (one number)", changelist + "?q=" + one_phone.replace("+", "%2B")),
        ("delivery id search", changelist + f"?q={sample.pk}"),
        ("provider message id search", changelist + f"?q={sample.provider_message_id}"),
        ("account search (subdomain)", changelist + f"?q={busiest.subdomain}"),
        ("delivery page", reverse("admin:deliveries_delivery_change", args=[sample.pk])),
        ("dashboard", dashboard),
        ("dashboard, cold cache", dashboard, cache.clear),  # past days recomputed (every 5 minutes)
        ("dashboard, one account", dashboard + f"?account={busiest.pk}"),
        ("accounts list", reverse("admin:accounts_account_changelist")),
        ("account page", reverse("admin:accounts_account_change", args=[busiest.pk])),
    ]
    print(f"\ndeliveries: ~{total:,} (pg_class estimate); {args.runs} timed runs per page after 2 warm-ups\n")
    header = f"{'page':34} {'median':>8} {'p95':>8} {'worst':>8} {'queries':>8} {'sql ms':>8}"
    print(header)
    print("-" * len(header))
    results = []
    for name, url, *before in pages:
        prepare = before[0] if before else (lambda: None)
        for _ in range(2):
            prepare()
            response = client.get(url)
            assert response.status_code == 200, (name, url, response.status_code)
        timings = []
        for _ in range(args.runs):
            prepare()
            started = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        prepare()
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
        timings.sort()
        median = statistics.median(timings)
        p95 = timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))]
        flag = " OVER BUDGET" if name in BUDGETED and median > LIMIT_MS else ""
        print(f"{name:34} {median:8.1f} {p95:8.1f} {timings[-1]:8.1f} {len(captured.captured_queries):8d} "
              f"{sql_ms:8.1f}{flag}")
        plans = []
        if not args.no_plans:
            for query in captured.captured_queries:
                sql = query["sql"]
                if '"deliveries_delivery"' in sql and sql.lstrip().upper().startswith("SELECT"):
                    plans.append(plan_shape(connection, sql))
        results.append({"page": name, "url": url, "median_ms": round(median, 1), "p95_ms": round(p95, 1),
                        "worst_ms": round(timings[-1], 1), "queries": len(captured.captured_queries),
                        "sql_ms": round(sql_ms, 1), "plans": plans})
    if not args.no_plans:
        print("\nplan shapes of the queries that read deliveries_delivery:")
        for result in results:
            for plan in result["plans"]:
                print(f"  {result['page']:32} {plan}")
    over = [r["page"] for r in results if r["page"] in BUDGETED and r["median_ms"] > LIMIT_MS]
    print(f"\nbudget {LIMIT_MS} ms (median) for: {', '.join(sorted(BUDGETED))}: "
          + ("all within" if not over else "OVER: " + ", ".join(over)))
    out = ROOT / "bench" / "results" / f"admin_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"deliveries_estimate": total, "runs": args.runs, "pages": results}, indent=2,
                              ensure_ascii=False))
    print(f"results written to {out.relative_to(ROOT)}")
    return results


if __name__ == "__main__":
    main()
