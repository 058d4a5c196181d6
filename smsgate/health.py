"""Liveness, readiness and Prometheus metrics for operators.

/healthz  the process answers (no dependency is touched): for restarts.
/readyz   the database and the broker are reachable, else 503: for load balancers.
/metrics  Prometheus text format; needs SMSGATE_METRICS_TOKEN as a bearer token or a client address
          in SMSGATE_METRICS_ALLOWED_IPS (behind the proxy: the address it forwards for).
"""

import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.db import connections
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from smsgate.celery import app

logger = logging.getLogger(__name__)


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception as exc:  # any driver error means "not ready"
        logger.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return False


def _broker_ok() -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
            conn.default_channel  # opens a channel: the broker really answers
        return True
    except Exception as exc:
        logger.warning("readiness: broker unreachable (%s)", type(exc).__name__)
        return False


@never_cache
def readyz(request):
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable",
                         **{name: "ok" if ok else "unreachable" for name, ok in checks.items()}},
                        status=200 if ready else 503)


def client_address(request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address: REMOTE_ADDR, or, when that is a trusted proxy (SMSGATE_TRUSTED_PROXIES) that
    says whom it forwards, the last X-Forwarded-For entry (the one that proxy added). None if unreadable."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and str(address) in settings.SMSGATE_TRUSTED_PROXIES:
            address = ipaddress.ip_address(forwarded.rsplit(",", 1)[-1].strip())
    except ValueError:
        return None
    return address


def _metrics_allowed(request) -> bool:
    token = settings.SMSGATE_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
        return True
    client = client_address(request)
    if client is None:
        return False
    for allowed in settings.SMSGATE_METRICS_ALLOWED_IPS:
        try:
            if client in ipaddress.ip_network(allowed.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@never_cache
def metrics(request):
    if not _metrics_allowed(request):
        return JsonResponse({"detail": "Forbidden.", "code": "forbidden"}, status=403)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # sums gunicorn and Celery worker processes
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
