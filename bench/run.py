"""`make bench`: the real stack on 127.0.0.1 under load, side by side with the peer (Jasmin 0.11.1,
../shared/peers/jasmin, when it is there; --no-peer skips it); one table, bench/results/latest.json.

Starts a private Redis, a fresh PostgreSQL database, the Procfile's own web and worker processes
(gunicorn gthread, Celery workers on the machine's RabbitMQ) and the fake SMS.ru provider
(tests/fakes/) with a chosen response latency, then runs, each smsgate scenario followed by (or
taking turns with) the peer's counterpart, so a slow spell of the machine hits both:

1. acceptance  - wrk (closed loop) on POST /amocrm/sms and on the bench-only baseline view
                 (one HS256 verification + one INSERT), at 8 and 64 connections; workers stopped,
                 so the web tier alone is measured (publishing to the broker included).
                 Peer: bench.sh accept at the same connection counts, in the same rounds
2. steady      - a fixed-rate open-loop generator at 50 SMS/s for 30 s; end-to-end latency and
                 CPU per SMS by role. Peer: bench.sh e2e at 50/s for 30 s
3. overload    - the end-to-end capacity first (closed loop, workers running: accepted and
                 delivered per second), then twice that offered for 30 s. Peer: the same from its
                 own accept runs, then bench.sh e2e at twice its capacity
4. dispatch    - the provider answers after 100 ms; bulk deliveries arrive in simultaneous waves
                 (every 100 ms) at 600/s for 20 s. Peer: tuned (prefetch 100), SMSC answering
                 after 100 ms, bench.sh e2e at 600/s for 20 s
5. listsend    - the same bulk fed over HTTP through the list-send path (POST /api/v1/crm/list-sends/,
                 500 leads each, 600 SMS/s for 20 s; worker-crm reads the fake amoCRM, sends, writes
                 the notes); bench/listsend.py. Peer: its tuned bulk run (from dispatch)
6. isolation   - 20,000 bulk SMS queued at once; login codes at 10/s through HTTP meanwhile
7. memory      - peak resident size of every web and worker process (sampled all along)

End-to-end latency = the time the fake provider got the request (its own clock, before its
simulated latency) minus the time the request left the client (`e2e_from_client_*`, as the peer
measures it) or minus the delivery's created_at (`e2e_*`: from the acceptance), per delivery,
matched by phone (every phone is used once per run).

See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import peer as peers  # noqa: E402
from bench.listsend import listsend_scenario  # noqa: E402
from bench.pipeline import pipeline_scenario  # noqa: E402
from bench.harness import (  # noqa: E402
    PY,
    MemoryWatch,
    ProcessTable,
    Stack,
    cpu_by_role,
    cpu_per_message,
    cpu_seconds_by_role,
    free_port,
    machine_cpu_ticks,
    machine_facts,
    percentile,
    require_tools,
    tool_versions,
    write_json,
)

LOADGEN = ROOT / "bench" / "loadgen"
WORKERS = ("worker-system", "worker-system-2", "worker-bulk", "worker-bulk-2")  # the Procfile's worker processes
TEXT = "Код для входа: {code:06d}"
SUBDOMAIN = "bench{n}"
AMO_ID_BASE = 70000
# Every scenario gets its own block of phone numbers: +7912 <digit> <6 digits>, from `low`, `size` of them.
PHONE_BLOCKS = {"warmup": (0, 0, 1_000_000), "accept-endpoint-8": (1, 0, 1_000_000),
                "accept-baseline-8": (2, 0, 1_000_000), "accept-endpoint-64": (3, 0, 1_000_000),
                "accept-baseline-64": (4, 0, 1_000_000), "steady": (5, 0, 1_000_000), "dispatch": (6, 0, 1_000_000),
                "overload": (7, 0, 500_000), "capacity": (7, 500_000, 500_000), "isolation-bulk": (8, 0, 1_000_000),
                "isolation-system": (9, 0, 1_000_000)}

# smsgate's CPU per SMS: the roles counted as the system (issue 19: web, workers, PostgreSQL, broker,
# Redis), and those shown beside it (the fake upstream, the load, the benchmark's own feeder, and
# PostgreSQL's shared processes, which other databases of the machine use too).
COUNTED = {"proxy": ("proxy",), "web": ("web-master", "web-worker"),
           "workers": ("worker-system", "worker-bulk", "worker-crm"), "postgresql": ("postgres-backends",),
           "rabbitmq": ("rabbitmq",), "redis": ("redis",)}
APART = {"fake-provider": ("fake-provider",), "loadgen": ("loadgen",), "feeder": ("feeder",),
         "postgresql-shared": ("postgres-shared",)}


@dataclass(frozen=True)
class Figure:
    """A row of the side-by-side table: `ours` is a key of latest.json, `theirs` a key of its "peer"
    part. A target is on the ratio smsgate / Jasmin ("ratio": judged only with the peer) or on
    smsgate's own figure ("value"). `none_passes` names a count whose 0 makes a figure that could
    not be measured a pass (no request refused: none was answered late)."""

    label: str
    ours: str
    theirs: str | None = None
    target: tuple[str, str, float] | None = None
    none_passes: str | None = None


# Issue 19's targets, side by side with the peer measured in the same run.
FIGURES = [
    Figure("accepted req/s, 8 connections", "acceptance.endpoint_c8.accepted_per_second", "acceptance.c8.req_s",
           ("ratio", ">=", 1.0)),
    Figure("accepted p99 ms, 8 connections", "acceptance.endpoint_c8.latency_p99_ms", "acceptance.c8.p99_ms",
           ("ratio", "<=", 1.0)),
    Figure("accepted req/s, 64 connections", "acceptance.endpoint_c64.accepted_per_second", "acceptance.c64.req_s",
           ("ratio", ">=", 1.0)),
    Figure("accepted p99 ms, 64 connections", "acceptance.endpoint_c64.latency_p99_ms", "acceptance.c64.p99_ms"),
    Figure("CPU ms per accepted request, 8 connections", "acceptance.cpu_ms_per_request.endpoint_c8.total_ms",
           "acceptance.c8.cpu_ms_per_request.total_ms"),
    Figure("baseline view (verify + INSERT), 8 conn: req/s", "acceptance.baseline_c8.requests_per_second"),
    Figure("e2e at 50/s from the client: p50 ms", "steady.e2e_from_client_p50_ms", "steady.p50_ms",
           ("ratio", "<=", 0.5)),
    Figure("e2e at 50/s from the client: p99 ms", "steady.e2e_from_client_p99_ms", "steady.p99_ms",
           ("ratio", "<=", 0.5)),
    Figure("e2e at 50/s from the acceptance: p50 ms", "steady.e2e_p50_ms"),
    Figure("e2e at 50/s from the acceptance: p99 ms", "steady.e2e_p99_ms"),
    Figure("CPU ms per SMS at 50/s, counted roles", "steady.cpu_ms_per_sms.total_ms", "steady.cpu_ms_per_sms.total_ms",
           ("ratio", "<=", 1.0)),
    Figure("capacity (closed loop, 8 conn): SMS/s e2e", "overload.capacity.per_second", "overload.capacity.per_second"),
    Figure("overload, 2 x capacity: offered/s", "overload.offered_per_second_measured", "overload.achieved_rate"),
    Figure("overload: accepted/s", "overload.accepted_per_second", "overload.accepted_per_second"),
    Figure("overload: accepted / capacity", "overload.accepted_share_of_capacity",
           "overload.accepted_share_of_capacity", ("value", ">=", 0.9)),
    Figure("overload: refused, answered p99 ms", "overload.refused_p99_ms", None, ("value", "<=", 50.0),
           none_passes="overload.refused"),
    Figure("overload: refused, p99 ms from when each left", "overload.refused_from_send_p99_ms"),
    Figure("overload: accepted, e2e from the client p99 ms", "overload.e2e_from_client_p99_ms", "overload.p99_ms",
           ("value", "<", 1000.0)),
    Figure("overload: accepted, e2e from the acceptance p99 ms", "overload.e2e_p99_ms"),
    Figure("overload: accepted, not delivered", "overload.missing", "overload.lost"),
    Figure("bulk, 100 ms provider: SMS/s", "dispatch.delivered_per_second_over_arrival_span", "dispatch.delivered_rate",
           ("ratio", ">=", 1.0)),
    Figure("bulk, 100 ms provider: e2e p99 ms", "dispatch.e2e_p99_ms", "dispatch.p99_ms", ("value", "<", 500.0)),
    Figure("bulk, 100 ms provider: CPU ms per SMS", "dispatch.cpu_ms_per_sms.total_ms",
           "dispatch.cpu_ms_per_sms.total_ms"),
    Figure("bulk over HTTP (list sends), 100 ms provider: SMS/s", "listsend.delivered_per_second_over_arrival_span",
           "dispatch.delivered_rate", ("ratio", ">=", 1.0)),
    Figure("bulk over HTTP (list sends): e2e p99 ms", "listsend.e2e_p99_ms", "dispatch.p99_ms", ("value", "<", 500.0)),
    Figure("bulk over HTTP (list sends): CPU ms per SMS", "listsend.cpu_ms_per_sms.total_ms",
           "dispatch.cpu_ms_per_sms.total_ms"),
    Figure("isolation: bulk backlog drained, SMS/s", "isolation.bulk_drain_per_second"),
    Figure("isolation: login codes e2e p50 ms", "isolation.system_e2e_p50_ms"),
    Figure("isolation: login codes e2e p99 ms", "isolation.system_e2e_p99_ms"),
]
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def phone(block: str, n: int) -> str:
    digit, low, size = PHONE_BLOCKS[block]
    if n >= size:
        raise ValueError(f"phone block {block!r} holds {size} numbers")
    return f"+7912{digit}{low + n:06d}"


def phone_range(block: str) -> tuple[str, str]:
    digit, low, size = PHONE_BLOCKS[block]
    return f"+7912{digit}{low:06d}", f"+7912{digit}{low + size - 1:06d}"


# --- setup ----------------------------------------------------------------------------------------
def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/smsgate_bench"),
        help="a database the benchmark may drop and create (BENCH_DATABASE_URL)")
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
                        help="RabbitMQ, the production broker (queues of the run's own are created and deleted)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--accounts", type=int, default=20, help="amoCRM accounts sending (each with its route)")
    parser.add_argument("--only", default="", help="comma-separated scenarios (acceptance,steady,overload,"
                                                  "dispatch,listsend,isolation; and pipeline, issue 16, only when "
                                                  "named); "
                                                  "default all")
    parser.add_argument("--no-peer", action="store_true", help="smsgate alone: do not run the peer (Jasmin)")
    parser.add_argument("--peer-dir", default=str(peers.default_folder(ROOT)),
                        help="the peer's scripts (BENCH_PEER_DIR; default ../shared/peers/jasmin)")
    parser.add_argument("--no-proxy", action="store_true",
                        help="gunicorn answers the load itself, without the Procfile's HAProxy in front")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for every process of the stack, to try another "
                             "configuration (e.g. --env WEB_WORKERS=4 --env WEB_THREADS=2); repeatable")
    return parser.parse_args()


def recreate_database(url: str):
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        return conn.execute("SHOW server_version").fetchone()[0]


def drop_database(url: str):
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def bench_env(*, database_url: str, broker_url: str, fake_port: int, tmp: Path) -> dict:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSGATE_", "WEB_", "WORKER_", "DB_"))}
    (tmp / "prometheus").mkdir(exist_ok=True)
    env.update(
        PATH=f"{Path(PY).parent}:{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="bench.settings",
        SMSGATE_ENV_FILE="",
        DEBUG="0",
        SECRET_KEY="bench-" + uuid.uuid4().hex,
        SMSGATE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        SMSGATE_PROVIDER_BASE_URLS=f"smsru=http://127.0.0.1:{fake_port}",
        SMSGATE_DEFAULT_ROUTE="",
        # Phones are spread (each used once), so the per-phone limits stay at their defaults; the
        # per-account caps and the prefix velocity check would stop a benchmark: raised (0 = off).
        # The guard itself runs on every request.
        SMSGATE_LIMIT_ACCOUNT_HOUR="0",
        SMSGATE_LIMIT_ACCOUNT_DAY="0",
        SMSGATE_LIMIT_PREFIX_DISTINCT="0",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "prometheus"),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def seed(accounts: int):
    from accounts.models import Account, Integration
    from routes.services import route_save

    integration = Integration.objects.create(name="bench", client_uuid=uuid.uuid4(),
                                             client_secret="bench-secret-" + uuid.uuid4().hex,
                                             redirect_uri="https://bench.example.com/amocrm/oauth")
    created = []
    for n in range(accounts):
        account = Account.objects.create(integration=integration, amo_id=AMO_ID_BASE + n,
                                         subdomain=SUBDOMAIN.format(n=n), domain="amocrm.ru")
        route_save(account=account, provider="smsru", credentials={"api_id": "test-api-id"}, sender="bench")
        created.append(account)
    return integration, created


def write_bodies(path: Path, integration, accounts, block: str, count: int, start: int = 0) -> Path:
    """One urlencoded form body per line, as amoCRM sends them: a fresh token (jti) each."""
    from accounts.tokens import issue_token

    with open(path, "w") as handle:
        for n in range(start, start + count):
            account = accounts[n % len(accounts)]
            token = issue_token(integration=integration, account_id=account.amo_id, subdomain=account.subdomain,
                                ttl=3600, jti=f"{block}-{n}")
            handle.write(urlencode({"phone": phone(block, n), "text": TEXT.format(code=n % 1_000_000),
                                    "token": token}) + "\n")
    return path


# --- load generators ----------------------------------------------------------------------------------
def run_wrk(url: str, bodies: Path, *, connections: int, seconds: int, threads: int = 2, skip: int = 0) -> dict:
    """`skip`: bodies already used by an earlier run of the same file (each token is used once)."""
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_THREADS": str(threads), "BENCH_SKIP": str(skip)}
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
                          "-s", str(LOADGEN / "wrk_bodies.lua"), url], capture_output=True, text=True, env=env,
                         timeout=seconds + 60)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not line:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[-1])
    seconds_measured = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "seconds": round(seconds_measured, 2),
        "requests": raw["requests"],
        "requests_per_second": round(raw["requests"] / seconds_measured, 1),
        # Refused (503 under admission control) are answered too, but only the 2xx count as accepted.
        "accepted_per_second": round((raw["requests"] - raw["non_2xx"]) / seconds_measured, 1),
        "latency_p50_ms": round(raw["p50_us"] / 1000, 2),
        "latency_p90_ms": round(raw["p90_us"] / 1000, 2),
        "latency_p99_ms": round(raw["p99_us"] / 1000, 2),
        "latency_max_ms": round(raw["max_us"] / 1000, 2),
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        "reused_tokens": raw["body_wraps"],
    }


def run_openloop(host: str, bodies: Path, *, rate: int, seconds: int, sends: Path | None = None) -> dict:
    """Open loop at a fixed rate: request i leaves at start + i/rate whatever the answers take
    (bench/loadgen/openloop.py; why not locust is said there). `sends`: where it writes the time
    each request left (for end-to-end latency from the client)."""
    out = subprocess.run([PY, str(LOADGEN / "openloop.py"), "--url", f"{host}/amocrm/sms", "--bodies", str(bodies),
                          "--rate", str(rate), "--seconds", str(seconds), *(["--sends", str(sends)] if sends else [])],
                         capture_output=True, text=True, timeout=seconds + 90, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the open-loop generator failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


# --- measuring ---------------------------------------------------------------------------------------
class Receipts:
    """The fake provider's record file: recipient digits -> arrival times. The file is only appended
    to (each fake provider of the run appends), so each load reads only the lines added since the
    last one: the waits poll it every 0.5 s, while the system under test is still working."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._found: dict[str, list[float]] = defaultdict(list)

    def load(self) -> dict[str, list[float]]:
        if not self.path.exists():
            return self._found
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1  # a line being written waits for the next load
        self._offset += complete
        for line in data[:complete].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self._found[record["recipient"].lstrip("+")].append(record["received_at"])
        return self._found


