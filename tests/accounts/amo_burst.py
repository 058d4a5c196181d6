"""One worker process of the rate-limit test (test_amo_client.py): prints "ready", waits for a line on
stdin (the test starts every process at once), then makes `calls` amoCRM API calls for one account
through AmoClient as fast as the limiter lets it, and prints what it saw as one JSON line.

    python -m tests.accounts.amo_burst <account pk> <calls>
"""

import json
import sys
import time


def main():
    account_pk, calls = int(sys.argv[1]), int(sys.argv[2])
    import django

    django.setup()
    from accounts.amocrm import AmoApiError, AmoClient
    from accounts.amocrm.api import _http_client
    from accounts.amocrm.ratelimit import limiter
    from accounts.models import Account

    client = AmoClient(Account.objects.get(pk=account_pk), max_wait=30)
    limiter(), _http_client()  # built before the start (the HTTP client loads the CA bundle), not in the burst
    print("ready", flush=True)
    sys.stdin.readline()
    began, started, waited, errors = time.time(), time.monotonic(), [], []
    for _ in range(calls):
        before = time.monotonic()
        try:
            client.account_info()
        except AmoApiError as exc:
            errors.append(str(exc))
        waited.append(time.monotonic() - before)
    print(json.dumps({"calls": calls, "errors": errors, "began": began, "elapsed": time.monotonic() - started,
                      "longest_call": max(waited)}), flush=True)


if __name__ == "__main__":
    main()
