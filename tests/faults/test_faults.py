"""Fault tests with real processes: gunicorn, Celery worker and beat, PostgreSQL, Redis and a fake
SMS.ru. Each prints its counts (run with -s to see them).

(a) Redis stopped while 100 SMS arrive: all answered 200, all sent once Redis is back, none twice.
(b) the worker SIGKILLed five times during 500 SMS to a slow provider: every delivery final (its
    delivery report polled back), except ambiguous ones left `unknown`; the provider got each at
    most once except those marked ambiguous.
(c) a provider answering 30 % 5xx and 10 % timeouts: every delivery final (or `unknown` after two
    ambiguous attempts), retries bounded by the validity deadline.
(d) PostgreSQL stopped: the endpoint answers 503 fast, and recovers when it is back.
"""

import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import psycopg
import pytest
from django.db.models import Count, Max

from deliveries.models import FINAL_STATUSES, Attempt, AttemptOutcome, Delivery, DeliveryStatus
from tests.e2e.stack import Stack, ensure_services, stack_env, wait_for
from tests.fakes.base import FakeResponse
from tests.fakes.smsru import FakeSmsRu

from .servers import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

# Delivery reports come back by polling the fake SMS.ru every second (no callback grace).
FAST_REPORTS = {"SMSGATE_POLL_INTERVAL": 1, "SMSGATE_POLL_CALLBACK_GRACE": 0}


def phones(n: int) -> list[str]:
    return [f"+7912{i:07d}" for i in range(1, n + 1)]


def post_many(url: str, make_token, numbers: list[str], *, concurrency: int = 8):
    """POST one SMS per number as amoCRM does; returns [(status, seconds)]."""
    tokens = [make_token() for _ in numbers]

    def post(pair):
        number, token = pair
        started = time.monotonic()
        try:
            response = httpx.post(f"{url}/amocrm/sms", data={"phone": number, "text": "Код: 1234", "token": token},
                                  timeout=15)
            return response.status_code, time.monotonic() - started
        except httpx.HTTPError:
            return 0, time.monotonic() - started

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, zip(numbers, tokens)))


def latency_summary(results) -> str:
    times = sorted(t for _, t in results)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return f"p50 {statistics.median(times) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def status_counts() -> dict:
    return dict(Counter(Delivery.objects.values_list("status", flat=True)))


def not_final() -> int:
    """Deliveries still waiting for something; `unknown` (the provider may or may not have it, and
    SMS.ru cannot be asked by our id) waits for the report horizon, so it counts as settled here."""
    return Delivery.objects.exclude(status__in=FINAL_STATUSES | {DeliveryStatus.UNKNOWN}).count()


@pytest.fixture
def private_redis():
    server = PrivateRedis().start()
    yield server
    server.cleanup()


def _fast_recovery_env(stack: Stack, broker_url: str, fake_url: str, **extra):
    stack.env.update(CELERY_BROKER_URL=broker_url, SMSGATE_REDIS_URL=broker_url,
                     SMSGATE_PROVIDER_BASE_URLS=f"smsru={fake_url}", SMSGATE_SWEEP_INTERVAL="1",
                     SMSGATE_SWEEP_GRACE_SECONDS="1", **{k: str(v) for k, v in extra.items()})


def test_a_redis_down_while_100_sms_arrive(stack, private_redis, smsru_route, make_token):
    with FakeSmsRu(status_delays=(0.05, 0.05)) as fake:
        _fast_recovery_env(stack, private_redis.url, fake.url)
        smsru_route()
        stack.start_web()
        stack.start_worker()
        stack.start_beat()

        warm = post_many(stack.web_url, make_token, [f"+7913{i:07d}" for i in range(20)])
        # Redis here keeps nothing on disk: a message still queued when it stops is gone, and only
        # the lost-message horizon (minutes) brings it back. This test is about the outage itself.
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 20, 60,
                 lambda: f"warm-up SMS not sent: {status_counts()}", interval=0.2)
        private_redis.stop()
        numbers = phones(100)
        results = post_many(stack.web_url, make_token, numbers)
        answered = Counter(status for status, _ in results)
        print(f"\n(a) Redis up: {latency_summary(warm)}; Redis down: answers {dict(answered)}, {latency_summary(results)}; "
              f"left for the sweeper: {Delivery.objects.filter(enqueued_at__isnull=True).count()}")
        assert answered == {200: 100}
        assert Delivery.objects.filter(status=DeliveryStatus.PENDING, phone__in=numbers).count() == 100

        private_redis.start()
        started = time.monotonic()
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 120, 120,
                 lambda: f"not all sent after Redis came back: {status_counts()}\n"
                         f"worker log:\n{stack.processes[-2].log()[-6000:]}", interval=0.5)
        received = Counter(m["to"] for m in fake.messages.values())
        print(f"(a) Redis back: all sent {time.monotonic() - started:.1f} s later; provider received "
              f"{sum(received.values())} messages, max {max(received.values())} per number")
        assert set(n.lstrip("+") for n in numbers) <= set(received) and len(received) == 120
        assert set(received.values()) == {1}


