"""Real processes for the security tests that need them: a single gunicorn process started as the
Procfile starts it (smsgate/gunicorn.conf.py, smsgate.wsgi) on the test database, and a Celery
worker. Requests are written by hand on a socket, so a test controls every byte (chunked bodies,
a Content-Length that is never sent)."""

import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Account, Integration
from tests.conftest import E2E_BROKER_URL, REDIRECT_URI, SECRET, service_missing
from tests.e2e.stack import delete_queues, free_port, stack_env, wait_for

ROOT = Path(settings.BASE_DIR)


@dataclass
class Server:
    popen: subprocess.Popen
    log_path: Path
    port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.settimeout(timeout)
        return sock

    def raw_request(self, data: bytes) -> bytes:
        """Send bytes, return everything the server answers until it closes the connection."""
        with self.connect() as sock:
            sock.sendall(data)
            return read_until_closed(sock)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    chunks = []
    while sum(map(len, chunks)) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Processes:
    tmp: Path
    env: dict
    account: Account
    started: list = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict) -> tuple[subprocess.Popen, Path]:
        log_path = self.tmp / f"{name}-{len(self.started)}.log"
        with open(log_path, "wb") as handle:
            popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return popen, log_path

    def start(self, **env) -> Server:
        """One gunicorn worker process, configured by smsgate/gunicorn.conf.py from the environment."""
        port = free_port()
        full_env = {**self.env, "WEB_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "1", "WEB_THREADS": "2",
                    **{k: str(v) for k, v in env.items()}}
        popen, log_path = self.spawn("web", [sys.executable, "-m", "gunicorn", "smsgate.wsgi",
                                             "--config", "smsgate/gunicorn.conf.py"], full_env)
        server = Server(popen, log_path, port)
        self.started.append(server)
        wait_for(lambda: _answers(port) or popen.poll() is not None, 30, "gunicorn did not start")
        assert popen.poll() is None, server.log()
        return server

    def start_worker(self) -> Server:
        if not E2E_BROKER_URL:
            service_missing("a Celery worker needs a broker: set CELERY_BROKER_URL as .ci/run does")
        popen, log_path = self.spawn("worker", [
            sys.executable, "-m", "celery", "-A", "smsgate", "worker", "--queues", self.maintenance_queue,
            "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"security-{uuid.uuid4().hex[:8]}@%h"], self.env)
        worker = Server(popen, log_path, 0)
        self.started.append(worker)
        wait_for(lambda: " ready." in worker.log() or popen.poll() is not None, 60,
                 lambda: f"the worker did not start:\n{worker.log()}")
        assert popen.poll() is None, worker.log()
        return worker

    def send_task(self, name: str, args: list):
        """Publish a task as the application does (its broker and options), from a process of its own."""
        code = ("import sys; from smsgate.celery import app; "
                "app.send_task(sys.argv[1], args=sys.argv[3:], queue=sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, name, self.maintenance_queue, *args], cwd=ROOT, env=self.env,
                       check=True, timeout=60)

    @property
    def maintenance_queue(self) -> str:
        return self.env.get("SMSGATE_QUEUE_PREFIX", "") + "maintenance"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return read_until_closed(sock).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """Start gunicorn (and a worker) on the test database; they see rows the test commits."""
    if connection.vendor != "postgresql":
        service_missing("the real-process security tests need PostgreSQL: set DATABASE_URL=postgres://...")
    integration = Integration.objects.create(name="security", client_uuid=uuid.uuid4(), client_secret=SECRET,
                                             redirect_uri=REDIRECT_URI)
    account = Account.objects.create(integration=integration, amo_id=12345, subdomain="acme", domain="amocrm.ru")
    processes = Processes(tmp=tmp_path, env=stack_env(), account=account)
    yield processes
    for process in reversed(processes.started):
        process.stop()
    if E2E_BROKER_URL and any(process.port == 0 for process in processes.started):  # a worker's queues
        delete_queues(E2E_BROKER_URL, processes.env.get("SMSGATE_QUEUE_PREFIX", ""))
