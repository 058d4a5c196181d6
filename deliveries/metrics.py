"""Prometheus metrics of deliveries (exported at /metrics by smsgate.health).

With several processes (gunicorn workers, Celery workers) set PROMETHEUS_MULTIPROC_DIR to an empty
folder shared by all of them on the host; /metrics then sums every process's values.
"""

from datetime import timedelta

from prometheus_client import Counter, Histogram

DELIVERY_STATUS = Counter(
    "smsgate_delivery_status_total", "Deliveries that reached a status, by status and provider",
    ["status", "provider"],
)
QUEUE_LATENCY = Histogram(
    "smsgate_queue_latency_seconds", "From accepted (or due for retry) to claimed by a worker",
    ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_LATENCY = Histogram(
    "smsgate_provider_latency_seconds", "Duration of provider send calls, by provider and outcome",
    ["provider", "outcome"], buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)


def delivery_status(status, provider: str, count: int = 1):
    DELIVERY_STATUS.labels(str(status), provider or "none").inc(count)


def queue_latency(kind, delay: timedelta):
    QUEUE_LATENCY.labels(str(kind)).observe(max(delay.total_seconds(), 0.0))


def provider_call(provider: str, outcome: str, latency_ms: int):
    PROVIDER_LATENCY.labels(provider, outcome).observe(latency_ms / 1000)
