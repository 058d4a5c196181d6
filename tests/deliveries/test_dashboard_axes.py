"""The staff dashboard's charts read right: every y-axis label sits at the height of its own value,
the steps are round (1, 2, 5 x 10^n), the scale's top is the last tick, and every bar reaches the
height of its count on that scale. Read from the rendered HTML, in Russian and in English."""

import itertools
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import DeliveryDayStat, DeliveryStatus
from tests.staff import staff_client

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:deliveries_delivery_dashboard")
NUMBER = re.compile(r"-?\d+(\.\d+)?")  # an SVG coordinate: a decimal point, never a locale's comma


class Svg(HTMLParser):
    """The elements of one <svg id=...> of a page: [(tag, attributes, text)]."""

    def __init__(self, svg_id: str):
        super().__init__()
        self.svg_id, self.inside, self.in_text, self.elements = svg_id, False, False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.inside = attrs.get("id") == self.svg_id
        elif self.inside:
            self.elements.append([tag, attrs, ""])
            self.in_text = tag == "text"

    def handle_startendtag(self, tag, attrs):
        if self.inside:
            self.elements.append([tag, dict(attrs), ""])

    def handle_endtag(self, tag):
        self.in_text = False
        if tag == "svg":
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.in_text:
            self.elements[-1][2] += data


def svg_elements(html: str, svg_id: str) -> list:
    parser = Svg(svg_id)
    parser.feed(html)
    assert parser.elements, f"no <svg id={svg_id}> on the page"
    return parser.elements


def coordinate(attrs: dict, name: str) -> float:
    value = attrs.get(name, "0")
    assert NUMBER.fullmatch(value), f"{name}={value!r} is not an SVG number"
    return float(value)


def label_value(text: str) -> int:
    """A tick label as a number: grouped digits ("1 000 000", "1,000,000") read back."""
    digits = re.sub(r"[\s\u00a0\u202f,.]", "", text)
    assert digits.isdigit(), f"tick label {text!r} is not a whole number"
    return int(digits)


def daily_axis(html: str):
    """(ticks [(value, y)], plot bottom, plot height, bars [(x, y, height)]) of the daily chart."""
    elements = svg_elements(html, "chart-daily")
    grid = [coordinate(a, "y1") for tag, a, _ in elements if tag == "line" and "sms-grid" in a.get("class", "")]
    ticks = [(label_value(text), coordinate(a, "y")) for tag, a, text in elements
             if tag == "text" and a.get("text-anchor") == "end"]
    bars = [(coordinate(a, "x"), coordinate(a, "y"), coordinate(a, "height"))
            for tag, a, _ in elements if tag == "rect"]
    assert grid and ticks
    return ticks, max(grid), max(grid) - min(grid), bars


def put_day(account, day, **counts):
    for status, n in counts.items():
        DeliveryDayStat.objects.create(day=day, account=account, provider="smsru", status=status,
                                       error_class="" if status == DeliveryStatus.DELIVERED else "invalid_recipient",
                                       count=n)


