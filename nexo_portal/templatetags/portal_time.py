"""Times on the pages: a short text, and the exact time with its time zone on hover.

`{{ moment|when }}` renders `<time datetime="…" title="2026-12-06 14:05:09 UTC">2026-12-06 14:05</time>`;
a format may be given as for Django's `date` filter (`{{ moment|when:"H:i:s" }}`).
"""

from django import template
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.html import format_html

from nexo_portal.lib.dates import exact_time

register = template.Library()


@register.filter
def when(moment, text_format="Y-m-d H:i"):
    if not moment:
        return ""
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        exact_time(moment),
        format_date(local, text_format),
    )


@register.simple_tag
def time_zone_name():
    """The time zone the pages show times in, e.g. "UTC" or "Europe/Lisbon"."""
    return timezone.get_current_timezone_name()
