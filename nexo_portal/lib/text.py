"""Text from outside: control characters and over-deep JSON are refused before any view reads them.

PostgreSQL cannot store NUL, and no name, version or filter holds a control character; free text in a
body keeps tab, line feed and carriage return. An unpaired UTF-16 surrogate (JSON's "\\ud800") is not
text at all. `nexo_portal.lib.middleware` applies this to query strings and the pages' forms, the
API's parsers (`nexo_portal.lib.api`) to its JSON and form bodies.
"""

import re
from collections.abc import Iterable

# One-line values (query parameters, names): C0 and C1 controls, DEL, unpaired surrogates.
_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Values that may span lines keep tab, line feed and carriage return.
_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The same sets for the OpenAPI schema, in the ECMA 262 escapes JSON Schema validators read.
LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
# Far deeper than any body the portal reads (a PagerDuty event is 5 levels), and a bound on hostile work.
MAX_JSON_DEPTH = 32


class Unreadable(ValueError):
    """A value no view should see; `field` names where it was (None: the request as a whole)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _describe(character: str) -> str:
    if "\ud800" <= character <= "\udfff":
        return f"an unpaired UTF-16 surrogate (U+{ord(character):04X}), which is not text"
    return f"the control character U+{ord(character):04X}"


def check(value: str, field: str | None, *, multiline: bool = False) -> None:
    """Raise Unreadable if the value holds a character the portal refuses, saying which."""
    match = (_IN_TEXT if multiline else _IN_LINE).search(value)
    if match:
        rule = "text keeps only tab, line feed and carriage return" if multiline else "remove it"
        raise Unreadable(f"Contains {_describe(match.group())}: {rule}.", field)


def check_pairs(pairs: Iterable[tuple[str, Iterable[object]]], *, multiline: bool) -> None:
    """Every name and string value of a query string or a form, as QueryDict.lists() gives them."""
    for name, values in pairs:
        match = _IN_LINE.search(name)
        if match:
            raise Unreadable(f"A parameter's name contains {_describe(match.group())}.")
        for value in values:
            if isinstance(value, str):
                check(value, name, multiline=multiline)


def check_json(data: object) -> None:
    """Every key and string of parsed JSON, at most MAX_JSON_DEPTH levels deep, walked without recursion."""
    pending: list[tuple[object, str | None, int]] = [(data, None, 0)]
    while pending:
        value, field, depth = pending.pop()
        if isinstance(value, str):
            check(value, field, multiline=True)
        elif isinstance(value, (dict, list)):
            if depth == MAX_JSON_DEPTH:
                raise Unreadable(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    check(key, field)
                    name = f"{field}.{key}" if field else key
                else:
                    name = f"{field or ''}[{key}]"
                pending.append((item, name, depth + 1))
