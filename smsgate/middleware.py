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
from smsgate.errors import json_error

logger = logging.getLogger(__name__)


class OverloadSheddingMiddleware:
    """An SMS request that waited longer than SMSGATE_WEB_MAX_QUEUE_WAIT for a web thread (see
    smsgate/webqueue.py) is answered 503 with Retry-After before anything else runs: nothing is
    recorded, so amoCRM may simply try again. First in MIDDLEWARE, because under overload most
    requests end here and each must cost as little as possible."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.sms_path = reverse("amocrm-sms").rstrip("/")
        self.logged_at = 0.0

    def __call__(self, request):
        limit = settings.SMSGATE_WEB_MAX_QUEUE_WAIT
        if limit > 0 and request.method == "POST" and request.path_info.rstrip("/") == self.sms_path:
            waited = webqueue.waited_seconds()
            if waited > limit:
                return self.overloaded(request, waited)
        return self.get_response(request)

    def overloaded(self, request, waited: float) -> JsonResponse:
        _SHED.inc()
        if time.monotonic() - self.logged_at > 1.0:  # a line a second per process, not one per request
            self.logged_at = time.monotonic()
            logger.warning("overloaded: a request waited %.1f s for a web thread; answering 503", waited)
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
