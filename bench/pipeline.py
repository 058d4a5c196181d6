"""Bench scenario `pipeline` (issue 16): a digital-pipeline stage's "send SMS" action at scale.

    .venv/bin/python bench/run.py --only pipeline --no-peer        # or: make bench BENCH_ARGS="--only pipeline"

5,000 leads of account A are moved into the stage at once: amoCRM sends 5,000 webhooks, which arrive over
10 s (500/s, fixed schedule: bench/loadgen/openloop.py, one connection each). At the same time account B's
pipeline sends 200 (20/s). The fake amoCRM (tests/fakes/amocrm, in this process, enforcing amoCRM's 7
requests/s per account with 429) holds the leads, each with a main contact and a mobile phone; the fake
SMS.ru answers every send in 100 ms. The Procfile's web and workers run (worker-crm takes the CRM lane).

Printed and kept in results["pipeline"]:
- the webhook answers' p50/p99 as amoCRM would see them (target p99 < 500 ms) and their status codes;
- that every SMS reached the provider exactly once (none missing, none twice) and every sms_out note was
  written (one per lead);
- the most amoCRM requests that arrived in any 1 s for account A (must be ≤ 7) and the 429s it got;
- amoCRM API calls per 250 leads: the reads (leads, contacts, pipelines: target ≤ 3) and all calls with the
  notes' POSTs;
- account B's SMS p99 from its webhook leaving the client to the provider (target < 10 s), while A's
  5,000 are being sent.
Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

from bench.harness import PY, percentile

LOADGEN = Path(__file__).resolve().parent / "loadgen" / "openloop.py"
SECONDS = 10
# BENCH_PIPELINE_LEADS: account A's leads (default 5,000; fewer for a quick look at the plumbing).
LEADS_A = int(os.environ.get("BENCH_PIPELINE_LEADS", "5000"))
LEADS_B = max(SECONDS, LEADS_A // 25)
RATE_A, RATE_B = LEADS_A // SECONDS, LEADS_B // SECONDS
PHONES_A, PHONES_B = 79150000000, 79160000000
TEXT = "{{contact.name}}, ваша сделка «{{lead.name}}» перешла на этап доставки."
WAIT_SECONDS = 300


def _openloop(url: str, bodies: Path, rate: int, sends: Path, out: dict, name: str):
    proc = subprocess.run([PY, str(LOADGEN), "--url", url, "--bodies", str(bodies), "--rate", str(rate),
                           "--seconds", str(SECONDS), "--sends", str(sends)],
                          capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    if proc.returncode != 0:
        out[name] = {"error": proc.stdout[-2000:] + proc.stderr[-2000:]}
    else:
        out[name] = json.loads(proc.stdout)


def _sends(path: Path) -> dict[int, float]:
    found = {}
    for line in path.read_text().splitlines():
        index, epoch = line.split()
        found[int(index)] = float(epoch)
    return found


def _connect(fake, account, amo_id: int, subdomain: str, leads: int, phone_start: int):
    from django.utils import timezone

    from accounts.models import AmoToken
    from crm.pipeline_inbox import pipeline_key_get_or_create

    fake.add_account(amo_id, subdomain=subdomain)
    lead_ids = fake.add_leads(amo_id, leads, phone_start=phone_start)
    pair = fake.issue_token_pair(amo_id, subdomain=subdomain)
    AmoToken.objects.update_or_create(account=account, defaults={
        "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
        "expires_at": timezone.now() + timedelta(seconds=pair["expires_in"])})
    key = pipeline_key_get_or_create(account=account).key
    return lead_ids, key


def _bodies(path: Path, fake, amo_id: int, subdomain: str, lead_ids: list[int], key: str) -> Path:
    from tests.fakes.amocrm.outgoing import dp_webhook_body, php_form

    with fake._state:
        status_id = fake.account(amo_id).main_pipeline.statuses[2].id  # "Переговоры"
        pipeline_id = fake.account(amo_id).main_pipeline.id
    at = int(time.time())
    with open(path, "w") as handle:
        for lead_id in lead_ids:
            body = dp_webhook_body(account_id=amo_id, subdomain=subdomain, lead_id=lead_id, status_id=status_id,
                                   pipeline_id=pipeline_id, event_type=14, settings={"key": key, "message": TEXT},
                                   element_type=2, direction="went_to_trigger", event_time=at)
            handle.write(php_form(body) + "\n")
    return path


def pipeline_scenario(bench) -> dict:
    from django.db import connection

    from crm.models import PipelineEvent
    from deliveries.models import Delivery
    from bench.run import CpuWindow
    from tests.fakes.amocrm import FakeAmoCRM

    account_a, account_b = bench.accounts[0], bench.accounts[1]
    with FakeAmoCRM() as fake:
        leads_a, key_a = _connect(fake, account_a, account_a.amo_id, account_a.subdomain, LEADS_A, PHONES_A)
        leads_b, key_b = _connect(fake, account_b, account_b.amo_id, account_b.subdomain, LEADS_B, PHONES_B)
        connection.close()
        # The workers read amoCRM at the fake; a whole stage may be sent (the CRM caps are the operator's choice).
        bench.stack.env.update(AMO_BASE_URL=fake.url, SMSGATE_CRM_LIMIT_ACCOUNT_HOUR="0",
                               SMSGATE_CRM_LIMIT_ACCOUNT_DAY="0")
        bench.restart_delivery_side(latency=0.1)
        bench.workers += [bench.stack.start_worker(name) for name in ("worker-crm", "worker-crm-2")]
        bodies_a = _bodies(bench.tmp / "dp-a.txt", fake, account_a.amo_id, account_a.subdomain, leads_a, key_a)
        bodies_b = _bodies(bench.tmp / "dp-b.txt", fake, account_b.amo_id, account_b.subdomain, leads_b, key_b)
        sends_a, sends_b = bench.tmp / "dp-a-sends.txt", bench.tmp / "dp-b-sends.txt"
        url = f"{bench.web_url}/amocrm/pipeline"
        loads: dict = {}
        window = CpuWindow(bench.table).__enter__()  # the webhooks, then every SMS and note (closed below)
        started = time.time()
        threads = [threading.Thread(target=_openloop, args=(url, bodies_a, RATE_A, sends_a, loads, "a")),
                   threading.Thread(target=_openloop, args=(url, bodies_b, RATE_B, sends_b, loads, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        phones_a = {str(PHONES_A + n) for n in range(LEADS_A)}
        phones_b = {str(PHONES_B + n) for n in range(LEADS_B)}
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            received = bench.receipts.load()
            notes_done = len(fake.notes(account_a.amo_id, "leads", note_type="sms_out")) >= LEADS_A
            if phones_a <= received.keys() and phones_b <= received.keys() and notes_done:
                break
            time.sleep(0.5)
        window.__exit__(None, None, None)
        time.sleep(2)  # anything sent twice would arrive now
        received = bench.receipts.load()
        finished = time.time()

        sent_a = [received.get(p, []) for p in phones_a]
        sent_b = {p: received.get(p, []) for p in phones_b}
        last_sms_a = max((t[0] for t in sent_a if t), default=None)
        notes_a = fake.notes(account_a.amo_id, "leads", note_type="sms_out")
        notes_b = fake.notes(account_b.amo_id, "leads", note_type="sms_out")
        log_a = fake.request_log(account_a.amo_id)
        reads_a = [c for c in log_a if c.method == "GET"]
        posts_a = [c for c in log_a if c.method == "POST"]
        send_times_b = _sends(sends_b) if sends_b.exists() else {}
        e2e_b = [(sent_b[str(PHONES_B + i)][0] - at) * 1000 for i, at in send_times_b.items()
                 if sent_b.get(str(PHONES_B + i))]
        pipeline_deliveries_a = Delivery.objects.filter(account=account_a, kind="pipeline").count()
        # From the event's acceptance (its INSERT) instead of the client: the pipeline's path without the web
        # tier's queueing.
        accepted_b = dict(PipelineEvent.objects.filter(account=account_b).values_list("lead_id", "received_at"))
        from_acceptance_b = [(sent_b[str(PHONES_B + n)][0] - accepted_b[lead].timestamp()) * 1000
                             for n, lead in enumerate(leads_b) if lead in accepted_b and sent_b.get(str(PHONES_B + n))]
        connection.close()

    load_a, load_b = loads.get("a", {}), loads.get("b", {})
    result = {
        "leads_a": LEADS_A, "leads_b": LEADS_B, "webhooks_over_seconds": SECONDS, "provider_latency_ms": 100,
        "webhook_a": {k: load_a.get(k) for k in ("statuses", "client_p50_ms", "client_p99_ms", "client_max_ms",
                                                  "sent_per_second", "error")},
        "webhook_b": {k: load_b.get(k) for k in ("statuses", "client_p50_ms", "client_p99_ms", "error")},
        "sms_a_reached_provider": sum(1 for t in sent_a if t),
        "sms_a_missing": sum(1 for t in sent_a if not t),
        "sms_a_twice": sum(1 for t in sent_a if len(t) > 1),
        "deliveries_a": pipeline_deliveries_a,
        "sms_a_all_sent_seconds": round(last_sms_a - started, 1) if last_sms_a else None,
        "notes_a_written": len(notes_a), "notes_a_distinct_leads": len({n["entity_id"] for n in notes_a}),
        "notes_b_written": len(notes_b),
        "amo_peak_rps_a": fake.peak_rps(account_a.amo_id), "amo_429_a": fake.refused_429(account_a.amo_id),
        "amo_peak_rps_b": fake.peak_rps(account_b.amo_id),
        "amo_reads_a": len(reads_a), "amo_note_posts_a": len(posts_a),
        "amo_reads_per_250_leads": round(len(reads_a) / (LEADS_A / 250), 2),
        "amo_calls_per_250_leads_with_notes": round(len(log_a) / (LEADS_A / 250), 2),
        "sms_b_reached_provider": sum(1 for t in sent_b.values() if t),
        "sms_b_p50_ms": round(percentile(e2e_b, 50) or 0), "sms_b_p99_ms": round(percentile(e2e_b, 99) or 0),
        "sms_b_max_ms": round(max(e2e_b, default=0)),
        "sms_b_from_acceptance_p50_ms": round(percentile(from_acceptance_b, 50) or 0),
        "sms_b_from_acceptance_p99_ms": round(percentile(from_acceptance_b, 99) or 0),
        "wall_seconds": round(finished - started, 1),
        "cpu_window_seconds": round(window.seconds, 2), "cpu_cores_by_role": window.result,
        "cpu_ms_per_sms": window.per_message(LEADS_A + LEADS_B),
    }
    print_pipeline(result)
    return result


def print_pipeline(r: dict):
    a, b = r["webhook_a"], r["webhook_b"]
    lines = [
        "",
        f"pipeline: {r['leads_a']} leads of account A into a stage, their webhooks over "
        f"{r['webhooks_over_seconds']} s; account B's {r['leads_b']} at the same time; provider answers in "
        f"{r['provider_latency_ms']} ms",
        f"  webhook answers (A): p50 {a.get('client_p50_ms')} ms, p99 {a.get('client_p99_ms')} ms "
        f"(target < 500), max {a.get('client_max_ms')} ms; statuses {a.get('statuses')}",
        f"  webhook answers (B): p50 {b.get('client_p50_ms')} ms, p99 {b.get('client_p99_ms')} ms; statuses "
        f"{b.get('statuses')}",
        f"  SMS of A at the provider: {r['sms_a_reached_provider']} of {r['leads_a']} (missing {r['sms_a_missing']}, "
        f"twice {r['sms_a_twice']}; deliveries {r['deliveries_a']}), the last {r['sms_a_all_sent_seconds']} s after "
        "the first webhook",
        f"  sms_out notes of A: {r['notes_a_written']} on {r['notes_a_distinct_leads']} leads; "
        f"of B: {r['notes_b_written']}",
        f"  amoCRM requests/s for A, highest in any 1 s: {r['amo_peak_rps_a']} (must be <= 7; 429s: "
        f"{r['amo_429_a']}); B: {r['amo_peak_rps_b']}",
        f"  amoCRM calls per 250 leads: reads {r['amo_reads_per_250_leads']} (target <= 3; {r['amo_reads_a']} GETs), "
        f"with the notes' POSTs {r['amo_calls_per_250_leads_with_notes']} ({r['amo_note_posts_a']} POSTs)",
        f"  account B's SMS, webhook to provider: p50 {r['sms_b_p50_ms']} ms, p99 {r['sms_b_p99_ms']} ms "
        f"(target < 10000), max {r['sms_b_max_ms']} ms; {r['sms_b_reached_provider']} of {r['leads_b']}",
        f"  account B's SMS from the event's acceptance to the provider: p50 {r['sms_b_from_acceptance_p50_ms']} ms, "
        f"p99 {r['sms_b_from_acceptance_p99_ms']} ms",
        f"  CPU per SMS (webhook, reading, sending, note), ms: {(r.get('cpu_ms_per_sms') or {}).get('per_role_ms')}",
    ]
    print("\n".join(lines), flush=True)
