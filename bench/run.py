"""`make bench`: the real stack on 127.0.0.1 under load; one table, bench/results/latest.json.

Starts a private Redis, a fresh PostgreSQL database, the Procfile's own web and worker processes
(gunicorn gthread, one Celery worker per queue) and the fake SMS.ru provider (tests/fakes/) with a
chosen response latency, then runs:

1. acceptance  - wrk (closed loop) on POST /amocrm/sms and on the bench-only baseline view
                 (one HS256 verification + one INSERT), at 8 and 64 connections; workers stopped,
                 so the web tier alone is measured (publishing to the broker included)
2. steady      - a fixed-rate open-loop generator at 50 SMS/s for 30 s; end-to-end latency
3. dispatch    - the provider answers after 100 ms; deliveries arrive in simultaneous waves
                 (every 100 ms) at 600/s for 20 s; throughput and end-to-end latency
4. overload    - the open-loop generator at 400 SMS/s for 30 s against a fast provider
5. isolation   - 20,000 bulk SMS queued at once; login codes at 10/s through HTTP meanwhile
6. memory      - peak resident size of every web and worker process (sampled all along)

End-to-end latency = the time the fake provider got the request (its own clock, before its
simulated latency) minus the delivery's created_at (set when the request was accepted), per
delivery, matched by phone (every phone is used once per run).

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
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    PY,
    MemoryWatch,
    ProcessTable,
    Stack,
    cpu_by_role,
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
# Every scenario gets its own block of phone numbers: +7912 <scenario digit> <6 digits>.
PHONE_BLOCKS = {"warmup": 0, "accept-endpoint-8": 1, "accept-baseline-8": 2, "accept-endpoint-64": 3,
                "accept-baseline-64": 4, "steady": 5, "dispatch": 6, "overload": 7, "isolation-bulk": 8,
                "isolation-system": 9}

TARGETS = {
    "acceptance.ratio_to_baseline_c8": (">=", 0.8),
    "acceptance.endpoint_c8.latency_p99_ms": ("<=", 15.0),
    "steady.e2e_p50_ms": ("<=", 10.0),
    "steady.e2e_p99_ms": ("<=", 40.0),
    "dispatch.delivered_per_second_during_load": (">=", 600.0),
    "dispatch.e2e_p99_ms": ("<=", 500.0),
    "overload.delivered_share_of_offered_during_load": (">=", 0.95),
    "overload.e2e_p99_ms": ("<=", 1000.0),
    "isolation.system_e2e_p99_ms": ("<=", 1000.0),
}
# Jasmin on the same kind of 2-core machine (issue 7), for the comparison column.
JASMIN = {
    "acceptance.endpoint_c8.requests_per_second": 1300,
    "acceptance.endpoint_c8.latency_p99_ms": 10,
    "steady.e2e_p50_ms": 29,
    "steady.e2e_p99_ms": 67,
    "dispatch.delivered_per_second_during_load": 565,
    "dispatch.e2e_p99_ms": 533,
    "overload.delivered_per_second_during_load": 40,
    "overload.e2e_p99_ms": 18000,
}


def phone(block: str, n: int) -> str:
    return f"+7912{PHONE_BLOCKS[block]}{n:06d}"


def phone_range(block: str) -> tuple[str, str]:
    digit = PHONE_BLOCKS[block]
    return f"+7912{digit}000000", f"+7912{digit}999999"


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
    parser.add_argument("--only", default="", help="comma-separated scenarios (acceptance,steady,dispatch,"
                                                  "overload,isolation); default all")
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
        "latency_p50_ms": round(raw["p50_us"] / 1000, 2),
        "latency_p90_ms": round(raw["p90_us"] / 1000, 2),
        "latency_p99_ms": round(raw["p99_us"] / 1000, 2),
        "latency_max_ms": round(raw["max_us"] / 1000, 2),
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        "reused_tokens": raw["body_wraps"],
    }


def run_openloop(host: str, bodies: Path, *, rate: int, seconds: int) -> dict:
    """Open loop at a fixed rate: request i leaves at start + i/rate whatever the answers take
    (bench/loadgen/openloop.py; why not locust is said there)."""
    out = subprocess.run([PY, str(LOADGEN / "openloop.py"), "--url", f"{host}/amocrm/sms", "--bodies", str(bodies),
                          "--rate", str(rate), "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 90, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the open-loop generator failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


# --- measuring ---------------------------------------------------------------------------------------
class Receipts:
    """The fake provider's record file: recipient digits -> arrival times."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, list[float]]:
        found = defaultdict(list)
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            found[record["recipient"].lstrip("+")].append(record["received_at"])
        return found


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
    return result


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
        seconds = time.monotonic() - self.started
        busy0, total0 = self.machine_before
        busy1, total1 = machine_cpu_ticks()
        self.result = cpu_by_role(self.before, self.table.snapshot(), seconds)
        # wrk and the open-loop generator are children of this process: their CPU time comes from getrusage.
        self.result["loadgen"] = round((_children_cpu() - self.children_before) / seconds, 2)
        # This process: the feeder recording and queueing bulk SMS (dispatch, isolation).
        self.result["feeder"] = round((_own_cpu() - self.own_before) / seconds, 2)
        self.result["machine_busy_share"] = round((busy1 - busy0) / max(total1 - total0, 1), 2)


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

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def setup(self):
        require_tools()
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
            "procfile": {name: self.stack.procfile_command(name) for name in ("web", *WORKERS)},
            "environment_overrides": self.overrides,
            "database": "fresh PostgreSQL database, migrated; synchronous_commit as configured on the server",
            "provider": "tests/fakes/smsru.py (fake SMS.ru over HTTP on 127.0.0.1), its own process",
        }
        self.stack.start_web(self.web_port)

    def _sample_memory(self):
        while self._sampling:
            try:
                self.memory.sample()
            except Exception:  # a process that just exited
                pass
            time.sleep(0.5)

    def bodies(self, block: str, count: int) -> Path:
        return write_bodies(self.tmp / f"bodies-{block}.txt", self.integration, self.accounts, block, count)

    def flush_broker(self):
        from kombu import Connection

        subprocess.run(["redis-cli", "-p", str(self.redis_port), "flushall"], capture_output=True, check=True)
        prefix = self.stack.env["SMSGATE_QUEUE_PREFIX"]
        with Connection(self.args.broker_url, connect_timeout=5) as conn:
            for name in ("sms-system", "sms-bulk", "maintenance"):
                conn.default_channel.queue_delete(prefix + name)

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
        result = {"rounds": rounds, "seconds_each": seconds,
                  "workers": "stopped (web tier alone; publishing to Redis included)"}
        cpu = {}
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
                this["ratio"] = round(this["endpoint"]["requests_per_second"]
                                      / this["baseline"]["requests_per_second"], 3)
                played.append(this)
            median = sorted(played, key=lambda r: r["ratio"])[len(played) // 2]
            result[f"endpoint_c{connections}"] = median["endpoint"]
            result[f"baseline_c{connections}"] = median["baseline"]
            result[f"ratio_to_baseline_c{connections}"] = median["ratio"]
            result[f"ratios_by_round_c{connections}"] = [r["ratio"] for r in played]
            result[f"rounds_c{connections}"] = [{k: r[k] for k in ("endpoint", "baseline", "ratio")} for r in played]
            cpu[f"endpoint_c{connections}"] = median["endpoint_cpu"]
            cpu[f"baseline_c{connections}"] = median["baseline_cpu"]
        result["cpu_cores_by_role"] = cpu
        self.results["acceptance"] = result
        self.flush_broker()  # nobody sends these: the workers start afresh below

    # 2 -------------------------------------------------------------------------------------------------
    def steady(self):
        self.restart_delivery_side(latency=0.0)
        rate, seconds = 50, 30
        bodies = self.bodies("steady", rate * seconds * 2)
        with CpuWindow(self.table) as window:
            load = run_openloop(self.web_url, bodies, rate=rate, seconds=seconds)
        wait_delivered(self.receipts, "steady", timeout=20)
        self.results["steady"] = {"provider_latency_ms": 0, "offered_per_second": rate, "loadgen": load,
                                  **e2e(self.receipts, "steady"), **reached_while_offered(self.receipts, "steady", load),
                                  "cpu_cores_by_role": window.result}

    # 3 -------------------------------------------------------------------------------------------------
    def dispatch(self):
        self.restart_delivery_side(latency=0.1)
        rate, seconds, waves_per_second = 600, 20, 10
        with CpuWindow(self.table) as window:
            fed = feed(self.accounts, block="dispatch", rate=rate, seconds=seconds, waves_per_second=waves_per_second)
        waited = wait_delivered(self.receipts, "dispatch", timeout=40)
        self.results["dispatch"] = {
            "provider_latency_ms": 100, "offered_per_second": rate, "waves_per_second": waves_per_second,
            "kind": "bulk (queue sms-bulk)", "feeder": fed, "waited_for_drain_seconds": waited,
            **e2e(self.receipts, "dispatch"), "cpu_cores_by_role": window.result,
        }

    # 4 -------------------------------------------------------------------------------------------------
    def overload(self):
        self.restart_delivery_side(latency=0.0)
        rate, seconds = 400, 30
        bodies = self.bodies("overload", rate * seconds * 2)
        with CpuWindow(self.table) as window:
            load = run_openloop(self.web_url, bodies, rate=rate, seconds=seconds)
        waited = wait_delivered(self.receipts, "overload", timeout=40)
        result = {"provider_latency_ms": 0, "offered_per_second_target": rate, "loadgen": load,
                  "waited_for_drain_seconds": waited, **e2e(self.receipts, "overload"),
                  **reached_while_offered(self.receipts, "overload", load),
                  "cpu_cores_by_role": window.result}
        result["offered_per_second_measured"] = load["sent_per_second"]
        self.results["overload"] = result

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

    # ----------------------------------------------------------------------------------------------------
    def run(self):
        started = time.time()
        self.results["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        chosen = [s for s in self.args.only.split(",") if s] or ["acceptance", "steady", "dispatch", "overload",
                                                                 "isolation"]
        try:
            self.setup()
            for name in chosen:
                print(f"[bench] {name} ...", flush=True)
                try:
                    getattr(self, name)()
                except Exception:
                    self.results.setdefault("errors", {})[name] = traceback.format_exc()
                    print(traceback.format_exc(), flush=True)
            self.memory.sample()
            self.results["memory"] = self.memory.report(("web-master", "web-worker", "worker-system", "worker-bulk",
                                                        "fake-provider", "redis"))
        finally:
            self._sampling = False
            self.stack.stop()
            try:
                self.flush_broker()  # the run's queues are durable: remove them
            except Exception:
                pass
            from django.db import connections

            connections.close_all()
            if not self.args.keep_database:
                drop_database(self.args.database_url)
        self.results["duration_seconds"] = round(time.time() - started, 1)
        self.results["targets"] = judge(self.results)
        self.results["jasmin"] = JASMIN
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
    verdicts = []
    for key, (op, target) in TARGETS.items():
        value = _get(results, key)
        ok = None if value is None else (value >= target if op == ">=" else value <= target)
        verdicts.append({"figure": key, "value": value, "target": f"{op} {target:g}", "pass": ok})
    return verdicts


ROWS = [
    ("acceptance, endpoint, 8 conn: req/s", "acceptance.endpoint_c8.requests_per_second"),
    ("acceptance, endpoint, 8 conn: p50 ms", "acceptance.endpoint_c8.latency_p50_ms"),
    ("acceptance, endpoint, 8 conn: p99 ms", "acceptance.endpoint_c8.latency_p99_ms"),
    ("acceptance, baseline, 8 conn: req/s", "acceptance.baseline_c8.requests_per_second"),
    ("acceptance, baseline, 8 conn: p99 ms", "acceptance.baseline_c8.latency_p99_ms"),
    ("acceptance, ratio to baseline, 8 conn", "acceptance.ratio_to_baseline_c8"),
    ("acceptance, endpoint, 64 conn: req/s", "acceptance.endpoint_c64.requests_per_second"),
    ("acceptance, endpoint, 64 conn: p50 ms", "acceptance.endpoint_c64.latency_p50_ms"),
    ("acceptance, endpoint, 64 conn: p99 ms", "acceptance.endpoint_c64.latency_p99_ms"),
    ("acceptance, baseline, 64 conn: req/s", "acceptance.baseline_c64.requests_per_second"),
    ("acceptance, ratio to baseline, 64 conn", "acceptance.ratio_to_baseline_c64"),
    ("steady 50/s: e2e p50 ms", "steady.e2e_p50_ms"),
    ("steady 50/s: e2e p99 ms", "steady.e2e_p99_ms"),
    ("dispatch, 100 ms provider: SMS/s during load", "dispatch.delivered_per_second_during_load"),
    ("dispatch, 100 ms provider: e2e p99 ms", "dispatch.e2e_p99_ms"),
    ("overload 400/s: offered/s measured", "overload.offered_per_second_measured"),
    ("overload 400/s: SMS/s during load", "overload.delivered_per_second_during_load"),
    ("overload 400/s: share delivered during load", "overload.delivered_share_of_offered_during_load"),
    ("overload 400/s: e2e p99 ms", "overload.e2e_p99_ms"),
    ("isolation: bulk drain SMS/s", "isolation.bulk_drain_per_second"),
    ("isolation: login codes e2e p50 ms", "isolation.system_e2e_p50_ms"),
    ("isolation: login codes e2e p99 ms", "isolation.system_e2e_p99_ms"),
]


def print_table(results: dict):
    targets = {t["figure"]: t for t in results["targets"]}
    print()
    print(f"{'figure':48s} {'measured':>10s} {'target':>10s} {'Jasmin':>8s}  verdict")
    print("-" * 90)
    for label, key in ROWS:
        value = _get(results, key)
        target = targets.get(key)
        verdict = "" if not target else ("PASS" if target["pass"] else "MISS" if target["pass"] is False else "n/a")
        jasmin = JASMIN.get(key)
        print(f"{label:48s} {('—' if value is None else f'{value:g}'):>10s} "
              f"{(target['target'] if target else ''):>10s} {('' if jasmin is None else f'{jasmin:g}'):>8s}  {verdict}")
    for role, mem in results.get("memory", {}).items():
        print(f"{'memory, ' + role + ': peak RSS MB each':48s} {', '.join(f'{v:g}' for v in mem['peak_rss_mb_each'])}")
    checks = []
    for name in ("steady", "dispatch", "overload"):
        part = results.get(name) or {}
        checks.append(f"{name}: not at the provider {part.get('missing')}, duplicates {part.get('duplicates')}")
    iso = results.get("isolation") or {}
    checks.append(f"isolation: bulk not at the provider {iso.get('bulk_missing')}, duplicates "
                  f"{iso.get('bulk_duplicates')}; login codes not at the provider {iso.get('system_missing')}")
    print("\n" + "; ".join(checks))
    if results.get("errors"):
        print("errors in: " + ", ".join(results["errors"]))


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so every process started here is stopped and the database dropped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    Bench(parse_args()).run()
