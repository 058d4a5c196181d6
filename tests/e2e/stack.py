"""Real processes for end-to-end tests: gunicorn and a Celery worker on PostgreSQL and RabbitMQ.

The processes use the test database that pytest-django created, and queues of their own on the
broker (SMSGATE_QUEUE_PREFIX), deleted when the stack stops, so parallel runs never consume each
other's messages.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection
from kombu import Connection

from smsgate.celery import QUEUES
from tests.conftest import E2E_BROKER_URL, service_missing

ROOT = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def broker_reachable(url: str) -> str | None:
    """None if the broker at `url` answers, else why not."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu and py-amqp raise many types for a broker that is not there
        return f"{type(exc).__name__}: {exc}"
    return None


def ensure_services():
    """PostgreSQL and RabbitMQ must be there: fail in CI, skip on a developer machine without them."""
    problems = []
    if connection.vendor != "postgresql":
        problems.append("DATABASE_URL does not point at PostgreSQL")
    broker = E2E_BROKER_URL
    if not broker.startswith("amqp://"):
        problems.append("CELERY_BROKER_URL does not point at RabbitMQ (amqp://)")
    elif (problem := broker_reachable(broker)) is not None:
        problems.append(f"RabbitMQ is not reachable: {problem}")
    if problems:
        service_missing("end-to-end tests need PostgreSQL and RabbitMQ (set them as .ci/run does): "
                        + "; ".join(problems))


def delete_queues(url: str, prefix: str):
    """Remove a stack's queues and their exchanges from the broker (durable: they would outlive the test)."""
    try:
        with Connection(url, connect_timeout=2) as conn:
            channel = conn.default_channel
            for name in QUEUES:
                channel.queue_delete(prefix + name)
                channel.exchange_delete(prefix + name)
    except Exception:  # the broker is gone (a fault test stopped it): nothing to clean
        pass


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Stack:
    env: dict
    tmp: Path
    processes: list[Process] = field(default_factory=list)
    web_url: str = ""

    def spawn(self, name: str, args: list[str]) -> Process:
        log_path = self.tmp / f"{name}-{len(self.processes)}.log"
        handle = open(log_path, "wb")
        popen = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_web(self, *, workers=1, threads=4) -> Process:
        port = free_port()
        process = self.spawn("web", [sys.executable, "-m", "gunicorn", "smsgate.wsgi", "--bind", f"127.0.0.1:{port}",
                                     "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads)])
        self.web_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _http_ok(self.web_url + "/amocrm/sms"), 30, f"web did not start:\n{process.log()}")
        return process

    @property
    def queue_prefix(self) -> str:
        return self.env.get("SMSGATE_QUEUE_PREFIX", "")

    def start_worker(self, *, concurrency=4, queues=",".join(QUEUES)) -> Process:
        queues = ",".join(self.queue_prefix + name for name in queues.split(","))
        process = self.spawn("worker", [sys.executable, "-m", "celery", "-A", "smsgate", "worker", "--queues", queues,
                                        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
                                        "--without-gossip", "--without-mingle", "--without-heartbeat",
                                        "--hostname", f"e2e-{uuid.uuid4().hex[:8]}@%h"])
        wait_for(lambda: " ready." in process.log() or process.popen.poll() is not None, 60, "worker did not start")
        assert process.popen.poll() is None, process.log()
        return process

    def start_beat(self) -> Process:
        schedule = self.tmp / f"beat-{uuid.uuid4().hex[:6]}"
        process = self.spawn("beat", [sys.executable, "-m", "celery", "-A", "smsgate", "beat", "--loglevel", "INFO",
                                      "--schedule", str(schedule)])
        wait_for(lambda: "beat: Starting" in process.log() or process.popen.poll() is not None, 30,
                 "beat did not start")
        assert process.popen.poll() is None, process.log()
        return process

    def stop(self):
        for process in reversed(self.processes):
            process.stop()
        delete_queues(self.env["CELERY_BROKER_URL"], self.queue_prefix)


def _http_ok(url) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout: float, message: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(message() if callable(message) else message)


def stack_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGATE_PROVIDER")}
    env.update(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=E2E_BROKER_URL,
        SMSGATE_QUEUE_PREFIX=f"e2e-{uuid.uuid4().hex[:12]}-",
        SMSGATE_ENV_FILE="",
        DEBUG="0",
        SECRET_KEY=settings.SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SMSGATE_DEFAULT_ROUTE="",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        # The abuse guard has its own tests; here every test sends as it needs.
        SMSGATE_LIMIT_PHONE_COOLDOWN="0", SMSGATE_LIMIT_PHONE_HOUR="0", SMSGATE_LIMIT_PHONE_DAY="0",
        SMSGATE_LIMIT_ACCOUNT_HOUR="0", SMSGATE_LIMIT_ACCOUNT_DAY="0", SMSGATE_LIMIT_PREFIX_DISTINCT="0",
        SMSGATE_DEFAULT_COUNTRIES="amocrm.ru=*,amocrm.com=*,kommo.com=*",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env
