"""Geometry of the dashboard's charts, rendered by the template as inline SVG (no script, no CDN)."""

import math
from dataclasses import dataclass, field
from datetime import date

from django.utils.formats import date_format, number_format

from .models import DeliveryStatus

# Stacking order (bottom first) and colours of statuses.
STATUS_ORDER = (
    DeliveryStatus.DELIVERED, DeliveryStatus.SENT, DeliveryStatus.PENDING, DeliveryStatus.UNKNOWN,
    DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED, DeliveryStatus.REJECTED, DeliveryStatus.FAILED,
)
STATUS_COLOURS = {
    DeliveryStatus.PENDING: "#9e9e9e",
    DeliveryStatus.SENDING: "#9e9e9e",
    DeliveryStatus.SENT: "#1e88e5",
    DeliveryStatus.DELIVERED: "#2e7d32",
    DeliveryStatus.UNDELIVERED: "#ef6c00",
    DeliveryStatus.EXPIRED: "#f9a825",
    DeliveryStatus.REJECTED: "#c62828",
    DeliveryStatus.FAILED: "#6a1b9a",
    DeliveryStatus.UNKNOWN: "#78909c",
}


@dataclass
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass
class Label:
    x: float
    y: float
    text: str


@dataclass
class StackedBars:
    width: int
    height: int
    bars: list[Rect] = field(default_factory=list)
    y_ticks: list[Label] = field(default_factory=list)
    x_labels: list[Label] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)
    left: int = 56
    right: int = 0


# At most this many steps on a value axis: 5 reads as 0..5 by 1, 7 as 0..8 by 2, 13 as 0..15 by 5.
MAX_AXIS_STEPS = 5


def axis_ticks(peak: float, *, max_steps: int = MAX_AXIS_STEPS) -> list[int]:
    """Tick values of a count axis from 0: the smallest whole step of 1, 2 or 5 x 10^n that reaches
    the peak in at most `max_steps` steps. The last tick is the top of the scale; an empty axis
    (peak 0) is 0..1, like a peak of 1."""
    peak = max(peak, 1)
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            step = multiple * magnitude
            steps = math.ceil(peak / step)
            if steps <= max_steps:
                return [i * step for i in range(steps + 1)]
        magnitude *= 10


def daily_status_chart(days: dict[date, dict[str, int]], *, width=760, height=240) -> StackedBars:
    """Deliveries per day, stacked by status, on a count axis whose labels sit at their own values."""
    from django.utils.translation import gettext

    ticks = axis_ticks(max((sum(c.values()) for c in days.values()), default=0))
    tick_texts = [number_format(value, force_grouping=True) for value in ticks]
    # Room for the widest label (about 7 px a character at 11 px), so "1 000 000" is never cut, and
    # above the top line for its label, centred on it.
    left, bottom, top = max(48, 14 + 7 * max(len(text) for text in tick_texts)), 24, 12
    chart = StackedBars(width=width, height=height, left=left, right=width - 4)
    plot_height = height - bottom - top
    scale_top = ticks[-1]
    band = (width - left - 4) / max(len(days), 1)
    labels = dict(DeliveryStatus.choices)
    for i, (day, counts) in enumerate(sorted(days.items())):
        x = left + i * band + band * 0.1
        base = top + plot_height  # each piece stands on the running total below it
        below = 0
        for status in STATUS_ORDER:
            n = counts.get(status, 0)
            if n <= 0:
                continue
            # Edges from the running totals (not piece by piece) so rounding never adds up.
            y_low = base - plot_height * below / scale_top
            below += n
            y_high = base - plot_height * below / scale_top
            y_low, y_high = round(y_low, 1), round(y_high, 1)
            chart.bars.append(Rect(round(x, 1), y_high, round(band * 0.8, 1), round(y_low - y_high, 1),
                                   STATUS_COLOURS[status],
                                   f"{date_format(day, 'SHORT_DATE_FORMAT')}: {labels[status]} "
                                   f"{number_format(n, force_grouping=True)}"))
        if i % max(len(days) // 6, 1) == 0:
            chart.x_labels.append(Label(round(x + band * 0.4, 1), height - 6, date_format(day, "d.m")))
    for value, text in zip(ticks, tick_texts):
        # The label's y is its tick's own height (the template centres the text on it).
        y = round(top + plot_height * (1 - value / scale_top), 1)
        chart.grid.append(y)
        chart.y_ticks.append(Label(left - 6, y, text))
    present = {status for counts in days.values() for status, n in counts.items() if n > 0}
    chart.legend = [(STATUS_COLOURS[s], labels[s]) for s in STATUS_ORDER if s in present]
    if not chart.legend:
        chart.legend = [("#ffffff", gettext("no deliveries in this period"))]
    return chart


@dataclass
class BarRow:
    label: str
    value_text: str
    y: float
    width: float
    colour: str
    title: str
    text_x: float = 0  # where the text after the bar starts


@dataclass
class HorizontalBars:
    width: int
    height: int
    label_width: int
    room: float = 0  # the width of a full bar (share 1)
    track: bool = False  # draw the full bar faintly behind each bar: the scale is a fixed 0..1
    rows: list[BarRow] = field(default_factory=list)


def horizontal_bars(items: list[tuple[str, float, str, str]], *, colour="#1e88e5", width=760, row_height=26,
                    label_width=260, track=False) -> HorizontalBars:
    """One bar per item: (label, share 0..1 of a full bar, text after the bar, tooltip). With `track`
    the full bar is drawn behind (a rate out of 100 %); without, the caller scales shares to its
    longest bar, whose number is printed beside it."""
    room = width - label_width - 150
    chart = HorizontalBars(width=width, height=max(len(items), 1) * row_height + 4, label_width=label_width,
                           room=room, track=track)
    for i, (label, share, text, title) in enumerate(items):
        bar = round(min(max(share, 0), 1) * room, 1)
        chart.rows.append(BarRow(label, text, i * row_height + 4, bar, colour, title,
                                 text_x=label_width + (room if track else bar) + 6))
    return chart
