"""smsgate settings: every value comes from the environment (see .env.example).

Development defaults are safe and need no servers (SQLite, Celery's filesystem broker).
With DEBUG off, production secrets have no default and start-up fails without them.
"""

import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

# Tests never read .env: a developer's local file must not change test results.
RUNNING_TESTS = "PYTEST_VERSION" in os.environ or "pytest" in sys.modules
_env_file = os.environ.get("SMSGATE_ENV_FILE", str(BASE_DIR / ".env"))
if _env_file and not RUNNING_TESTS and Path(_env_file).is_file():
    environ.Env.read_env(_env_file)

env = environ.Env()

# prometheus_client writes its per-process files there from the first metric on; a missing folder
# (a fresh clone with .env copied, a one-off manage.py command) must not turn requests into 500s.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# Development-only defaults (a fixed secret key, a derived encryption key) are allowed only here.
DEV_DEFAULTS = DEBUG or RUNNING_TESTS


def _required(name, dev_default):
    value = env.str(name, default="")
    if value:
        return value
    if DEV_DEFAULTS:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off (see .env.example).")


SECRET_KEY = _required("SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEV_DEFAULTS else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "routes",
    "deliveries",
    "crm",
]

MIDDLEWARE = [
    "smsgate.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "smsgate.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "smsgate.urls"
WSGI_APPLICATION = "smsgate.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
# An empty value (DATABASE_URL= in a file or a shell) means the default, not a broken setting.
DATABASES = {"default": env.db_url_config(os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'smsgate.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions: concurrent web + worker writes without "database is locked".
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests on SQLite use a file as the app does, not Django's in-memory shared cache: its table
    # locks fail at once ("database table is locked") where a file waits for the busy timeout.
    _db.setdefault("TEST", {}).setdefault("NAME", str(VAR_DIR / "test-smsgate.sqlite3"))
    VAR_DIR.mkdir(exist_ok=True)
else:
    _db.setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    _db.setdefault("CONN_HEALTH_CHECKS", True)
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=3))

# --- Performance (issue 7): a connection pool for processes with many threads ---------------------
# A Celery worker with a large threads pool (sized for slow provider calls) would otherwise hold one
# PostgreSQL connection per thread. With DB_POOL_MAX_SIZE > 0 the process shares a psycopg pool of at
# most that many connections; the send path hands its connection back before each provider call.
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=0)
if DB_POOL_MAX_SIZE > 0 and _db["ENGINE"] == "django.db.backends.postgresql":
    _db["CONN_MAX_AGE"] = 0  # Django's pool replaces persistent connections
    _db["OPTIONS"]["pool"] = {"min_size": min(4, DB_POOL_MAX_SIZE), "max_size": DB_POOL_MAX_SIZE,
                              "timeout": env.float("DB_POOL_TIMEOUT", default=10.0)}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Languages: Russian and English ------------------------------------------------------------
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="ru")
LANGUAGES = [("ru", _("Russian")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not (DEBUG or RUNNING_TESTS)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security headers (behind a TLS-terminating proxy in production) ---------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEV_DEFAULTS
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024  # the SMS endpoint takes a few kB at most
# Every body but the admin's, chunked ones included, is refused (413) past this many bytes before it is
# read (smsgate/bodylimit.py, around the WSGI application): file parts and DRF's reads count too.
SMSGATE_MAX_BODY_BYTES = env.int("SMSGATE_MAX_BODY_BYTES", default=256 * 1024)

# --- Celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or "filesystem://"  # empty means the default
CELERY_BROKER_TRANSPORT_OPTIONS = {}
# Tests that share a broker keep their queues apart (smsgate/celery.py reads the same variable).
SMSGATE_QUEUE_PREFIX = env.str("SMSGATE_QUEUE_PREFIX", default="")
MAINTENANCE_QUEUE = SMSGATE_QUEUE_PREFIX + "maintenance"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # kombu reads and writes the same folder; the names in its docstring are swapped.
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # RabbitMQ confirms each published task before `send_task` returns, so an SMS answered 200 is
        # in a durable queue (or, if the broker refused it, left to the sweeper: never lost).
        "confirm_publish": True,
    }
if not DEV_DEFAULTS and not CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ is the production broker (README "How a delivery is sent"): it redelivers a dead
    # worker's messages at once. Redis holds them until a visibility timeout longer than any
    # countdown (a killed worker's login codes would go out minutes late); the embedded
    # filesystem:// broker is one host's and loses a killed worker's message.
    raise ImproperlyConfigured("CELERY_BROKER_URL must be an amqp:// URL (RabbitMQ) when DEBUG is off.")

# --- smsgate --------------------------------------------------------------------------------------
# Fernet keys, comma-separated; the first encrypts, all decrypt (rotation).
SMSGATE_ENCRYPTION_KEYS = env.list("SMSGATE_ENCRYPTION_KEYS", default=[])
if not SMSGATE_ENCRYPTION_KEYS and not DEV_DEFAULTS:
    raise ImproperlyConfigured("SMSGATE_ENCRYPTION_KEYS must be set when DEBUG is off (see .env.example).")

# The deployment's own amoCRM integration; more can be added in the admin.
AMO_CLIENT_ID = env.str("AMO_CLIENT_ID", default="")
AMO_CLIENT_SECRET = env.str("AMO_CLIENT_SECRET", default="")
AMO_REDIRECT_URI = env.str("AMO_REDIRECT_URI", default="")

SMSGATE_TOKEN_LEEWAY = env.int("SMSGATE_TOKEN_LEEWAY", default=30)
if not 0 <= SMSGATE_TOKEN_LEEWAY <= 120:
    raise ImproperlyConfigured("SMSGATE_TOKEN_LEEWAY must be between 0 and 120 seconds.")

# Provider slug used for accounts without a route of their own ("" = none: such requests get 422).
SMSGATE_DEFAULT_ROUTE = env.str("SMSGATE_DEFAULT_ROUTE", default="")
# Credentials of the default route, as JSON (e.g. {"api_id": "..."}); empty for "console".
SMSGATE_DEFAULT_ROUTE_CREDENTIALS = env.json("SMSGATE_DEFAULT_ROUTE_CREDENTIALS", default={})
SMSGATE_DEFAULT_ROUTE_SENDER = env.str("SMSGATE_DEFAULT_ROUTE_SENDER", default="")

# How long a system SMS (a login code) is worth sending, in seconds.
SMSGATE_SYSTEM_SMS_VALIDITY = env.int("SMSGATE_SYSTEM_SMS_VALIDITY", default=600)
SMSGATE_MAX_TEXT_LENGTH = 1000

# Provider base URLs can be overridden (tests and staging point them at fakes): "slug=url,slug=url".
SMSGATE_PROVIDER_BASE_URLS = env.dict("SMSGATE_PROVIDER_BASE_URLS", default={})
# The `console` provider only writes SMS to the log: offered for new routes only in development (DEBUG)
# or where this is set; an existing console route elsewhere is flagged in the admin and the widget.
SMSGATE_ALLOW_CONSOLE_PROVIDER = DEBUG or env.bool("SMSGATE_ALLOW_CONSOLE_PROVIDER", default=False)
if SMSGATE_DEFAULT_ROUTE == "console" and not (SMSGATE_ALLOW_CONSOLE_PROVIDER or RUNNING_TESTS):
    raise ImproperlyConfigured("SMSGATE_DEFAULT_ROUTE=console only writes SMS to the log and sends nothing; "
                               "set SMSGATE_ALLOW_CONSOLE_PROVIDER=1 if that is what this deployment is for.")
# Owner alerts (deliveries.alerts): how often balances are read and alerts become amoCRM tasks.
SMSGATE_ALERTS_EVERY = env.int("SMSGATE_ALERTS_EVERY", default=15 * 60)
# The public base URL of this deployment, used to build provider callback URLs.
SMSGATE_PUBLIC_URL = env.str("SMSGATE_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
# Whom account owners write to: the help page (/help/) and the widget's support e-mail.
# Empty: support@<host of SMSGATE_PUBLIC_URL>.
SMSGATE_SUPPORT_EMAIL = env.str("SMSGATE_SUPPORT_EMAIL", default="")

# --- Account API, widget and install lifecycle (issue 5) ------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.AmoTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.ActiveAccount", "accounts.permissions.AdminWrites"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser with a bound on nesting (a deep body is a RecursionError otherwise).
    "DEFAULT_PARSER_CLASSES": ["smsgate.drf.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "smsgate.drf.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "smsgate account API",
    "DESCRIPTION": "What the widget's settings page inside amoCRM calls, authenticated by amoCRM's "
                   "one-time token in the X-Auth-Token header.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"DeliveryStatusEnum": "deliveries.models.DeliveryStatus",
                            "RouteHealthEnum": ["ok", "broken", "inactive"]},
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# The widget's settings page runs on the account's amoCRM/Kommo host and calls the API from there.
CORS_ALLOWED_ORIGIN_REGEXES = [r"^https://[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.(?:amocrm\.ru|amocrm\.com|kommo\.com)$"]
CORS_URLS_REGEX = r"^/api/v1/.*$"
CORS_ALLOW_HEADERS = ["accept", "accept-language", "content-type", "x-auth-token", "x-requested-with"]
CORS_PREFLIGHT_MAX_AGE = 3600
# Every amoCRM call, OAuth (code exchange, refresh) and API v4, goes to https://{account host}; tests,
# staging and `make run` point them all at a stand-in ("http://127.0.0.1:9100", the fake amoCRM); the
# referer of an install is still checked to be an amoCRM host. AMO_OAUTH_BASE_URL is its former name,
# still read when AMO_BASE_URL is not set.
AMO_BASE_URL = (env.str("AMO_BASE_URL", default="") or env.str("AMO_OAUTH_BASE_URL", default="")).rstrip("/")
# amoCRM's API limit: requests per second per account (per integration), counted across every process
# of the deployment (in Redis, SMSGATE_REDIS_URL) the way amoCRM counts: a sliding second.
AMO_API_RPS = env.int("AMO_API_RPS", default=7)
if AMO_API_RPS < 1:
    raise ImproperlyConfigured("AMO_API_RPS must be at least 1.")
# Access tokens expiring within this many seconds are refreshed by the beat task.
AMO_TOKEN_REFRESH_MARGIN = env.int("AMO_TOKEN_REFRESH_MARGIN", default=6 * 3600)
AMO_TOKEN_REFRESH_EVERY = env.int("AMO_TOKEN_REFRESH_EVERY", default=15 * 60)
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE["accounts.amo_tokens_refresh"] = {
    "task": "accounts.amo_tokens_refresh",
    "schedule": AMO_TOKEN_REFRESH_EVERY,
    "options": {"queue": MAINTENANCE_QUEUE, "expires": AMO_TOKEN_REFRESH_EVERY},
}

# --- Abuse guard, recovery, retention, health (deliveries.guard, sweeper, retention) ---------------
# Redis for the guard's counters (and, from the amoCRM work on, other shared counters and caches).
# Empty: per-process counters, for development only: with several processes each would count alone.
SMSGATE_REDIS_URL = env.str("SMSGATE_REDIS_URL", default="")
if not SMSGATE_REDIS_URL and not DEV_DEFAULTS:
    raise ImproperlyConfigured("SMSGATE_REDIS_URL must be set when DEBUG is off (the abuse guard's counters).")
# Django's cache (the dashboard's past days, the admin's search budgets) is shared through the same
# Redis, so every process sees one value; without Redis, each process keeps its own (development).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": SMSGATE_REDIS_URL,
                      "KEY_PREFIX": "smsgate", "TIMEOUT": 300,
                      "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}} if SMSGATE_REDIS_URL \
    else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Staff without the "see the text" permission see phones masked (5 digits hidden); exact phone searches
# are their only way to test a guess, so each may make this many per hour (0 = no limit).
SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR = env.int("SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR", default=60)
SMSGATE_LIMIT_PHONE_COOLDOWN = env.int("SMSGATE_LIMIT_PHONE_COOLDOWN", default=30)  # seconds
SMSGATE_LIMIT_PHONE_HOUR = env.int("SMSGATE_LIMIT_PHONE_HOUR", default=5)
SMSGATE_LIMIT_PHONE_DAY = env.int("SMSGATE_LIMIT_PHONE_DAY", default=10)
SMSGATE_LIMIT_ACCOUNT_HOUR = env.int("SMSGATE_LIMIT_ACCOUNT_HOUR", default=300)
SMSGATE_LIMIT_ACCOUNT_DAY = env.int("SMSGATE_LIMIT_ACCOUNT_DAY", default=3000)
SMSGATE_LIMIT_PREFIX_DISTINCT = env.int("SMSGATE_LIMIT_PREFIX_DISTINCT", default=10)
SMSGATE_LIMIT_PREFIX_WINDOW = env.int("SMSGATE_LIMIT_PREFIX_WINDOW", default=600)  # seconds
# SMS people send from amoCRM (card, pipeline, Salesbot, lists; crm.caps), on top of the limits above:
# per account per hour and per day, per amoCRM user per hour (0 = no cap). Accounts may only tighten them.
SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = env.int("SMSGATE_CRM_LIMIT_ACCOUNT_HOUR", default=500)
SMSGATE_CRM_LIMIT_ACCOUNT_DAY = env.int("SMSGATE_CRM_LIMIT_ACCOUNT_DAY", default=2000)
SMSGATE_CRM_LIMIT_USER_HOUR = env.int("SMSGATE_CRM_LIMIT_USER_HOUR", default=100)
# Countries an account may send to by default, per amoCRM domain zone ("*" = any).
SMSGATE_DEFAULT_COUNTRIES = env.dict(
    "SMSGATE_DEFAULT_COUNTRIES", default={"amocrm.ru": "RU", "amocrm.com": "*", "kommo.com": "*"}
)
# Recovery: pending rows older than this are re-enqueued if publishing failed; a claim older than
# SMSGATE_STALE_CLAIM_SECONDS belongs to a dead worker.
SMSGATE_SWEEP_INTERVAL = env.float("SMSGATE_SWEEP_INTERVAL", default=10.0)
SMSGATE_SWEEP_GRACE_SECONDS = env.float("SMSGATE_SWEEP_GRACE_SECONDS", default=5.0)
SMSGATE_LOST_MESSAGE_SECONDS = env.int("SMSGATE_LOST_MESSAGE_SECONDS", default=300)
SMSGATE_PROVIDER_TIMEOUT = env.float("SMSGATE_PROVIDER_TIMEOUT", default=10.0)  # read timeout, seconds
SMSGATE_STALE_CLAIM_SECONDS = env.float("SMSGATE_STALE_CLAIM_SECONDS", default=SMSGATE_PROVIDER_TIMEOUT + 30)
# Bulk SMS are queued SMSGATE_SEND_BATCH_SIZE to a message and sent concurrently on
# SMSGATE_SEND_THREADS threads per worker process (deliveries/services/dispatch.py); 0 threads: one by one.
SMSGATE_SEND_BATCH_SIZE = env.int("SMSGATE_SEND_BATCH_SIZE", default=32)
SMSGATE_SEND_THREADS = env.int("SMSGATE_SEND_THREADS", default=64)
# Single sends (login codes) arriving within this many ms of each other are gathered into one batch of at
# most SMSGATE_SEND_GATHER_SIZE (deliveries/services/gathering.py); 0: each alone.
SMSGATE_SEND_GATHER_MS = env.float("SMSGATE_SEND_GATHER_MS", default=10.0)
SMSGATE_SEND_GATHER_SIZE = env.int("SMSGATE_SEND_GATHER_SIZE", default=16)
# Retention: system SMS text redacted N hours after it is final; every text purged after N days;
# phones hashed after N days (0 = never).
SMSGATE_REDACT_SYSTEM_TEXT_HOURS = env.int("SMSGATE_REDACT_SYSTEM_TEXT_HOURS", default=24)
SMSGATE_PURGE_TEXT_DAYS = env.int("SMSGATE_PURGE_TEXT_DAYS", default=30)
SMSGATE_HASH_PHONE_DAYS = env.int("SMSGATE_HASH_PHONE_DAYS", default=0)
# Overload: a request that waited longer than this for a web thread (gunicorn gthread) gets 503 with
# Retry-After at once, before any work: amoCRM (~2 s budget) has likely given up on it, and an SMS
# recorded for a sender that is gone would only be late. 0 turns it off.
SMSGATE_WEB_MAX_QUEUE_WAIT = env.float("SMSGATE_WEB_MAX_QUEUE_WAIT", default=2.0)
# Admission control (smsgate/admission.py): when every SMS request of a web process waited longer than
# the target for a thread for a whole interval, the queue is standing and those are refused at once.
SMSGATE_WEB_QUEUE_TARGET = env.float("SMSGATE_WEB_QUEUE_TARGET", default=0.04)
SMSGATE_WEB_QUEUE_INTERVAL = env.float("SMSGATE_WEB_QUEUE_INTERVAL", default=0.1)
# PostgreSQL: statements run on every status change are PREPAREd once per connection (the counter
# recount: ~0.7 ms of planning each time otherwise). Off behind a pooler that does not keep a
# session per client (PgBouncer in transaction mode).
SMSGATE_DB_PREPARED_STATEMENTS = env.bool("SMSGATE_DB_PREPARED_STATEMENTS", default=True)
# /metrics: a bearer token, or client addresses allowed without one.
SMSGATE_METRICS_TOKEN = env.str("SMSGATE_METRICS_TOKEN", default="")
SMSGATE_METRICS_ALLOWED_IPS = env.list("SMSGATE_METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
# Proxies whose X-Forwarded-For names the client (the Procfile's HAProxy, on this host, sets it to
# the address it saw): a request from one of them is judged by that address, not the proxy's.
SMSGATE_TRUSTED_PROXIES = env.list("SMSGATE_TRUSTED_PROXIES", default=["127.0.0.1", "::1"])

CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE.update({
    # Re-enqueue what the broker lost, resolve dead workers' claims, expire missed deadlines.
    "deliveries-sweep": {"task": "deliveries.sweep", "schedule": SMSGATE_SWEEP_INTERVAL,
                         "options": {"queue": MAINTENANCE_QUEUE, "expires": 60}},
    "deliveries-retention": {"task": "deliveries.retention", "schedule": 3600.0,
                             "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600}},
    # The owner's alerts: balances of routes with a threshold read, alerts sent as amoCRM tasks.
    "deliveries-alerts": {"task": "deliveries.alerts_check", "schedule": float(SMSGATE_ALERTS_EVERY),
                          "options": {"queue": MAINTENANCE_QUEUE, "expires": SMSGATE_ALERTS_EVERY}},
    # The digital pipeline's events: a dead worker's claims back to pending, a lost wake-up repeated (crm.tasks).
    "crm-pipeline-sweep": {"task": "crm.pipeline_sweep", "schedule": 15.0,
                           "options": {"queue": MAINTENANCE_QUEUE, "expires": 30}},
    "crm-pipeline-purge": {"task": "crm.pipeline_purge", "schedule": 3600.0,
                           "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600}},
})
# --- Delivery reports: polling and the report horizon (issue 3) ---------------------------------------
# Seconds between runs of the status poller (Celery beat), and the first and base interval of a
# message's polls (then 2x, 4x ... up to an hour).
SMSGATE_POLL_INTERVAL = env.int("SMSGATE_POLL_INTERVAL", default=60)
# Providers that send delivery reports (SMS.ru, Twilio, ...) are polled only after this many seconds.
SMSGATE_POLL_CALLBACK_GRACE = env.int("SMSGATE_POLL_CALLBACK_GRACE", default=600)
# Deliveries asked about per batch (a run takes up to 10 batches).
SMSGATE_POLL_BATCH = env.int("SMSGATE_POLL_BATCH", default=200)
# A delivery without a final status this many hours after it was created is closed as failed (no_report).
SMSGATE_REPORT_HORIZON_HOURS = env.int("SMSGATE_REPORT_HORIZON_HOURS", default=72)
if min(SMSGATE_POLL_INTERVAL, SMSGATE_POLL_BATCH, SMSGATE_REPORT_HORIZON_HOURS) < 1 or SMSGATE_POLL_CALLBACK_GRACE < 0:
    raise ImproperlyConfigured("SMSGATE_POLL_* and SMSGATE_REPORT_HORIZON_HOURS must be positive.")
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
# Delivery reports for providers without callbacks (and a fallback for the rest); the report horizon.
CELERY_BEAT_SCHEDULE["deliveries-poll-statuses"] = {
    "task": "deliveries.poll_statuses", "schedule": float(SMSGATE_POLL_INTERVAL),
    "options": {"queue": MAINTENANCE_QUEUE, "expires": float(SMSGATE_POLL_INTERVAL)},
}

# --- SMS sent from amoCRM (crm: the card, the pipeline, Salesbot, lists) and their notes -----------------
# How long an SMS sent from amoCRM is worth sending, in seconds (past it: expired, and a note says so).
SMSGATE_CRM_SMS_VALIDITY = env.int("SMSGATE_CRM_SMS_VALIDITY", default=6 * 3600)
# The card's data (its contacts and phones, read through the amoCRM API) is kept this many seconds.
SMSGATE_CRM_CARD_CACHE_SECONDS = env.int("SMSGATE_CRM_CARD_CACHE_SECONDS", default=60)
# The note outbox: notes per POST (amoCRM takes at most 250), seconds between runs of its beat task, the
# first pause before writing again after amoCRM failed (doubled each time up to an hour), and after how
# many hours of failing a note is given up (recorded as such; the SMS itself is unaffected).
SMSGATE_CRM_NOTE_BATCH = env.int("SMSGATE_CRM_NOTE_BATCH", default=250)
SMSGATE_CRM_NOTE_INTERVAL = env.float("SMSGATE_CRM_NOTE_INTERVAL", default=5.0)
SMSGATE_CRM_NOTE_BACKOFF = env.float("SMSGATE_CRM_NOTE_BACKOFF", default=10.0)
SMSGATE_CRM_NOTE_GIVE_UP_HOURS = env.int("SMSGATE_CRM_NOTE_GIVE_UP_HOURS", default=72)
if not 1 <= SMSGATE_CRM_NOTE_BATCH <= 250 or SMSGATE_CRM_NOTE_INTERVAL <= 0 or SMSGATE_CRM_NOTE_BACKOFF <= 0:
    raise ImproperlyConfigured("SMSGATE_CRM_NOTE_BATCH must be 1..250; the note interval and backoff positive.")
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
# Due notes written, final failures of CRM sends noted (queue sms-crm: worker-crm runs it).
CELERY_BEAT_SCHEDULE["crm-notes"] = {
    "task": "crm.notes_flush", "schedule": SMSGATE_CRM_NOTE_INTERVAL,
    "options": {"queue": SMSGATE_QUEUE_PREFIX + "sms-crm", "expires": max(SMSGATE_CRM_NOTE_INTERVAL, 5.0)},
}
# Salesbot's "send SMS" step: how long after amoCRM's call the bot is continued through "failed" when the
# provider has not taken the SMS yet (shorter than a bot waits for a widget step), and the sweeper of its requests.
SMSGATE_SALESBOT_WAIT_SECONDS = env.int("SMSGATE_SALESBOT_WAIT_SECONDS", default=60)
if not 5 <= SMSGATE_SALESBOT_WAIT_SECONDS <= 3600:
    raise ImproperlyConfigured("SMSGATE_SALESBOT_WAIT_SECONDS must be 5..3600.")
CELERY_BEAT_SCHEDULE["crm-salesbot-sweep"] = {
    "task": "crm.salesbot_sweep", "schedule": 10.0, "options": {"queue": MAINTENANCE_QUEUE, "expires": 10},
}
CELERY_BEAT_SCHEDULE["crm-retention"] = {
    "task": "crm.retention", "schedule": 3600.0, "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
}

# --- Logging: ids in `extra`, never tokens, secrets or full texts; callback tokens masked -------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # The message, then the call's `extra` ids as key=value (smsgate/logs.py).
        "plain": {"()": "smsgate.logs.ContextFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django adds its own console handler when DEBUG is on; one handler is enough.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # runserver's request lines and Celery's task logger have handlers of their own otherwise, whose
        # formatters would not mask callback tokens and OAuth codes (smsgate/logs.py).
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "celery.task": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        # filesystem:// has no host and kombu warns about it on every publish.
        "kombu.connection": {"level": "ERROR" if CELERY_BROKER_URL.startswith("filesystem://") else "WARNING"},
        # One line per SMS is ours ("delivery sent delivery_id=..."); Celery's "received" and
        # "succeeded" lines per task only repeat it. Failures are still logged (ERROR).
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
