"""smsgate.admission: a standing queue is refused early; a burst, a quiet spell and a slow request are not."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from smsgate import webqueue
from smsgate.admission import AdmissionMiddleware, QueueWaitPolicy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def policy(clock, *, target=0.015, interval=0.1, ceiling=2.0):
    return QueueWaitPolicy(target=target, interval=interval, ceiling=ceiling, clock=clock)


def test_waits_within_the_target_are_always_served():
    clock = Clock()
    p = policy(clock)
    for _ in range(100):
        clock.now += 0.01
        assert p.admit(0.014)
    assert not p.standing


def test_a_burst_shorter_than_the_interval_is_served_up_to_the_ceiling():
    clock = Clock()
    p = policy(clock)
    for step in range(9):  # 80 ms of waits above the target
        assert p.admit(0.5)
        clock.now += 0.01
    assert p.admit(0.005)  # the queue drained: the run of waits above the target ends
    clock.now += 0.05
    assert p.admit(0.5) and not p.standing


def test_a_standing_queue_refuses_what_waited_longer_than_the_target_until_a_wait_is_short_again():
    clock = Clock()
    p = policy(clock)
    answers = []
    for _ in range(30):  # waits above the target for 290 ms
        answers.append(p.admit(0.03))
        clock.now += 0.01
    assert all(answers[:10])  # the first interval is a burst
    assert not any(answers[11:])  # then the queue stands: refused at once
    assert p.standing
    assert p.admit(0.01)  # a request picked up within the target: the queue has drained
    assert not p.standing
    assert p.admit(0.03)


def test_a_slow_request_now_and_then_in_a_quiet_spell_is_no_standing_queue():
    clock = Clock()
    p = policy(clock)
    for _ in range(20):  # one request every 0.5 s, each behind a slow one
        assert p.admit(0.2)
        clock.now += 0.5
    assert not p.standing


def test_the_ceiling_refuses_on_its_own_and_zero_turns_all_refusing_off():
    clock = Clock()
    assert not policy(clock).admit(2.5)
    assert policy(clock, target=0).admit(1.9) and not policy(clock, target=0).admit(2.1)
    off = policy(clock, ceiling=0)
    for _ in range(50):
        clock.now += 0.01
        assert off.admit(60.0)


# --- in front of Django, on a real thread pool timed by smsgate.webqueue ----------------------------------
def _call(app, *, method="POST", path="/amocrm/sms", language="ru"):
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_ACCEPT_LANGUAGE": language},
                        start_response))
    return answer["status"], answer["headers"], body


def _queued_behind_a_busy_thread(app, **request):
    """The request waits 0.2 s for the pool's only thread, as behind a busy gunicorn thread."""
    worker = SimpleNamespace(tpool=ThreadPoolExecutor(max_workers=1))
    assert webqueue.install(worker) is True
    release = threading.Event()
    try:
        worker.tpool.submit(release.wait, 5)
        queued = worker.tpool.submit(_call, app, **request)
        time.sleep(0.2)
        release.set()
        return queued.result(5)
    finally:
        release.set()
        worker.tpool.shutdown()


def django_reached(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"reached": "django"}']


def test_a_refused_sms_request_is_answered_503_in_its_language_before_django(settings):
    settings.SMSGATE_WEB_MAX_QUEUE_WAIT = 0.05  # the ceiling alone refuses a 0.2 s wait
    app = AdmissionMiddleware(django_reached)

    status, headers, body = _queued_behind_a_busy_thread(app, language="ru")
    assert status.startswith("503") and headers["Retry-After"] == "2"
    assert json.loads(body) == {"detail": "Сервис перегружен. Повторите через несколько секунд.",
                                "code": "overloaded"}

    status, _headers, body = _queued_behind_a_busy_thread(app, language="en")
    assert status.startswith("503") and json.loads(body)["detail"].startswith("The service is overloaded")


def test_what_is_never_refused_reaches_django_however_long_it_waited(settings):
    settings.SMSGATE_WEB_MAX_QUEUE_WAIT = 0.05
    app = AdmissionMiddleware(django_reached)
    for request in ({"method": "GET"}, {"path": "/amocrm/pipeline"}, {"path": "/api/v1/crm/sends/"}):
        status, _headers, body = _queued_behind_a_busy_thread(app, **request)
        assert status == "200 OK" and body == b'{"reached": "django"}', request
    assert _call(app) == ("200 OK", {"Content-Type": "application/json"}, b'{"reached": "django"}')  # no wait
