"""The dates the portal accepts in filters and reports.

Python's dates end at 9999-12-31, so "the day after" a date near it overflows; nothing the
portal records is that far out. Filters and reports refuse dates outside these years with a
message instead of failing on them.
"""

from datetime import date, datetime

from django.utils import timezone

EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)
OUT_OF_RANGE = f"Give a date between {EARLIEST} and {LATEST}."
# The same years for the OpenAPI schema, which has no bounds for a date's format.
SCHEMA_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-"


def in_range(value):
    """Whether a date or date-time falls in the years the portal accepts."""
    day = value.date() if isinstance(value, datetime) else value
    return EARLIEST <= day <= LATEST


def exact_time(moment, zone=None):
    """A moment as the pages show it on hover: local time to the second, with the time zone.

    `zone`: the current time zone, when the caller shows many moments and has looked it up once
    (looking it up reads a context-local variable, which costs more than the conversion).
    """
    return timezone.localtime(moment, zone).strftime("%Y-%m-%d %H:%M:%S %Z")
