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


def settings_in_a_fresh_process(**environment) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "PYTEST_VERSION")}
    env.update(DJANGO_SETTINGS_MODULE="smsgate.settings", SMSGATE_ENV_FILE="", DEBUG="1", **environment)
    done = subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_empty_service_urls_mean_the_embedded_defaults():
    # `DATABASE_URL=` in a .env or a shell used to crash every command with KeyError: 'ENGINE'.
    assert settings_in_a_fresh_process(DATABASE_URL="", CELERY_BROKER_URL="") == {
        "engine": "django.db.backends.sqlite3", "broker": "filesystem://"}


def test_service_urls_are_taken_as_given():
    assert settings_in_a_fresh_process(DATABASE_URL="postgres://u@127.0.0.1:5432/x",
                                       CELERY_BROKER_URL="redis://127.0.0.1:6379/3") == {
        "engine": "django.db.backends.postgresql", "broker": "redis://127.0.0.1:6379/3"}
