"""What the portal writes that another program could run, made inert: CSV cells and stored links.

- A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (tab and carriage return too)
  as a formula: a team called `=HYPERLINK(…)` would become one in the DORA export. Every CSV the
  portal writes goes through `csv_writer()`, which prefixes such text with `'` (OWASP's advice);
  numbers stay numbers. `tests/test_inert_output.py` fails on a CSV written any other way.
- A browser follows a `javascript:` or `data:` link. Every URL the portal stores and shows as a
  link (a service's repository, a CI report, a PagerDuty incident) must be http(s): the models
  validate it and the database refuses anything else.
"""

import csv

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# For the database's check constraints (case-insensitively): the scheme, and nothing before it.
HTTP_URL_REGEX = r"^https?://"

_http_url = URLValidator(schemes=["http", "https"])


def spreadsheet_cell(value):
    """`value` as a CSV cell no spreadsheet runs: text starting like a formula gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _InertWriter:
    def __init__(self, writer):
        self._writer = writer

    def writerow(self, row):
        return self._writer.writerow([spreadsheet_cell(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def csv_writer(stream, **options):
    """`csv.writer(stream)` whose cells are made inert (`spreadsheet_cell`)."""
    return _InertWriter(csv.writer(stream, **options))


def validate_http_url(value):
    """A model field validator: the URL is http:// or https:// (never javascript:, data:, ftp:…)."""
    try:
        _http_url(value)
    except ValidationError as error:
        raise ValidationError(
            "Give an http:// or https:// address (a link to anything else is not stored).", code="invalid"
        ) from error


def is_http_url(value):
    try:
        validate_http_url(value)
    except ValidationError:
        return False
    return True
