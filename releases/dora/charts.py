"""Trend charts of the DORA report, drawn on the server as inline SVG (no script, no CDN)."""

from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .templatetags.dora_format import format_duration, format_percent

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24
# The tick labels' width per character at their 11 px, with room to spare: the plot starts right of
# the widest label, so "7.4 days" is never cut to ".4 days".
CHARACTER_WIDTH = 7


def _left_margin(label):
    return max(LEFT, 8 + CHARACTER_WIDTH * len(label))


def _number(value):
    return f"{value:.1f}"


def bar_chart(title, points, format_value):
    """Bars for (date, value) points; a missing value (no events that week) leaves a gap, marked."""
    values = [value for _, value in points if value is not None]
    top = max(values, default=0) or 1
    top_label = format_value(top) if values else ""
    left = _left_margin(top_label)
    slot = (WIDTH - left - RIGHT) / max(len(points), 1)
    plot_height = HEIGHT - TOP - BOTTOM
    bars = []
    for index, (day, value) in enumerate(points):
        x = left + index * slot + slot * 0.15
        label = f"{day:%Y-%m-%d}: {format_value(value) if value is not None else 'no data'}"
        if value is None:
            bars.append(
                format_html(
                    '<g><title>{}</title><text class="gap" x="{}" y="{}">·</text></g>',
                    label,
                    _number(x + slot * 0.35),
                    _number(HEIGHT - BOTTOM - 2),
                )
            )
            continue
        height = plot_height * value / top
        bars.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
                _number(x),
                _number(HEIGHT - BOTTOM - height),
                _number(slot * 0.7),
                _number(height),
                label,
            )
        )
    first, last = (f"{points[0][0]:%d %b %Y}", f"{points[-1][0]:%d %b %Y}") if points else ("", "")
    summary = ", ".join(
        f"{day:%d %b}: {format_value(value) if value is not None else 'no data'}" for day, value in points
    )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "<desc>{}</desc>"
        '<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>'
        '<text class="tick" x="{}" y="{}" text-anchor="end">0</text>'
        "{}"
        '<text class="tick" x="{}" y="{}">{}</text>'
        '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>'
        "</svg>",
        WIDTH,
        HEIGHT,
        title,
        summary,
        left,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        left - 4,
        TOP + 8,
        top_label,
        left - 4,
        HEIGHT - BOTTOM,
        mark_safe("".join(bars)),
        left,
        HEIGHT - 6,
        first,
        WIDTH - RIGHT,
        HEIGHT - 6,
        last,
    )


def trend_charts(report):
    """One chart per metric over the report's weeks or months."""
    buckets = report.trend

    def series(value):
        return [(bucket.start, value(bucket.figures)) for bucket in buckets]

    charts = [
        ("Deployment frequency (change deployments)", series(lambda f: f.change_deployments), lambda v: f"{v:.0f}"),
        ("Deploy-days", series(lambda f: f.deploy_days), lambda v: f"{v:.0f}"),
        ("Lead time for changes (median)", series(lambda f: f.lead_time_median), format_duration),
        ("Change failure rate", series(lambda f: f.change_failure_rate), format_percent),
        ("Failed deployment recovery time (median)", series(lambda f: f.recovery_median), format_duration),
        ("Deployment rework rate", series(lambda f: f.rework_rate), format_percent),
    ]
    return [{"title": title, "svg": bar_chart(title, points, formatter)} for title, points, formatter in charts]
