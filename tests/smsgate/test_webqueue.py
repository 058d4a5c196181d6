"""smsgate.webqueue: the time a request waited for a web thread, read from a real thread pool."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from smsgate import webqueue


def test_a_job_queued_behind_a_busy_thread_knows_how_long_it_waited():
    worker = SimpleNamespace(tpool=ThreadPoolExecutor(max_workers=1))
    assert webqueue.install(worker) is True
    release = threading.Event()
    try:
        first = worker.tpool.submit(lambda: (webqueue.waited_seconds(), release.wait(5)))
        second = worker.tpool.submit(webqueue.waited_seconds)
        time.sleep(0.2)
        release.set()
        assert first.result(5)[0] < 0.1
        assert 0.2 <= second.result(5) < 5
    finally:
        release.set()
        worker.tpool.shutdown()
    # Outside a timed job (this thread) the wait reads as zero.
    assert webqueue.waited_seconds() == 0.0


def test_a_server_without_a_thread_pool_is_left_alone():
    assert webqueue.install(SimpleNamespace()) is False


def test_an_unverified_gunicorn_is_left_alone_with_a_warning(caplog):
    """gthread's pool is gunicorn's internal: only the versions it was checked with are touched."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        worker = SimpleNamespace(tpool=pool)
        submit = pool.submit
        assert webqueue.install(worker, version="99.0.0") is False
        assert worker.tpool.submit == submit and "not one smsgate's overload shedding was verified with" in caplog.text
        assert webqueue.install(worker, version="27.0.1") is True and worker.tpool.submit != submit
    finally:
        pool.shutdown()
