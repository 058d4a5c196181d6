"""The Procfile's HAProxy (deploy/haproxy.cfg) in front of real gunicorn: an SMS request that finds the
web tier full is answered 503 by the proxy itself, in the endpoint's JSON and the request's language,
and nothing is recorded; other requests wait their turn; the client's X-Forwarded-For never passes."""

import http.server
import runpy
import shutil
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from django.utils import translation
from django.utils.translation import gettext as _

from deliveries.models import Delivery
from smsgate.errors import json_error
from tests.conftest import service_missing

from .stack import ROOT, Stack, _http_ok, free_port, wait_for

pytestmark = pytest.mark.e2e

MAP = ROOT / "deploy" / "overloaded.map"


def overloaded_body(language: str) -> bytes:
    """What smsgate itself answers an SMS request it has no room for (smsgate/admission.py)."""
    with translation.override(language):
        return json_error(503, "overloaded", _("The service is overloaded. Try again in a few seconds.")).content


def test_the_proxys_answers_are_smsgates_own_in_each_language():
    lines = [line.split(" ", 1) for line in MAP.read_text().splitlines() if line and not line.startswith("#")]
    written = {language: body.encode() for language, body in lines}
    expected = {language: overloaded_body(language) for language in ("ru", "en")}
    assert written == expected, "deploy/overloaded.map should read:\n" + "\n".join(
        f"{language} {body.decode()}" for language, body in expected.items())


def start_proxy(stack, *, web_port: int, **env):
    if shutil.which("haproxy") is None:
        service_missing("haproxy is needed (Debian: apt-get install haproxy)")
    port = free_port()
    stack.env.update(PROXY_BIND=f"127.0.0.1:{port}", WEB_BIND=f"127.0.0.1:{web_port}",
                     **{key: str(value) for key, value in env.items()})
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("proxy:"))
    proxy = stack.spawn("proxy", ["/bin/bash", "-c", line.partition(":")[2].strip()])
    wait_for(lambda: _port_open(port) or proxy.popen.poll() is not None, 15, lambda: f"haproxy:\n{proxy.log()}")
    assert proxy.popen.poll() is None, proxy.log()
    return f"http://127.0.0.1:{port}"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


LANGUAGES = {"": "ru", "ru-RU,ru;q=0.9": "ru", "en-US,en;q=0.9": "en", "en;q=0.2, ru": "ru", "de, en;q=0.5": "en",
             "zz": "ru"}


