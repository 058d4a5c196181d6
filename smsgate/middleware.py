import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from prometheus_client import Counter

from smsgate.crypto import DecryptionError
from smsgate import webqueue
from smsgate.admission import QueueWaitPolicy
from smsgate.errors import json_error

logger = logging.getLogger(__name__)


class OverloadSheddingMiddleware:
    """Admission control for the SMS endpoint (smsgate.admission): a request that waited for a web
    thread (smsgate.webqueue) longer than the policy allows is answered 503 with Retry-After before
    anything else runs: nothing is recorded, so amoCRM may simply try again. First in MIDDLEWARE,
    because under overload many requests end here and each must cost as little as possible. Only the
    SMS endpoint: the pipeline's webhook is never retried by amoCRM, so it is never refused."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.sms_path = reverse("amocrm-sms").rstrip("/")
        self.logged_at = 0.0
        self.policy = QueueWaitPolicy(target=settings.SMSGATE_WEB_QUEUE_TARGET,
                                      interval=settings.SMSGATE_WEB_QUEUE_INTERVAL,
                                      ceiling=settings.SMSGATE_WEB_MAX_QUEUE_WAIT)

    def __call__(self, request):
        if request.method == "POST" and request.path_info.rstrip("/") == self.sms_path:
            waited = webqueue.waited_seconds()
            if not self.policy.admit(waited):
                return self.overloaded(request, waited)
        return self.get_response(request)

    def overloaded(self, request, waited: float) -> JsonResponse:
        _SHED.inc()
        if time.monotonic() - self.logged_at > 1.0:  # a line a second per process, not one per request
            self.logged_at = time.monotonic()
            logger.warning("overloaded: a request waited %.3f s for a web thread (standing queue: %s); answering 503",
                           waited, self.policy.standing)
        with translation.override(translation.get_language_from_request(request)):
            response = json_error(503, "overloaded", _("The service is overloaded. Try again in a few seconds."))
        response["Retry-After"] = "2"
        return response


class DatabaseUnavailableMiddleware:
    """The database is down or unreachable, or stored secrets cannot be decrypted with the configured
    keys (a deployment mistake): answer 503 with Retry-After instead of a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError, DecryptionError)):
            logger.error("service unavailable: %s", type(exception).__name__)
            response = JsonResponse(
                {"detail": _("The service is temporarily unavailable. Try again shortly."), "code": "unavailable"},
                status=503,
            )
            response["Retry-After"] = "5"
            return response
        return None


class RequestMetricsMiddleware:
    """Counts answered requests by view and status code (Prometheus)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.url_name or match.view_name) if match else "unmatched"
        _REQUESTS.labels(view or "unnamed", str(response.status_code)).inc()
        return response


_REQUESTS = Counter("smsgate_http_requests_total", "HTTP requests answered, by view and status code",
                    ["view", "status"])
_SHED = Counter("smsgate_web_shed_total", "SMS requests answered 503 at once: they waited too long for a web thread")
