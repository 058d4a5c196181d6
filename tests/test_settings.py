"""Settings read from the environment, as a fresh process reads them (they are module-level)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({"engine": settings.DATABASES["default"]["ENGINE"], "broker": settings.CELERY_BROKER_URL}))
"""


def run_settings(**environment) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SMSGATE_REDIS_URL", "PYTEST_VERSION")}
    env.update(DJANGO_SETTINGS_MODULE="smsgate.settings", SMSGATE_ENV_FILE="", DEBUG="1")
    env.update(environment)
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def settings_in_a_fresh_process(**environment) -> dict:
    done = run_settings(**environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_empty_service_urls_mean_the_embedded_defaults():
    # `DATABASE_URL=` in a .env or a shell used to crash every command with KeyError: 'ENGINE'.
    assert settings_in_a_fresh_process(DATABASE_URL="", CELERY_BROKER_URL="") == {
        "engine": "django.db.backends.sqlite3", "broker": "filesystem://"}


def test_service_urls_are_taken_as_given():
    assert settings_in_a_fresh_process(DATABASE_URL="postgres://u@127.0.0.1:5432/x",
                                       CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//") == {
        "engine": "django.db.backends.postgresql", "broker": "amqp://guest:guest@127.0.0.1:5672//"}


PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "s" * 50, "SMSGATE_ENCRYPTION_KEYS": "k" * 43 + "=",
              "DATABASE_URL": "postgres://u@127.0.0.1:5432/x"}


def test_production_runs_on_rabbitmq_with_the_guard_in_redis():
    assert settings_in_a_fresh_process(**PRODUCTION, CELERY_BROKER_URL="amqp://u:p@mq:5672/smsgate",
                                       SMSGATE_REDIS_URL="redis://cache:6379/0")["broker"] == "amqp://u:p@mq:5672/smsgate"


def test_production_refuses_a_broker_that_holds_a_dead_workers_messages():
    # Redis redelivers a killed worker's login codes only after a visibility timeout (minutes).
    done = run_settings(**PRODUCTION, CELERY_BROKER_URL="redis://cache:6379/0", SMSGATE_REDIS_URL="redis://cache:6379/0")
    assert done.returncode != 0 and "must be an amqp:// URL (RabbitMQ)" in done.stderr
    done = run_settings(**PRODUCTION, CELERY_BROKER_URL="", SMSGATE_REDIS_URL="redis://cache:6379/0")
    assert done.returncode != 0 and "amqp://" in done.stderr  # the embedded broker is for development


def test_production_refuses_the_console_provider_as_its_default_route_unless_allowed():
    services = {"CELERY_BROKER_URL": "amqp://u:p@mq:5672/smsgate", "SMSGATE_REDIS_URL": "redis://cache:6379/0"}
    done = run_settings(**PRODUCTION, **services, SMSGATE_DEFAULT_ROUTE="console")
    assert done.returncode != 0 and "SMSGATE_DEFAULT_ROUTE=console only writes SMS to the log" in done.stderr
    assert run_settings(**PRODUCTION, **services, SMSGATE_DEFAULT_ROUTE="console",
                        SMSGATE_ALLOW_CONSOLE_PROVIDER="1").returncode == 0
    assert run_settings(SMSGATE_DEFAULT_ROUTE="console").returncode == 0  # development (DEBUG=1)


def test_production_needs_shared_guard_counters():
    done = run_settings(**PRODUCTION, CELERY_BROKER_URL="amqp://u:p@mq:5672/smsgate")
    assert done.returncode != 0 and "SMSGATE_REDIS_URL must be set" in done.stderr


def amo_settings(**environment) -> dict:
    """AMO_BASE_URL and AMO_API_RPS as a fresh process reads them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMO_") and k != "PYTEST_VERSION"}
    env.update(DJANGO_SETTINGS_MODULE="smsgate.settings", SMSGATE_ENV_FILE="", DEBUG="1", **environment)
    script = ("import json, django; django.setup(); from django.conf import settings; "
              "print(json.dumps([settings.AMO_BASE_URL, settings.AMO_API_RPS]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_setting_points_every_amocrm_call_at_a_stand_in_and_the_former_name_still_works():
    assert amo_settings() == ["", 7]  # the account's own host
    assert amo_settings(AMO_BASE_URL="http://127.0.0.1:9100/", AMO_API_RPS="5") == ["http://127.0.0.1:9100", 5]
    assert amo_settings(AMO_OAUTH_BASE_URL="http://127.0.0.1:9200")[0] == "http://127.0.0.1:9200"
    assert amo_settings(AMO_BASE_URL="http://new:1", AMO_OAUTH_BASE_URL="http://old:2")[0] == "http://new:1"
