"""Server-rendered SVG charts for the web pages (no script, no inline style).

A small module of our own rather than pygal: pygal's SVG carries inline `<script>` and
`style` that the pages' Content-Security-Policy (script and style from 'self' only)
blocks, and a line chart of two series is a few dozen lines. Colours come from the
page's stylesheet through class names, so the chart follows light and dark mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH = 600
HEIGHT = 200
PAD_LEFT = 48
PAD_BOTTOM = 24
PAD_TOP = 10
PAD_RIGHT = 10


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    day: date
    value: int


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class LineChart:
    title: str
    series: list[Series]
    y_max: int
    first_day: date
    last_day: date
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    bottom: int = HEIGHT - PAD_BOTTOM
    top: int = PAD_TOP
    right: int = WIDTH - PAD_RIGHT


def daily_chart(
    title: str, days: list[date], series: dict[str, tuple[str, list[int]]]
) -> LineChart:
    """One point per day for each series (`name -> (css class, values per day)`)."""
    y_max = max([1, *(v for _, values in series.values() for v in values)])
    span = max(1, len(days) - 1)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    built = []
    for name, (css, values) in series.items():
        points = [
            Point(
                PAD_LEFT + plot_w * i / span,
                PAD_TOP + plot_h * (1 - value / y_max),
                day,
                value,
            )
            for i, (day, value) in enumerate(zip(days, values, strict=True))
        ]
        built.append(Series(name, css, points))
    return LineChart(title, built, y_max, days[0], days[-1])
