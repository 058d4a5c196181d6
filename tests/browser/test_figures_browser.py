"""The owner's alerts and figures on the widget's settings page, in real Chromium (Russian and English).

The page imitates amoCRM's settings modal (test_settings_page.py); the widget's figures.js is loaded
by script.js with RequireJS, and Chart.js from the deployment's own static files (collected with
`collectstatic`, served by WhiteNoise in gunicorn), never from a CDN. The deliveries are recorded
through the one INSERT (which counts them), the balance is read from the fake SMS.ru. Screenshots
go to test-artifacts/browser/figures-*.png.
"""

import re
import subprocess
import sys
from datetime import datetime, time, timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from deliveries.models import AlertSettings, Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.intake import deliveries_insert
from routes.models import ProviderRoute, RouteBalanceAlert
from tests.browser.test_settings_page import AMO_ORIGIN, ARTIFACTS, ROOT, built_widget, serve_amocrm
from tests.fakes.smsru import FakeSmsRu

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHART_PATH = "/static/deliveries/vendor/chartjs-4.6.1/chart.umd.min.js"


def insert(account, *, n, kind=DeliveryKind.SYSTEM, status=DeliveryStatus.DELIVERED, route=None, days_ago=0,
           segments=1, error_class="", seconds=4.0):
    created = timezone.now() - timedelta(days=days_ago, seconds=20)
    finished = created + timedelta(seconds=seconds) if status != DeliveryStatus.SENT else None
    deliveries_insert(deliveries=[
        Delivery(account=account, kind=kind, phone="+79123456789", text="Код: 1", encoding="ucs2", segments=segments,
                 valid_until=created + timedelta(minutes=10), status=status, route=route,
                 provider=route.provider if route else "", error_class=error_class, created_at=created,
                 finished_at=finished) for _ in range(n)])


def month_of_sms(account, smsru):
    """A month of an account's SMS: login codes every day, the card, pipeline, Salesbot and lists lately,
    some not delivered."""
    for day in range(30):
        insert(account, n=5 + day % 4, route=smsru, days_ago=day, seconds=3 + day % 5)
        if day % 3 == 0:
            insert(account, n=1, route=smsru, days_ago=day, status=DeliveryStatus.UNDELIVERED,
                   error_class="blocked_recipient")
    for day in range(10):
        insert(account, n=3, kind=DeliveryKind.CRM, route=smsru, days_ago=day, segments=2, seconds=25)
        insert(account, n=2, kind=DeliveryKind.PIPELINE, route=smsru, days_ago=day)
    insert(account, n=4, kind=DeliveryKind.SALESBOT, route=smsru, status=DeliveryStatus.SENT)
    insert(account, n=6, kind=DeliveryKind.LIST, route=smsru, days_ago=1, segments=3)
    insert(account, n=2, kind=DeliveryKind.LIST, route=smsru, days_ago=2, status=DeliveryStatus.REJECTED,
           error_class="invalid_recipient")


@pytest.fixture
def deployment(stack, tmp_path):
    """The stack's web process serving the deployment's collected static files, as in production."""
    static_root = tmp_path / "static"
    stack.env["STATIC_ROOT"] = str(static_root)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=stack.env,
                   check=True, timeout=120)
    assert (static_root / CHART_PATH.removeprefix("/static/")).is_file()
    return stack


def open_settings(chromium, deployment, make_token, tmp_path, *, lang, is_admin=True):
    widget_files = built_widget(deployment.web_url, tmp_path)
    page = chromium.new_page(viewport={"width": 1100, "height": 900}, locale=f"{lang}-{lang.upper()}")
    seen = {"problems": [], "hosts": set(), "chart": []}
    page.on("pageerror", lambda error: seen["problems"].append(f"page error: {error}"))
    page.on("console", lambda msg: msg.type in ("error", "warning") and seen["problems"].append(msg.text))

    def requested(request):
        seen["hosts"].add(urlsplit(request.url).netloc)
        if CHART_PATH in request.url:
            seen["chart"].append(request.url)

    page.on("request", requested)
    page.expose_function("smsgateSignToken", lambda: make_token(is_admin=is_admin))
    serve_amocrm(page, widget_files)
    page.goto(f"{AMO_ORIGIN}/settings/widgets/?lang={lang}")
    return page, seen


def digits(text: str) -> str:
    """A number as the page shows it, without its grouping (spaces of any width in Russian)."""
    return re.sub(r"[\s,]", "", text)


