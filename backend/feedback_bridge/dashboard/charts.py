"""Charts as inline SVG, drawn on the server: pure functions from numbers to markup.

Every label is escaped; colours come from classes styled in ``dashboard.css`` (the CSP forbids inline
styles); each chart is an ``img`` with a ``<title>``, and each bar or point has its own ``<title>`` (a tooltip,
and what a screen reader reads).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640
PLOT_TOP, PLOT_BOTTOM, PLOT_LEFT, PLOT_RIGHT = 12, 24, 40, 24  # room for the axis and the outer labels


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _svg(title: str, width: int, height: int, body: list[str], chart_class: str, stretch: bool = False) -> Markup:
    # The id ties the title to the chart (aria-labelledby); derived from the content, so output stays pure.
    ident = "chart-" + hashlib.sha1("".join([title, *body]).encode()).hexdigest()[:10]
    aspect = ' preserveAspectRatio="none"' if stretch else ""
    parts = [
        f'<svg class="chart {chart_class}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}"{aspect} xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{ident}">{escape(title)}</title>', *body, "</svg>",
    ]
    return Markup("".join(parts))


def _scale(values: Sequence[float]) -> float:
    top = max((v for v in values if v is not None), default=0)
    return top if top > 0 else 1


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, height: int = 180, unit: str = "",
              label_every: int = 1) -> Markup:
    """Vertical bars, one per ``(label, value)``; every ``label_every``-th label is written under its bar."""
    plot_height = height - PLOT_TOP - PLOT_BOTTOM
    top = _scale([value for _, value in items])
    slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(items), 1)
    body = [f'<text class="axis" x="{PLOT_LEFT - 4}" y="{PLOT_TOP + 4}" text-anchor="end">{_number(top)}</text>',
            f'<line class="baseline" x1="{PLOT_LEFT}" x2="{WIDTH}" y1="{height - PLOT_BOTTOM}" '
            f'y2="{height - PLOT_BOTTOM}"/>']
    for index, (label, value) in enumerate(items):
        bar = plot_height * value / top
        x = PLOT_LEFT + index * slot
        body.append(
            f'<rect class="bar" x="{x + slot * 0.1:.1f}" y="{height - PLOT_BOTTOM - bar:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{bar:.1f}"><title>{escape(label)}: {_number(value)}{escape(unit)}'
            f"</title></rect>"
        )
        if index % label_every == 0:
            body.append(f'<text class="label" x="{x + slot / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                        f"{escape(label)}</text>")
    return _svg(title, WIDTH, height, body, "bar-chart")


def hbar_chart(items: Sequence[tuple[str, float]], *, title: str, label_width: int = 220) -> Markup:
    """Horizontal bars with their label on the left and their value on the right (top lists)."""
    row = 22
    height = max(len(items), 1) * row + 4
    top = _scale([value for _, value in items])
    room = WIDTH - label_width - 60
    body = []
    for index, (label, value) in enumerate(items):
        y = index * row + 2
        bar = room * value / top
        body.append(
            f'<text class="label" x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{bar:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {_number(value)}</title></rect>"
            f'<text class="value" x="{label_width + bar + 6:.1f}" y="{y + 15}">{_number(value)}</text>'
        )
    if not items:
        body.append(f'<text class="label" x="{WIDTH / 2}" y="16" text-anchor="middle">No data</text>')
    return _svg(title, WIDTH, height, body, "hbar-chart")


def line_chart(points: Sequence[tuple[str, float | None]], *, title: str, height: int = 180,
               maximum: float | None = None, unit: str = "", label_every: int = 1) -> Markup:
    """A line through the ``(label, value)`` points; a None value (no data that day) breaks the line."""
    plot_height = height - PLOT_TOP - PLOT_BOTTOM
    top = maximum if maximum is not None else _scale([value for _, value in points])
    slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(points), 1)
    body = [f'<text class="axis" x="{PLOT_LEFT - 4}" y="{PLOT_TOP + 4}" text-anchor="end">{_number(top)}'
            f"{escape(unit)}</text>",
            f'<line class="baseline" x1="{PLOT_LEFT}" x2="{WIDTH}" y1="{height - PLOT_BOTTOM}" '
            f'y2="{height - PLOT_BOTTOM}"/>']
    segments: list[list[str]] = [[]]
    marks = []
    for index, (label, value) in enumerate(points):
        x = PLOT_LEFT + index * slot + slot / 2
        if index % label_every == 0:
            body.append(f'<text class="label" x="{x:.1f}" y="{height - 8}" text-anchor="middle">{escape(label)}'
                        "</text>")
        if value is None:
            segments.append([])
            continue
        y = height - PLOT_BOTTOM - plot_height * min(value, top) / top
        segments[-1].append(f"{x:.1f},{y:.1f}")
        marks.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(label)}: '
                     f"{_number(value)}{escape(unit)}</title></circle>")
    body += [f'<polyline class="line" points="{" ".join(s)}"/>' for s in segments if len(s) > 1]
    return _svg(title, WIDTH, height, body + marks, "line-chart")


def stacked_bar(segments: Sequence[tuple[str, int]], *, title: str, height: int = 18) -> Markup:
    """One bar split into ``(status, count)`` parts, each classed ``seg-<status>`` for its colour."""
    total = sum(value for _, value in segments) or 1
    x = 0.0
    body = []
    for name, value in segments:
        width = WIDTH * value / total
        if value:
            body.append(f'<rect class="seg seg-{escape(name)}" x="{x:.1f}" y="0" width="{width:.1f}" '
                        f'height="{height}"><title>{escape(name)}: {_number(value)}</title></rect>')
        x += width
    return _svg(title, WIDTH, height, body, "stacked-bar", stretch=True)  # a thin bar at any width
