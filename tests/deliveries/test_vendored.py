"""The vendored Chart.js is the pinned release, byte for byte, with its licence and source map (the
manifest storage of `collectstatic` resolves the map's reference), and the widget loads that file."""

import hashlib
import re
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
