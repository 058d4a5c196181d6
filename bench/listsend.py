"""Bench scenario `listsend` (issue 19, item 6): bulk SMS fed through the list-send path over HTTP, as
Jasmin's bulk input comes over HTTP, against a provider answering in 100 ms.

    .venv/bin/python bench/run.py --only listsend --no-peer     # or with the peer: its tuned bulk run follows

Each of the run's accounts has its leads in the fake amoCRM (tests/fakes/amocrm, in this process,
enforcing 7 requests/s per account with 429), each lead with a main contact and a mobile phone, and
its amoCRM connected. A client POSTs `/api/v1/crm/list-sends/` (the widget's list dialog: 500 lead
ids, the account's own text with a lead placeholder, a fresh X-Auth-Token each) on a fixed schedule,
the accounts in turn, so that 600 SMS/s are offered for 20 s, as the `dispatch` scenario offers.
worker-crm reads the leads (250 a step), sends (a batch on its sending threads) and writes the
`sms_out` notes; the fake SMS.ru answers every send in 100 ms.

Printed and kept in results["listsend"]: the POSTs' answers (status codes, p50/p99 from the client),
SMS/s over the arrival span (first to last at the provider), every SMS once (missing, twice), e2e
p50/p99 per SMS from its list's POST leaving the client to the provider (target < 500 ms while input
lasts), the most amoCRM requests in any 1 s for one account, and CPU by role.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

from bench.harness import percentile

RATE, SECONDS, LIST_SIZE = 600, 20, 500
PHONES = 79170000000  # + account index * 100,000 + lead index
TEXT = "{{contact.name}}, заказ по сделке «{{lead.name}}» готов к выдаче."
WAIT_SECONDS = 180


def _connect(fake, account, leads: int, phone_start: int) -> list[int]:
    from django.utils import timezone

    from accounts.models import AmoToken

    fake.add_account(account.amo_id, subdomain=account.subdomain)
    lead_ids = fake.add_leads(account.amo_id, leads, phone_start=phone_start)
    pair = fake.issue_token_pair(account.amo_id, subdomain=account.subdomain)
    AmoToken.objects.update_or_create(account=account, defaults={
        "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
        "expires_at": timezone.now() + timedelta(seconds=pair["expires_in"])})
    return lead_ids


def _post(url: str, token: str, body: dict) -> tuple[int, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "X-Auth-Token": token, "Accept-Language": "ru"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, (time.monotonic() - started) * 1000


def listsend_scenario(bench) -> dict:
    from django.db import connection

    from accounts.tokens import issue_token
    from bench.run import CpuWindow
    from tests.fakes.amocrm import FakeAmoCRM

    lists = RATE * SECONDS // LIST_SIZE
    accounts = bench.accounts
    per_account = -(-lists // len(accounts)) * LIST_SIZE
    with FakeAmoCRM() as fake:
        leads = {account.pk: _connect(fake, account, per_account, PHONES + index * 100_000)
                 for index, account in enumerate(accounts)}
        connection.close()
        # The CRM caps are the operator's choice per account and user: off, as a bulk sender would set them.
        bench.stack.env.update(AMO_BASE_URL=fake.url, SMSGATE_CRM_LIMIT_ACCOUNT_HOUR="0",
                               SMSGATE_CRM_LIMIT_ACCOUNT_DAY="0", SMSGATE_CRM_LIMIT_USER_HOUR="0")
        bench.restart_delivery_side(latency=0.1)
        bench.workers += [bench.stack.start_worker(name) for name in ("worker-crm", "worker-crm-2")]
        plan = []  # (account index, first lead index) per list, the accounts in turn
        taken = {account.pk: 0 for account in accounts}
        for n in range(lists):
            index = n % len(accounts)
            account = accounts[index]
            plan.append((index, taken[account.pk]))
            taken[account.pk] += LIST_SIZE
        tokens = [issue_token(integration=bench.integration, account_id=accounts[i].amo_id,
                              subdomain=accounts[i].subdomain, user_id=1000 + i, ttl=3600, jti=f"listsend-{n}")
                  for n, (i, _first) in enumerate(plan)]
        url = f"{bench.web_url}/api/v1/crm/list-sends/"
        posted: list = [None] * lists
        phone_list = {}
        for n, (i, first) in enumerate(plan):
            for k in range(LIST_SIZE):
                phone_list[str(PHONES + i * 100_000 + first + k)] = n

        def client():
            start = time.time() + 0.5
            for n, (i, first) in enumerate(plan):
                due = start + n * LIST_SIZE / RATE
                time.sleep(max(0.0, due - time.time()))
                sent_at = time.time()
                ids = leads[accounts[i].pk][first:first + LIST_SIZE]
                status, ms = _post(url, tokens[n], {"entity_type": "leads", "ids": ids, "text": TEXT})
                posted[n] = (sent_at, status, ms)

        with CpuWindow(bench.table) as window:
            poster = threading.Thread(target=client)
            poster.start()
            poster.join()
            waited = _wait_for(bench.receipts, set(phone_list), timeout=WAIT_SECONDS)
        time.sleep(2)  # anything sent twice would arrive now
        received = bench.receipts.load()
        peak_rps = max(fake.peak_rps(account.amo_id) for account in accounts)
        refused_429 = sum(fake.refused_429(account.amo_id) for account in accounts)

    arrivals, e2e = [], []
    for phone, n in phone_list.items():
        times = received.get(phone) or []
        if times and posted[n] and posted[n][1] == 201:
            arrivals.append(times[0])
            e2e.append((times[0] - posted[n][0]) * 1000)
    got = [received.get(phone) or [] for phone in phone_list]
    span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else 0
    answers = [p for p in posted if p]
    result = {
        "offered_sms_per_second": RATE, "seconds": SECONDS, "lists": lists, "list_size": LIST_SIZE,
        "accounts": len(accounts), "provider_latency_ms": 100,
        "posts": {"statuses": _count([status for _t, status, _ms in answers]),
                  "client_p50_ms": round(percentile([ms for *_x, ms in answers], 50) or 0, 1),
                  "client_p99_ms": round(percentile([ms for *_x, ms in answers], 99) or 0, 1)},
        "sms": len(phone_list), "reached_provider": sum(1 for t in got if t),
        "missing": sum(1 for t in got if not t), "duplicates": sum(1 for t in got if len(t) > 1),
        "delivered_per_second_over_arrival_span": round(len(arrivals) / span, 1) if span else None,
        "e2e_p50_ms": round(percentile(e2e, 50) or 0), "e2e_p99_ms": round(percentile(e2e, 99) or 0),
        "e2e_max_ms": round(max(e2e, default=0)), "waited_for_drain_seconds": waited,
        "amo_peak_rps_one_account": peak_rps, "amo_429": refused_429,
        "cpu_window_seconds": round(window.seconds, 2), "cpu_cores_by_role": window.result,
    }
    result["cpu_ms_per_sms"] = window.per_message(result["reached_provider"])
    print_listsend(result)
    return result


def _wait_for(receipts, phones: set, *, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout and not phones <= receipts.load().keys():
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def print_listsend(r: dict):
    print("\n".join([
        "",
        f"listsend: {r['lists']} list sends of {r['list_size']} over {r['seconds']} s over HTTP "
        f"({r['offered_sms_per_second']} SMS/s offered, {r['accounts']} accounts), provider answers in 100 ms",
        f"  POST answers: {r['posts']['statuses']}, p50 {r['posts']['client_p50_ms']} ms, "
        f"p99 {r['posts']['client_p99_ms']} ms",
        f"  SMS at the provider: {r['reached_provider']} of {r['sms']} (missing {r['missing']}, twice "
        f"{r['duplicates']}), {r['delivered_per_second_over_arrival_span']}/s over the arrival span",
        f"  e2e from the list's POST: p50 {r['e2e_p50_ms']} ms, p99 {r['e2e_p99_ms']} ms (target < 500), "
        f"max {r['e2e_max_ms']} ms",
        f"  amoCRM: the most requests in any 1 s for one account {r['amo_peak_rps_one_account']} (<= 7), "
        f"429s {r['amo_429']}",
    ]), flush=True)
