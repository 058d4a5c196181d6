"""A measurement only (`bench/run.py --env DJANGO_SETTINGS_MODULE=bench.settings_lean`): the benchmark
stack with only the middleware the machine endpoints need (metrics, language, database errors;
admission control runs in front of Django), to see what a separate middleware stack for them would
buy (issue 19). The admin cannot run on it; a deployment never uses it."""

from bench.settings import *  # noqa: F403

MIDDLEWARE = [
    "smsgate.middleware.RequestMetricsMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "smsgate.middleware.DatabaseUnavailableMiddleware",
]

# The admin's own checks ask for the middleware it needs; the admin is not used in this measurement.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
