"""A small threaded HTTP server that each fake provider builds on.

Fakes speak a provider's documented protocol over real HTTP on 127.0.0.1, keep what they were sent,
move message statuses on a timer and (where the provider does) call our webhook. Tests start them
in-process; `python -m tests.fakes.<slug> --port N` runs one on its own for trials and benchmarks.
"""

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx

logger = logging.getLogger(__name__)


@dataclass
class FakeRequest:
    method: str
    path: str
    headers: dict
    body: bytes
    query: dict  # name -> list of values
    form: dict  # name -> list of values (form bodies only)

    def json(self):
        return json.loads(self.body or b"null")

    def value(self, name, default=None):
        values = self.form.get(name) or self.query.get(name)
        return values[-1] if values else default


@dataclass
class FakeResponse:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict = field(default_factory=dict)
    drop_connection: bool = False  # close the socket without answering (an ambiguous timeout)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body, ensure_ascii=False).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, "application/octet-stream"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that hung up (a timeout, a killed worker) is part of the tests, not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeProviderServer:
    slug = "fake"

    def __init__(self, host="127.0.0.1", port=0, *, latency: float = 0.0, status_delays=(0.05, 0.1)):
        self.host, self.port = host, port
        self.latency = latency  # seconds to wait before every answer (benchmarks: a slow provider)
        self.status_delays = status_delays  # accepted -> sent -> final, seconds
        self.requests: list[FakeRequest] = []
        self.lock = threading.Lock()
        self._server = None
        self._thread = None
        self._timers: list[threading.Timer] = []
        self._callback_client = httpx.Client(timeout=5)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                ctype = self.headers.get("Content-Type", "")
                form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) \
                    if ctype.startswith("application/x-www-form-urlencoded") else {}
                request = FakeRequest(self.command, parts.path, {k.lower(): v for k, v in self.headers.items()},
                                      body, parse_qs(parts.query, keep_blank_values=True), form)
                with fake.lock:
                    fake.requests.append(request)
                if fake.latency:
                    time.sleep(fake.latency)
                try:
                    response = fake.handle(request)
                except Exception:
                    logger.exception("fake %s crashed", fake.slug)
                    response = FakeResponse(500, {"error": "fake crashed"})
                if response.drop_connection:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload, default_type = response.encoded()
                self.send_response(response.status)
                headers = {"Content-Type": default_type, **response.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.slug}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        for timer in self._timers:
            timer.cancel()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._callback_client.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- helpers for subclasses --------------------------------------------------------------------
    def later(self, delay: float, fn, *args):
        timer = threading.Timer(delay, fn, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def post_callback(self, url: str, **kwargs):
        try:
            return self._callback_client.post(url, **kwargs)
        except httpx.HTTPError as exc:
            logger.warning("fake %s: callback to %s failed: %s", self.slug, url, exc)
            return None

    def handle(self, request: FakeRequest) -> FakeResponse:
        raise NotImplementedError

    def requests_to(self, path: str) -> list[FakeRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def run_standalone(server_cls):
    parser = argparse.ArgumentParser(description=f"Run the fake {server_cls.slug} provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args, extra = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO)
    server = server_cls(args.host, args.port, latency=args.latency)
    server.start()
    print(f"fake {server_cls.slug} listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
