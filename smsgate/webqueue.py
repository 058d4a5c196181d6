"""How long the current request waited for a thread in its gunicorn gthread worker.

Under overload the web tier's queue is invisible to Django: accepted connections wait in the
worker's thread pool until a thread is free, while their clients (amoCRM waits ~2 s) time out and
give up. The SMS endpoint uses this wait to answer 503 at once instead of recording an SMS
whose sender has already gone (smsgate.gunicorn.conf.py installs it; issue 7).

Only the thread pool's public `submit` is wrapped. Under any other server (runserver, tests,
the sync worker) nothing is installed and the wait reads as 0.
"""

from __future__ import annotations

import threading
import time

_local = threading.local()


def install(worker) -> bool:
    """Time every connection a gthread worker hands to its thread pool. True if installed."""
    pool = getattr(worker, "tpool", None)
    if pool is None or not hasattr(pool, "submit"):
        return False
    submit = pool.submit

    def timed_submit(fn, *args, **kwargs):
        submitted = time.monotonic()

        def run(*inner_args, **inner_kwargs):
            _local.waited = time.monotonic() - submitted
            try:
                return fn(*inner_args, **inner_kwargs)
            finally:
                _local.waited = 0.0

        return submit(run, *args, **kwargs)

    pool.submit = timed_submit
    return True


def waited_seconds() -> float:
    """Seconds the request being handled by this thread waited for the thread (0 if unknown)."""
    return getattr(_local, "waited", 0.0)
