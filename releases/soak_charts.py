"""The soak drawn as one small chart per check, on the server as inline SVG (no script, no CDN).

The error rate is a line of its samples with the environment's threshold as a dashed line;
a health URL or Argo CD health, which pass or fail, is a strip of marks. Every mark has a
<title> (its time and result) and each chart an aria-label that says it in words.
"""

from dataclasses import dataclass

from django.utils.html import format_html, format_html_join

from nexo_portal.lib.dates import exact_time

from .models import SampleCheck

WIDTH, HEIGHT = 360, 90
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 8, 16


@dataclass
class SoakChart:
    title: str
    target: str
    summary: str
    svg: str


def _series(samples):
    """The samples of each check in the order first seen: the error rate, each health URL, Argo CD."""
    series = {}
    for sample in samples:
        key = (sample.kind, sample.target if sample.kind != SampleCheck.ERROR_RATE else "")
        series.setdefault(key, []).append(sample)
    return series


def _n(number):
    # format_html escapes its arguments to text before formatting: numbers go in as text.
    return f"{number:.1f}"


def _x(sample, start, span):
    seconds = (sample.taken_at - start).total_seconds()
    return LEFT + (WIDTH - LEFT - RIGHT) * (seconds / span if span else 0.5)


def _percent(ratio):
    return f"{ratio * 100:.2f} %"


def _error_rate_svg(samples, threshold, start, span, label):
    with_data = [s for s in samples if s.value is not None]
    top = max([threshold * 2, *(s.value for s in with_data)]) or 1
    plot = HEIGHT - TOP - BOTTOM

    def y(value):
        return TOP + plot * (1 - value / top)

    line = " ".join(f"{_x(s, start, span):.1f},{y(s.value):.1f}" for s in with_data)
    marks = format_html_join(
        "",
        '<circle class="{}" cx="{}" cy="{}" r="3"><title>{}: {}</title></circle>',
        (
            (
                s.outcome.replace(" ", "-"),
                _n(_x(s, start, span)),
                _n(y(s.value) if s.value is not None else HEIGHT - BOTTOM),
                exact_time(s.taken_at),
                s.detail or s.outcome,
            )
            for s in samples
        ),
    )
    return format_html(
        '<svg class="soak-chart" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<line class="threshold" x1="{l}" y1="{ty}" x2="{r}" y2="{ty}"><title>threshold {t}</title></line>'
        '<text class="tick" x="{tx}" y="{tly}" text-anchor="end">{t}</text>'
        '<text class="tick" x="{tx}" y="{b}" text-anchor="end">0 %</text>'
        '<polyline class="series" points="{line}"/>{marks}</svg>',
        w=WIDTH,
        h=HEIGHT,
        label=label,
        l=LEFT,
        r=WIDTH - RIGHT,
        b=HEIGHT - BOTTOM,
        ty=_n(y(threshold)),
        tly=_n(y(threshold) + 4),
        tx=LEFT - 4,
        t=_percent(threshold),
        line=line,
        marks=marks,
    )


def _strip_svg(samples, start, span, label):
    marks = format_html_join(
        "",
        '<rect class="{}" x="{}" y="{}" width="5" height="{}"><title>{}: {}</title></rect>',
        (
            (
                s.outcome.replace(" ", "-"),
                _n(_x(s, start, span) - 2.5),
                TOP + 14,
                HEIGHT - TOP - BOTTOM - 28,
                exact_time(s.taken_at),
                s.detail or s.outcome,
            )
            for s in samples
        ),
    )
    return format_html(
        '<svg class="soak-chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<text class="tick" x="{}" y="{}" text-anchor="end">ok?</text>{}</svg>',
        WIDTH,
        HEIGHT,
        label,
        LEFT - 4,
        HEIGHT // 2 + 4,
        marks,
    )


def _summary(samples):
    counts = {}
    for sample in samples:
        counts[sample.outcome] = counts.get(sample.outcome, 0) + 1
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items())


def soak_charts(promotion, samples):
    """One chart per check of the promotion's soak samples (oldest first)."""
    if not samples:
        return []
    start = promotion.verification_started_at or samples[0].taken_at
    end = max(promotion.verdict_at or samples[-1].taken_at, samples[-1].taken_at)
    span = max((end - start).total_seconds(), 1)
    threshold = float(promotion.environment.error_rate_threshold)
    charts = []
    for (kind, target), series in _series(samples).items():
        title = SampleCheck(kind).label
        summary = _summary(series)
        if kind == SampleCheck.ERROR_RATE:
            label = f"{title} of {len(series)} samples against a threshold of {_percent(threshold)}: {summary}"
            svg = _error_rate_svg(series, threshold, start, span, label)
            target = series[-1].target
        else:
            label = f"{title} {target}, {len(series)} samples: {summary}"
            svg = _strip_svg(series, start, span, label)
        charts.append(SoakChart(title=title, target=target, summary=summary, svg=svg))
    return charts
