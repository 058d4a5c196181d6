"""A small threaded HTTP server that each fake provider builds on.

Fakes speak a provider's documented protocol over real HTTP on 127.0.0.1, keep what they were sent,
move message statuses on a timer and (where the provider does) call our webhook. Tests start them
in-process; `python -m tests.fakes.<slug> --port N` runs one on its own for trials and benchmarks.

Fault injection (constructor arguments and CLI flags), for fault tests and benchmarks:
  * `error_rate`: this fraction of requests gets the provider's "server error" answer (a 5xx) and is
    not processed: nothing was received;
  * `drop_rate`: this fraction of requests is processed and then the connection is closed without
    an answer: the message *was* received, the client cannot know (an ambiguous timeout);
  * `latency`: seconds to wait before every answer;
  * `fault_paths`: only requests to these paths get faults (e.g. only sends), default all.
Every accepted message is kept in `received` (recipient, text, sender, reference, and the time its
request arrived, before any `latency`), so a test or a benchmark can check that each one arrived at
most once (`duplicates()`). `record_path` (`--record FILE`) also appends each one to a JSON-lines
file, for a benchmark that runs the fake as its own process.
"""

import argparse
import heapq
import itertools
import json
import logging
import sys
import random
import signal
import threading
import time
from collections import Counter
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
    client_port: int = 0  # the client's TCP port: one per connection (keep-alive reuse shows here)
    raw_query: str = ""  # the query string as sent (order and repeated keys kept)

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
        if isinstance(self.body, (dict, list, int, float)):
            return json.dumps(self.body, ensure_ascii=False).encode(), "application/json; charset=utf-8"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, "application/octet-stream"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the fake accepted for sending."""

    message_id: str
    recipient: str
    text: str
    sender: str = ""
    reference: str = ""  # the client's own id, where the protocol carries one (SMSC `id`)
    received_at: float = 0.0  # time.time() when the request arrived (before the simulated latency)


@dataclass
class CallbackRecord:
    url: str
    status: int | None  # None: no answer (connection refused, timeout)
    body: str = ""


_client_lock = threading.Lock()
_shared_client: httpx.Client | None = None


def _callback_client() -> httpx.Client:
    """One client for every fake's callbacks (creating one costs ~0.1 s: it loads the CA bundle)."""
    global _shared_client
    with _client_lock:
        if _shared_client is None:
            _shared_client = httpx.Client(timeout=5)
        return _shared_client


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that hung up (a timeout, a killed worker) is part of the tests, not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Scheduler:
    """One thread runs every delayed call (status transitions, callbacks): thousands of messages in
    a benchmark must not mean thousands of timer threads."""

    def __init__(self, name: str):
        self._queue: list = []
        self._counter = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._running = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn, *args):
        with self._condition:
            heapq.heappush(self._queue, (time.monotonic() + max(delay, 0.0), next(self._counter), fn, args))
            self._condition.notify()

    def _run(self):
        while True:
            with self._condition:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._queue)
                self._running = True
            try:
                fn(*args)
            except Exception:
                logger.exception("fake: a scheduled call failed")
            finally:
                with self._condition:
                    self._running = False

    def idle(self) -> bool:
        with self._condition:
            return not self._queue and not self._running

    def stop(self):
        with self._condition:
            self._stopped = True
            self._queue.clear()
            self._condition.notify()


