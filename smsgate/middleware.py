"""Django middleware of our own: database errors as 503, request metrics. (Admission control and the body
limit run in front of Django, as WSGI middleware: smsgate/admission.py, smsgate/bodylimit.py.)"""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils.translation import gettext as _
from prometheus_client import Counter

from smsgate.crypto import DecryptionError

logger = logging.getLogger(__name__)


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
