"""The SVG chart functions: pure, numbers in, markup out."""

from __future__ import annotations

import re

import pytest

from feedback_bridge.dashboard import charts


def heights(svg: str, cls: str = "bar") -> list[float]:
    return [float(h) for h in re.findall(rf'<rect class="{cls}"[^>]* height="([\d.]+)"', svg)]


@pytest.mark.parametrize(("items", "expected_heights"), [
    ([("a", 10), ("b", 5), ("c", 0)], [144.0, 72.0, 0.0]),  # the tallest bar fills the plot (180 - 12 - 24)
    ([("x", 3)], [144.0]),
    ([("zero", 0), ("also", 0)], [0.0, 0.0]),  # no division by zero
    ([], []),
])
def test_bar_chart_bars_are_proportional(items, expected_heights):
    svg = charts.bar_chart(items, title="Volume")

    assert heights(svg) == expected_heights
    for label, value in items:
        assert f"<title>{label}: {value}</title>" in svg
        assert f">{label}</text>" in svg


def test_bar_chart_labels_every_nth_and_is_an_accessible_image():
    svg = charts.bar_chart([(f"d{i}", i) for i in range(10)], title="Per day", label_every=3)

    assert re.findall(r'class="label"[^>]*>(d\d)</text>', svg) == ["d0", "d3", "d6", "d9"]
    ident = re.search(r'aria-labelledby="([^"]+)"', svg)[1]
    assert f'<title id="{ident}">Per day</title>' in svg and 'role="img"' in svg
    assert svg == charts.bar_chart([(f"d{i}", i) for i in range(10)], title="Per day", label_every=3)  # pure


@pytest.mark.parametrize(("points", "segments", "circles"), [
    ([("a", 50), ("b", 100), ("c", 0)], 1, 3),
    ([("a", 50), ("b", None), ("c", 20), ("d", 30)], 1, 3),  # a gap: "a" alone is no line, "c"-"d" is
    ([("a", 10), ("b", 20), ("c", None), ("d", 30), ("e", 40)], 2, 4),
    ([("a", None)], 0, 0),
])
def test_line_chart_breaks_at_missing_values(points, segments, circles):
    svg = charts.line_chart(points, title="Share", maximum=100, unit="%")

    assert svg.count("<polyline") == segments
    assert svg.count("<circle") == circles
    for label, value in points:
        if value is not None:
            assert f"<title>{label}: {value}%</title>" in svg


def test_line_chart_puts_the_maximum_at_the_top_and_zero_on_the_baseline():
    svg = charts.line_chart([("a", 100), ("b", 0)], title="Share", maximum=100)

    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert ys == [12.0, 156.0]


def test_hbar_chart_lists_items_in_order_with_values():
    svg = charts.hbar_chart([("Not complete", 40), ("Helpful", 10)], title="Reasons")

    assert re.findall(r'class="label"[^>]*>([^<]+)</text>', svg) == ["Not complete", "Helpful"]
    widths = [float(w) for w in re.findall(r'<rect class="bar"[^>]* width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(4 * widths[1])
    assert "No data" in charts.hbar_chart([], title="Reasons")


def test_stacked_bar_splits_the_width_by_count():
    svg = charts.stacked_bar([("delivered", 6), ("pending", 0), ("skipped", 3), ("failed", 1)], title="Health")

    parts = re.findall(r'class="seg seg-(\w+)" x="([\d.]+)" y="0" width="([\d.]+)"', svg)
    assert [p[0] for p in parts] == ["delivered", "skipped", "failed"]  # an empty status draws nothing
    assert [float(p[2]) for p in parts] == pytest.approx([384.0, 192.0, 64.0])
    assert float(parts[1][1]) == pytest.approx(384.0)


@pytest.mark.parametrize("draw", [
    lambda label: charts.bar_chart([(label, 1)], title=label),
    lambda label: charts.hbar_chart([(label, 1)], title=label),
    lambda label: charts.line_chart([(label, 1), ("b", 2)], title=label),
    lambda label: charts.stacked_bar([(label, 1)], title=label),
])
def test_labels_and_titles_are_escaped(draw):
    svg = str(draw('<script>alert("x")</script>&'))

    assert "<script>" not in svg
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in svg
