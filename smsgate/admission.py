"""Admission control for the SMS endpoint: under sustained overload, refuse early and cheaply.

How long a request waited for a web thread (smsgate.webqueue) tells whether its process keeps up. A
burst leaves a queue that drains by itself; a *standing* queue means more arrives than the process can
serve, and then every request accepted only waits longer while amoCRM's clients give up. So, as CoDel
does for packet queues (Nichols & Jacobson, 2012) and servers do for request queues ("Fail at Scale",
Maurer, 2015): when every request this process picked up for a whole `interval` had waited longer than
`target`, the queue is standing, and a request that waited longer than `target` is refused (503) at once;
otherwise only one that waited longer than the `ceiling` (SMSGATE_WEB_MAX_QUEUE_WAIT) is. A refusal
costs a small part of an acceptance, so the process keeps serving near its capacity, the accepted
wait at most about `target`, and the refused are answered within tens of milliseconds instead of
after the ceiling.

`AdmissionMiddleware` applies it in front of Django (smsgate/wsgi.py), so a refusal costs no Django
request, no signals and no middleware: under overload most requests end there, and what they cost
is taken from the accepted ones. Its answer is the endpoint's JSON error, `overloaded`, with
`Retry-After: 2`, in the request's language (built once per language). One policy per process,
shared by its threads; `QueueWaitPolicy` is pure, tested with a clock of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from prometheus_client import Counter

from smsgate import webqueue
from smsgate.errors import json_error

logger = logging.getLogger(__name__)

_SHED = Counter("smsgate_web_shed_total", "SMS requests answered 503 at once: they waited too long for a web thread")


@dataclass
class QueueWaitPolicy:
    target: float  # seconds; 0 turns the standing-queue rule off (only the ceiling remains)
    interval: float  # seconds of waits all above `target` that make the queue standing
    ceiling: float  # seconds; 0 turns refusing off altogether
    clock: Callable[[], float] = time.monotonic
    _first_above: float | None = field(default=None, init=False)
    _last_above: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def admit(self, waited: float) -> bool:
        """True if a request that waited `waited` seconds for its thread should be served."""
        if self.ceiling <= 0:
            return True
        if self.target <= 0 or waited <= self.target:
            if self._first_above is not None:
                with self._lock:
                    self._first_above = None
            return waited <= self.ceiling
        now = self.clock()
        with self._lock:
            # A run of waits above the target, none more than an interval apart (a quiet spell with a
            # slow request now and then is no standing queue), lasting an interval: the queue stands.
            if self._first_above is None or now - self._last_above > self.interval:
                self._first_above = now
            self._last_above = now
            standing = now - self._first_above >= self.interval
        return not standing and waited <= self.ceiling

    @property
    def standing(self) -> bool:
        """Whether the queue stood at the last request (for logs)."""
        first = self._first_above
        return first is not None and self._last_above - first >= self.interval


class AdmissionMiddleware:
    """WSGI middleware: the SMS endpoint's POSTs go through the process's QueueWaitPolicy; refused ones
    are answered 503 before Django sees them. Nothing is recorded, so amoCRM may simply try again.
    Only the SMS endpoint: amoCRM never retries the pipeline's webhook, so it is never refused."""

    def __init__(self, application):
        self.application = application
        self.policy = QueueWaitPolicy(target=settings.SMSGATE_WEB_QUEUE_TARGET,
                                      interval=settings.SMSGATE_WEB_QUEUE_INTERVAL,
                                      ceiling=settings.SMSGATE_WEB_MAX_QUEUE_WAIT)
        self.sms_path = None
        self.answers: dict[str, tuple[str, list, bytes]] = {}
        self.logged_at = 0.0

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            if self.sms_path is None:
                self.sms_path = reverse("amocrm-sms").rstrip("/")
            if environ.get("PATH_INFO", "").rstrip("/") == self.sms_path:
                waited = webqueue.waited_seconds()
                if not self.policy.admit(waited):
                    return self.refuse(environ, start_response, waited)
        return self.application(environ, start_response)

    def refuse(self, environ, start_response, waited: float):
        _SHED.inc()
        now = time.monotonic()
        if now - self.logged_at > 1.0:  # a line a second per process, not one per request
            self.logged_at = now
            logger.warning("overloaded: a request waited %.3f s for a web thread (standing queue: %s); answering 503",
                           waited, self.policy.standing)
        request = HttpRequest()  # what get_language_from_request reads: Accept-Language
        request.META = {"HTTP_ACCEPT_LANGUAGE": environ.get("HTTP_ACCEPT_LANGUAGE", "")}
        language = translation.get_language_from_request(request)
        answer = self.answers.get(language)
        if answer is None:
            with translation.override(language):
                response = json_error(503, "overloaded", _("The service is overloaded. Try again in a few seconds."))
            answer = self.answers[language] = (
                f"{response.status_code} {response.reason_phrase}",
                [*response.items(), ("Content-Length", str(len(response.content))), ("Retry-After", "2")],
                response.content)
        status, headers, body = answer
        start_response(status, list(headers))
        return [body]
