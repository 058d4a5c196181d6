"""The vendored Chart.js is the pinned release, byte for byte, with its licence and source map (the
manifest storage of `collectstatic` resolves the map's reference), and the widget loads that file."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from django.conf import settings

FOLDER = Path(settings.BASE_DIR) / "deliveries" / "static" / "deliveries" / "vendor" / "chartjs-4.6.1"
SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"


def test_chartjs_is_the_pinned_release_with_its_licence():
    script = (FOLDER / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(script).hexdigest() == SHA256
    assert script.startswith(b"/*!\n * Chart.js v4.6.1\n")
    assert b"define.amd" in script  # a UMD build: RequireJS loads it as an AMD module
    assert script.rstrip().endswith(b"//# sourceMappingURL=chart.umd.min.js.map")
    assert (FOLDER / "chart.umd.min.js.map").is_file()
    assert "MIT License" in (FOLDER / "LICENSE.md").read_text()


def test_the_widget_loads_the_vendored_file_from_the_deployment():
    figures = (Path(settings.BASE_DIR) / "widget_src" / "figures.js").read_text()
    assert "'/static/deliveries/vendor/chartjs-4.6.1/chart.umd.min.js'" in figures
    assert not re.search(r"https?://", figures)  # nothing from anywhere but the deployment


def test_production_collectstatic_takes_it_with_its_source_map(tmp_path):
    """WhiteNoise's manifest storage (production) rewrites the script's sourceMappingURL and fails the
    whole `collectstatic` when the map it names is missing."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="smsgate.settings", SMSGATE_ENV_FILE="", DEBUG="0", SECRET_KEY="s" * 50,
               SMSGATE_ENCRYPTION_KEYS="k" * 43 + "=", DATABASE_URL="postgres://u@127.0.0.1:5432/x",
               CELERY_BROKER_URL="amqp://u:p@mq:5672/x", SMSGATE_REDIS_URL="redis://cache:6379/0",
               STATIC_ROOT=str(tmp_path))
    done = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                          cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    hashed = manifest["deliveries/vendor/chartjs-4.6.1/chart.umd.min.js"]
    assert (tmp_path / hashed).is_file() and (tmp_path / "deliveries/vendor/chartjs-4.6.1/chart.umd.min.js").is_file()
    map_name = manifest["deliveries/vendor/chartjs-4.6.1/chart.umd.min.js.map"].rsplit("/", 1)[1]
    assert (tmp_path / hashed).read_text().rstrip().endswith(f"//# sourceMappingURL={map_name}")