def deliveries_in(block: str) -> list[tuple[str, float, str]]:
    from django.db import connection

    from deliveries.models import Delivery

    low, high = phone_range(block)
    rows = list(Delivery.objects.filter(phone__gte=low, phone__lte=high)
                .values_list("phone", "created_at", "status"))
    connection.close()
    return [(p.lstrip("+"), created.timestamp(), status) for p, created, status in rows]


def wait_delivered(receipts: Receipts, block: str, *, timeout: float) -> float:
    """Wait until every delivery of the block reached the provider (or the timeout); seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        rows = deliveries_in(block)
        got = receipts.load()
        if rows and all(p in got for p, _c, _s in rows):
            break
        time.sleep(0.5)
    time.sleep(0.3)  # the fake flushes its record every 0.2 s
    return round(time.monotonic() - started, 1)


def e2e(receipts: Receipts, block: str) -> dict:
    rows = deliveries_in(block)
    got = receipts.load()
    latencies, duplicates, missing = [], 0, 0
    arrivals = []
    for p, created, _status in rows:
        times = got.get(p)
        if not times:
            missing += 1
            continue
        duplicates += len(times) - 1
        latencies.append((min(times) - created) * 1000)
        arrivals.append(min(times))
    created_times = sorted(c for _p, c, _s in rows)
    result = {
        "accepted": len(rows),
        "reached_provider": len(latencies),
        "missing": missing,
        "duplicates": duplicates,
        "statuses": dict(Counter(s for _p, _c, s in rows)),
        "e2e_p50_ms": _round(percentile(latencies, 50)),
        "e2e_p90_ms": _round(percentile(latencies, 90)),
        "e2e_p99_ms": _round(percentile(latencies, 99)),
        "e2e_max_ms": _round(max(latencies) if latencies else None),
    }
    if len(created_times) > 1:
        first, last = created_times[0], created_times[-1]
        window = last - first
        during = sum(1 for t in arrivals if first <= t <= last)
        result.update(
            load_seconds=round(window, 2),
            accepted_per_second=round(len(rows) / window, 1),
            delivered_per_second_during_load=round(during / window, 1),
            delivered_share_of_accepted_during_load=round(during / len(rows), 3),
        )
        if arrivals:
            result["drained_seconds_after_load"] = round(max(arrivals) - last, 2)
    if len(arrivals) > 1:
        # The peer's `delivered_rate`: what arrived over the span from the first arrival to the last.
        result["delivered_per_second_over_arrival_span"] = round(len(arrivals) / (max(arrivals) - min(arrivals)), 1)
    return result


def e2e_from_client(receipts: Receipts, block: str, sends: Path) -> dict:
    """End-to-end latency as the peer's bench measures it: from the time the request left the
    client (bench/loadgen/openloop.py --sends; line i is phone(block, i)) to the provider's receipt,
    over every accepted delivery of the block."""
    sent = {}
    for line in sends.read_text().splitlines():
        index, epoch = line.split()
        sent[phone(block, int(index)).lstrip("+")] = float(epoch)
    got = receipts.load()
    latencies = [(min(got[p]) - sent[p]) * 1000 for p, _c, _s in deliveries_in(block) if p in got and p in sent]
    return {"e2e_from_client_p50_ms": _round(percentile(latencies, 50)),
            "e2e_from_client_p90_ms": _round(percentile(latencies, 90)),
            "e2e_from_client_p99_ms": _round(percentile(latencies, 99)),
            "e2e_from_client_max_ms": _round(max(latencies) if latencies else None)}


def reached_while_offered(receipts: Receipts, block: str, load: dict) -> dict:
    """What the generator offered against what reached the provider while it was offering: a web
    tier that accepts slower than offered, or a queue that grows, both show up here."""
    start = load["started_at_epoch"]
    end = start + load["sending_seconds"]
    low, high = (int(p.lstrip("+")) for p in phone_range(block))
    arrivals = [min(times) for p, times in receipts.load().items() if low <= int(p) <= high]
    during = sum(1 for t in arrivals if start <= t <= end)
    return {"offered": load["requests"],
            "reached_provider_while_offered": during,
            "delivered_share_of_offered_during_load": round(during / load["requests"], 3)}


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    def __init__(self, table: ProcessTable):
        self.table = table

    def __enter__(self):
        self.children_before, self.own_before = _children_cpu(), _own_cpu()
        self.before = self.table.snapshot()
        self.machine_before = machine_cpu_ticks()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = seconds = time.monotonic() - self.started
        busy0, total0 = self.machine_before
        busy1, total1 = machine_cpu_ticks()
        after = self.table.snapshot()
        self.cpu_seconds = cpu_seconds_by_role(self.before, after)
        # wrk and the open-loop generator are children of this process: their CPU time comes from getrusage.
        self.cpu_seconds["loadgen"] = _children_cpu() - self.children_before
        # This process: the feeder recording and queueing bulk SMS (dispatch, isolation).
        self.cpu_seconds["feeder"] = _own_cpu() - self.own_before
        self.result = cpu_by_role(self.before, after, seconds)
        self.result["loadgen"] = round(self.cpu_seconds["loadgen"] / seconds, 2)
        self.result["feeder"] = round(self.cpu_seconds["feeder"] / seconds, 2)
        self.result["machine_busy_share"] = round((busy1 - busy0) / max(total1 - total0, 1), 2)

    def per_message(self, messages: int) -> dict | None:
        """CPU per message by role over this window (smsgate's roles; see COUNTED and APART)."""
        return cpu_per_message(self.cpu_seconds, messages, counted=COUNTED, apart=APART)


# --- scenarios --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="smsgate-bench-"))
        self.stack = Stack(self.tmp, env={})
        self.results: dict = {"schema": "smsgate-bench/1"}
        self.fake_port = free_port()
        self.web_port = free_port()
        self.fake_record = self.tmp / "fake-received.jsonl"
        self.receipts = Receipts(self.fake_record)
        self.fake = None
        self.workers = []
        self.warmups = 0
        self.overrides = dict(item.split("=", 1) for item in args.env)
        folder = Path(args.peer_dir)
        self.peer = None
        self.peer_results: dict = {"name": "jasmin", "version": "0.11.1", "folder": str(folder)}
        if args.no_peer:
            self.peer_results["skipped"] = "--no-peer"
        elif not peers.present(folder):
            self.peer_results["skipped"] = f"no setup.sh, bench.sh and stop.sh in {folder}"
        else:
            self.peer = peers.Jasmin(folder, self.tmp)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def with_peer(self, name: str, action):
        """Run a step of the peer; a failure is recorded (results["peer"]["errors"]) and smsgate's
        figures go on. Nothing happens when the peer is skipped."""
        if self.peer is None:
            return None
        print(f"[bench] jasmin: {name} ...", flush=True)
        try:
            return action()
        except Exception:
            self.peer_results.setdefault("errors", {})[name] = traceback.format_exc()
            print(traceback.format_exc(), flush=True)
            return None

    def peer_accept(self, connections: int, seconds: int, name: str = "") -> dict | None:
        """The peer's closed loop (its default settings), or None."""
        def step():
            self.peer.setup()
            return self.peer.accept(connections=connections, seconds=seconds)

        return self.with_peer(name or f"accept c{connections}", step)

    def peer_e2e(self, name: str, *, rate: float, seconds: int, tuned: bool = False, delay_ms: int = 0) -> dict | None:
        """The peer's open loop with these settings (setup.sh restarts it only when they change), or None."""
        def step():
            self.peer.setup(tuned=tuned, delay_ms=delay_ms)
            return self.peer.e2e(rate=rate, seconds=seconds)

        return self.with_peer(name, step)

    def setup(self):
        require_tools(proxy=not self.args.no_proxy)
        _redis, redis_port = self.stack.start_redis()
        pg_version = recreate_database(self.args.database_url)
        env = bench_env(database_url=self.args.database_url, broker_url=self.args.broker_url,
                        fake_port=self.fake_port, tmp=self.tmp)
        # The machine's RabbitMQ is the broker (queues of this run's own); the bench's Redis keeps the
        # abuse guard's counters.
        env.update(SMSGATE_QUEUE_PREFIX=f"bench-{uuid.uuid4().hex[:8]}-", SMSGATE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        env.update(self.overrides)
        self.stack.env = env
        os.environ.update(env)
        self.redis_port = redis_port
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        self.integration, self.accounts = seed(self.args.accounts)
        self.table = ProcessTable(self.stack, urlsplit(self.args.database_url).path.lstrip("/"))
        self.memory = MemoryWatch(self.table)
        self._sampling = True
        threading.Thread(target=self._sample_memory, daemon=True).start()
        self.results["machine"] = machine_facts(redis_port, pg_version)
        self.results["tools"] = tool_versions()
        self.results["config"] = {
            "accounts": self.args.accounts,
            "procfile": {name: self.stack.procfile_command(name)
                         for name in ("web", *WORKERS, *(() if self.args.no_proxy else ("proxy",)))},
            "proxy": "none: gunicorn answers the load" if self.args.no_proxy else "HAProxy (deploy/haproxy.cfg)",
            "environment_overrides": self.overrides,
            "database": "fresh PostgreSQL database, migrated; synchronous_commit as configured on the server",
            "provider": "tests/fakes/smsru.py (fake SMS.ru over HTTP on 127.0.0.1), its own process",
        }
        self.stack.start_web(self.web_port, proxy=not self.args.no_proxy)

    def _sample_memory(self):
        while self._sampling:
            try:
                self.memory.sample()
            except Exception:  # a process that just exited
                pass
            time.sleep(0.5)

    def bodies(self, block: str, count: int) -> Path:
        return write_bodies(self.tmp / f"bodies-{block}.txt", self.integration, self.accounts, block, count)

    def flush_broker(self, *, guard: bool = True):
        """Empty the run's queues (deleted: RabbitMQ makes them again when the workers start) and,
        with `guard`, the abuse guard's counters in the private Redis (stopped by then at the end)."""
        from kombu import Connection

        from smsgate.celery import QUEUES

        if guard:
            subprocess.run(["redis-cli", "-p", str(self.redis_port), "flushall"], capture_output=True, check=True)
        prefix = self.stack.env["SMSGATE_QUEUE_PREFIX"]
        with Connection(self.args.broker_url, connect_timeout=5) as conn:
            for name in QUEUES:
                conn.default_channel.queue_delete(prefix + name)
                conn.default_channel.exchange_delete(prefix + name)

    def restart_delivery_side(self, *, latency: float):
        """A fresh fake provider with this latency and fresh workers (their HTTP connections go to it)."""
        for proc in self.workers + ([self.fake] if self.fake else []):
            proc.stop()
        self.flush_broker()  # what the last scenario left queued stays counted there as missing
        self.fake = self.stack.start_fake(self.fake_port, latency=latency, record=self.fake_record)
        self.workers = [self.stack.start_worker(name) for name in WORKERS]
        self.warm_delivery_side()

    def warm_delivery_side(self, count: int = 200):
        """Steady state is measured, not a cold start: fresh workers open their database connections
        (one per thread), read and decrypt routes, and build their statements on the first SMS of
        each thread. `count` login codes through HTTP and `count` bulk SMS go first, unmeasured."""
        self.warmups += 1
        start = 100_000 * self.warmups  # phones never used before: the guard's per-phone limits hold
        bodies = write_bodies(self.tmp / f"bodies-warmup-{self.warmups}.txt", self.integration, self.accounts,
                              "warmup", count, start=start)
        run_openloop(self.web_url, bodies, rate=100, seconds=count / 100)
        feed(self.accounts, block="warmup", rate=count, seconds=1, waves_per_second=1, start=start + count)
        wanted = {phone("warmup", n).lstrip("+") for n in range(start, start + 2 * count)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not wanted <= self.receipts.load().keys():
            time.sleep(0.3)

    # 1 -------------------------------------------------------------------------------------------------
    def acceptance(self):
        """Endpoint and baseline take turns (ROUNDS x SECONDS each, same server, same connections), so
        a slow spell of the machine hits both; the table shows the round with the median ratio, the
        JSON keeps every round."""
        rounds, seconds = 3, 5
        budget = rounds * seconds * 4000  # bodies per series: more than any rate this machine reaches
        endpoint, baseline = f"{self.web_url}/amocrm/sms", f"{self.web_url}/bench/baseline"
        files = {name: self.bodies(name, budget) for name in
                 ("accept-endpoint-8", "accept-baseline-8", "accept-endpoint-64", "accept-baseline-64")}
        warm = self.bodies("warmup", 6000)
        run_wrk(endpoint, warm, connections=8, seconds=2)
        self.peer_accept(8, 2, "warm-up")  # unmeasured, like smsgate's
        result = {"rounds": rounds, "seconds_each": seconds,
                  "workers": "stopped (web tier alone; publishing to the broker included)"}
        cpu, cpu_ms, peer = {}, {}, {"rounds": rounds, "seconds_each": seconds}
        for connections in (8, 64):
            played = []
            for n in range(rounds):
                this = {}
                for name, url in (("endpoint", endpoint), ("baseline", baseline)):
                    bodies = files[f"accept-{name}-{connections}"]
                    with CpuWindow(self.table) as window:
                        this[name] = run_wrk(url, bodies, connections=connections, seconds=seconds,
                                             skip=n * seconds * 4000)
                    this[f"{name}_cpu"] = window.result
                    this[f"{name}_cpu_ms"] = window.per_message(this[name]["requests"] - this[name]["non_2xx"])
                this["ratio"] = round(this["endpoint"]["accepted_per_second"]
                                      / this["baseline"]["requests_per_second"], 3)
                this["jasmin"] = self.peer_accept(connections, seconds, f"accept c{connections}, round {n + 1}")
                played.append(this)
            # Each series shows its round with the median req/s; every round is kept.
            middle = len(played) // 2
            median = sorted(played, key=lambda r: r["endpoint"]["accepted_per_second"])[middle]
            base = sorted(played, key=lambda r: r["baseline"]["requests_per_second"])[middle]
            result[f"endpoint_c{connections}"] = median["endpoint"]
            result[f"baseline_c{connections}"] = base["baseline"]
            result[f"ratio_to_baseline_c{connections}"] = sorted(r["ratio"] for r in played)[middle]
            result[f"ratios_by_round_c{connections}"] = [r["ratio"] for r in played]
            result[f"rounds_c{connections}"] = [{k: r[k] for k in ("endpoint", "baseline", "ratio")} for r in played]
            cpu[f"endpoint_c{connections}"] = median["endpoint_cpu"]
            cpu[f"baseline_c{connections}"] = base["baseline_cpu"]
            cpu_ms[f"endpoint_c{connections}"] = median["endpoint_cpu_ms"]
            theirs = [r["jasmin"] for r in played if r["jasmin"]]
            if theirs:
                peer[f"c{connections}"] = sorted(theirs, key=lambda r: r["req_s"])[len(theirs) // 2]
                peer[f"rounds_c{connections}"] = theirs
                result[f"ratios_to_jasmin_by_round_c{connections}"] = [
                    round(r["endpoint"]["accepted_per_second"] / r["jasmin"]["req_s"], 3)
                    for r in played if r["jasmin"]]
        result["cpu_cores_by_role"] = cpu
        result["cpu_ms_per_request"] = cpu_ms
        self.results["acceptance"] = result
        if "c8" in peer or "c64" in peer:
            self.peer_results["acceptance"] = peer
        self.flush_broker()  # nobody sends these: the workers start afresh below

    # 2 -------------------------------------------------------------------------------------------------
    def steady(self):
        self.restart_delivery_side(latency=0.0)
        rate, seconds = 50, 30
        bodies = self.bodies("steady", rate * seconds * 2)
        sends = self.tmp / "sends-steady.txt"
        # What the stack burns doing nothing (timers, polling, heartbeats): at 50/s, part of each SMS's share.
        with CpuWindow(self.table) as idle:
            time.sleep(10)
        idle_roles = {role: round(cpu / idle.seconds, 4) for role, cpu in idle.cpu_seconds.items()
                      if role not in ("loadgen", "feeder")}
        with CpuWindow(self.table) as window:  # the load and the wait for its last SMS, as the peer's
            load = run_openloop(self.web_url, bodies, rate=rate, seconds=seconds, sends=sends)
            wait_delivered(self.receipts, "steady", timeout=20)
        result = {"provider_latency_ms": 0, "offered_per_second": rate, "loadgen": load,
                  **e2e(self.receipts, "steady"), **e2e_from_client(self.receipts, "steady", sends),
                  **reached_while_offered(self.receipts, "steady", load),
                  "cpu_window_seconds": round(window.seconds, 2), "cpu_cores_by_role": window.result}
        result["cpu_ms_per_sms"] = window.per_message(result["accepted"])
        result["idle_cpu_cores_by_role"] = idle_roles
        result["idle_cpu_ms_per_sms_at_this_rate"] = {role: round(cores * 1000 / rate, 2)
                                                      for role, cores in idle_roles.items()}
        self.results["steady"] = result
        jasmin = self.peer_e2e("e2e at 50/s", rate=rate, seconds=seconds)
        if jasmin:
            self.peer_results["steady"] = jasmin

    # 3 -------------------------------------------------------------------------------------------------
    def dispatch(self):
        self.restart_delivery_side(latency=0.1)
        rate, seconds, waves_per_second = 600, 20, 10
        with CpuWindow(self.table) as window:
            fed = feed(self.accounts, block="dispatch", rate=rate, seconds=seconds, waves_per_second=waves_per_second)
            waited = wait_delivered(self.receipts, "dispatch", timeout=40)
        result = {
            "provider_latency_ms": 100, "offered_per_second": rate, "waves_per_second": waves_per_second,
            "kind": "bulk (queue sms-bulk)", "feeder": fed, "waited_for_drain_seconds": waited,
            **e2e(self.receipts, "dispatch"), "cpu_window_seconds": round(window.seconds, 2),
            "cpu_cores_by_role": window.result,
        }
        result["cpu_ms_per_sms"] = window.per_message(result["accepted"])
        self.results["dispatch"] = result
        # The peer tuned (prefetch 100) against an SMSC answering after 100 ms, offered the same over HTTP.
        jasmin = self.peer_e2e("bulk against 100 ms", rate=rate, seconds=seconds, tuned=True, delay_ms=100)
        if jasmin:
            self.peer_results["dispatch"] = jasmin

    # 4 -------------------------------------------------------------------------------------------------
    def capacity(self) -> dict:
        """End-to-end capacity (issue 19): login codes accepted and delivered per second, closed loop
        (wrk, 8 connections, 10 s), workers running: what was accepted, over the time from the first
        acceptance to the last delivery (a queue left behind counts until it has drained)."""
        connections, seconds = 8, 10
        bodies = self.bodies("capacity", seconds * 3000)
        with CpuWindow(self.table) as window:
            run = run_wrk(f"{self.web_url}/amocrm/sms", bodies, connections=connections, seconds=seconds)
        wait_delivered(self.receipts, "capacity", timeout=60)
        got = e2e(self.receipts, "capacity")
        span = got.get("load_seconds", 0) + got.get("drained_seconds_after_load", 0)
        return {"connections": connections, "seconds": seconds, "wrk": run, "accepted": got["accepted"],
                "missing": got["missing"], "seconds_to_last_delivery": round(span, 2),
                "per_second": round(got["accepted"] / span, 1) if span else None,
                "accepted_per_second": got.get("accepted_per_second"),
                "delivered_per_second_during_load": got.get("delivered_per_second_during_load"),
                "e2e_p99_ms": got["e2e_p99_ms"], "cpu_cores_by_role": window.result}

    def overload(self):
        """Twice the end-to-end capacity offered for 30 s: accepted per second against the capacity,
        how fast the refused are answered, and how late the accepted are delivered."""
        self.restart_delivery_side(latency=0.0)
        capacity = self.capacity()
        if not capacity["per_second"]:
            raise RuntimeError(f"no capacity measured: {capacity}")
        rate, seconds = round(2 * capacity["per_second"]), 30
        bodies = self.bodies("overload", rate * seconds)
        sends = self.tmp / "sends-overload.txt"
        with CpuWindow(self.table) as window:
            load = run_openloop(self.web_url, bodies, rate=rate, seconds=seconds, sends=sends)
            waited = wait_delivered(self.receipts, "overload", timeout=60)
        refused = load["latency_not_2xx"]
        result = {"capacity": capacity, "provider_latency_ms": 0, "offered_per_second_target": rate,
                  "offered_per_second_measured": load["sent_per_second"],
                  "accepted_per_second": round(load["answered_2xx"] / load["sending_seconds"], 1),
                  "refused": refused["count"], "refused_p99_ms": refused["p99_ms"] if refused["count"] else None,
                  # The same, from when each request actually left (the generator's lateness left out).
                  "refused_from_send_p99_ms": (load["latency_not_2xx_from_send"]["p99_ms"]
                                               if refused["count"] else None),
                  "loadgen": load, "waited_for_drain_seconds": waited, **e2e(self.receipts, "overload"),
                  **e2e_from_client(self.receipts, "overload", sends),
                  **reached_while_offered(self.receipts, "overload", load),
                  "cpu_window_seconds": round(window.seconds, 2), "cpu_cores_by_role": window.result}
        result["accepted_share_of_capacity"] = round(result["accepted_per_second"] / capacity["per_second"], 3)
        result["cpu_ms_per_sms"] = window.per_message(result["accepted"])
        self.results["overload"] = result
        self.peer_overload(seconds)

    def peer_overload(self, seconds: int):
        """The peer at twice its own capacity, measured the same way (its closed-loop accept runs at 8
        connections, jasmind delivering meanwhile: accepted over the time to the last delivery)."""
        rounds = (self.peer_results.get("acceptance") or {}).get("rounds_c8")
        source = "the acceptance rounds at 8 connections (median)"
        if not rounds:
            run = self.peer_accept(8, 10, "capacity: accept c8")
            rounds, source = ([run] if run else []), "an accept run at 8 connections, 10 s"
        if not rounds:
            return
        per_second = sorted(r["capacity"]["per_second"] for r in rounds)[len(rounds) // 2]
        jasmin = self.peer_e2e("overload at twice its capacity", rate=round(2 * per_second), seconds=seconds)
        if jasmin:
            jasmin["capacity"] = {"per_second": per_second, "from": source,
                                  "rounds": [r["capacity"] for r in rounds]}
            jasmin["accepted_share_of_capacity"] = round(jasmin["accepted_per_second"] / per_second, 3)
            self.peer_results["overload"] = jasmin

    # 5 -------------------------------------------------------------------------------------------------
    def isolation(self):
        self.restart_delivery_side(latency=0.0)
        backlog, rate, seconds = 20_000, 10, 30
        bodies = self.bodies("isolation-system", rate * seconds * 2)
        started = time.time()
        fed = feed(self.accounts, block="isolation-bulk", rate=backlog, seconds=1, waves_per_second=1)
        queued_in = time.time() - started
        with CpuWindow(self.table) as window:
            load = run_openloop(self.web_url, bodies, rate=rate, seconds=seconds)
        wait_delivered(self.receipts, "isolation-system", timeout=20)
        wait_delivered(self.receipts, "isolation-bulk", timeout=60)
        bulk = e2e(self.receipts, "isolation-bulk")
        system = e2e(self.receipts, "isolation-system")
        got = self.receipts.load()
        bulk_last = max((max(got[p]) for p, _c, _s in deliveries_in("isolation-bulk") if p in got), default=0)
        system_during_backlog = sum(1 for p, _c, _s in deliveries_in("isolation-system")
                                    if p in got and min(got[p]) <= bulk_last)
        self.results["isolation"] = {
            "provider_latency_ms": 0, "backlog": backlog, "backlog_queued_seconds": round(queued_in, 1),
            "backlog_feeder": fed,
            "bulk_reached_provider": bulk["reached_provider"], "bulk_missing": bulk["missing"],
            "bulk_duplicates": bulk["duplicates"],
            "bulk_drain_seconds": round(bulk_last - started, 1) if bulk_last else None,
            "bulk_drain_per_second": round(bulk["reached_provider"] / (bulk_last - started), 1) if bulk_last else None,
            "system_offered_per_second": rate, "system_loadgen": load,
            "system_accepted": system["accepted"], "system_reached_provider": system["reached_provider"],
            "system_sent_while_backlog_drained": system_during_backlog,
            "system_missing": system["missing"], "system_duplicates": system["duplicates"],
            "system_e2e_p50_ms": system["e2e_p50_ms"], "system_e2e_p99_ms": system["e2e_p99_ms"],
            "system_e2e_max_ms": system["e2e_max_ms"], "cpu_cores_by_role": window.result,
        }

    # issue 16 --------------------------------------------------------------------------------------------
    def pipeline(self):
        """The digital pipeline's action at scale (bench/pipeline.py); only with --only pipeline."""
        self.results["pipeline"] = pipeline_scenario(self)

    # issue 19, item 6 ------------------------------------------------------------------------------------
    def listsend(self):
        """Bulk through the list-send path over HTTP (bench/listsend.py); the peer's tuned bulk run follows
        when `dispatch` did not run it already."""
        self.results["listsend"] = listsend_scenario(self)
        if "dispatch" not in self.peer_results:
            jasmin = self.peer_e2e("bulk against 100 ms", rate=600, seconds=20, tuned=True, delay_ms=100)
            if jasmin:
                self.peer_results["dispatch"] = jasmin

    # ----------------------------------------------------------------------------------------------------
    def run(self):
        started = time.time()
        self.results["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        # The peer's scenarios run with its default settings first, then tuned (dispatch): one restart of it.
        chosen = [s for s in self.args.only.split(",") if s] or ["acceptance", "steady", "overload", "dispatch",
                                                                 "listsend", "isolation"]
        try:
            self.setup()
            self.with_peer("setup", self.peer.setup if self.peer else None)
            if self.peer and self.peer.running is None:
                self.peer = None  # it did not start: smsgate alone (the error is in results["peer"])
            for name in chosen:
                print(f"[bench] {name} ...", flush=True)
                try:
                    getattr(self, name)()
                except Exception:
                    self.results.setdefault("errors", {})[name] = traceback.format_exc()
                    print(traceback.format_exc(), flush=True)
            self.memory.sample()
            self.results["memory"] = self.memory.report(("proxy", "web-master", "web-worker", "worker-system",
                                                        "worker-bulk", "fake-provider", "redis"))
        finally:
            self._sampling = False
            self.stack.stop()
            try:
                self.flush_broker(guard=False)  # the run's queues are durable: remove them
            except Exception as exc:
                print(f"[bench] the run's queues ({self.stack.env.get('SMSGATE_QUEUE_PREFIX')}*) were not "
                      f"deleted: {exc!r}", flush=True)
            from django.db import connections

            connections.close_all()
            if not self.args.keep_database:
                drop_database(self.args.database_url)
            if self.peer:
                self.peer_results["setups"] = self.peer.setups
                self.peer_results["peak_rss_mb"] = self.peer.peak_rss_mb
                self.with_peer("restore (left as found)", self.peer.restore)
        self.results["peer"] = self.peer_results
        self.results["duration_seconds"] = round(time.time() - started, 1)
        self.results["side_by_side"] = judge(self.results)
        write_json(Path(self.args.out), self.results)
        print_table(self.results)
        print(f"\nwritten: {self.args.out}  (process logs: {self.tmp})")


def feed(accounts, *, block: str, rate: int, seconds: int, waves_per_second: int, start: int = 0) -> dict:
    """Deliveries arriving together: every 1/waves_per_second s a wave of rate/waves_per_second bulk
    deliveries is recorded (one transaction, counters included) and queued in batches
    (SMSGATE_SEND_BATCH_SIZE per message, deliveries/services/queueing.py), as a bulk import would.

    Open loop, like the HTTP generator: each wave starts at its time on a thread of its own,
    however long earlier waves take to record (a wave waiting for the database must not hold back
    the next one's arrival: that would offer less than `rate` and hide the wait)."""
    from django.db import connection

    from deliveries.services.queueing import deliveries_enqueue_bulk

    per_wave = rate // waves_per_second
    interval = 1.0 / waves_per_second
    began = time.monotonic()
    late, slowest, lock = 0.0, 0.0, threading.Lock()
    n = start

    def arrive(messages):
        nonlocal slowest
        started = time.monotonic()
        try:
            deliveries_enqueue_bulk(delivery_ids=record_bulk(messages))
        finally:
            connection.close()
        with lock:
            slowest = max(slowest, time.monotonic() - started)

    waves = []
    for wave in range(seconds * waves_per_second):
        due = began + wave * interval
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        messages = [(accounts[(n + i) % len(accounts)], phone(block, n + i), TEXT.format(code=(n + i) % 1_000_000))
                    for i in range(per_wave)]
        n += per_wave
        waves.append(threading.Thread(target=arrive, args=(messages,)))
        waves[-1].start()
    offered = time.monotonic() - began
    for thread in waves:
        thread.join()
    return {"deliveries": n - start, "seconds": round(offered, 2), "max_wave_late_ms": round(late * 1000, 1),
            "slowest_wave_recorded_ms": round(slowest * 1000, 1)}


def record_bulk(messages: list[tuple]) -> list:
    """Bulk SMS straight into the table, as a bulk import would (the issue allows SQL for the
    backlog): one INSERT and the counters in one transaction (`deliveries_insert`),
    as pending rows waiting for a worker."""
    from django.utils import timezone

    from deliveries.services.intake import deliveries_insert
    from deliveries.models import Delivery

    now = timezone.now()
    rows = [Delivery(account=account, kind="bulk", phone=number, text=text, encoding="ucs2", segments=1,
                     valid_until=now + timedelta(hours=1), enqueued_at=now)
            for account, number, text in messages]
    deliveries_insert(deliveries=rows)
    return [row.pk for row in rows]


def _get(results: dict, dotted: str):
    value = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def judge(results: dict) -> list[dict]:
    """Every row of FIGURES: smsgate's figure, the peer's, the ratio smsgate / peer, the target and
    whether it is met (None: not measured)."""
    peer = results.get("peer") or {}
    rows = []
    for figure in FIGURES:
        ours = _get(results, figure.ours)
        theirs = _get(peer, figure.theirs) if figure.theirs else None
        ratio = round(ours / theirs, 3) if isinstance(ours, (int, float)) and theirs else None
        row = {"figure": figure.label, "smsgate": ours, "jasmin": theirs, "ratio": ratio, "target": None,
               "pass": None}
        if figure.target:
            kind, op, bound = figure.target
            row["target"] = f"{'ratio ' if kind == 'ratio' else ''}{op} {bound:g}"
            value = ratio if kind == "ratio" else ours
            if value is not None:
                row["pass"] = OPS[op](value, bound)
            elif figure.none_passes and _get(results, figure.none_passes) == 0:
                row["pass"] = True
        rows.append(row)
    return rows


def _show(value) -> str:
    return "—" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _per_role(part: dict | None) -> str:
    if not part:
        return "—"
    counted = ", ".join(f"{name} {ms:g}" for name, ms in part["per_role_ms"].items())
    apart = ", ".join(f"{name} {ms:g}" for name, ms in part["apart_ms"].items() if ms)
    return f"{counted} (beside: {apart})" if apart else counted


def print_table(results: dict):
    peer = results.get("peer") or {}
    print()
    print(f"{'figure':50s} {'smsgate':>9s} {'Jasmin':>9s} {'ratio':>7s}  {'target':<12s} verdict")
    print("-" * 100)
    for row in results["side_by_side"]:
        verdict = "" if not row["target"] else {True: "PASS", False: "MISS", None: "n/a"}[row["pass"]]
        print(f"{row['figure']:50s} {_show(row['smsgate']):>9s} {_show(row['jasmin']):>9s} {_show(row['ratio']):>7s}  "
              f"{row['target'] or '':<12s} {verdict}")
    for name, label in (("steady", "at 50/s"), ("dispatch", "bulk, 100 ms")):
        ours, theirs = _get(results, f"{name}.cpu_ms_per_sms"), _get(peer, f"{name}.cpu_ms_per_sms")
        if ours or theirs:
            print(f"\nCPU ms per SMS {label}, by role:\n  smsgate: {_per_role(ours)}")
            if theirs:
                print(f"  Jasmin:  {_per_role(theirs)}\n  (Jasmin's Redis: {_get(peer, name + '.redis_attribution')})")
    print()
    for role, mem in results.get("memory", {}).items():
        print(f"{'memory, ' + role + ': peak RSS MB each':50s} {', '.join(f'{v:g}' for v in mem['peak_rss_mb_each'])}")
    if peer.get("peak_rss_mb"):
        print(f"{'memory, Jasmin: peak RSS MB':50s} "
              f"{', '.join(f'{role} {mb:g}' for role, mb in peer['peak_rss_mb'].items())}")
    checks = []
    for name in ("steady", "overload", "dispatch"):
        part = results.get(name) or {}
        checks.append(f"{name}: not at the provider {part.get('missing')}, duplicates {part.get('duplicates')}")
    iso = results.get("isolation") or {}
    checks.append(f"isolation: bulk not at the provider {iso.get('bulk_missing')}, duplicates "
                  f"{iso.get('bulk_duplicates')}; login codes not at the provider {iso.get('system_missing')}")
    print("\n" + "; ".join(checks))
    if peer.get("skipped"):
        print(f"peer not run: {peer['skipped']}")
    if peer.get("errors"):
        print("peer errors in: " + ", ".join(peer["errors"]))
    if results.get("errors"):
        print("errors in: " + ", ".join(results["errors"]))


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so every process started here is stopped and the database dropped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    Bench(parse_args()).run()
