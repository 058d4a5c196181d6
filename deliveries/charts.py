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


def nice_ceiling(value: int) -> int:
    """1, 2, 5 x 10^n at or above the value: round numbers for the axis."""
    if value <= 0:
        return 1
    magnitude = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def daily_status_chart(days: dict[date, dict[str, int]], *, width=760, height=240) -> StackedBars:
    """Deliveries per day, stacked by status."""
    from django.utils.translation import gettext

    left, bottom, top = 56, 24, 8
    chart = StackedBars(width=width, height=height, left=left, right=width - 4)
    plot_height = height - bottom - top
    peak = nice_ceiling(max((sum(c.values()) for c in days.values()), default=0))
    band = (width - left - 4) / max(len(days), 1)
    labels = dict(DeliveryStatus.choices)
    for i, (day, counts) in enumerate(sorted(days.items())):
        x = left + i * band + band * 0.1
        y = top + plot_height
        for status in STATUS_ORDER:
            n = counts.get(status, 0)
            if n <= 0:
                continue
            h = plot_height * n / peak
            y -= h
            chart.bars.append(Rect(round(x, 1), round(y, 1), round(band * 0.8, 1), round(h, 1),
                                   STATUS_COLOURS[status],
                                   f"{date_format(day, 'SHORT_DATE_FORMAT')}: {labels[status]} {number_format(n)}"))
        if i % max(len(days) // 6, 1) == 0:
            chart.x_labels.append(Label(round(x + band * 0.4, 1), height - 6, date_format(day, "d.m")))
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = round(top + plot_height * (1 - fraction), 1)
        chart.grid.append(y)
        chart.y_ticks.append(Label(left - 6, y + 4, number_format(int(peak * fraction), force_grouping=True)))
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


@dataclass
class HorizontalBars:
    width: int
    height: int
    label_width: int
    rows: list[BarRow] = field(default_factory=list)


def horizontal_bars(items: list[tuple[str, float, str, str]], *, colour="#1e88e5", width=760, row_height=26,
                    label_width=260) -> HorizontalBars:
    """One bar per item: (label, value 0..1 of the longest bar, text after the bar, tooltip)."""
    chart = HorizontalBars(width=width, height=max(len(items), 1) * row_height + 4, label_width=label_width)
    room = width - label_width - 150
    for i, (label, share, text, title) in enumerate(items):
        chart.rows.append(BarRow(label, text, i * row_height + 4, round(max(share, 0) * room, 1), colour, title))
    return chart