def test_b_worker_killed_five_times_during_500_sms(stack, private_redis, smsru_route, make_token):
    with FakeSmsRu(latency=0.3, status_delays=(0.05, 0.05)) as fake:
        _fast_recovery_env(stack, private_redis.url, fake.url, SMSGATE_PROVIDER_TIMEOUT=2,
                           SMSGATE_STALE_CLAIM_SECONDS=4, SMSGATE_LOST_MESSAGE_SECONDS=8, **FAST_REPORTS)
        smsru_route()
        stack.start_web(workers=2)
        worker = stack.start_worker(concurrency=8)
        stack.start_beat()

        numbers = phones(500)
        with ThreadPoolExecutor(1) as background:
            posting = background.submit(post_many, stack.web_url, make_token, numbers)
            for _ in range(5):
                time.sleep(2.0)
                worker.popen.send_signal(signal.SIGKILL)
                worker.popen.wait(10)
                worker = stack.start_worker(concurrency=8)
            results = posting.result()
        assert Counter(status for status, _ in results) == {200: 500}

        wait_for(lambda: not_final() == 0, 180, lambda: f"deliveries not final: {status_counts()}", interval=0.5)
        unknown = set(Delivery.objects.filter(status=DeliveryStatus.UNKNOWN).values_list("phone", flat=True))
        ambiguous = set(Attempt.objects.filter(outcome=AttemptOutcome.AMBIGUOUS)
                        .values_list("delivery__phone", flat=True))
        received = Counter("+" + m["to"] for m in fake.messages.values())
        twice = {number for number, count in received.items() if count > 1}
        print(f"\n(b) 5 SIGKILLs during 500 SMS: statuses {status_counts()}; provider received "
              f"{sum(received.values())} messages for {len(received)} numbers; ambiguous deliveries "
              f"{len(ambiguous)}; sent twice {len(twice)} (all of them ambiguous: {twice <= ambiguous})")
        assert len(received) == 500
        assert twice <= ambiguous  # at most once, except where the claim shows a call was in flight
        assert unknown <= ambiguous  # only an ambiguous delivery may stay without a final status
        assert max(received.values()) <= 2