class FakeProviderServer:
    slug = "fake"

    def __init__(self, host="127.0.0.1", port=0, *, latency: float = 0.0, status_delays=(0.05, 0.1),
                 error_rate: float = 0.0, drop_rate: float = 0.0, seed: int | None = None,
                 fault_paths=None, callback_url: str | None = None, record_path: str | None = None):
        self.host, self.port = host, port
        self.latency = latency  # seconds to wait before every answer (benchmarks: a slow provider)
        self.status_delays = status_delays  # accepted -> sent -> final, seconds
        self.error_rate = error_rate
        self.drop_rate = drop_rate
        # Only requests to these paths get faults (e.g. only sends); None: every request.
        self.fault_paths = set(fault_paths.split(",") if isinstance(fault_paths, str) else fault_paths or ()) or None
        self._random = random.Random(seed)
        # Account-level callback URLs (providers where the URL is a cabinet setting, not per message).
        self.callback_urls: list[str] = [callback_url] if callback_url else []
        self.requests: list[FakeRequest] = []
        self.received: list[ReceivedMessage] = []
        self.callbacks: list[CallbackRecord] = []
        self.faults: Counter = Counter()
        self.lock = threading.Lock()
        self._arrival = threading.local()  # when the request being handled arrived
        self._record_file = open(record_path, "a", buffering=1 << 16) if record_path else None
        self._record_flusher = None
        self._server = None
        self._thread = None
        self._scheduler: _Scheduler | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the adapter's base URL setting should be (some APIs live under a path)."""
        return self.url

    @property
    def credentials(self) -> dict:
        """Credentials the fake accepts, in the adapter's credential names."""
        return {}

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _handle(self):
                fake._arrival.at = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                ctype = self.headers.get("Content-Type", "")
                form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) \
                    if ctype.startswith("application/x-www-form-urlencoded") else {}
                request = FakeRequest(self.command, parts.path, {k.lower(): v for k, v in self.headers.items()},
                                      body, parse_qs(parts.query, keep_blank_values=True), form,
                                      self.client_address[1], parts.query)
                with fake.lock:
                    fake.requests.append(request)
                # A refusal on arrival (a rate limit) is answered at once: no latency, no fault, no processing.
                response = fake.admit(request)
                if response is None:
                    if fake.latency:
                        time.sleep(fake.latency)
                    fault = fake.pick_fault(request)
                    if fault == "error":
                        response = fake.server_error(request)
                    else:
                        try:
                            response = fake.handle(request)
                        except Exception:
                            logger.exception("fake %s crashed", fake.slug)
                            response = FakeResponse(500, {"error": "fake crashed"})
                        if fault == "drop":
                            response = FakeResponse(drop_connection=True)
                fake.answered(request, response)
                if response.drop_connection:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                payload, default_type = response.encoded()
                self.send_response(response.status)
                headers = {"Content-Type": default_type, **response.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._scheduler = _Scheduler(f"fake-{self.slug}-timers")
        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.slug}", daemon=True)
        self._thread.start()
        if self._record_file:
            self._record_flusher = threading.Thread(target=self._flush_records, name=f"fake-{self.slug}-record",
                                                    daemon=True)
            self._record_flusher.start()
        return self

    def stop(self):
        if self._scheduler:
            self._scheduler.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._record_file:
            with self.lock:
                self._record_file.close()
                self._record_file = None

    def _flush_records(self):
        # Buffered writes keep the hot path cheap; a reader sees them within 0.2 s.
        while True:
            time.sleep(0.2)
            with self.lock:
                if self._record_file is None:
                    return
                self._record_file.flush()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- fault injection ---------------------------------------------------------------------------
    def pick_fault(self, request: FakeRequest) -> str | None:
        if not (self.error_rate or self.drop_rate):
            return None
        if self.fault_paths is not None and request.path not in self.fault_paths:
            return None
        with self.lock:
            roll = self._random.random()
        if roll < self.error_rate:
            fault = "error"
        elif roll < self.error_rate + self.drop_rate:
            fault = "drop"
        else:
            return None
        with self.lock:
            self.faults[fault] += 1
        return fault

    def server_error(self, request: FakeRequest) -> FakeResponse:
        """The provider's answer when its server fails (subclasses return their documented shape)."""
        return FakeResponse(503, "Service Unavailable")

    # --- helpers for subclasses --------------------------------------------------------------------
    def later(self, delay: float, fn, *args):
        self._scheduler.call_later(delay, fn, *args)

    def record_message(self, message_id, recipient, text, *, sender="", reference="") -> ReceivedMessage:
        arrived = getattr(self._arrival, "at", None) or time.time()
        message = ReceivedMessage(str(message_id), recipient, text, sender or "", reference or "", arrived)
        with self.lock:
            self.received.append(message)
            if self._record_file is not None:
                self._record_file.write(json.dumps({"message_id": message.message_id, "recipient": recipient,
                                                    "reference": message.reference, "received_at": arrived}) + "\n")
        return message

    def post_callback(self, url: str, **kwargs):
        try:
            response = _callback_client().post(url, **kwargs)
        except httpx.HTTPError as exc:
            logger.warning("fake %s: callback to %s failed: %s", self.slug, url, exc)
            with self.lock:
                self.callbacks.append(CallbackRecord(url, None))
            return None
        with self.lock:
            self.callbacks.append(CallbackRecord(url, response.status_code, response.text[:200]))
        return response

    def handle(self, request: FakeRequest) -> FakeResponse:
        raise NotImplementedError

    def admit(self, request: FakeRequest) -> FakeResponse | None:
        """Called on arrival, before `latency` and faults: a response here answers the request unprocessed."""
        return None

    def answered(self, request: FakeRequest, response: FakeResponse) -> None:
        """Called with every final answer (a dropped connection included), just before it is sent."""

    def requests_to(self, path: str) -> list[FakeRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    # --- for assertions --------------------------------------------------------------------------------
    def idle(self) -> bool:
        """No status change or callback is pending or in flight."""
        return self._scheduler is None or self._scheduler.idle()

    def received_for(self, recipient: str) -> list[ReceivedMessage]:
        with self.lock:
            return [m for m in self.received if m.recipient == recipient]

    def duplicates(self, key=lambda m: (m.recipient, m.text)) -> dict:
        """Messages received more than once, by (recipient, text) unless told otherwise."""
        with self.lock:
            counts = Counter(key(m) for m in self.received)
        return {k: n for k, n in counts.items() if n > 1}


def _key_values(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects name=value, got {pair!r}")
        values[name.replace("-", "_")] = value
    return values


def run_standalone(server_cls):
    parser = argparse.ArgumentParser(description=f"Run the fake {server_cls.slug} provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered with a 5xx")
    parser.add_argument("--drop-rate", type=float, default=0.0,
                        help="fraction of requests processed, then dropped without an answer")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the faults")
    parser.add_argument("--fault-paths", default=None, help="comma-separated paths that get faults (default: all)")
    parser.add_argument("--status-delays", default="0.5,1.0", help="seconds accepted->sent, sent->final")
    parser.add_argument("--callback-url", default=None,
                        help="account-level delivery-report URL (SMS.ru, SMSC: where the cabinet holds it)")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="append every received message (JSON lines, with its arrival time) to FILE")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a constructor option of this fake, e.g. --set api_id=secret")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    delays = tuple(float(x) for x in args.status_delays.split(","))
    server = server_cls(args.host, args.port, latency=args.latency, error_rate=args.error_rate,
                        drop_rate=args.drop_rate, seed=args.seed, fault_paths=args.fault_paths, status_delays=delays,
                        callback_url=args.callback_url, record_path=args.record, **_key_values(args.set))
    server.start()
    print(f"fake {server_cls.slug} listening on {server.url}", flush=True)
    print(f"base URL {server.base_url} credentials {json.dumps(server.credentials)}", flush=True)
    stopped = threading.Event()
    # SIGTERM stops cleanly too, so the record file is complete when the process is gone.
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
