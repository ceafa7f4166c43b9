"""Bar charts drawn on the server as inline SVG: no JavaScript library, nothing to fetch
(the router must work offline), and the page reads the same with scripts off.

Values are integers (micro-USD, tokens); only the pixel geometry is fractional.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

# In SVG units; the figure scales to its card, about this wide on a desktop screen, so
# that the 12-unit labels stay readable.
WIDTH = 540
HEIGHT = 200
LEFT = 72  # room for the y-axis labels
RIGHT = 22  # room for half of the last date
BOTTOM = 22  # room for the dates
TOP = 8


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    css_class: str


@dataclass(frozen=True)
class Column:
    """One day: its stacked segments, the tooltip that names every value, and the same
    figures one per series for the table a screen reader reads instead of the bars."""

    segments: tuple[Segment, ...]
    title: str
    hit_x: float
    hit_width: float
    day: date
    values: tuple[str, ...]


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DateLabel:
    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    left: int
    right: int
    plot_bottom: float
    columns: tuple[Column, ...]
    ticks: tuple[Tick, ...]
    dates: tuple[DateLabel, ...]
    legend: tuple[tuple[str, str], ...]  # (css class, name)
    empty: bool

    @property
    def series_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.legend)

    @property
    def center_x(self) -> float:
        return (self.left + self.width - RIGHT) / 2

    @property
    def center_y(self) -> float:
        return self.plot_bottom / 2


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (at least 1),
    so the axis reads 0 / 2,500 / 5,000 rather than 0 / 2,371 / 4,742."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(*, days: Sequence[date], series: Sequence[tuple[str, str, Sequence[int]]],
              format_value: Callable[[int], str]) -> BarChart:
    """Stacked bars, one column per day. ``series`` holds (name, css class, one value per
    day), drawn bottom-up in that order."""
    totals = [sum(values[i] for _, _, values in series) for i in range(len(days))]
    top = nice_ceiling(max(totals, default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    plot_bottom = HEIGHT - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    bar_width = max(slot * 0.7, 1.0)
    columns = []
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_width) / 2
        y = float(plot_bottom)
        segments = []
        for _, css_class, values in series:
            height = values[i] * plot_height / top
            if height > 0:
                y -= height
                segments.append(Segment(x=x, y=y, width=bar_width, height=height,
                                        css_class=css_class))
        title = f"{day:%a %d %b}: " + ", ".join(
            f"{name} {format_value(values[i])}" for name, _, values in series)
        columns.append(Column(segments=tuple(segments), title=title, hit_x=LEFT + i * slot,
                              hit_width=slot, day=day,
                              values=tuple(format_value(values[i]) for _, _, values in series)))
    empty = not any(totals)
    # An empty chart gets no scale: "0 to $0.000001" would only confuse.
    ticks = () if empty else tuple(
        Tick(y=plot_bottom - plot_height * part / 2, label=format_value(top * part // 2))
        for part in (0, 1, 2))
    # A date under every seventh day, counted back from today so the last one is labelled.
    dates = tuple(DateLabel(x=LEFT + i * slot + slot / 2, label=f"{day:%d %b}")
                  for i, day in enumerate(days) if (len(days) - 1 - i) % 7 == 0)
    return BarChart(width=WIDTH, height=HEIGHT, left=LEFT, right=WIDTH - RIGHT,
                    plot_bottom=plot_bottom,
                    columns=tuple(columns), ticks=ticks, dates=dates,
                    legend=tuple((css, name) for name, css, _ in series),
                    empty=empty)
