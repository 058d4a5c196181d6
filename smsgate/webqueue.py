"""How long the current request waited for a thread in its gunicorn gthread worker.

Under overload the web tier's queue is invisible to Django: accepted connections wait in the
worker's thread pool until a thread is free, while their clients (amoCRM waits ~2 s) time out and
give up. The SMS endpoint uses this wait to answer 503 at once instead of recording an SMS
whose sender has already gone (smsgate.gunicorn.conf.py installs it; issue 7).

The gthread worker's pool (`worker.tpool`) is gunicorn's internal, not an API: this module is the
one place that reaches into it, only for the gunicorn versions it was verified with
(VERIFIED_GUNICORN); with any other, or any other server (runserver, tests, the sync worker),
nothing is installed, a warning says so, and the wait reads as 0 (requests are then never shed).
What it buys (bench/README.md, overload): accepted SMS reach the provider with p99 0.17-0.41 s
instead of ~15 s at 400 SMS/s offered on 2 cores, and every request is answered within 5 s.
"""

from __future__ import annotations

import logging
import threading
import time

import gunicorn

logger = logging.getLogger(__name__)

# gunicorn versions whose gthread worker was checked to hand each connection to `tpool.submit`.
VERIFIED_GUNICORN = ("27.0.",)

_local = threading.local()


def install(worker, *, version: str | None = None) -> bool:
    """Time every connection a gthread worker hands to its thread pool. True if installed."""
    pool = getattr(worker, "tpool", None)
    if pool is None or not hasattr(pool, "submit"):
        return False
    version = gunicorn.__version__ if version is None else version
    if not version.startswith(VERIFIED_GUNICORN):
        logger.warning("gunicorn %s is not one smsgate's overload shedding was verified with (%s): "
                       "requests will not be shed", version or "?", ", ".join(VERIFIED_GUNICORN))
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