EXPECTED_TICKS = {0: [0, 1], 1: [0, 1], 5: [0, 1, 2, 3, 4, 5], 7: [0, 2, 4, 6, 8], 13: [0, 5, 10, 15],
                  98: [0, 20, 40, 60, 80, 100], 1234: [0, 500, 1000, 1500],
                  10**6: [0, 200_000, 400_000, 600_000, 800_000, 1_000_000]}


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("peak", sorted(EXPECTED_TICKS))
def test_every_tick_label_sits_at_its_own_value_and_bars_reach_their_counts(account, language, peak):
    today = timezone.localdate()
    days = {}
    if peak:
        # The peak day stacked from two statuses, and a smaller day, so the bars are checked too.
        put_day(account, today - timedelta(days=3), delivered=peak - peak // 3, failed=peak // 3)
        days[today - timedelta(days=3)] = peak
        if peak > 1:
            put_day(account, today - timedelta(days=10), delivered=peak // 2)
            days[today - timedelta(days=10)] = peak // 2
    client, _ = staff_client("deliveries.view_delivery")
    # One account's view: read live from the counters (the all-accounts sum of past days is cached).
    response = client.get(DASHBOARD, {"account": account.pk}, HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    assert response["Content-Language"] == language
    ticks, bottom, plot_height, bars = daily_axis(response.content.decode())

    values = [value for value, _ in sorted(ticks, key=lambda tick: -tick[1])]  # bottom to top
    scale_top = values[-1]
    # A label's value, as a reader measures it against the axis: within the 0.1 px the SVG is rounded to.
    tolerance = 0.15 / plot_height * scale_top
    for value, y in ticks:
        assert abs((bottom - y) / plot_height * scale_top - value) <= tolerance, (value, y, ticks)
    # Round steps from 0, the scale's top the first tick at or above the peak.
    assert values == EXPECTED_TICKS[peak]
    step = values[1] - values[0]
    assert all(b - a == step for a, b in itertools.pairwise(values))
    assert step / 10 ** (len(str(step)) - 1) in (1, 2, 5)
    assert scale_top - step < max(peak, 1) <= scale_top

    # Each day's bar (its stacked pieces share an x) reaches its count on the same scale.
    stacks = {}
    for x, y, height in bars:
        stacks.setdefault(x, []).append((y, height))
    assert len(stacks) == len(days)
    for x, pieces in stacks.items():
        assert abs(max(y + h for y, h in pieces) - bottom) <= 0.15  # standing on the axis
        drawn = (bottom - min(y for y, _ in pieces)) / plot_height * scale_top
        assert min(abs(drawn - n) for n in days.values()) <= tolerance * 2, (drawn, days)
    if peak >= 1000:  # large numbers are grouped
        label = next(text for tag, a, text in svg_elements(response.content.decode(), "chart-daily")
                     if tag == "text" and a.get("text-anchor") == "end" and label_value(text) == scale_top)
        assert re.search(r"\d[\s\u00a0\u202f,]\d{3}$", label), label


def bar_rows(html: str, svg_id: str) -> list[tuple[float, float | None, str]]:
    """(bar width, track width or None, the text after it) per row of a horizontal bar chart."""
    rows, track = [], None
    for tag, attrs, text in svg_elements(html, svg_id):
        if tag == "rect" and "sms-track" in attrs.get("class", ""):
            track = coordinate(attrs, "width")
        elif tag == "rect":
            rows.append([coordinate(attrs, "width"), track, None])
            track = None
        elif tag == "text" and rows and rows[-1][2] is None and "text-anchor" not in attrs:
            coordinate(attrs, "x")
            rows[-1][2] = text.strip()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("language", ["ru", "en"])
def test_rate_and_failure_bars_are_as_long_as_their_numbers(account, language):
    day = timezone.localdate() - timedelta(days=2)
    # smsru: 2 of 3 finished delivered; smsc: 1 of 7; failures 6 (smsc) and 1 (smsru).
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsru", status="delivered", latency_le=5,
                                   count=2)
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsru", status="failed",
                                   error_class="provider_error", count=1)
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsc", status="delivered", latency_le=5, count=1)
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsc", status="rejected",
                                   error_class="invalid_recipient", count=6)
    client, _ = staff_client("deliveries.view_delivery")
    html = client.get(DASHBOARD, {"account": account.pk}, HTTP_ACCEPT_LANGUAGE=language).content.decode()

    rates = bar_rows(html, "chart-providers")
    assert len(rates) == 2
    for width, track, text in rates:
        assert track is not None  # a rate is drawn out of a full (100 %) bar
        shown = float(re.match(r"([\d.,]+) %", text).group(1).replace(",", "."))
        assert abs(width / track * 100 - shown) <= 0.1, (width, track, text)
    assert sorted(round(width / track, 3) for width, track, _ in rates) == [round(1 / 7, 3), round(2 / 3, 3)]

    failures = bar_rows(html, "chart-failures")
    assert [label_value(text) for _, _, text in failures] == [6, 1]
    (longest, _, _), (shorter, _, _) = failures
    assert abs(shorter / longest - 1 / 6) < 0.01


@pytest.mark.parametrize(("language", "over"), [("ru", "более 24 ч 0 мин"), ("en", "over 24 h 0 min")])
def test_a_median_in_the_open_last_time_bucket_is_shown_as_over_its_bound(account, language, over):
    from deliveries.counters import LATENCY_OVER

    day = timezone.localdate() - timedelta(days=2)
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsru", status="delivered", latency_le=5,
                                   count=1)
    DeliveryDayStat.objects.create(day=day, account=account, provider="smsru", status="delivered",
                                   latency_le=LATENCY_OVER, count=3)
    client, _ = staff_client("deliveries.view_delivery")
    response = client.get(DASHBOARD, {"account": account.pk}, HTTP_ACCEPT_LANGUAGE=language)
    row = response.context["provider_rows"][0]
    assert row["median_text"] == over  # not a time between one and two days the buckets cannot tell


def test_axis_ticks_are_round_steps_ending_at_the_first_tick_over_the_peak():
    from deliveries.charts import axis_ticks

    for peak in [*range(2001), 9_999, 10_001, 123_456, 10**6, 10**6 + 1, 7 * 10**9]:
        ticks = axis_ticks(peak)
        step = ticks[1] - ticks[0]
        assert ticks[0] == 0 and ticks == [i * step for i in range(len(ticks))]
        assert step / 10 ** (len(str(step)) - 1) in (1, 2, 5)
        assert 2 <= len(ticks) <= 6 and ticks[-1] - step < max(peak, 1) <= ticks[-1], (peak, ticks)
        # and no rounder step fits: the next smaller one would need more than 5 steps
        smaller = {1: step // 2, 2: step // 2, 5: step * 2 // 5}[step // 10 ** (len(str(step)) - 1)]
        assert step == 1 or -(-max(peak, 1) // smaller) > 5, (peak, ticks)