@pytest.mark.parametrize("refused_by", ["a standing queue", "the queue's timeout"])
def test_an_sms_request_that_finds_the_web_tier_full_is_refused_by_the_proxy(stack, smsru_route, make_token,
                                                                             refused_by):
    smsru_route()
    web_port = free_port()
    stack.env.update(WEB_BIND=f"127.0.0.1:{web_port}", WEB_WORKERS="1", WEB_THREADS="1", WEB_BEHIND_PROXY="1")
    web = stack.spawn("web", [sys.executable, "-m", "gunicorn", "smsgate.wsgi", "--config", "smsgate/gunicorn.conf.py"])
    wait_for(lambda: _http_ok(f"http://127.0.0.1:{web_port}/healthz"), 30, lambda: f"web:\n{web.log()}")
    # A standing queue: one SMS request may wait (for 30 s), the next is answered at the door. The
    # timeout: sixteen may wait, each for 30 ms only.
    limits = ({"PROXY_SMS_QUEUE_MAX": 1, "PROXY_SMS_QUEUE_TIMEOUT": "30s"} if refused_by == "a standing queue"
              else {"PROXY_SMS_QUEUE_MAX": 16, "PROXY_SMS_QUEUE_TIMEOUT": "30ms"})
    front = start_proxy(stack, web_port=web_port, PROXY_WEB_MAXCONN=1, **limits)
    url = f"{front}/amocrm/sms"
    body = urlencode({"phone": "+79123000000", "text": "Код: 1", "token": make_token()}).encode()
    proxy_port = int(front.rsplit(":", 1)[1])

    # A client that sends half its body holds the proxy's one slot and gunicorn's one thread.
    with socket.create_connection(("127.0.0.1", proxy_port)) as slow:
        slow.sendall(b"POST /amocrm/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(max_workers=2) as pool:
            # Not an SMS request: it waits for the thread instead of being refused.
            waiting = pool.submit(client.get, f"{front}/healthz")
            queued = None
            if refused_by == "a standing queue":  # this one fills the queue and waits its turn
                queued = pool.submit(client.post, url, data={"phone": "+79123001000", "text": "Код: 4",
                                                             "token": make_token()})
                time.sleep(0.3)
            for n, (header, language) in enumerate(LANGUAGES.items(), 1):
                headers = {"Accept-Language": header} if header else {}
                answer = client.post(url, headers=headers, data={
                    "phone": f"+7912300{n:04d}", "text": "Код: 2", "token": make_token()})
                # Answered while gunicorn's only thread is still held: by the proxy, not by smsgate.
                assert answer.status_code == 503, answer.text
                assert answer.content == overloaded_body(language), (header, answer.text)
                assert answer.headers["Retry-After"] == "2"
                assert answer.headers["Content-Type"] == "application/json"
            assert not waiting.done() and (queued is None or not queued.done())
            slow.sendall(body[10:])
            first = slow.makefile("rb").read()
            assert waiting.result().status_code == 200
            if queued is not None:
                assert queued.result().status_code == 200, queued.result().text

    assert first.startswith(b"HTTP/1.1 200"), first
    recorded = 1 if queued is None else 2
    assert Delivery.objects.count() == recorded  # nothing recorded for the refused ones
    # Once the slot is free, SMS requests pass again.
    assert httpx.post(url, data={"phone": "+79123009999", "text": "Код: 3", "token": make_token()},
                      timeout=30).status_code == 200
    assert Delivery.objects.count() == recorded + 1


@pytest.mark.parametrize("behind, expected", [("1", (2, 0)), ("", (1000, 5)), ("0", (1000, 5))])
def test_behind_the_proxy_a_web_process_takes_no_more_connections_than_it_has_threads(monkeypatch, behind, expected):
    monkeypatch.setenv("WEB_THREADS", "2")
    monkeypatch.setenv("WEB_BEHIND_PROXY", behind)
    conf = runpy.run_path(str(ROOT / "smsgate" / "gunicorn.conf.py"))
    assert (conf.get("worker_connections", 1000), conf["keepalive"]) == expected


class _EchoForwardedFor(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_POST(self):
        self.seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.seen.append(self.path)
        seen = "|".join(self.headers.get_all("X-Forwarded-For") or []).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        self.wfile.write(seen)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_behind_proxy(tmp_path):
    """The proxy in front of a backend that answers with the X-Forwarded-For it got and notes each path."""
    _EchoForwardedFor.seen = []
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoForwardedFor)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    stack = Stack(env={"PATH": "/usr/sbin:/usr/bin:/bin"}, tmp=Path(tmp_path))
    try:
        yield start_proxy(stack, web_port=backend.server_address[1])
    finally:
        for process in stack.processes:
            process.stop()
        backend.shutdown()


def test_the_proxy_tells_the_web_tier_the_address_it_saw_never_the_clients_claim(echo_behind_proxy):
    for claim in ({}, {"X-Forwarded-For": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.3, 10.4.5.6"}):
        assert httpx.get(f"{echo_behind_proxy}/metrics", headers=claim, timeout=10).text == "127.0.0.1", claim


def raw(front: str, request: bytes) -> bytes:
    host, port = front.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", [
    # Two lengths that disagree: the classic request-smuggling probe.
    b"POST /amocrm/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nab=c",
    # A header larger than the proxy's buffer.
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
    # Raw non-ASCII bytes and a NUL where HTTP allows neither, a space in a header's name.
    "GET /amocrm/sms/\u0661\u0662 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
    # A transfer coding the web tier would not read as the proxy does (smuggling again).
    b"POST /amocrm/sms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n",
    # Not HTTP at all.
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
], ids=["two-lengths", "huge-header", "non-ascii-path", "nul-in-name", "space-in-name", "bogus-coding", "tls-hello"])
def test_a_malformed_request_is_a_4xx_from_the_proxy_and_never_reaches_the_web_tier(echo_behind_proxy, request_bytes):
    answer = raw(echo_behind_proxy, request_bytes)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert _EchoForwardedFor.seen == []