class ChaosSmsRu(FakeSmsRu):
    """30 % of requests answer HTTP 500; 10 % accept the SMS but answer too late (a timeout)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.random = random.Random(42)
        self.outcomes = Counter()

    def handle(self, request):
        roll = self.random.random()
        if request.path == "/sms/send" and roll < 0.3:
            self.outcomes["5xx"] += 1
            return FakeResponse(500, {"status": "ERROR", "status_code": 500, "status_text": "Ошибка сервера"})
        response = super().handle(request)
        if request.path == "/sms/send" and roll < 0.4:
            self.outcomes["timeout"] += 1
            time.sleep(2.0)  # longer than the 1 s read timeout the workers use here
        else:
            self.outcomes["ok"] += 1
        return response


def test_c_provider_with_5xx_and_timeouts(stack, smsru_route, make_token):
    validity = 20
    with ChaosSmsRu(status_delays=(0.05, 0.05)) as fake:
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={fake.url}", SMSGATE_PROVIDER_TIMEOUT="1",
                         SMSGATE_SYSTEM_SMS_VALIDITY=str(validity), SMSGATE_SWEEP_INTERVAL="1",
                         **{k: str(v) for k, v in FAST_REPORTS.items()})
        smsru_route()
        stack.start_web()
        stack.start_worker(concurrency=16)
        stack.start_beat()
        results = post_many(stack.web_url, make_token, phones(200))
        assert Counter(status for status, _ in results) == {200: 200}

        wait_for(lambda: not_final() == 0, validity + 90, lambda: f"not final: {status_counts()}", interval=0.5)
        late = [a for a in Attempt.objects.select_related("delivery") if a.started_at > a.delivery.valid_until]
        per_delivery = Delivery.objects.annotate(n=Count("attempts")).aggregate(max=Max("n"))["max"]
        print(f"\n(c) provider outcomes {dict(fake.outcomes)}; statuses {status_counts()}; attempts "
              f"{Attempt.objects.count()} (at most {per_delivery} per delivery); attempts after the deadline: "
              f"{len(late)}")
        assert late == []
        assert Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() > 150
        unknown = Delivery.objects.filter(status=DeliveryStatus.UNKNOWN)
        assert all(d.attempts.filter(outcome=AttemptOutcome.AMBIGUOUS).exists() for d in unknown)


def _token(client_uuid: str, secret: str, audience: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "https://acme.amocrm.ru", "aud": audience, "jti": str(uuid.uuid4()), "iat": now,
                       "nbf": now, "exp": now + 1800, "account_id": 1, "subdomain": "acme",
                       "client_uuid": client_uuid}, secret, algorithm="HS256")


def test_d_postgres_down_gives_fast_503_and_recovers(tmp_path):
    ensure_services()
    postgres = PrivatePostgres().init()
    client_uuid, secret = str(uuid.uuid4()), "s" * 64
    stack = Stack(env=stack_env(DATABASE_URL=postgres.url, DB_CONNECT_TIMEOUT=1, SMSGATE_DEFAULT_ROUTE="console",
                                AMO_CLIENT_ID=client_uuid, AMO_CLIENT_SECRET=secret,
                                AMO_REDIRECT_URI="https://gate.example.com/amocrm/oauth"), tmp=tmp_path)
    try:
        import subprocess

        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=stack.env, check=True)
        stack.start_web()
        stack.env["PGAPPNAME"] = "smsgate-worker"  # libpq names the worker's database sessions
        stack.start_worker(concurrency=2)
        del stack.env["PGAPPNAME"]

        def post():
            started = time.monotonic()
            response = httpx.post(f"{stack.web_url}/amocrm/sms", timeout=15, data={
                "phone": "+79123456789", "text": "Код", "token": _token(client_uuid, secret, "https://gate.example.com")})
            return response, time.monotonic() - started

        def worker_sends(count: int) -> set:
            """Posts `count` SMS, waits until the worker has sent them; the database sessions that
            claimed them (the worker keeps its connections between tasks)."""
            ids = [post()[0].json()["id"] for _ in range(count)]
            with psycopg.connect(postgres.url, autocommit=True) as db:
                wait_for(lambda: db.execute("SELECT count(*) FROM deliveries_delivery WHERE id = ANY(%s) "
                                            "AND status = 'sent'", [ids]).fetchone()[0] == count, 30,
                         lambda: f"worker did not send: {stack.processes[-1].log()[-3000:]}")
                return {pid for (pid,) in db.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'smsgate-worker'")}

        sessions_before = worker_sends(6)
        assert sessions_before and sessions_before == worker_sends(6)
        assert post()[0].status_code == 200
        postgres.stop()
        down = [post() for _ in range(10)]
        statuses = Counter(r.status_code for r, _ in down)
        print(f"\n(d) PostgreSQL down: answers {dict(statuses)}, "
              f"{latency_summary([(r.status_code, t) for r, t in down])}")
        assert statuses == {503: 10}
        assert all(r.json()["code"] == "unavailable" and r.headers["Retry-After"] for r, _ in down)

        postgres.start()
        started = time.monotonic()
        wait_for(lambda: post()[0].status_code == 200, 30, "no recovery after PostgreSQL came back", interval=0.2)
        print(f"(d) PostgreSQL back: answering 200 again after {time.monotonic() - started:.2f} s")
        # The worker's connections died with the server: each is checked before its next use and
        # replaced, and then kept again (not a new session per task).
        sessions_after = worker_sends(6)
        assert sessions_after and sessions_after == worker_sends(6)
        print(f"(d) the worker sent again; {len(sessions_before)} database sessions before the restart, "
              f"{len(sessions_after)} after, the same ones across the next tasks")
    finally:
        stack.stop()
        postgres.cleanup()
