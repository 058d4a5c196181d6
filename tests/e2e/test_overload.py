"""Overload shedding over real HTTP: gunicorn (the Procfile's config) with one thread kept busy by a
slow client; the SMS requests queued behind it waited too long, get 503 at once and leave nothing behind."""

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import httpx
import pytest

from deliveries.models import Delivery

from .stack import _http_ok, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_requests_that_waited_too_long_for_a_thread_get_503_and_record_nothing(stack, smsru_route, make_token):
    smsru_route()
    port = free_port()
    stack.env.update(WEB_BIND=f"127.0.0.1:{port}", WEB_WORKERS="1", WEB_THREADS="1",
                     SMSGATE_WEB_MAX_QUEUE_WAIT="0.05")
    web = stack.spawn("web", [sys.executable, "-m", "gunicorn", "smsgate.wsgi", "--config", "smsgate/gunicorn.conf.py"])
    url = f"http://127.0.0.1:{port}/amocrm/sms"
    wait_for(lambda: _http_ok(url), 30, lambda: f"web did not start:\n{web.log()}")
    body = urlencode({"phone": "+79123000000", "text": "Код: 1", "token": make_token()}).encode()

    # A client that sends half its body holds gunicorn's only thread until it sends the rest.
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /amocrm/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)
        tokens = [make_token() for _ in range(20)]
        with ThreadPoolExecutor(max_workers=20) as pool, httpx.Client(timeout=30) as client:  # these queue behind it
            queued = [pool.submit(client.post, url, data={"phone": f"+7912300{n:04d}", "text": "Код: 2",
                                                          "token": token}) for n, token in enumerate(tokens, 1)]
            time.sleep(1.0)
            slow.sendall(body[10:])
            answers = [future.result() for future in queued]
        first = slow.makefile("rb").read()

    assert first.startswith(b"HTTP/1.1 200"), first
    for answer in answers:
        assert answer.status_code == 503 and answer.json()["code"] == "overloaded", answer.text
        assert answer.headers["Retry-After"] == "2"
    assert Delivery.objects.count() == 1  # nothing recorded for the refused ones
    assert httpx.post(url, data={"phone": "+79123009999", "text": "Код: 3", "token": make_token()},
                      timeout=30).status_code == 200  # and nothing sticks once the queue is gone
    assert "overloaded: a request waited" in web.log()
