"""How DORA figures read on the page: durations in words, rates as percentages, band colours."""

from django import template

from releases.dora.metrics import Band

register = template.Library()

BAND_CLASSES = {Band.ELITE: "ok", Band.HIGH: "info", Band.MEDIUM: "warn", Band.LOW: "bad"}


def format_duration(seconds):
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_percent(ratio):
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


@register.filter
def duration(seconds):
    return format_duration(seconds)


@register.filter
def percent(ratio):
    return format_percent(ratio)


@register.filter
def band_class(band):
    return BAND_CLASSES.get(band, "")