def chart_state(page, which: str) -> dict:
    """What Chart.js drew in one chart: its labels and datasets, and how much of the canvas is painted."""
    return page.evaluate("""(which) => {
        const canvas = document.querySelector('.smsgate-chart-' + which + ' canvas');
        const chart = window.Chart.getChart(canvas);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) painted++; }
        return {labels: chart.data.labels, datasets: chart.data.datasets.map(d => ({label: d.label, key: d.key,
                total: d.data.reduce((a, b) => a + b, 0)})), painted: painted / (canvas.width * canvas.height),
                width: canvas.getBoundingClientRect().width};
    }""", which)


def test_figures_and_alerts_in_russian_for_an_administrator(deployment, chromium, make_token, account, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FakeSmsRu(status_delays=(0.05, 0.05)) as fake:
        deployment.env["SMSGATE_PROVIDER_BASE_URLS"] = f"smsru={fake.url}"
        deployment.start_web()
        smsru = ProviderRoute.objects.create(account=account, provider="smsru", sender="ACME",
                                             credentials={"api_id": fake.api_id})
        console = ProviderRoute.objects.create(account=account, provider="console", priority=20, credentials={})
        month_of_sms(account, smsru)
        page, seen = open_settings(chromium, deployment, make_token, tmp_path, lang="ru")

        # Alerts: the console route (production does not allow it) is flagged at once.
        page.wait_for_selector(".smsgate-alerts .smsgate-alert", timeout=15000)
        assert page.inner_text(".smsgate-alerts .smsgate-subtitle") == "Предупреждения"
        trap = page.locator(f".smsgate-alert[data-route-id='{console.pk}']")
        assert trap.get_attribute("data-code") == "route_sends_nothing"
        assert "ничего не отправляет" in trap.inner_text()
        # ... and a new one cannot be picked: the provider list does not offer it here.
        page.wait_for_selector(".smsgate-route-form .smsgate-provider option[value='smsru']", state="attached")
        assert page.locator(".smsgate-route-form .smsgate-provider option[value='console']").count() == 0

        # The figures: tiles, both charts drawn by Chart.js from the deployment, the tables.
        page.wait_for_function("() => window.Chart && document.querySelectorAll('.smsgate-figures canvas').length == 2"
                               " && window.Chart.getChart(document.querySelector('.smsgate-chart-source canvas'))",
                               timeout=15000)
        total = Delivery.objects.filter(account=account).count()
        assert digits(page.inner_text(".smsgate-tile-total .smsgate-tile-value")) == str(total)
        status_chart = chart_state(page, "status")
        today_label = page.evaluate("(day) => new Date(day + 'T12:00:00').toLocaleDateString('ru', "
                                    "{day: 'numeric', month: 'short'})", str(timezone.localdate()))
        assert len(status_chart["labels"]) == 30 and status_chart["labels"][-1] == today_label
        by_status = {d["key"]: (d["label"], d["total"]) for d in status_chart["datasets"]}
        assert by_status["delivered"][0] == "доставлено" and by_status["undelivered"][0] == "не доставлено"
        assert sum(total for _label, total in by_status.values()) == total
        assert status_chart["painted"] > 0.05 and status_chart["width"] > 700
        source_chart = chart_state(page, "source")
        assert {d["label"] for d in source_chart["datasets"]} == {"Коды входа", "Карточка", "Цифровая воронка",
                                                                   "Salesbot", "Списки"}
        rate = page.inner_text(f".smsgate-figures-route[data-route-id='{smsru.pk}'] .smsgate-route-rate")
        assert rate.endswith("%") and rate.startswith("9")
        assert page.inner_text(f".smsgate-figures-route[data-route-id='{smsru.pk}'] .smsgate-route-median").endswith(
            " с")
        reasons = page.locator(".smsgate-reason .smsgate-reason-text").all_inner_texts()
        assert reasons == ["Получатель или оператор блокирует такие SMS", "Номер неверный или не существует"]
        page.screenshot(path=str(ARTIFACTS / "figures-ru.png"), full_page=True)

        # The administrator sets a balance threshold above the balance and asks for amoCRM tasks.
        row = page.locator(f".smsgate-threshold-row[data-route-id='{smsru.pk}']")
        row.locator(".smsgate-threshold").fill("5000")
        page.check(".smsgate-amo-tasks")
        page.click(".smsgate-alerts-save")
        page.wait_for_selector(f".smsgate-alert[data-code='balance_low'][data-route-id='{smsru.pk}']")
        low = page.inner_text(".smsgate-alert[data-code='balance_low']")
        assert "Низкий баланс на SMS.ru (ACME)" in low and "Осталось 4\xa0122,56 RUB — меньше вашего порога 5\xa0000,00." in low
        assert digits(row.locator(".smsgate-balance-read").inner_text()).startswith("4122")
        assert page.inner_text(".smsgate-alert-message") == "Предупреждения сохранены."
        assert RouteBalanceAlert.objects.get(route=smsru).below == 5000
        assert AlertSettings.objects.get(account=account).amo_tasks is True
        page.locator(".smsgate-alerts").screenshot(path=str(ARTIFACTS / "figures-alerts-ru.png"))

        # A threshold in other digits is refused in the request's language, nothing saved.
        row.locator(".smsgate-threshold").fill("١٠٠")
        page.click(".smsgate-alerts-save")
        page.wait_for_selector(".smsgate-alert-message .smsgate-notice_error")
        assert RouteBalanceAlert.objects.get(route=smsru).below == 5000

        assert seen["chart"] and all(url.startswith(deployment.web_url + CHART_PATH) for url in seen["chart"])
        assert seen["hosts"] <= {"acme.amocrm.ru", urlsplit(deployment.web_url).netloc}  # no CDN, nothing else
        assert [p for p in seen["problems"] if "400" not in p] == []  # the refused save is the one 400


def test_figures_in_english_for_a_user_who_is_not_admin(deployment, chromium, make_token, account, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    deployment.start_web()
    smsru = ProviderRoute.objects.create(account=account, provider="smsru", sender="ACME", credentials={"api_id": "k"},
                                         is_broken=True, broken_reason="auth: wrong api_id")
    RouteBalanceAlert.objects.create(route=smsru, below=100, amount=50, currency="RUB", checked_at=timezone.now())
    month_of_sms(account, smsru)
    page, seen = open_settings(chromium, deployment, make_token, tmp_path, lang="en", is_admin=False)
    page.wait_for_selector(".smsgate-alerts .smsgate-alert", timeout=15000)
    assert page.locator(".smsgate-alert").evaluate_all("nodes => nodes.map(n => n.dataset.code)") == [
        "route_broken", "balance_low"]
    assert "Route SMS.ru (ACME) is broken" in page.inner_text(".smsgate-alert[data-code='route_broken']")
    assert "50.00 RUB left, under your threshold of 100.00." in page.inner_text(
        ".smsgate-alert[data-code='balance_low']")
    # Read-only for them: no threshold inputs, no save button, the task switch disabled.
    assert page.locator(".smsgate-threshold, .smsgate-alerts-save").count() == 0
    assert page.is_disabled(".smsgate-amo-tasks")

    page.wait_for_function("() => window.Chart && window.Chart.getChart(document.querySelector("
                           "'.smsgate-chart-source canvas'))", timeout=15000)
    assert page.inner_text(".smsgate-figures .smsgate-subtitle") == "Figures"
    assert {d["label"] for d in chart_state(page, "source")["datasets"]} == {"Login codes", "Card", "Pipeline",
                                                                              "Salesbot", "Lists"}
    assert page.locator(".smsgate-figures-table th").all_inner_texts()[:5] == [
        "Route", "SMS", "Delivered", "Median time to delivered", "Parts sent"]
    page.screenshot(path=str(ARTIFACTS / "figures-en.png"), full_page=True)

    # The last 7 days: fewer days on the axis, the totals follow.
    page.select_option(".smsgate-period", "7")
    page.wait_for_function("""() => {
        const canvas = document.querySelector('.smsgate-chart-status canvas');
        const chart = canvas && window.Chart.getChart(canvas);
        return chart && chart.data.labels.length == 7;
    }""", timeout=10000)
    week_start = timezone.make_aware(datetime.combine(timezone.localdate() - timedelta(days=6), time.min))
    week = Delivery.objects.filter(account=account, created_at__gte=week_start).count()
    assert digits(page.inner_text(".smsgate-tile-total .smsgate-tile-value")) == str(week)
    page.locator(".smsgate-figures").screenshot(path=str(ARTIFACTS / "figures-en-7-days.png"))
    assert seen["problems"] == []
    assert seen["hosts"] <= {"acme.amocrm.ru", urlsplit(deployment.web_url).netloc}
