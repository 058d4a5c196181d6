"""The staff dashboard as Chromium draws it, in Russian and English: every y-axis label is centred on
its own grid line, the tallest bar reaches the height of its count, the rate bars sit on their
100 % tracks. Screenshots in test-artifacts/dashboard-<language>.png."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from deliveries.models import DeliveryDayStat

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

# A month of counters with a peak day of 7: the axis reads 0, 2, 4, 6, 8.
DAYS = {1: {"delivered": 4, "sent": 1}, 2: {"delivered": 5, "failed": 2}, 5: {"delivered": 3, "rejected": 1},
        8: {"delivered": 2}, 12: {"delivered": 3, "undelivered": 1, "pending": 1}, 20: {"delivered": 1}}


@pytest.fixture
def dashboard_data(transactional_db, account):
    today = timezone.localdate()
    errors = {"failed": "provider_error", "rejected": "invalid_recipient", "undelivered": "undeliverable"}
    for ago, counts in DAYS.items():
        for status, n in counts.items():
            provider = "smsc" if status in ("failed", "undelivered") else "smsru"
            DeliveryDayStat.objects.create(day=today - timedelta(days=ago), account=account, provider=provider,
                                           status=status, error_class=errors.get(status, ""),
                                           latency_le=5 if status == "delivered" else 0, count=n)
    DeliveryDayStat.objects.create(day=today - timedelta(days=3), account=account, provider="smsc",
                                   status="delivered", latency_le=20, count=1)
    user = User.objects.create_user("watcher", password="watch-pass-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="deliveries", codename="view_delivery"))
    return account


# What Chromium laid out: each tick label's centre against its grid line, the tallest bar's top.
MEASURE = """() => {
  const svg = document.querySelector('#chart-daily');
  const grid = [...svg.querySelectorAll('line.sms-grid')].map(l => l.getBBox().y);
  const ticks = [...svg.querySelectorAll('text[text-anchor=end]')].map(t => {
    const box = t.getBBox();
    return {text: t.textContent, centre: box.y + box.height / 2};
  });
  const stacks = {};
  for (const r of svg.querySelectorAll('rect')) {
    const b = r.getBBox();
    stacks[b.x] = Math.min(stacks[b.x] ?? Infinity, b.y);
  }
  const rates = [...document.querySelectorAll('#chart-providers rect')].map(r => r.getBBox().width);
  return {grid, ticks, tops: Object.values(stacks), rates};
}"""


@pytest.mark.parametrize(("locale", "language"), [("ru-RU", "ru"), ("en-US", "en")])
def test_dashboard_axes_in_chromium(live_server, dashboard_data, chromium, locale, language):
    context = chromium.new_context(locale=locale, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "watcher")
    page.fill("#id_password", "watch-pass-1")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/deliveries/delivery/dashboard/?account={dashboard_data.pk}")
    page.wait_for_load_state("load")
    assert page.locator("html").get_attribute("lang") == language
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{language}.png"), full_page=True)

    drawn = page.evaluate(MEASURE)
    assert [tick["text"] for tick in drawn["ticks"]] == ["0", "2", "4", "6", "8"]
    bottom, top = max(drawn["grid"]), min(drawn["grid"])
    for tick, line in zip(drawn["ticks"], sorted(drawn["grid"], reverse=True)):
        assert abs(tick["centre"] - line) <= 1.5, (tick, line)  # the label is centred on its own line
    tallest = min(drawn["tops"])
    assert abs((bottom - tallest) / (bottom - top) * 8 - 7) <= 0.05  # the peak day's 7 reads 7
    # smsru 18 of 19 finished delivered, smsc 1 of 4: two bars on two equal 100 % tracks.
    tracks, bars = drawn["rates"][0::2], drawn["rates"][1::2]
    assert tracks[0] == tracks[1]
    assert sorted(round(bar / track, 2) for bar, track in zip(bars, tracks)) == [round(1 / 4, 2), round(18 / 19, 2)]
    context.close()
