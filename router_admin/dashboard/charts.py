"""Small SVG charts drawn on the server: nothing to fetch (the router works offline), no
script, no inline style (the admin's CSP forbids both): colours come from classes in
router_admin/dashboard.css. Values are integers; only the geometry is fractional."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from portal.charts import nice_ceiling

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 560, 180, 80, 20, 8

def _joined(fragments: Sequence[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((fragment,) for fragment in fragments))


def _n(value: float) -> str:
    return f"{value:.1f}"


Series = tuple[str, str, Sequence[int]]  # name, css class, one value per column


def columns_svg(*, labels: Sequence[str], series: Sequence[Series], title: str,
                format_value: Callable[[int], str]) -> SafeString:
    """Stacked columns, one per bucket, with a tooltip per column naming every value."""
    totals = [sum(values[i] for _, _, values in series) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0))
    plot = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - 8) / max(len(labels), 1)
    parts = []
    for i, label in enumerate(labels):
        x, y = LEFT + i * slot + slot * 0.15, float(HEIGHT - BOTTOM)
        tip = f"{label}: " + ", ".join(f"{n} {format_value(v[i])}" for n, _, v in series)
        rects = []
        for _, css, values in series:
            height = values[i] * plot / top
            if height > 0:
                y -= height
                rects.append(format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}"/>',
                    css, _n(x), _n(y), _n(slot * 0.7), _n(height)))
        parts.append(format_html('<g><title>{}</title><rect class="dash-hit" x="{}" y="{}" '
                                 'width="{}" height="{}"/>{}</g>', tip, _n(LEFT + i * slot),
                                 TOP, _n(slot), plot, _joined(rects)))
    every = max(len(labels) // 6, 1)
    axis = format_html_join("", '<text class="dash-axis" x="{}" y="{}">{}</text>', (
        (_n(LEFT + i * slot + slot / 2), HEIGHT - 5, label) for i, label in enumerate(labels)
        if (len(labels) - 1 - i) % every == 0))
    ticks = format_html_join("", '<text class="dash-axis dash-tick" x="{}" y="{}">{}</text>'
                             '<line class="dash-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>',
                             ((LEFT - 4, _n(HEIGHT - BOTTOM - plot * p / 2 + 4),
                               format_value(top * p // 2), LEFT, WIDTH,
                               _n(HEIGHT - BOTTOM - plot * p / 2),
                               _n(HEIGHT - BOTTOM - plot * p / 2))
                              for p in (0, 1, 2))) if any(totals) else ""
    legend = format_html_join(" ", '<span class="dash-key {}"></span>{}',
                              ((css, name) for name, css, _ in series))
    return format_html(
        '<figure class="dash-chart"><svg viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '{}{}{}</svg><figcaption>{}</figcaption></figure>',
        WIDTH, HEIGHT, title, ticks, _joined(parts), axis, legend)


def bars_svg(*, rows: Sequence[tuple[str, int, str]], title: str, css: str) -> SafeString:
    """Horizontal bars: (label, value, value as shown), the longest bar the largest value."""
    height = 18 * len(rows) + 4
    top = max((value for _, value, _ in rows), default=0) or 1
    bars = format_html_join("", (
        '<g><title>{}: {}</title><text class="dash-axis dash-label" x="{}" y="{}">{}</text>'
        '<rect class="{}" x="{}" y="{}" width="{}" height="12"/>'
        '<text class="dash-axis" x="{}" y="{}">{}</text></g>'), (
        (label, shown, 150, 18 * i + 14, label[:24], css, 154, 18 * i + 4,
         _n(max(value * 300 / top, 0.5)), _n(158 + max(value * 300 / top, 0.5)), 18 * i + 14,
         shown) for i, (label, value, shown) in enumerate(rows)))
    return format_html('<svg class="dash-bars" viewBox="0 0 {} {}" role="img" '
                       'aria-label="{}">{}</svg>', WIDTH, height, title, bars)
