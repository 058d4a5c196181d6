"""Server time of the account API on a big deliveries table (not part of the test run).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/smsgate_bench DEBUG=1 \
        .venv/bin/python bench/api_bench.py --rows 1000000

Fills PostgreSQL with `--rows` deliveries spread over 10 accounts and 90 days (generate_series,
once), then times each call through Django's test client (in-process: no network, no gunicorn),
median of `--repeat` runs, and writes bench/results/api_bench.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from accounts.models import Account, Integration  # noqa: E402
from accounts.tokens import issue_token  # noqa: E402
from deliveries.models import Delivery  # noqa: E402

ACCOUNTS = 10


def fill(rows: int) -> Account:
    integration, _ = Integration.objects.get_or_create(
        client_uuid=uuid.UUID("00000000-0000-4000-8000-00000000be0c"),
        defaults={"name": "bench", "client_secret": "bench-secret-" + "x" * 40,
                  "redirect_uri": "https://bench.example.com/amocrm/oauth"})
    accounts = [Account.objects.get_or_create(integration=integration, amo_id=1000 + n,
                                              defaults={"subdomain": f"bench{n}"})[0] for n in range(ACCOUNTS)]
    have = Delivery.objects.filter(account__in=accounts).count()
    if have < rows:
        ids = [a.pk for a in accounts]
        with connection.cursor() as cursor:
            cursor.execute("""
                INSERT INTO deliveries_delivery (id, account_id, kind, phone, text, encoding, segments, status,
                    provider, provider_message_id, error_class, error_code, error_text, valid_until,
                    attempt_count, created_at, updated_at)
                SELECT gen_random_uuid(), (%s::bigint[])[1 + n %% %s], 'system',
                    '+7912' || lpad((n %% 9000000)::text, 7, '0'), 'Код для входа: ' || (n %% 1000000)::text,
                    'ucs2', 1, (ARRAY['sent','delivered','delivered','delivered','failed','undelivered'])[1 + n %% 6],
                    'smsru', n::text, '', '', '', now(), 1,
                    now() - (n %% 90) * interval '1 day' - (n %% 86400) * interval '1 second', now()
                FROM generate_series(%s, %s) AS n""", [ids, ACCOUNTS, have + 1, rows])
            cursor.execute("ANALYZE deliveries_delivery")
    return accounts[0]


def timed(client, token, url, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, HTTP_X_AUTH_TOKEN=token)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.content[:200])
    return round(statistics.median(samples), 1), round(max(samples), 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("set DATABASE_URL to a PostgreSQL database")
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    account = fill(args.rows)
    print(f"{Delivery.objects.count():,} deliveries ready in {time.perf_counter() - started:.0f} s")
    token = issue_token(integration=account.integration, account_id=account.amo_id, subdomain=account.subdomain,
                        is_admin=True)
    client = Client(HTTP_HOST="127.0.0.1")
    first_page = client.get("/api/v1/deliveries/", HTTP_X_AUTH_TOKEN=token).json()
    cursor_url = first_page["next"].split("127.0.0.1", 1)[1]
    phone = first_page["results"][0]["phone"]
    calls = {
        "deliveries, first page": "/api/v1/deliveries/",
        "deliveries, next page (cursor)": cursor_url,
        "deliveries, status=failed": "/api/v1/deliveries/?status=failed",
        "deliveries, phone (exact)": f"/api/v1/deliveries/?phone={phone}",
        "deliveries, one week": "/api/v1/deliveries/?created_from=2026-01-01&created_to=2026-01-07",
        "stats, 30 days": "/api/v1/stats/",
        "routes": "/api/v1/routes/",
    }
    results = {"rows": Delivery.objects.count(), "account_rows": Delivery.objects.filter(account=account).count(),
               "ms_median_max": {}}
    for name, url in calls.items():
        results["ms_median_max"][name] = timed(client, token, url, args.repeat)
        print(f"{name:34s} median {results['ms_median_max'][name][0]:7.1f} ms   max {results['ms_median_max'][name][1]:7.1f} ms")
    (ROOT / "bench" / "results" / "api_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
